# frozen_string_literal: true

require 'json'
require 'open3'
require 'puppet/resource_api/simple_provider'

# Implements `ferrofab_attachment` by running the agent's local CLI.
#
# Why a CLI and not gRPC: the agent owns the node's certificate and the
# connection to the controller; Puppet only needs a stable, versioned JSON
# contract (`schema_version` 1, docs/agent.md), and the same commands serve
# operators and scripts. No constants here: Puppet may load this file twice.
class Puppet::Provider::FerrofabAttachment::FerrofabAttachment < Puppet::ResourceApi::SimpleProvider
  # Every attachment of this node in one CLI call, filtered to `names` when
  # Puppet asks for some (simple_get_filter); nil or empty means all, as
  # `puppet resource ferrofab_attachment` does.
  def get(context, names = nil)
    doc = agent_json(context, ['attachments'])
    list = doc['attachments']
    raise Puppet::ResourceError, "ferrofab-agent attachments: expected a list of attachments, got #{doc.inspect}" unless list.is_a?(Array)
    resources = list.map { |a| to_resource(a) }.compact.uniq { |r| r[:volume] }
    return resources if names.nil? || names.empty?
    resources.select { |r| names.include?(r[:volume]) }
  end

  # The change loop of SimpleProvider, keyed on our namevar `volume`
  # (SimpleProvider itself assumes a namevar called `name`).
  def set(context, changes)
    changes.each do |volume, change|
      is = change[:is] || { volume: volume, ensure: 'absent' }
      should = change[:should] || { volume: volume, ensure: 'absent' }
      apply_change(context, volume, is[:ensure].to_s, should)
    end
  end

  def create(context, volume, should)
    attach(context, volume, should)
  end

  # The agent refuses to change the access mode of an existing attachment,
  # so a read_only change is a detach followed by an attach.
  def update(context, volume, should)
    detach(context, volume, should)
    attach(context, volume, should)
  end

  def delete(context, volume, should = nil)
    detach(context, volume, should)
  end

  # Runs `ferrofab-agent ARGS --json` and returns the parsed result. A
  # failure raises with the agent's error code and message, which carries
  # the controller's reason for a refusal.
  def agent_json(context, args)
    cmd = [agent_binary] + config_args + args + ['--json']
    context.debug("running #{cmd.join(' ')}")
    stdout, stderr, status = run_cli(cmd)
    doc = parse_json(stdout)
    raise Puppet::ResourceError, failure_message(args, doc, stderr, status) unless status.success?
    check_document(args, doc, stdout)
  end

  # The command runner; specs stub it.
  def run_cli(cmd)
    Open3.capture3(*cmd)
  rescue SystemCallError => e
    raise Puppet::ResourceError, "cannot run #{cmd.first}: #{e.message}"
  end

  # The agent binary: FERROFAB_AGENT_BIN, else the first `ferrofab-agent`
  # on PATH or in the usual install directories.
  def agent_binary
    explicit = ENV['FERROFAB_AGENT_BIN']
    return explicit if explicit && !explicit.empty?
    dirs = ENV.fetch('PATH', '').split(File::PATH_SEPARATOR) + ['/usr/local/bin', '/usr/bin']
    found = dirs.map { |d| File.join(d, 'ferrofab-agent') }.find { |p| File.executable?(p) && !File.directory?(p) }
    return found if found
    raise Puppet::ResourceError,
          "ferrofab-agent not found on PATH or in /usr/local/bin, /usr/bin; install it (class ferrofab::agent) before managing ferrofab_attachment resources"
  end

  private

  def apply_change(context, volume, is_ensure, should)
    if is_ensure == 'absent' && should[:ensure].to_s == 'present'
      context.creating(volume) { create(context, volume, should) }
    elsif is_ensure == 'present' && should[:ensure].to_s == 'absent'
      context.deleting(volume) { delete(context, volume, should) }
    elsif is_ensure == 'present'
      context.updating(volume) { update(context, volume, should) }
    end
  end

  def attach(context, volume, should)
    args = ['attach', volume, '--timeout', timeout_arg(should)]
    args << '--read-only' if should[:read_only]
    agent_json(context, args)
  end

  def detach(context, volume, should)
    agent_json(context, ['detach', volume, '--timeout', timeout_arg(should)])
  end

  def timeout_arg(should)
    seconds = (should && should[:wait_timeout]) || 60
    "#{Integer(seconds)}s"
  end

  def config_args
    config = ENV['FERROFAB_AGENT_CONFIG']
    config && !config.empty? ? ['--config', config] : []
  end

  def to_resource(att)
    return nil unless att.is_a?(Hash) && att['volume'].is_a?(String)
    {
      volume: att['volume'],
      ensure: 'present',
      read_only: att['read_only'] == true,
      path: att['path'].to_s,
    }
  end

  def parse_json(text)
    JSON.parse(text)
  rescue JSON::ParserError, TypeError
    nil
  end

  def failure_message(args, doc, stderr, status)
    what = "ferrofab-agent #{args.take_while { |a| !a.start_with?('--') }.join(' ')}"
    err = doc.is_a?(Hash) ? doc['error'] : nil
    return "#{what} failed (#{err['code']}): #{err['message']}" if err.is_a?(Hash) && err['message']
    detail = stderr.to_s.strip
    detail = "no output" if detail.empty?
    "#{what} failed (exit #{status.exitstatus}): #{detail}"
  end

  def check_document(args, doc, stdout)
    unless doc.is_a?(Hash)
      raise Puppet::ResourceError, "ferrofab-agent #{args.first}: output is not a JSON object: #{stdout.to_s[0, 200].inspect}"
    end
    version = doc['schema_version']
    return doc if version == 1
    raise Puppet::ResourceError,
          "ferrofab-agent #{args.first}: unsupported schema_version #{version.inspect} (this module speaks 1); upgrade the ferrofab Puppet module"
  end
end
