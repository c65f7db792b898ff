# @summary Installs, configures, enrolls and runs the ferrofab node agent.
#
# The agent is installed from the `ferrofab-agent` Debian package by
# default, and runs under the systemd unit that package ships for the
# node's role (`ferrofab-agent-workstation` when `roles` has `workstation`,
# else `ferrofab-agent-storage`; see docs/install.md). The way of earlier
# module versions stays available: a binary path or URL (`binary_source`),
# then run under a unit this class writes (`ferrofab-agent`). Its TOML config is written from the parameters below
# with stdlib's `to_toml`. A change to the binary, to the unit or to a
# setting that needs a restart restarts the service; a change to the live
# settings only (`log_level`, `resync_interval`) does not: the agent watches
# its config file and applies them at once, without interrupting attached
# volumes.
#
# Which changes restart the agent:
#
# * **Applied live, no restart:** `log_level` and `resync_interval`.
# * **Restart:** every other setting written to the config: `node_name`,
#   `roles`, `controller_endpoints`, `pools`, `driver`, `expose_dir`,
#   `state_dir`, `api_socket`, `metrics_listen`, `data_listen`, `tls_ca`,
#   `tls_cert`, `tls_key`, `tls_server_name`; the CA's content (`ca_cert`);
#   a new binary (`binary_source`, `binary_checksum`, the package); the
#   systemd unit.
#
# The restart-requiring part is tracked by its SHA-256 in
# `<config_path>.restart-digest`, which notifies the service; the config
# file itself notifies nothing. On the first run the node enrolls once with a
# single-use bootstrap token: the agent makes its key locally, sends a CSR
# with the token and writes the key (mode 0600), the node certificate and
# the CA to the `tls_*` paths. The `exec` is guarded by the node
# certificate, so it never runs again once the node has one (the agent
# renews the certificate itself). Enrollment keeps the config Puppet wrote
# (`enroll --keep-config`), so the next run changes nothing.
#
# @example A workstation with the built-in driver
#   class { 'ferrofab::agent':
#     controller_endpoints => ['https://ctl.lab.example:7443'],
#     ca_cert              => file('profile/ferrofab/ca.crt'),
#     bootstrap_token      => Sensitive(lookup('ferrofab::bootstrap_token')),
#   }
#
# @example A storage node with one pool, installed from a URL
#   class { 'ferrofab::agent':
#     controller_endpoints => ['https://ctl.lab.example:7443'],
#     roles                => ['storage'],
#     pools                => { 'fast' => { 'path' => '/srv/ferrofab/fast', 'provisioning' => 'thin' } },
#     data_addresses       => ['10.0.0.10:4420'],
#     binary_source        => 'https://artifacts.lab.example/ferrofab/0.1.0/ferrofab-agent',
#     binary_checksum      => '5f2b…(sha256 of the binary)',
#     ca_cert              => file('profile/ferrofab/ca.crt'),
#     bootstrap_token      => Sensitive(lookup('ferrofab::bootstrap_token')),
#   }
#
# @example Remove the agent, its attachments and the node object in one run
#   class { 'ferrofab::agent':
#     ensure               => absent,
#     controller_endpoints => ['https://ctl.lab.example:7443'],
#     delete_node          => { 'cli' => '/usr/bin/ferrofab', 'config' => '/root/.config/ferrofab/admin.toml' },
#   }
#
# @param ensure
#   `present` installs and runs the agent. `absent` removes it in one run
#   (class ferrofab::agent::remove): detaches every attachment while the
#   agent still runs, stops and disables the service, optionally deletes
#   the Node object (`delete_node`), and removes the unit, the config, the
#   CA, certificate and key, the state directory, the binary or package,
#   the socket, the expose directory and the empty `ferrofab` directories.
#   `attachments` and `filesystems` are ignored then: every filesystem the
#   module mounted (`ferrofab::filesystem`) is unmounted and its loop device
#   detached first, keeping the data. A failed detach (controller down)
#   fails the run before the service stops.
# @param delete_node
#   With `ensure => absent`: delete this node's Node object from the
#   controller with the `ferrofab` CLI (`cli`) and an administrator's
#   client config (`config`); the node's own certificate may not do it.
#   Undef (default): the Node object stays.
# @param detach_timeout
#   Seconds each detach may take when removing the agent.
# @param controller_endpoints
#   Controller gRPC endpoints (`https://host:port`), tried in order. The
#   first one is used for enrollment.
# @param node_name
#   The node's name; its certificate will be `node:NAME`.
# @param roles
#   `workstation` (attaches volumes) and/or `storage` (serves pools).
# @param pools
#   Storage pools of this node: name => `{ path, provisioning }`, where
#   provisioning is `thin` (default) or `thick`.
# @param expose_dir
#   Directory where attached volumes appear (built-in driver: one FUSE mount).
# @param driver
#   Data path: `builtin` (NVMe/TCP inside the agent, volumes as files) or
#   `kernel` (Linux nvme-tcp; accepted by the config, refused by this agent
#   version).
# @param state_dir
#   Persistent state: the desired-state cache and the host NQN.
# @param api_socket
#   The agent's local API socket, used by `ferrofab_attachment`.
# @param resync_interval
#   Periodic full reconcile, e.g. `30s`.
# @param log_level
#   tracing filter, e.g. `info` or `ferrofab_agent=debug`.
# @param metrics_listen
#   `IP:PORT` of the Prometheus endpoint; none when undef.
# @param data_listen
#   `IP:PORT`s the built-in target listens on (storage); empty: the node's
#   data addresses.
# @param data_addresses
#   `HOST:PORT`s registered for the node at enrollment (storage nodes).
# @param config_path
#   The agent's config file.
# @param config_mode
#   Mode of the config file. The config names the key files but holds no
#   key material; the key itself is written mode 0600 by the agent and kept
#   so by this class.
# @param tls_ca
#   CA certificate of the controller (written from `ca_cert` when given).
# @param tls_cert
#   The node certificate; its presence means "enrolled".
# @param tls_key
#   The node's private key (mode 0600, created on the node, never leaves it).
# @param tls_server_name
#   Name to verify the controller's certificate against; default: the
#   endpoint's host.
# @param ca_cert
#   PEM text of the controller's CA. When undef, `tls_ca` must already exist.
# @param bootstrap_token
#   Single-use bootstrap token (`ferrofab node token create --node NAME`).
#   Only used while the node has no certificate.
# @param package_name
#   Package that installs the agent when `binary_source` is undef.
# @param package_ensure
#   `ensure` of that package.
# @param binary_source
#   Install the agent binary from this file `source` instead of a package:
#   an absolute path, `puppet:///` URL or `https://` URL.
# @param binary_checksum
#   SHA-256 of the binary at `binary_source`; recommended for URLs.
# @param binary_path
#   Where the agent binary is (package) or is installed (`binary_source`).
#   Default: `/usr/bin/ferrofab-agent` from a package,
#   `/usr/local/bin/ferrofab-agent` otherwise.
# @param service_manage
#   Manage the systemd unit and the service.
# @param service_name
#   Name of the service. Default: the packaged unit for the node's role
#   (`ferrofab-agent-workstation` with the workstation role, else
#   `ferrofab-agent-storage`), or `ferrofab-agent` (the unit this class
#   writes) with `binary_source`.
# @param unit_manage
#   Write the systemd unit at `unit_path` (systemd only). Default: false
#   with the package (it ships the units, sandboxed per role), true with
#   `binary_source`.
# @param service_ensure
#   `running` or `stopped`.
# @param service_enable
#   Start the service at boot.
# @param service_provider
#   Service provider; undef lets Puppet choose (systemd on Debian). Hosts
#   without systemd (containers, CI) can use `base` with `service_options`.
# @param service_options
#   Further attributes of the `service` resource, e.g. `start`, `stop` and
#   `status` commands for the `base` provider.
# @param unit_path
#   Path of the systemd unit file this class writes when `unit_manage` is
#   true and the service provider is systemd (`service_provider` undef on a
#   systemd host, or `systemd`).
# @param attachments
#   Volumes to attach (or detach), as `ferrofab_attachment` resources:
#   volume => attributes (`ensure`, `access_mode`, `read_only`,
#   `wait_timeout`), e.g. from Hiera:
#   `ferrofab::agent::attachments: { scratch: {}, atlas: { access_mode: read-only } }`.
# @param filesystems
#   Filesystems on attached volumes, as `ferrofab::filesystem` resources:
#   name => attributes (`mountpoint`, `volume` (default: the name),
#   `fstype`, `mkfs_options`, `mount_options`, `owner`, `group`, `mode`,
#   `ensure`), e.g. from Hiera:
#   `ferrofab::agent::filesystems: { scratch: { mountpoint: /data/scratch } }`.
#   Each is ordered after its volume's attachment.
# @param filesystem_helper
#   Where the `ferrofab-filesystem` helper of `ferrofab::filesystem` is
#   installed (removed again with `ensure => absent`).
# @param filesystem_state_dir
#   Where that helper records the loop devices and mounts it made (so the
#   uninstall undoes exactly those).
class ferrofab::agent (
  Array[Stdlib::HTTPSUrl, 1] $controller_endpoints,
  Enum['present', 'absent'] $ensure = 'present',
  Optional[Struct[{ cli => Stdlib::Absolutepath, config => Stdlib::Absolutepath }]] $delete_node = undef,
  Integer[1, 86400] $detach_timeout = 60,
  Pattern[/\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\z/] $node_name = $facts['networking']['hostname'],
  Array[Enum['storage', 'workstation'], 1] $roles = ['workstation'],
  Hash[Pattern[/\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\z/], Struct[{
        path                   => Stdlib::Absolutepath,
        Optional[provisioning] => Enum['thin', 'thick'],
  }]] $pools = {},
  Stdlib::Absolutepath $expose_dir = '/run/ferrofab/volumes',
  Enum['builtin', 'kernel'] $driver = 'builtin',
  Stdlib::Absolutepath $state_dir = '/var/lib/ferrofab/agent',
  Stdlib::Absolutepath $api_socket = '/run/ferrofab/agent.sock',
  Pattern[/\A[0-9]+(ms|s|m|h|d)\z/] $resync_interval = '30s',
  String[1] $log_level = 'info',
  Optional[String[1]] $metrics_listen = undef,
  Array[String[1]] $data_listen = [],
  Array[String[1]] $data_addresses = [],
  Stdlib::Absolutepath $config_path = '/etc/ferrofab/agent.toml',
  Stdlib::Filemode $config_mode = '0644',
  Stdlib::Absolutepath $tls_ca = '/etc/ferrofab/ca.crt',
  Stdlib::Absolutepath $tls_cert = '/etc/ferrofab/node.crt',
  Stdlib::Absolutepath $tls_key = '/etc/ferrofab/node.key',
  Optional[String[1]] $tls_server_name = undef,
  Optional[String[1]] $ca_cert = undef,
  Optional[Sensitive[String[1]]] $bootstrap_token = undef,
  String[1] $package_name = 'ferrofab-agent',
  String[1] $package_ensure = 'installed',
  Optional[String[1]] $binary_source = undef,
  Optional[Pattern[/\A[0-9a-f]{64}\z/]] $binary_checksum = undef,
  Optional[Stdlib::Absolutepath] $binary_path = undef,
  Boolean $service_manage = true,
  Optional[String[1]] $service_name = undef,
  Optional[Boolean] $unit_manage = undef,
  Enum['running', 'stopped'] $service_ensure = 'running',
  Boolean $service_enable = true,
  Optional[String[1]] $service_provider = undef,
  Hash[String[1], Any] $service_options = {},
  Stdlib::Absolutepath $unit_path = '/etc/systemd/system/ferrofab-agent.service',
  Hash[Pattern[/\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\z/], Struct[{
        Optional[ensure]       => Enum['present', 'absent'],
        Optional[access_mode]  => Enum['read-write', 'read-only', 'read-write-many'],
        Optional[read_only]    => Boolean,
        Optional[wait_timeout] => Integer[1, 86400],
  }]] $attachments = {},
  Hash[String[1], Hash[String[1], Any]] $filesystems = {},
  Stdlib::Absolutepath $filesystem_helper = '/usr/local/sbin/ferrofab-filesystem',
  Stdlib::Absolutepath $filesystem_state_dir = '/var/lib/ferrofab/filesystems',
) {
  # Written next to the config; see class ferrofab::agent::config.
  $restart_digest_path = "${config_path}.restart-digest"
  $systemd = pick($service_provider, $facts['service_provider'], 'systemd') == 'systemd'

  $binary = $binary_path ? {
    undef   => $binary_source ? {
      undef   => '/usr/bin/ferrofab-agent',
      default => '/usr/local/bin/ferrofab-agent',
    },
    default => $binary_path,
  }

  # The package ships one unit per role; the old way writes its own.
  $service = $service_name ? {
    undef   => $binary_source ? {
      undef   => ('workstation' in $roles) ? {
        true    => 'ferrofab-agent-workstation',
        default => 'ferrofab-agent-storage',
      },
      default => 'ferrofab-agent',
    },
    default => $service_name,
  }
  $manage_unit = $systemd and pick($unit_manage, $binary_source != undef)

  if $ensure == 'absent' {
    contain ferrofab::agent::remove
  } else {
    contain ferrofab::agent::install
    contain ferrofab::agent::config
    contain ferrofab::agent::enroll
    contain ferrofab::agent::service
    contain ferrofab::agent::filesystems

    Class['ferrofab::agent::install']
    -> Class['ferrofab::agent::config']
    -> Class['ferrofab::agent::enroll']
    -> Class['ferrofab::agent::service']

    Class['ferrofab::agent::install'] ~> Class['ferrofab::agent::service']

    $attachments.each |$volume, $attributes| {
      ferrofab_attachment { $volume:
        *       => $attributes,
        require => Class['ferrofab::agent::service'],
      }
    }
  }
}
