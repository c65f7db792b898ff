# frozen_string_literal: true

require 'puppet/resource_api'

Puppet::ResourceApi.register_type(
  name: 'ferrofab_attachment',
  docs: <<-EOS,
@summary Attaches a ferrofab volume to this workstation.

A `ferrofab_attachment` asks the local ferrofab agent to attach a volume
to this node and waits until the volume is exposed as a file (built-in
driver) or block device. The provider runs `ferrofab-agent attachments|
attach|detach --json`: the agent talks to the controller with the node's
own certificate, so Puppet needs no credentials of its own.

A refusal from the controller (volume not granted to this node, over
quota, unknown volume) fails the resource with the controller's reason;
the other resources of the run still apply.

The provider runs `ferrofab-agent` from `PATH` (then `/usr/local/bin`,
`/usr/bin`), or the binary named by the environment variable
`FERROFAB_AGENT_BIN`; `FERROFAB_AGENT_CONFIG` selects another agent config
file than `/etc/ferrofab/agent.toml` (the CLI finds the agent's socket
there).

Access modes (`access_mode`): `read-write` (the default: read-write by
this node only; the controller refuses it while another node has the volume
attached), `read-only` (any number of nodes; the storage node refuses the
node's writes) and `read-write-many` (several writers at once: only for
clustered filesystems such as GFS2 or OCFS2). A refused attach fails the
resource with the reason. `read_only => true` is the older spelling of
`access_mode => 'read-only'`; with `access_mode` set, `read_only` follows it.
A change of the access mode on an attached volume detaches and attaches it
again. `--noop` never calls attach or detach.

Moving a read-write volume to another workstation: declare it `absent` on
the old node and `present` on the new one. The new node's attach is refused
until the old node has detached (its next Puppet run), so there is never a
moment with two writers; the new node succeeds on its run after that. For a
move in one step (or away from a node that is down), an administrator runs
`ferrofab volume move VOLUME --to NODE [--force]`; the new node's resource
then finds the volume attached, and the old node's `present` would be
refused, so update both manifests.

Where the agent cannot answer yet (its binary is not installed, or it is
not running), the provider lists no attachments: `puppet resource` and
`resources { 'ferrofab_attachment': purge => true }` then have nothing to
do, `ensure => absent` is in sync, and only a resource that needs an attach
fails, saying the agent is not there.

A failed attach or detach is reported as a failed change only: the run's
report counts it as a failure, not as a change, so `--detailed-exitcodes`
gives 4, not 6.

@example Attach two volumes, one of them read-only
  ferrofab_attachment { 'lightsheet-scratch': ensure => present }
  ferrofab_attachment { 'reference-atlas':
    ensure      => present,
    access_mode => 'read-only',
  }

@example Detach a volume
  ferrofab_attachment { 'old-scratch': ensure => absent }
EOS
  features: ['simple_get_filter', 'canonicalize'],
  autorequire: {
    # The packaged units (one per role) and the unit class ferrofab::agent
    # writes with binary_source.
    service: ['ferrofab-agent-workstation', 'ferrofab-agent-storage', 'ferrofab-agent'],
    exec: 'ferrofab-agent enroll',
  },
  attributes: {
    ensure: {
      type: 'Enum[present, absent]',
      desc: 'Whether the volume is attached to this node.',
      default: 'present',
    },
    volume: {
      # Core Puppet types only: stdlib types fail in rspec-puppet's catalog
      # conversion (see puppet/README.md, Limitations).
      type: 'Pattern[/\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\z/]',
      desc: 'The volume to attach: a ferrofab object name (lowercase letters, digits and "-", at most 63 characters).',
      behaviour: :namevar,
    },
    access_mode: {
      type: "Optional[Enum['read-write', 'read-only', 'read-write-many']]",
      desc: "How this node may use the volume: `read-write` (this node only), `read-only` (any number of nodes) or `read-write-many` (several writers: clustered filesystems only). Unset: decided by `read_only`. Changing it on an attached volume detaches and attaches it again.",
    },
    read_only: {
      type: 'Boolean',
      desc: "Attach read-only (the older spelling of `access_mode => 'read-only'`; follows `access_mode` when that is set). Changing it on an attached volume detaches and attaches it again.",
      default: false,
    },
    path: {
      type: 'String',
      desc: "Where the volume is exposed on this node (a file in the agent's expose_dir for the built-in driver).",
      behaviour: :read_only,
    },
    wait_timeout: {
      type: 'Integer[1, 86400]',
      desc: 'Seconds to wait for an attach or detach to complete before failing the resource.',
      default: 60,
      behaviour: :parameter,
    },
  },
)

# The Resource API 1.8 glue applies a resource in `flush`, after Puppet has
# already recorded the property change as successful, so a refused attach
# showed up both as a change and as a failure (exit code 6). Doing the work
# while the property itself syncs makes a failure fail that change alone
# (exit code 4); the glue's own flush afterwards finds nothing left to do.
Puppet::Type.type(:ferrofab_attachment).properties.each do |property|
  property.class_eval do
    def set(value)
      super
      resource.flush
    end
  end
end
