# @summary Installs the systemd unit and runs the agent.
#
# @api private
class ferrofab::agent::service {
  assert_private()
  if $ferrofab::agent::service_manage {
    file { $ferrofab::agent::unit_path:
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0644',
      content => epp('ferrofab/ferrofab-agent.service.epp', {
          'binary'      => $ferrofab::agent::binary,
          'config_path' => $ferrofab::agent::config_path,
      }),
    }
    service { $ferrofab::agent::service_name:
      ensure    => $ferrofab::agent::service_ensure,
      enable    => $ferrofab::agent::service_enable,
      provider  => $ferrofab::agent::service_provider,
      subscribe => File[$ferrofab::agent::unit_path],
      *         => $ferrofab::agent::service_options,
    }
  }
}
