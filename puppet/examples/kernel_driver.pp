# A workstation with the kernel driver (data_path "kernel": Linux nvme-tcp;
# accepted by the config, not implemented by this agent version yet). The
# attachment's `path` is then a block device such as /dev/nvme3n1, whose
# number can change between boots: the exec commands look it up from the
# agent at run time, and the mount uses the filesystem label.
class { 'ferrofab::agent':
  controller_endpoints => ['https://ctl.lab.example:7443'],
  node_name            => 'ws-8',
  driver               => 'kernel',
}

ferrofab_attachment { 'lightsheet-raw':
  ensure => present,
}

$dev = "$(ferrofab-agent attachments --json | jq -r '.attachments[] | select(.volume == \"lightsheet-raw\") | .path')"

exec { 'mkfs lightsheet-raw':
  command  => "mkfs.xfs -q -L ls-raw ${dev}",
  unless   => "blkid ${dev}",
  provider => shell,
  path     => ['/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  require  => Ferrofab_attachment['lightsheet-raw'],
}

file { '/data/raw':
  ensure => directory,
}

mount { '/data/raw':
  ensure  => mounted,
  device  => 'LABEL=ls-raw',
  fstype  => 'xfs',
  options => 'noauto,nofail',
  require => [Exec['mkfs lightsheet-raw'], File['/data/raw']],
}
