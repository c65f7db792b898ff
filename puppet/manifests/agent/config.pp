# @summary Writes the agent's TOML config and the controller's CA.
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
}
