# frozen_string_literal: true

require 'spec_helper'

describe 'ferrofab::filesystem' do
  let(:title) { 'scratch' }
  let(:agent) { "class { 'ferrofab::agent': controller_endpoints => ['https://ctl.lab.example:7443'] }" }
  let(:pre_condition) { agent }
  let(:params) { { mountpoint: '/data/scratch' } }
  let(:helper) { '/usr/local/sbin/ferrofab-filesystem' }
  let(:global) { "#{helper} --agent /usr/bin/ferrofab-agent --agent-config /etc/ferrofab/agent.toml --state-dir /var/lib/ferrofab/filesystems" }

  context 'with the defaults (ext4)' do
    it { is_expected.to compile.with_all_deps }

    it 'checks the mount for real each run and applies (mkfs if empty, mount, repair) only when the check fails' do
      is_expected.to contain_exec('ferrofab::filesystem scratch')
        .with_unless("#{global} check scratch --volume scratch --mountpoint /data/scratch --fstype ext4 --mkfs-options '' --mount-options '' --owner '' --group '' --mode ''")
        .with_command("#{global} apply scratch --volume scratch --mountpoint /data/scratch --fstype ext4 --mkfs-options '' --mount-options '' --owner '' --group '' --mode ''")
        .with_logoutput(true)
        .with_timeout(3600)
    end

    it 'runs after the agent service and with the helper installed' do
      is_expected.to contain_exec('ferrofab::filesystem scratch')
        .that_requires('File[/usr/local/sbin/ferrofab-filesystem]')
        .that_requires('Class[ferrofab::agent::service]')
      is_expected.to contain_file(helper).with_mode('0755').with_content(%r{\A#!/bin/bash\n# ferrofab-filesystem})
    end
  end

  context 'with xfs, options, owner and another volume' do
    let(:title) { 'raw' }
    let(:params) do
      { mountpoint: '/data/raw', volume: 'lightsheet-raw', fstype: 'xfs', mkfs_options: ['-L', 'raw data'],
        mount_options: ['noatime', 'nodiscard'], owner: 'alice', group: 'lab', mode: '2775' }
    end

    it 'passes each option, shell-quoted' do
      is_expected.to contain_exec('ferrofab::filesystem raw')
        .with_command("#{global} apply raw --volume lightsheet-raw --mountpoint /data/raw --fstype xfs --mkfs-options -L\\ raw\\ data --mount-options noatime,nodiscard --owner alice --group lab --mode 2775")
    end
  end

  context 'after its attachment' do
    let(:pre_condition) { "#{agent}\nferrofab_attachment { 'scratch': ensure => present }" }

    it { is_expected.to contain_exec('ferrofab::filesystem scratch').that_requires('Ferrofab_attachment[scratch]') }
  end

  context 'with ensure => absent' do
    let(:pre_condition) { "#{agent}\nferrofab_attachment { 'scratch': ensure => absent }" }
    let(:params) { { mountpoint: '/data/scratch', ensure: 'absent' } }

    it 'unmounts and detaches its loop device before the volume is detached' do
      is_expected.to contain_exec('ferrofab::filesystem scratch')
        .with_command(%r{ remove scratch --volume scratch --mountpoint /data/scratch })
        .with_unless(%r{ absent scratch --volume scratch --mountpoint /data/scratch })
        .that_comes_before('Ferrofab_attachment[scratch]')
    end
  end

  context 'when the agent is being removed' do
    let(:pre_condition) { "class { 'ferrofab::agent': ensure => absent, controller_endpoints => ['https://ctl.lab.example:7443'] }" }

    it 'leaves it to the uninstall (which unmounts every filesystem the module mounted)' do
      is_expected.to compile.with_all_deps
      is_expected.not_to contain_exec('ferrofab::filesystem scratch')
    end
  end

  context 'with a bad title' do
    let(:title) { 'a b' }
    let(:params) { { mountpoint: '/data/scratch', volume: 'scratch' } }

    it { is_expected.to compile.and_raise_error(%r{title must be letters}) }
  end

  context 'with a relative mount point' do
    let(:params) { { mountpoint: 'data' } }

    it { is_expected.to compile.and_raise_error(%r{mountpoint}) }
  end

  context 'without class ferrofab::agent' do
    let(:pre_condition) { '' }

    it { is_expected.to compile.and_raise_error(%r{declare class ferrofab::agent first}) }
  end
end
