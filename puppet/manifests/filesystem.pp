# @summary A filesystem on an attached volume, mounted, and repaired when it dies.
#
# Puts a filesystem (ext4 by default, or xfs) on the volume of a
# `ferrofab_attachment` and mounts it at `mountpoint`:
#
# * **Kernel driver:** on the block device the agent reports for the
#   attachment (looked up at every run: `/dev/nvmeXnY` numbers change).
# * **Built-in driver:** on a loop device over the exposed file, which the
#   type creates (`losetup --find --show`), finds again (`losetup -j FILE`)
#   and records, so that `ensure => absent` and the agent's uninstall detach
#   exactly the loop devices it made.
#
# Each run checks the mount for real, on the node, with the helper
# `ferrofab-filesystem check` (installed by class `ferrofab::agent`):
# mounted from the volume's *current* device, the loop device on the live
# file (not on a deleted or replaced one: `losetup -l` "(deleted)", or
# another inode), a direct read of the device and a `stat` of the mount
# point answer, not remounted read-only after errors, owner/group/mode.
# A dead mount is therefore not "in sync": the run repairs it (unmount,
# lazily only if the old device is dead; detach the stale loop device; a
# new one on the live file; `e2fsck -p`; mount) and reports that as a
# change, with the reason in the log.
#
# It never runs mkfs on a device where `blkid` finds anything (a filesystem
# of another type, a partition table) or that it cannot read: it fails the
# resource instead. Data is never lost.
#
# Why a defined type around a helper script and not a Resource API type:
# the state is not a set of attributes to read and set but a health check
# and a repair sequence of a dozen system commands (findmnt, losetup, blkid,
# e2fsck, mount); a script run by an `exec` (`unless` = the check) keeps
# that sequence in one place that an administrator can run by hand
# (`ferrofab-filesystem check NAME ...`), and needs no Ruby on the node
# beyond Puppet's.
#
# Ordering: after the volume's `ferrofab_attachment` (when present) and the
# agent service; with `ensure => absent`, before the attachment (a detach
# of a file still in use would fail its I/O). Requires class
# `ferrofab::agent`. When that class has `ensure => absent`, this type does
# nothing: the uninstall unmounts every filesystem the module mounted.
#
# @example ext4 on a scratch volume, owned by the lab group
#   ferrofab::filesystem { 'lightsheet-scratch':
#     mountpoint   => '/data/scratch',
#     mkfs_options => ['-L', 'ls-scratch'],
#     group        => 'lab',
#     mode         => '2775',
#   }
#
# @example xfs with mount options, volume named apart from the resource
#   ferrofab::filesystem { 'raw':
#     volume        => 'lightsheet-raw',
#     mountpoint    => '/data/raw',
#     fstype        => 'xfs',
#     mount_options => ['noatime'],
#   }
#
# @param mountpoint
#   Where to mount it (created when missing).
# @param ensure
#   `present`: make the filesystem if the volume has none, mount it, keep
#   it healthy. `absent`: unmount it (fails while it is busy, never lazily)
#   and detach the loop device the type made; the data stays on the volume.
# @param volume
#   The attached volume (its `ferrofab_attachment` title). Default: the
#   title.
# @param fstype
#   `ext4` or `xfs`. Only used by mkfs on an empty volume; an existing
#   filesystem of another type fails the resource.
# @param mkfs_options
#   Extra arguments of `mkfs.<fstype>` (e.g. `['-L', 'scratch']`), used
#   only on a volume where blkid finds nothing.
# @param mount_options
#   Mount options (`-o`), e.g. `['noatime']`. Empty: the defaults.
# @param owner
#   Owner of the mounted filesystem's root directory; undef: unmanaged.
# @param group
#   Group of that directory; undef: unmanaged.
# @param mode
#   Mode of that directory, e.g. `'0755'`; undef: unmanaged.
# @param timeout
#   Seconds a run of the helper may take (mkfs or e2fsck of a large
#   volume); 0: no limit.
define ferrofab::filesystem (
  Stdlib::Absolutepath $mountpoint,
  Enum['present', 'absent'] $ensure = 'present',
  Pattern[/\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\z/] $volume = $title,
  Enum['ext4', 'xfs'] $fstype = 'ext4',
  Array[String[1]] $mkfs_options = [],
  Array[Pattern[/\A[^,\s]+\z/]] $mount_options = [],
  Optional[String[1]] $owner = undef,
  Optional[String[1]] $group = undef,
  Optional[Pattern[/\A[0-7]{3,4}\z/]] $mode = undef,
  Integer[0] $timeout = 3600,
) {
  unless $title =~ /\A[A-Za-z0-9][A-Za-z0-9._-]*\z/ {
    fail("ferrofab::filesystem[${title}]: the title must be letters, digits, '.', '_' or '-' (it names the helper's state file)")
  }
  unless defined(Class['ferrofab::agent']) {
    fail("ferrofab::filesystem[${title}]: declare class ferrofab::agent first")
  }

  if $ferrofab::agent::ensure == 'present' {
    $helper = $ferrofab::agent::filesystem_helper
    $global = [
      '--agent', $ferrofab::agent::binary,
      '--agent-config', $ferrofab::agent::config_path,
      '--state-dir', $ferrofab::agent::filesystem_state_dir,
    ]
    $args = [
      $title,
      '--volume', $volume,
      '--mountpoint', $mountpoint,
      '--fstype', $fstype,
      '--mkfs-options', join($mkfs_options, ' '),
      '--mount-options', join($mount_options, ','),
      '--owner', pick_default($owner, ''),
      '--group', pick_default($group, ''),
      '--mode', pick_default($mode, ''),
    ]
    $base = shell_join([$helper] + $global)
    $check = $ensure ? {
      'present' => 'check',
      default   => 'absent',
    }
    $do = $ensure ? {
      'present' => 'apply',
      default   => 'remove',
    }
    $exec = "ferrofab::filesystem ${title}"
    exec { $exec:
      command   => "${base} ${do} ${shell_join($args)}",
      unless    => "${base} ${check} ${shell_join($args)}",
      provider  => shell,
      logoutput => true,
      timeout   => $timeout,
      require   => [File[$helper], Class['ferrofab::agent::service']],
    }

    if $ensure == 'present' {
      Ferrofab_attachment <| title == $volume |> -> Exec[$exec]
    } else {
      Exec[$exec] -> Ferrofab_attachment <| title == $volume |>
    }
  }
}
