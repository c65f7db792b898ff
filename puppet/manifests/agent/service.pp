# @summary Installs the systemd unit (`unit_manage`, systemd only) and runs the agent.
#
# The service restarts when the unit, the binary (class
# ferrofab::agent::install) or the restart digest (settings that need a
# restart, class ferrofab::agent::config) changed, never for a change of
# the live settings alone.
#
# @api private
class ferrofab::agent::service {
  assert_private()
  if $ferrofab::agent::service_manage {
    if $ferrofab::agent::manage_unit {
      file { $ferrofab::agent::unit_path:
        ensure  => file,
        owner   => 'root',
        group   => 'root',
        mode    => '0644',
        content => epp('ferrofab/ferrofab-agent.service.epp', {
            'binary'      => $ferrofab::agent::binary,
            'config_path' => $ferrofab::agent::config_path,
        }),
        notify  => Service[$ferrofab::agent::service],
      }
    }
    service { $ferrofab::agent::service:
      ensure    => $ferrofab::agent::service_ensure,
      enable    => $ferrofab::agent::service_enable,
      provider  => $ferrofab::agent::service_provider,
      subscribe => File[$ferrofab::agent::restart_digest_path],
      *         => $ferrofab::agent::service_options,
    }
  }
}
