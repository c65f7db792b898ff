# @summary Writes the agent's TOML config, the controller's CA and the restart digest.
#
# The config file itself notifies nothing: the agent watches it and applies
# `resync_interval` and `log_level` at once (docs/agent.md), so a change to
# those must not restart it (a restart would interrupt the data path). Every
# other key only takes effect at start, so the SHA-256 of those keys (and of
# the CA) goes into a small file next to the config,
# `<config_path>.restart-digest`, and that file notifies the service.
#
# @api private
class ferrofab::agent::config {
  assert_private()
  $tls = {
    'ca'          => $ferrofab::agent::tls_ca,
    'cert'        => $ferrofab::agent::tls_cert,
    'key'         => $ferrofab::agent::tls_key,
    'server_name' => $ferrofab::agent::tls_server_name,
  }
  $settings = {
    'node'                 => $ferrofab::agent::node_name,
    'roles'                => sort($ferrofab::agent::roles),
    'controller_endpoints' => $ferrofab::agent::controller_endpoints,
    'data_path'            => $ferrofab::agent::driver,
    'expose_dir'           => $ferrofab::agent::expose_dir,
    'state_dir'            => $ferrofab::agent::state_dir,
    'resync_interval'      => $ferrofab::agent::resync_interval,
    'api_socket'           => $ferrofab::agent::api_socket,
    'log_level'            => $ferrofab::agent::log_level,
    'metrics_listen'       => $ferrofab::agent::metrics_listen,
    'data_listen'          => $ferrofab::agent::data_listen,
    'tls'                  => delete_undef_values($tls),
    'pools'                => $ferrofab::agent::pools,
  }

  # Keys the agent applies live (agent/src/reload.rs); everything else
  # needs a restart.
  $live_keys = ['resync_interval', 'log_level']
  $restart_settings = delete_undef_values($settings).filter |$key, $value| { !($key in $live_keys) }
  $ca_text = $ferrofab::agent::ca_cert ? {
    undef   => '',
    default => $ferrofab::agent::ca_cert,
  }
  $restart_digest = sha256("${to_toml($restart_settings)}\n${ca_text}")

  $dir = dirname($ferrofab::agent::config_path)
  ensure_resource('file', $dir, { 'ensure' => 'directory', 'owner' => 'root', 'group' => 'root', 'mode' => '0755' })

  file { $ferrofab::agent::config_path:
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => $ferrofab::agent::config_mode,
    content => "# Managed by Puppet (class ferrofab::agent); local changes are overwritten.\n${to_toml(delete_undef_values($settings))}",
  }

  if $ferrofab::agent::ca_cert {
    file { $ferrofab::agent::tls_ca:
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0644',
      content => $ferrofab::agent::ca_cert,
    }
  }

  # Changes only when a key that needs a restart changed; it notifies the
  # service (class ferrofab::agent::service), the config file does not.
  file { $ferrofab::agent::restart_digest_path:
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => "# Managed by Puppet (class ferrofab::agent): SHA-256 of the agent settings that need a restart.\n${restart_digest}\n",
    require => File[$ferrofab::agent::config_path],
  }
}
