# frozen_string_literal: true

require 'spec_helper'

# Puppet's Resource API defines this namespace when it loads the provider.
module Puppet::Provider::FerrofabAttachment; end
require 'puppet/type/ferrofab_attachment'
require 'puppet/provider/ferrofab_attachment/ferrofab_attachment'

RSpec.describe Puppet::Provider::FerrofabAttachment::FerrofabAttachment do
  subject(:provider) { described_class.new }

  let(:context) { instance_double('Puppet::ResourceApi::BaseContext', 'context') }
  let(:ok) { instance_double('Process::Status', success?: true, exitstatus: 0) }
  let(:failed) { instance_double('Process::Status', success?: false, exitstatus: 1) }
  let(:agent) { '/usr/local/bin/ferrofab-agent' }

  before(:each) do
    allow(context).to receive(:debug)
    allow(context).to receive(:type).and_return(Puppet::Type.type(:ferrofab_attachment).type_definition)
    allow(provider).to receive(:agent_binary).and_return(agent)
    allow(provider).to receive(:find_agent_binary).and_return(agent)
    ENV.delete('FERROFAB_AGENT_CONFIG')
  end

  # Stubs one CLI call: `ferrofab-agent ARGS --json` answers with a fixture.
  def stub_cli(args, fixture, status = ok, stderr = '')
    expect(provider).to receive(:run_cli).with([agent] + args + ['--json']).and_return([cli_fixture(fixture), stderr, status])
  end

  describe '#get' do
    it 'lists every attachment in one call' do
      stub_cli(['attachments'], 'attachments')
      expect(provider.get(context)).to eq [
        { volume: 'scratch', ensure: 'present', access_mode: 'read-write', read_only: false, path: '/run/ferrofab/volumes/scratch' },
        { volume: 'atlas', ensure: 'present', access_mode: 'read-only', read_only: true, path: '/run/ferrofab/volumes/atlas' },
      ]
    end

    it 'filters to the names Puppet asks for (simple_get_filter), still in one call' do
      stub_cli(['attachments'], 'attachments')
      expect(provider.get(context, ['atlas', 'missing'])).to eq [
        { volume: 'atlas', ensure: 'present', access_mode: 'read-only', read_only: true, path: '/run/ferrofab/volumes/atlas' },
      ]
    end

    it 'returns all for an empty filter (puppet resource)' do
      stub_cli(['attachments'], 'attachments')
      expect(provider.get(context, []).map { |r| r[:volume] }).to eq(['scratch', 'atlas'])
    end

    it 'returns nothing when nothing is attached' do
      stub_cli(['attachments'], 'attachments_empty')
      expect(provider.get(context, ['scratch'])).to eq([])
    end

    it 'passes FERROFAB_AGENT_CONFIG as --config' do
      ENV['FERROFAB_AGENT_CONFIG'] = '/opt/ff/agent.toml'
      stub_cli(['--config', '/opt/ff/agent.toml', 'attachments'], 'attachments_empty')
      expect(provider.get(context)).to eq([])
    ensure
      ENV.delete('FERROFAB_AGENT_CONFIG')
    end

    it 'lists nothing when the agent is not running (a stopped host: purge has nothing to do)' do
      stub_cli(['attachments'], 'error_unreachable', failed)
      expect(provider.get(context)).to eq([])
    end

    it 'lists nothing when the agent config does not exist yet (not enrolled)' do
      stub_cli(['attachments'], 'error_config_missing', failed)
      expect(provider.get(context)).to eq([])
    end

    it 'lists nothing when the agent is not installed (a fresh host), without running anything' do
      allow(provider).to receive(:find_agent_binary).and_return(nil)
      expect(provider).not_to receive(:run_cli)
      expect(provider.get(context)).to eq([])
    end

    it 'lists nothing when the binary vanished before it could run' do
      expect(provider).to receive(:run_cli).and_raise(described_class::AgentAbsent, 'cannot run /usr/local/bin/ferrofab-agent: No such file or directory')
      expect(provider.get(context)).to eq([])
    end

    it 'still fails on other errors of the agent (a broken config is not "nothing attached")' do
      stub_cli(['attachments'], 'error_refused', failed)
      expect { provider.get(context) }.to raise_error(Puppet::ResourceError, %r{ferrofab-agent attachments failed \(controller_refused\)})
    end

    it 'refuses an unknown schema version' do
      stub_cli(['attachments'], 'schema2')
      expect { provider.get(context) }.to raise_error(Puppet::ResourceError, %r{unsupported schema_version 2})
    end

    it 'reports stderr when the output is not JSON' do
      expect(provider).to receive(:run_cli).and_return(['', "ferrofab-agent: config key `node`: bad\n", failed])
      expect { provider.get(context) }.to raise_error(Puppet::ResourceError, %r{failed \(exit 1\): ferrofab-agent: config key `node`: bad})
    end

    it 'refuses output that is not a JSON object' do
      expect(provider).to receive(:run_cli).and_return(['[1,2]', '', ok])
      expect { provider.get(context) }.to raise_error(Puppet::ResourceError, %r{not a JSON object})
    end
  end

  describe '#set' do
    before(:each) do
      allow(context).to receive(:creating).and_yield
      allow(context).to receive(:updating).and_yield
      allow(context).to receive(:deleting).and_yield
    end

    it 'attaches an absent volume with its timeout' do
      stub_cli(['attach', 'scratch', '--timeout', '90s'], 'attach')
      provider.set(context, 'scratch' => {
                     is: { volume: 'scratch', ensure: 'absent' },
                     should: { volume: 'scratch', ensure: 'present', read_only: false, wait_timeout: 90 },
                   })
      expect(context).to have_received(:creating).with('scratch')
    end

    it 'attaches read-only when asked' do
      stub_cli(['attach', 'atlas', '--timeout', '60s', '--read-only'], 'attach')
      provider.set(context, 'atlas' => { is: nil, should: { volume: 'atlas', ensure: 'present', read_only: true } })
    end

    it 'detaches a present volume that should be absent' do
      stub_cli(['detach', 'scratch', '--timeout', '60s'], 'detach')
      provider.set(context, 'scratch' => {
                     is: { volume: 'scratch', ensure: 'present', read_only: false },
                     should: { volume: 'scratch', ensure: 'absent', wait_timeout: 60 },
                   })
      expect(context).to have_received(:deleting).with('scratch')
    end

    it 'attaches with an explicit access mode (read-write-many)' do
      stub_cli(['attach', 'gfs', '--timeout', '60s', '--access-mode', 'read-write-many'], 'attach')
      provider.set(context, 'gfs' => { is: nil, should: { volume: 'gfs', ensure: 'present', access_mode: 'read-write-many', read_only: false } })
    end

    it 'makes read_only follow access_mode' do
      r = provider.canonicalize(context, [{ volume: 'a', access_mode: 'read-only', read_only: false },
                                          { volume: 'b', access_mode: 'read-write-many', read_only: true },
                                          { volume: 'c', read_only: true }])
      expect(r.map { |x| x[:read_only] }).to eq([true, false, true])
    end

    it 'changes the access mode by detaching and attaching again' do
      stub_cli(['detach', 'scratch', '--timeout', '60s'], 'detach')
      stub_cli(['attach', 'scratch', '--timeout', '60s', '--read-only'], 'attach')
      provider.set(context, 'scratch' => {
                     is: { volume: 'scratch', ensure: 'present', read_only: false },
                     should: { volume: 'scratch', ensure: 'present', read_only: true },
                   })
      expect(context).to have_received(:updating).with('scratch')
    end

    it "fails the resource with the controller's reason on a refusal" do
      stub_cli(['attach', 'secret', '--timeout', '60s'], 'error_refused', failed)
      expect {
        provider.create(context, 'secret', volume: 'secret', ensure: 'present', read_only: false)
      }.to raise_error(Puppet::ResourceError, %r{ferrofab-agent attach secret failed \(controller_refused\): controller refused CreateAttachment: invalid spec.volume: volume "secret" does not exist or is not granted to node ws7})
    end

    it 'fails an attach clearly when the agent is not running' do
      stub_cli(['attach', 'scratch', '--timeout', '60s'], 'error_unreachable', failed)
      expect {
        provider.create(context, 'scratch', volume: 'scratch', ensure: 'present', read_only: false)
      }.to raise_error(Puppet::ResourceError, %r{ferrofab-agent attach scratch failed \(agent_unreachable\): .*is ferrofab-agent running})
    end

    it 'fails an attach clearly when the agent is not installed' do
      allow(provider).to receive(:agent_binary).and_call_original
      allow(provider).to receive(:find_agent_binary).and_return(nil)
      expect {
        provider.create(context, 'scratch', volume: 'scratch', ensure: 'present', read_only: false)
      }.to raise_error(Puppet::ResourceError, %r{ferrofab-agent not found.*class ferrofab::agent})
    end

    it 'does nothing for an absent volume that should stay absent' do
      expect(provider).not_to receive(:run_cli)
      provider.set(context, 'gone' => { is: { volume: 'gone', ensure: 'absent' }, should: { volume: 'gone', ensure: 'absent' } })
    end
  end

  describe '#agent_binary' do
    before(:each) do
      allow(provider).to receive(:agent_binary).and_call_original
      allow(provider).to receive(:find_agent_binary).and_call_original
    end

    it 'prefers FERROFAB_AGENT_BIN' do
      ENV['FERROFAB_AGENT_BIN'] = '/opt/ff/bin/ferrofab-agent'
      allow(File).to receive(:executable?).and_call_original
      allow(File).to receive(:executable?).with('/opt/ff/bin/ferrofab-agent').and_return(true)
      expect(provider.agent_binary).to eq('/opt/ff/bin/ferrofab-agent')
    ensure
      ENV.delete('FERROFAB_AGENT_BIN')
    end

    it 'finds the binary on PATH' do
      Dir.mktmpdir do |dir|
        bin = File.join(dir, 'ferrofab-agent')
        File.write(bin, "#!/bin/sh\n")
        File.chmod(0o755, bin)
        old = ENV['PATH']
        ENV['PATH'] = dir
        begin
          expect(provider.agent_binary).to eq(bin)
        ensure
          ENV['PATH'] = old
        end
      end
    end

    it 'says how to fix a missing binary' do
      allow(File).to receive(:executable?).and_return(false)
      expect { provider.agent_binary }.to raise_error(Puppet::ResourceError, %r{ferrofab-agent not found.*class ferrofab::agent})
    end
  end
end
