# frozen_string_literal: true

require 'spec_helper'

describe 'ferrofab::agent' do
  let(:endpoint) { 'https://ctl.lab.example:7443' }
  let(:minimal) { { controller_endpoints: [endpoint] } }

  context 'with only the controller endpoint' do
    let(:params) { minimal }

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_package('ferrofab-agent').with_ensure('installed') }
    it { is_expected.to contain_file('/etc/ferrofab').with_ensure('directory') }

    it 'writes the TOML config from the parameters' do
      is_expected.to contain_file('/etc/ferrofab/agent.toml')
        .with_mode('0644')
        .with_content(%r{^node = "ws7"$})
        .with_content(%r{^roles = \["workstation"\]$})
        .with_content(%r{^controller_endpoints = \["https://ctl\.lab\.example:7443"\]$})
        .with_content(%r{^data_path = "builtin"$})
        .with_content(%r{^expose_dir = "/run/ferrofab/volumes"$})
        .with_content(%r{^api_socket = "/run/ferrofab/agent\.sock"$})
        .with_content(%r{^\[tls\]$})
        .with_content(%r{^key = "/etc/ferrofab/node\.key"$})
        .without_content(%r{server_name|metrics_listen})
    end

    it 'uses the unit the package ships for the workstation role and writes none' do
      is_expected.not_to contain_file('/etc/systemd/system/ferrofab-agent.service')
      is_expected.not_to contain_service('ferrofab-agent')
    end

    it 'runs the service and restarts it on restart-digest or package changes' do
      is_expected.to contain_service('ferrofab-agent-workstation')
        .with_ensure('running')
        .with_enable(true)
        .that_subscribes_to('File[/etc/ferrofab/agent.toml.restart-digest]')
      is_expected.to contain_class('ferrofab::agent::install').that_notifies('Class[ferrofab::agent::service]')
    end

    it 'does not restart the service for the config file itself (the agent reloads it)' do
      is_expected.to contain_class('ferrofab::agent::config').that_comes_before('Class[ferrofab::agent::service]')
      is_expected.not_to contain_class('ferrofab::agent::config').that_notifies('Class[ferrofab::agent::service]')
      is_expected.not_to contain_file('/etc/ferrofab/agent.toml').that_notifies('Service[ferrofab-agent-workstation]')
      is_expected.to contain_file('/etc/ferrofab/agent.toml.restart-digest').with_content(%r{\A# Managed by Puppet.*\n[0-9a-f]{64}\n\z})
    end

    it 'does not enroll without a token' do
      is_expected.not_to contain_exec('ferrofab-agent enroll')
      is_expected.not_to contain_file('/etc/ferrofab/ca.crt')
    end
  end

  describe 'the restart digest' do
    # Two catalogs in one example: `params` reads @params (not a memoized
    # `let`), and rspec-puppet caches catalogs by their manifest, so each
    # set compiles afresh.
    def params
      @params
    end

    def digest_with(extra)
      @params = minimal.merge(extra)
      load_catalogue(:class).resource('File', '/etc/ferrofab/agent.toml.restart-digest')[:content]
    end

    {
      'log_level' => [{ log_level: 'info' }, { log_level: 'ferrofab_agent=debug' }, :same],
      'resync_interval' => [{ resync_interval: '30s' }, { resync_interval: '5s' }, :same],
      'metrics_listen' => [{}, { metrics_listen: '127.0.0.1:9478' }, :different],
      'controller_endpoints' => [{}, { controller_endpoints: ['https://ctl2.lab.example:7443'] }, :different],
      'pools' => [{}, { pools: { 'p' => { 'path' => '/srv/p' } } }, :different],
      'expose_dir' => [{}, { expose_dir: '/srv/volumes' }, :different],
      'ca_cert' => [{}, { ca_cert: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n" }, :different],
    }.each do |key, (a, b, want)|
      it "#{want == :same ? 'stays the same (live, no restart)' : 'changes (restart)'} when #{key} changes" do
        first = digest_with(a)
        second = digest_with(b)
        expect(first).to match(%r{\n[0-9a-f]{64}\n\z})
        if want == :same
          expect(second).to eq(first)
        else
          expect(second).not_to eq(first)
        end
      end
    end
  end

  context 'with attachments from Hiera' do
    let(:params) do
      minimal.merge(attachments: {
                      'scratch' => {},
                      'atlas' => { 'read_only' => true, 'wait_timeout' => 120 },
                      'old' => { 'ensure' => 'absent' },
                    })
    end

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_ferrofab_attachment('scratch').that_requires('Class[ferrofab::agent::service]') }
    it { is_expected.to contain_ferrofab_attachment('atlas').with_read_only(true).with_wait_timeout(120) }
    it { is_expected.to contain_ferrofab_attachment('old').with_ensure('absent') }
  end

  context 'with filesystems from Hiera' do
    let(:params) do
      minimal.merge(attachments: { 'scratch' => {}, 'old' => { 'ensure' => 'absent' } },
                    filesystems: {
                      'scratch' => { 'mountpoint' => '/data/scratch', 'mode' => '0775' },
                      'raw' => { 'volume' => 'old', 'mountpoint' => '/data/raw', 'ensure' => 'absent' },
                    })
    end

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_file('/usr/local/sbin/ferrofab-filesystem').with_ensure('file').with_mode('0755') }
    it { is_expected.to contain_ferrofab__filesystem('scratch').with_mountpoint('/data/scratch').with_mode('0775') }

    it 'mounts after the attachment, unmounts before the detach' do
      is_expected.to contain_exec('ferrofab::filesystem scratch').that_requires('Ferrofab_attachment[scratch]')
      is_expected.to contain_exec('ferrofab::filesystem raw').that_comes_before('Ferrofab_attachment[old]')
    end
  end

  context 'with a filesystem without a mount point' do
    let(:params) { minimal.merge(filesystems: { 'scratch' => { 'fstype' => 'ext4' } }) }

    it { is_expected.to compile.and_raise_error(%r{mountpoint}) }
  end

  context 'with ensure => absent' do
    let(:params) do
      minimal.merge(ensure: 'absent', attachments: { 'scratch' => {} },
                    delete_node: { 'cli' => '/usr/bin/ferrofab', 'config' => '/root/admin.toml' })
    end

    it { is_expected.to compile.with_all_deps }
    it { is_expected.not_to contain_ferrofab_attachment('scratch') }
    it { is_expected.not_to contain_class('ferrofab::agent::service') }

    it 'detaches everything through the running agent before stopping it' do
      is_expected.to contain_exec('ferrofab-agent detach all')
        .with_onlyif(%r{ferrofab-agent --config /etc/ferrofab/agent\.toml attachments})
        .with_command(%r{detach "\$v" --timeout 60s})
      is_expected.to contain_service('ferrofab-agent-workstation').with_ensure('stopped').with_enable(false)
                                                                 .that_requires('Exec[ferrofab-agent detach all]')
    end

    it 'removes the config, keys, state and package (with its units) after the stop' do
      is_expected.not_to contain_file('/etc/systemd/system/ferrofab-agent.service')
      ['/etc/ferrofab/agent.toml', '/etc/ferrofab/agent.toml.restart-digest',
       '/etc/ferrofab/ca.crt', '/etc/ferrofab/node.crt', '/etc/ferrofab/node.key', '/run/ferrofab/agent.sock'].each do |f|
        is_expected.to contain_file(f).with_ensure('absent').that_requires('Service[ferrofab-agent-workstation]')
      end
      is_expected.to contain_file('/var/lib/ferrofab/agent').with_ensure('absent').with_force(true)
      is_expected.to contain_package('ferrofab-agent').with_ensure('absent').that_requires('Service[ferrofab-agent-workstation]')
      is_expected.to contain_exec('ferrofab-agent rmdir /run/ferrofab/volumes').that_requires('Service[ferrofab-agent-workstation]')
      ['/etc/ferrofab', '/var/lib/ferrofab', '/run/ferrofab'].each do |d|
        is_expected.to contain_exec("ferrofab-agent rmdir #{d}").with_command("rmdir #{d}")
      end
    end

    it 'first unmounts every filesystem the module mounted and detaches their loop devices' do
      is_expected.to contain_exec('ferrofab-filesystem remove-all')
        .with_command('command /usr/local/sbin/ferrofab-filesystem --state-dir /var/lib/ferrofab/filesystems remove-all')
        .with_onlyif(%r{ls -A /var/lib/ferrofab/filesystems})
        .that_comes_before('Exec[ferrofab-agent detach all]')
      is_expected.to contain_file('/usr/local/sbin/ferrofab-filesystem').with_ensure('absent')
                                                                      .that_requires('Exec[ferrofab-filesystem remove-all]')
      is_expected.to contain_file('/var/lib/ferrofab/filesystems').with_ensure('absent').with_force(true)
    end

    it 'stops the data-path holder (when there is one) after the service, before removing files' do
      is_expected.to contain_exec('ferrofab-agent holder stop')
        .with_command('command /usr/bin/ferrofab-agent --config /etc/ferrofab/agent.toml holder stop --state-dir /var/lib/ferrofab/agent --timeout 60s')
        .with_onlyif('test -S /var/lib/ferrofab/agent/holder.sock')
        .that_requires('Service[ferrofab-agent-workstation]')
      is_expected.to contain_file('/var/lib/ferrofab/agent').that_requires('Exec[ferrofab-agent holder stop]')
      is_expected.to contain_package('ferrofab-agent').that_requires('Exec[ferrofab-agent holder stop]')
    end

    it 'deletes the node from the controller after the stop' do
      is_expected.to contain_exec('ferrofab node delete')
        .with_command('/usr/bin/ferrofab --config /root/admin.toml node delete ws7')
        .with_onlyif(%r{node get ws7})
        .that_requires('Service[ferrofab-agent-workstation]')
    end
  end

  context 'with ensure => absent, a binary install and no systemd' do
    let(:params) do
      minimal.merge(ensure: 'absent', binary_source: '/srv/ferrofab-agent', service_provider: 'base',
                    service_options: { 'stop' => '/bin/svc stop', 'status' => '/bin/svc status' })
    end

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_file('/usr/local/bin/ferrofab-agent').with_ensure('absent') }
    it { is_expected.not_to contain_package('ferrofab-agent') }
    it { is_expected.not_to contain_file('/etc/systemd/system/ferrofab-agent.service') }
    it { is_expected.not_to contain_exec('ferrofab node delete') }
    it { is_expected.to contain_service('ferrofab-agent').with_provider('base').with_stop('/bin/svc stop') }
  end

  context 'with a bad attachment' do
    let(:params) { minimal.merge(attachments: { 'scratch' => { 'mode' => 'rw' } }) }

    it { is_expected.to compile.and_raise_error(%r{attachments}) }
  end

  context 'with a bootstrap token and the CA' do
    let(:params) do
      minimal.merge(
        bootstrap_token: sensitive('tok-123'),
        ca_cert: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        roles: ['workstation', 'storage'],
        data_addresses: ['10.0.0.5:4420'],
      )
    end

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_file('/etc/ferrofab/ca.crt').with_content(%r{BEGIN CERTIFICATE}) }

    it 'enrolls once, guarded by the node certificate, with the token kept sensitive' do
      exec = catalogue.resource('Exec', 'ferrofab-agent enroll')
      expect(exec).not_to be_nil
      expect(exec[:creates]).to eq('/etc/ferrofab/node.crt')
      # The catalog keeps the value and marks it sensitive: Puppet redacts
      # it from logs and reports.
      expect(exec.sensitive_parameters).to include(:command)
      text = exec[:command]
      expect(text).to include('/usr/bin/ferrofab-agent --config /etc/ferrofab/agent.toml enroll --keep-config')
      expect(text).to include('--controller https://ctl.lab.example:7443')
      expect(text).to include('--ca /etc/ferrofab/ca.crt --node ws7 --roles storage,workstation')
      expect(text).to include('--data-address 10.0.0.5:4420')
      expect(text).to end_with('--token tok-123')
    end

    it 'orders config, enrollment and service' do
      is_expected.to contain_class('ferrofab::agent::config').that_comes_before('Class[ferrofab::agent::enroll]')
      is_expected.to contain_class('ferrofab::agent::enroll').that_comes_before('Class[ferrofab::agent::service]')
      is_expected.to contain_file('/etc/ferrofab/node.key').with_mode('0600').that_requires('Exec[ferrofab-agent enroll]')
    end
  end

  context 'installed from a binary URL, storage role, custom paths' do
    let(:params) do
      minimal.merge(
        node_name: 'stor-1',
        roles: ['storage'],
        pools: { 'fast' => { 'path' => '/srv/ferrofab/fast', 'provisioning' => 'thick' } },
        binary_source: 'https://artifacts.lab.example/ferrofab-agent',
        binary_checksum: 'a' * 64,
        metrics_listen: '0.0.0.0:9478',
        tls_server_name: 'ctl.lab.example',
        config_path: '/opt/ff/agent.toml',
        driver: 'kernel',
      )
    end

    it { is_expected.to compile.with_all_deps }
    it { is_expected.not_to contain_package('ferrofab-agent') }

    it 'installs the binary from the source with its checksum' do
      is_expected.to contain_file('/usr/local/bin/ferrofab-agent')
        .with_source('https://artifacts.lab.example/ferrofab-agent')
        .with_checksum('sha256')
        .with_checksum_value('a' * 64)
        .with_mode('0755')
        .that_notifies('Class[ferrofab::agent::service]')
    end

    it 'writes pools, metrics, server name and driver' do
      is_expected.to contain_file('/opt/ff/agent.toml')
        .with_content(%r{^node = "stor-1"$})
        .with_content(%r{^data_path = "kernel"$})
        .with_content(%r{^metrics_listen = "0\.0\.0\.0:9478"$})
        .with_content(%r{^server_name = "ctl\.lab\.example"$})
        .with_content(%r{^\[pools\.fast\]\npath = "/srv/ferrofab/fast"\nprovisioning = "thick"$})
    end

    it { is_expected.to contain_file('/etc/systemd/system/ferrofab-agent.service').with_content(%r{^ExecStart=/usr/local/bin/ferrofab-agent --config /opt/ff/agent\.toml run$}) }
  end

  context 'without systemd (base provider with commands)' do
    let(:params) do
      minimal.merge(
        service_provider: 'base',
        service_options: { 'start' => '/bin/svc start', 'stop' => '/bin/svc stop', 'status' => '/bin/svc status' },
      )
    end

    it do
      is_expected.to contain_service('ferrofab-agent-workstation')
        .with_provider('base')
        .with_start('/bin/svc start')
        .with_status('/bin/svc status')
    end
    it { is_expected.not_to contain_file('/etc/systemd/system/ferrofab-agent.service') }
  end

  context 'with service_manage false' do
    let(:params) { minimal.merge(service_manage: false) }

    it { is_expected.not_to contain_service('ferrofab-agent-workstation') }
    it { is_expected.not_to contain_file('/etc/systemd/system/ferrofab-agent.service') }
  end

  context 'with the storage role from the package' do
    let(:params) { minimal.merge(roles: ['storage']) }

    it { is_expected.to contain_service('ferrofab-agent-storage').with_ensure('running') }
    it { is_expected.not_to contain_file('/etc/systemd/system/ferrofab-agent.service') }
  end

  context 'with both roles from the package' do
    let(:params) { minimal.merge(roles: ['storage', 'workstation']) }

    it { is_expected.to contain_service('ferrofab-agent-workstation') }
  end

  context 'with the package and unit_manage (a unit of its own)' do
    let(:params) { minimal.merge(unit_manage: true, service_name: 'ferrofab-agent') }

    it do
      is_expected.to contain_file('/etc/systemd/system/ferrofab-agent.service')
        .with_content(%r{^ExecStart=/usr/bin/ferrofab-agent --config /etc/ferrofab/agent\.toml run$})
        .that_notifies('Service[ferrofab-agent]')
    end
  end

  context 'the old way: a binary from binary_source and a unit of its own' do
    let(:params) { minimal.merge(binary_source: '/srv/ferrofab-agent') }

    it { is_expected.not_to contain_package('ferrofab-agent') }
    it { is_expected.not_to contain_service('ferrofab-agent-workstation') }

    it 'installs a systemd unit that runs the agent with this config' do
      is_expected.to contain_file('/etc/systemd/system/ferrofab-agent.service')
        .with_content(%r{^ExecStart=/usr/local/bin/ferrofab-agent --config /etc/ferrofab/agent\.toml run$})
        .with_content(%r{^ExecStartPost=.*ferrofab-agent --config /etc/ferrofab/agent\.toml status})
        .with_content(%r{^Restart=on-failure$})
        .with_content(%r{^WantedBy=multi-user\.target$})
    end

    it 'restarts the service on unit changes' do
      is_expected.to contain_service('ferrofab-agent').with_ensure('running')
      is_expected.to contain_file('/etc/systemd/system/ferrofab-agent.service').that_notifies('Service[ferrofab-agent]')
    end
  end

  context 'with bad parameters' do
    [
      [{ controller_endpoints: [] }, %r{controller_endpoints}],
      [{ controller_endpoints: ['http://plain:7443'] }, %r{controller_endpoints}],
      [{ controller_endpoints: ['https://c:1'], node_name: 'WS_7' }, %r{node_name}],
      [{ controller_endpoints: ['https://c:1'], roles: ['gpu'] }, %r{roles}],
      [{ controller_endpoints: ['https://c:1'], bootstrap_token: 'plain-text' }, %r{bootstrap_token}],
      [{ controller_endpoints: ['https://c:1'], pools: { 'p' => { 'path' => 'relative' } } }, %r{pools}],
    ].each do |bad, message|
      context "(#{bad.keys.last})" do
        let(:params) { bad }

        it { is_expected.to compile.and_raise_error(message) }
      end
    end
  end
end
