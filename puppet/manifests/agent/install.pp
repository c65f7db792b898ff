# @summary Installs the agent binary from a package or a file source.
#
# @api private
class ferrofab::agent::install {
  assert_private()
  $agent = $ferrofab::agent::binary_source ? {
    undef   => 'package',
    default => 'file',
  }
  if $agent == 'package' {
    package { $ferrofab::agent::package_name:
      ensure => $ferrofab::agent::package_ensure,
    }
  } else {
    $checksum = $ferrofab::agent::binary_checksum ? {
      undef   => {},
      default => { 'checksum' => 'sha256', 'checksum_value' => $ferrofab::agent::binary_checksum },
    }
    file { $ferrofab::agent::binary:
      ensure => file,
      source => $ferrofab::agent::binary_source,
      owner  => 'root',
      group  => 'root',
      mode   => '0755',
      *      => $checksum,
    }
  }
}
