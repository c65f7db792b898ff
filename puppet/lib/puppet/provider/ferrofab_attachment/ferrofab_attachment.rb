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
  #
  # An agent that is not installed or not running has nothing attached
  # that Puppet could change: the list is empty, so purging and `absent`
  # have nothing to do on a fresh or stopped host, and only an attach fails.
  def get(context, names = nil)
    doc = listing(context)
    return [] if doc.nil?
    list = doc['attachments']
    raise Puppet::ResourceError, "ferrofab-agent attachments: expected a list of attachments, got #{doc.inspect}" unless list.is_a?(Array)
    resources = list.map { |a| to_resource(a) }.compact.uniq { |r| r[:volume] }
    return resources if names.nil? || names.empty?
    resources.select { |r| names.include?(r[:volume]) }
  end

  # The `attachments` document, or nil when the agent cannot answer yet
  # (no binary, or the CLI says `agent_unreachable`, or `config_missing`:
  # not configured yet). Any other failure
  # (a broken config, an unknown schema) still raises.
  def listing(context)
    binary = find_agent_binary
    if binary.nil?
      context.debug('ferrofab-agent is not installed: no attachments')
      return nil
    end
    agent_json(context, ['attachments'], binary: binary)
  rescue AgentAbsent => e
    context.debug("#{e.message}: no attachments")
    nil
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

  # `access_mode` wins over `read_only` (its older spelling): with an
  # access mode given, `read_only` is made to agree, so the two never
  # disagree into a change on every run.
  def canonicalize(_context, resources)
    resources.each do |r|
      next unless r.is_a?(Hash) && r[:access_mode]
      r[:read_only] = (r[:access_mode].to_s == 'read-only')
    end
  end

  def create(context, volume, should)
    attach(context, volume, should)
  end

  # The agent refuses to change the access mode of an existing attachment,
  # so an access mode change is a detach followed by an attach.
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
  #
  # An agent that is not there (binary missing, `agent_unreachable`, or
  # `config_missing`: its config file does not exist yet) raises
  # AgentAbsent, a ResourceError, so callers may tell it apart.
  def agent_json(context, args, binary: nil)
    cmd = [binary || agent_binary] + config_args + args + ['--json']
    context.debug("running #{cmd.join(' ')}")
    stdout, stderr, status = run_cli(cmd)
    doc = parse_json(stdout)
    unless status.success?
      message = failure_message(args, doc, stderr, status)
      raise AgentAbsent, message if ABSENT_CODES.include?(error_code(doc))
      raise Puppet::ResourceError, message
    end
    check_document(args, doc, stdout)
  end

  # The command runner; specs stub it. A binary that vanished between the
  # lookup and the call counts as an absent agent.
  def run_cli(cmd)
    Open3.capture3(*cmd)
  rescue Errno::ENOENT => e
    raise AgentAbsent, "cannot run #{cmd.first}: #{e.message}"
  rescue SystemCallError => e
    raise Puppet::ResourceError, "cannot run #{cmd.first}: #{e.message}"
  end

  # The agent binary, or a ResourceError saying how to install it.
  def agent_binary
    found = find_agent_binary
    return found if found
    explicit = ENV['FERROFAB_AGENT_BIN']
    where = explicit && !explicit.empty? ? "at #{explicit} (FERROFAB_AGENT_BIN)" : 'on PATH or in /usr/local/bin, /usr/bin'
    raise Puppet::ResourceError,
          "ferrofab-agent not found #{where}; install it (class ferrofab::agent) before managing ferrofab_attachment resources"
  end

  # FERROFAB_AGENT_BIN when set and executable, else the first
  # `ferrofab-agent` on PATH or in the usual install directories; nil when
  # there is none.
  def find_agent_binary
    explicit = ENV['FERROFAB_AGENT_BIN']
    return (executable_file?(explicit) ? explicit : nil) if explicit && !explicit.empty?
    dirs = ENV.fetch('PATH', '').split(File::PATH_SEPARATOR) + ['/usr/local/bin', '/usr/bin']
    dirs.map { |d| File.join(d, 'ferrofab-agent') }.find { |p| executable_file?(p) }
  end

  # Raised when the agent cannot answer: not installed or not running.
  class AgentAbsent < Puppet::ResourceError; end

  # CLI error codes that mean "no agent here (yet)": not running, or its
  # config file (which names the socket) not written yet.
  ABSENT_CODES = ['agent_unreachable', 'config_missing'].freeze

  private

  def executable_file?(path)
    File.executable?(path) && !File.directory?(path)
  end

  def error_code(doc)
    err = doc.is_a?(Hash) ? doc['error'] : nil
    err.is_a?(Hash) ? err['code'] : nil
  end

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
    if should[:access_mode]
      args += ['--access-mode', should[:access_mode].to_s]
    elsif should[:read_only]
      args << '--read-only'
    end
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
    read_only = att['read_only'] == true
    mode = att['access_mode'].is_a?(String) && !att['access_mode'].empty? ? att['access_mode'] : nil
    {
      volume: att['volume'],
      ensure: 'present',
      access_mode: mode || (read_only ? 'read-only' : 'read-write'),
      read_only: read_only,
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
