# A workstation profile (built-in driver): the agent from the lab's
# package repository, enrolled with a token, two scratch volumes, a
# read-only reference volume, and an ext4 filesystem on one scratch volume
# through a loop device, mounted at /data/scratch.
class { 'ferrofab::agent':
  controller_endpoints => ['https://ctl.lab.example:7443'],
  node_name            => 'ws-7',
  ca_cert              => "-----BEGIN CERTIFICATE-----\n(the controller's CA)\n-----END CERTIFICATE-----\n",
  bootstrap_token      => Sensitive('token-from-ferrofab-node-token-create'),
  # Usually from Hiera: ferrofab::agent::attachments
  attachments          => {
    'lightsheet-scratch' => { 'wait_timeout' => 120 },
    'analysis-scratch'   => { 'wait_timeout' => 120 },
    'reference-atlas'    => { 'read_only' => true },
  },
}

# The built-in driver exposes the volume as a file; a loop device makes it
# a block device. The filesystem gets a label so that the mount does not
# depend on which /dev/loopN it got.
$file = '/run/ferrofab/volumes/lightsheet-scratch'
$loop = "$(losetup -j ${file} -n -O NAME | head -n 1)"

exec { 'losetup lightsheet-scratch':
  command  => "losetup --find --direct-io=on ${file}",
  unless   => "losetup -j ${file} | grep -q .",
  provider => shell,
  path     => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  require  => Ferrofab_attachment['lightsheet-scratch'],
}

# mkfs only when blkid finds no filesystem: never over data.
exec { 'mkfs lightsheet-scratch':
  command  => "mkfs.ext4 -q -L ls-scratch ${loop}",
  unless   => "blkid ${loop}",
  provider => shell,
  path     => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  require  => Exec['losetup lightsheet-scratch'],
}

file { '/data/scratch':
  ensure => directory,
}

mount { '/data/scratch':
  ensure  => mounted,
  device  => 'LABEL=ls-scratch',
  fstype  => 'ext4',
  options => 'noauto,nofail',
  require => [Exec['mkfs lightsheet-scratch'], File['/data/scratch']],
}
