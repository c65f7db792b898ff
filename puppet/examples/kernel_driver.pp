# A workstation with the kernel driver (data_path "kernel": Linux nvme-tcp;
# accepted by the config, not implemented by this agent version yet). The
# attachment's `path` is then a block device such as /dev/nvme3n1, whose
# number can change between boots: ferrofab::filesystem looks it up from
# the agent at every run.
class { 'ferrofab::agent':
  controller_endpoints => ['https://ctl.lab.example:7443'],
  node_name            => 'ws-8',
  driver               => 'kernel',
  attachments          => { 'lightsheet-raw' => {} },
}

# xfs on the volume's block device (mkfs only where blkid finds nothing),
# mounted at /data/raw.
ferrofab::filesystem { 'lightsheet-raw':
  mountpoint    => '/data/raw',
  fstype        => 'xfs',
  mkfs_options  => ['-L', 'ls-raw'],
  mount_options => ['noatime'],
}
