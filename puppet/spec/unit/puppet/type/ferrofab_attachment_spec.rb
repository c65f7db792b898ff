# frozen_string_literal: true

require 'spec_helper'
require 'open3'
require 'puppet/type/ferrofab_attachment'

RSpec.describe 'the ferrofab_attachment type' do
  let(:type) { Puppet::Type.type(:ferrofab_attachment) }

  it 'loads' do
    expect(type).not_to be_nil
  end

  it 'has volume as its namevar and the documented attributes' do
    definition = type.type_definition
    expect(definition.namevars).to eq([:volume])
    expect(definition.attributes.keys).to contain_exactly(:ensure, :volume, :access_mode, :read_only, :path, :wait_timeout)
    expect(definition.attributes[:path][:behaviour]).to eq(:read_only)
    expect(definition.attributes[:wait_timeout][:behaviour]).to eq(:parameter)
    expect(definition.feature?('simple_get_filter')).to be(true)
  end

  it 'autorequires the agent service under the packaged and the module-written unit names' do
    catalog = Puppet::Resource::Catalog.new
    services = ['ferrofab-agent-workstation', 'ferrofab-agent-storage', 'ferrofab-agent'].map do |name|
      Puppet::Type.type(:service).new(name: name, provider: 'base', start: '/bin/true', status: '/bin/true')
    end
    services.each { |s| catalog.add_resource(s) }
    res = type.new(volume: 'scratch')
    catalog.add_resource(res)
    sources = res.autorequire.map { |edge| edge.source.ref }
    expect(sources).to include('Service[ferrofab-agent-workstation]', 'Service[ferrofab-agent-storage]', 'Service[ferrofab-agent]')
  end

  it 'defaults to present, read-write, 60 s' do
    res = type.new(volume: 'scratch')
    expect(res[:ensure].to_s).to eq('present')
    expect(res[:read_only].to_s).to eq('false')
    expect(res[:wait_timeout]).to eq(60)
  end

  it 'accepts a full declaration' do
    res = type.new(volume: 'atlas-2', ensure: 'absent', read_only: true, wait_timeout: 300)
    expect(res[:ensure].to_s).to eq('absent')
    expect(res[:read_only].to_s).to eq('true')
    expect(res[:wait_timeout]).to eq(300)
  end

  ['Scratch', 'has_underscore', '-leading', 'trailing-', 'a' * 64, ''].each do |bad|
    it "refuses the volume name #{bad.inspect}" do
      expect { type.new(volume: bad) }.to raise_error(Puppet::ResourceError, %r{volume})
    end
  end

  it 'refuses a bad ensure' do
    expect { type.new(volume: 'v', ensure: 'mounted') }.to raise_error(Puppet::ResourceError, %r{ensure})
  end

  it 'takes the three access modes and refuses others' do
    %w[read-write read-only read-write-many].each do |m|
      expect(type.new(volume: 'v', access_mode: m)[:access_mode].to_s).to eq(m)
    end
    expect { type.new(volume: 'v', access_mode: 'write-only') }.to raise_error(Puppet::ResourceError, %r{access_mode})
  end

  it 'refuses a non-boolean read_only' do
    expect { type.new(volume: 'v', read_only: 'maybe') }.to raise_error(Puppet::ResourceError, %r{read_only})
  end

  [0, -5, 86_401, 'soon'].each do |bad|
    it "refuses wait_timeout #{bad.inspect}" do
      expect { type.new(volume: 'v', wait_timeout: bad) }.to raise_error(Puppet::ResourceError, %r{wait_timeout})
    end
  end

  it 'refuses to set the read-only path' do
    expect { type.new(volume: 'v', path: '/tmp/x') }.to raise_error(Puppet::ResourceError, %r{read-only|path})
  end
end

# A real Puppet transaction with the CLI stubbed: what the run report (and
# so --detailed-exitcodes) says about an attach.
RSpec.describe 'applying ferrofab_attachment' do
  let(:type) { Puppet::Type.type(:ferrofab_attachment) }
  let(:ok) { instance_double('Process::Status', success?: true, exitstatus: 0) }
  let(:failed) { instance_double('Process::Status', success?: false, exitstatus: 1) }

  before(:each) do
    type.new(volume: 'loader') # loads the provider
    # Any executable will do: the CLI itself is stubbed (run_cli).
    ENV['FERROFAB_AGENT_BIN'] = '/bin/true'
  end

  after(:each) { ENV.delete('FERROFAB_AGENT_BIN') }

  def stub_answers(attach_fixture, attach_status)
    # Open3, not the provider's run_cli: Puppet may load the provider file
    # again during the run, which would redefine a stubbed method.
    allow(Open3).to receive(:capture3) do |*cmd|
      if cmd.include?('attachments')
        [cli_fixture('attachments_empty'), '', ok]
      else
        [cli_fixture(attach_fixture), '', attach_status]
      end
    end
  end

  def apply(volume)
    dir = Dir.mktmpdir('ferrofab-spec-state')
    Puppet[:statedir] = dir
    Puppet[:statefile] = File.join(dir, 'state.yaml')
    Puppet[:transactionstorefile] = File.join(dir, 'transactionstore.yaml')
    res = type.new(volume: volume)
    catalog = Puppet::Resource::Catalog.new
    catalog.add_resource(res)
    transaction = catalog.apply
    transaction.report.resource_statuses[res.ref]
  end

  it 'reports a refused attach as a failure and not as a change' do
    stub_answers('error_refused', failed)
    status = apply('secret')
    expect(status.failed).to be(true)
    expect(status.changed).to be(false)
  end

  it 'reports a successful attach as a change' do
    stub_answers('attach', ok)
    status = apply('scratch')
    expect(status.failed).to be(false)
    expect(status.changed).to be(true)
  end
end
