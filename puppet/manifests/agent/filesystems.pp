# @summary Installs the `ferrofab-filesystem` helper and declares the `filesystems` hash.
#
# The helper is the check-and-repair script behind `ferrofab::filesystem`
# (puppet/files/ferrofab-filesystem). Its state directory records each loop
# device and mount it made, which is what the uninstall undoes.
#
# @api private
class ferrofab::agent::filesystems {
  assert_private()
  file { $ferrofab::agent::filesystem_helper:
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0755',
    content => file('ferrofab/ferrofab-filesystem'),
  }

  $ferrofab::agent::filesystems.each |$name, $attributes| {
    ferrofab::filesystem { $name:
      * => $attributes,
    }
  }
}
