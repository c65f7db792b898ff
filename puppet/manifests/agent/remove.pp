# @summary Removes the agent from this node in one run (`ensure => absent`).
#
# In this order: every filesystem the module mounted (`ferrofab::filesystem`,
# recorded by its helper) is unmounted and its loop device detached, the
# data kept; every attachment of the node is detached through the
# running agent (so the controller's Attachment objects go too, and nothing
# is left using a volume); then the service is stopped and disabled, and
# the data-path holder (if the agent has one) is stopped; then,
# when asked, the Node object is deleted from the controller; then the
# unit (systemd only), the config and its restart digest, the CA,
# certificate and key, the state directory, the binary or package, the
# filesystem helper and its state, the socket, the expose directory and the
# `ferrofab` directories left empty are removed. Each step is guarded, so a
# second run changes nothing and a host where the agent never ran has
# nothing to detach.
#
# A detach that fails (the controller is down, say) fails the run before
# the service stops: nothing is removed under a volume still attached.
#
# @api private
class ferrofab::agent::remove {
  assert_private()
  $bin = $ferrofab::agent::binary
  # `command` first: an exec autorequires a File at the start of its
  # command, and the binary's File is removed after these run.
  $cli = "command ${shell_escape($bin)} --config ${shell_escape($ferrofab::agent::config_path)}"
  $path = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
  $timeout = $ferrofab::agent::detach_timeout

  # Filesystems first: a volume detached under a mounted filesystem would
  # fail its I/O. A busy mount fails the run here, before anything else.
  $helper = $ferrofab::agent::filesystem_helper
  $fs_state = $ferrofab::agent::filesystem_state_dir
  exec { 'ferrofab-filesystem remove-all':
    # `command` first: the helper's File is removed later in this run.
    command   => "command ${shell_join([$helper, '--state-dir', $fs_state])} remove-all",
    onlyif    => "test -x ${shell_escape($helper)} && [ -n \"\$(ls -A ${shell_escape($fs_state)} 2>/dev/null)\" ]",
    provider  => shell,
    path      => $path,
    logoutput => true,
    before    => Exec['ferrofab-agent detach all'],
  }

  # `attachments` prints one tab-separated line per attachment (volume in
  # the second field) and fails when the agent does not answer.
  $detach_one = "${cli} detach \"\$v\" --timeout ${timeout}s >/dev/null || exit 1"
  exec { 'ferrofab-agent detach all':
    command  => "${cli} attachments | cut -f2 | while read -r v; do [ -z \"\$v\" ] || ${detach_one}; done",
    onlyif   => "${cli} attachments 2>/dev/null | grep -q .",
    provider => shell,
    path     => $path,
    timeout  => 0,
  }

  if $ferrofab::agent::service_manage {
    service { $ferrofab::agent::service:
      ensure   => stopped,
      enable   => false,
      provider => $ferrofab::agent::service_provider,
      require  => Exec['ferrofab-agent detach all'],
      *        => $ferrofab::agent::service_options,
    }
    $service_stopped = Service[$ferrofab::agent::service]
  } else {
    $service_stopped = Exec['ferrofab-agent detach all']
  }

  # The built-in driver's data-path holder (a long-lived process that owns
  # the FUSE mount across agent restarts, when the agent has one) outlives
  # the service by design: stop it once nothing is attached. Guarded by its
  # socket, so agents without a holder have nothing to do.
  $state = $ferrofab::agent::state_dir
  $holder_socket = "${state}/holder.sock"
  exec { 'ferrofab-agent holder stop':
    command  => "${cli} holder stop --state-dir ${shell_escape($state)} --timeout ${timeout}s",
    onlyif   => "test -S ${shell_escape($holder_socket)}",
    provider => shell,
    path     => $path,
    require  => $service_stopped,
  }
  $stopped = Exec['ferrofab-agent holder stop']

  $delete = $ferrofab::agent::delete_node
  if $delete {
    $ff = "${shell_escape($delete['cli'])} --config ${shell_escape($delete['config'])}"
    $node = shell_escape($ferrofab::agent::node_name)
    exec { 'ferrofab node delete':
      command  => "${ff} node delete ${node}",
      onlyif   => "${ff} node get ${node} >/dev/null 2>&1",
      provider => shell,
      path     => $path,
      require  => $stopped,
    }
  }

  if $ferrofab::agent::manage_unit and $ferrofab::agent::service_manage {
    file { $ferrofab::agent::unit_path:
      ensure  => absent,
      require => $stopped,
      notify  => Exec['ferrofab-agent systemctl daemon-reload'],
    }
    exec { 'ferrofab-agent systemctl daemon-reload':
      command     => 'systemctl daemon-reload',
      path        => $path,
      refreshonly => true,
    }
  }

  $files = [
    $ferrofab::agent::config_path,
    $ferrofab::agent::restart_digest_path,
    $ferrofab::agent::tls_ca,
    $ferrofab::agent::tls_cert,
    $ferrofab::agent::tls_key,
    $ferrofab::agent::api_socket,
  ]
  file { $files:
    ensure  => absent,
    require => $stopped,
  }
  file { $helper:
    ensure  => absent,
    require => [$stopped, Exec['ferrofab-filesystem remove-all']],
  }
  file { [$ferrofab::agent::state_dir, $fs_state]:
    ensure  => absent,
    force   => true,
    recurse => true,
    require => $stopped,
  }

  if $ferrofab::agent::binary_source {
    file { $bin:
      ensure  => absent,
      require => $stopped,
    }
  } else {
    package { $ferrofab::agent::package_name:
      ensure  => absent,
      require => $stopped,
    }
  }

  # Directories: removed only when empty (rmdir), so a FUSE mount left
  # behind or files of someone else are never deleted. The expose
  # directory first, then the parents named like ferrofab.
  $expose = $ferrofab::agent::expose_dir
  $parents = unique([
      dirname($ferrofab::agent::config_path),
      dirname($ferrofab::agent::state_dir),
      dirname($fs_state),
      dirname($ferrofab::agent::api_socket),
      dirname($expose),
  ].filter |$d| { basename($d) =~ /ferrofab/ and !($d in [$expose]) })
  $e = shell_escape($expose)
  exec { "ferrofab-agent rmdir ${expose}":
    command  => "rmdir ${e}",
    onlyif   => "test -d ${e} && ! findmnt ${e} >/dev/null && [ -z \"\$(ls -A ${e})\" ]",
    provider => shell,
    path     => $path,
    require  => $stopped,
  }
  $parents.each |$dir| {
    exec { "ferrofab-agent rmdir ${dir}":
      command  => "rmdir ${shell_escape($dir)}",
      onlyif   => "test -d ${shell_escape($dir)} && [ -z \"\$(ls -A ${shell_escape($dir)})\" ]",
      provider => shell,
      path     => $path,
      require  => [Exec["ferrofab-agent rmdir ${expose}"], File[$files], File[$ferrofab::agent::state_dir, $fs_state]],
    }
  }
}
