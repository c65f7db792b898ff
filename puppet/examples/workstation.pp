# A workstation profile (built-in driver): the agent from the lab's
# package repository, enrolled with a token, two scratch volumes, a
# read-only reference volume, and an ext4 filesystem on one scratch volume
# (ferrofab::filesystem), mounted at /data/scratch.
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

# ext4 on the scratch volume, through a loop device over the exposed file
# that ferrofab::filesystem creates and tracks; mkfs only where blkid finds
# nothing; a mount that died under the filesystem is repaired on the next
# run. Usually from Hiera too: ferrofab::agent::filesystems.
ferrofab::filesystem { 'lightsheet-scratch':
  mountpoint   => '/data/scratch',
  mkfs_options => ['-L', 'ls-scratch'],
  group        => 'lab',
  mode         => '2775',
}
