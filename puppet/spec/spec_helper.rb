# frozen_string_literal: true

# Offline spec setup with Debian's packages only (no PDK, no
# puppetlabs_spec_helper): rspec-puppet for the class, plain rspec for the
# type and provider. Run with `rspec --pattern 'spec/{classes,defines,unit}/**/*_spec.rb'`
# from the module root (tests/suites/puppet.sh does).

# rspec mocks (`allow`, `instance_double`), not mocha.
RSpec.configure { |c| c.mock_with :rspec }

require 'fileutils'
require 'tmpdir'
require 'rspec-puppet'
# The Resource API's transport code needs hocon; rspec-puppet compiles with
# a load path where Puppet's autoloader cannot find it, so load it first.
require 'hocon'
require 'hocon/config_syntax'

module_root = File.expand_path('..', __dir__)
$LOAD_PATH.unshift(File.join(module_root, 'lib'))

# The module directory is `puppet/`, so Puppet cannot find it by name:
# link it as `ferrofab` into a throwaway modulepath next to Debian's stdlib.
# A temporary directory (not spec/fixtures) keeps rspec from recursing into
# the link.
modules = Dir.mktmpdir('ferrofab-spec-modules')
File.symlink(module_root, File.join(modules, 'ferrofab'))
at_exit { FileUtils.rm_rf(modules) }

RSpec.configure do |c|
  c.setup_fixtures = false
  c.module_path = [modules, '/usr/share/puppet/modules'].join(File::PATH_SEPARATOR)
  c.manifest = File.join(modules, 'site.pp')
  c.strict_variables = true
  c.default_facts = {
    os: { 'family' => 'Debian', 'name' => 'Debian', 'release' => { 'major' => '12' } },
    osfamily: 'Debian',
    operatingsystem: 'Debian',
    kernel: 'Linux',
    path: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    networking: { 'hostname' => 'ws7', 'fqdn' => 'ws7.lab.example' },
    service_provider: 'systemd',
  }
end

# The JSON document of a fixture in spec/fixtures/cli.
def cli_fixture(name)
  File.read(File.join(__dir__, 'fixtures', 'cli', "#{name}.json"))
end
