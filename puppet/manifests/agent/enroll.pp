# @summary Enrolls the node once with its bootstrap token.
#
# The `exec` runs only while the node certificate is missing. The token is
# Sensitive all the way into the command, so it is redacted from logs and
# reports.
#
# @api private
class ferrofab::agent::enroll {
  assert_private()
  $token = $ferrofab::agent::bootstrap_token
  if $token {
    $addresses = $ferrofab::agent::data_addresses.map |$a| { ['--data-address', $a] }.flatten
    $args = [
      $ferrofab::agent::binary,
      '--config', $ferrofab::agent::config_path,
      'enroll', '--keep-config',
      '--controller', $ferrofab::agent::controller_endpoints[0],
      '--ca', $ferrofab::agent::tls_ca,
      '--node', $ferrofab::agent::node_name,
      '--roles', sort($ferrofab::agent::roles).join(','),
    ] + $addresses
    exec { 'ferrofab-agent enroll':
      command => Sensitive("${shell_join($args)} --token ${shell_escape($token.unwrap)}"),
      creates => $ferrofab::agent::tls_cert,
      path    => ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'],
      timeout => 120,
    }
    # The agent writes the key 0600; keep it so.
    file { $ferrofab::agent::tls_key:
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0600',
      require => Exec['ferrofab-agent enroll'],
    }
  }
}
