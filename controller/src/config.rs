//! The controller's TOML configuration. Unknown keys are errors: a typo in
//! a security setting must not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("bad config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("bad config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClockKind {
    #[default]
    System,
    /// Test-only: time moves only through DebugService.AdvanceClock.
    Manual,
}

/// Where the controller's certificates come from: a `ferrofab pki init`
/// directory (`ca.crt`, `ca.key`, `server.crt`, `server.key`), so that the
/// operator never has to wire four paths by hand and cannot mix files of
/// different CAs without start-up refusing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiConfig {
    /// The `pki init` directory.
    pub dir: PathBuf,
    /// Sign node certificates (Enroll, Renew) with `ca.key`. Off keeps the
    /// CA key off the controller host; nodes then get certificates from
    /// `ferrofab pki issue` instead, and client certificates are required
    /// at the TLS handshake.
    #[serde(default = "default_true")]
    pub enrollment: bool,
    /// Lifetime of node certificates, e.g. "90d". Nodes renew in the last
    /// third of it (see `CertInfo::renew_after`).
    #[serde(default = "default_node_validity")]
    pub node_cert_validity: String,
}

fn default_true() -> bool {
    true
}

fn default_node_validity() -> String {
    "90d".into()
}

impl PkiConfig {
    /// The parsed node certificate lifetime.
    pub fn node_validity(&self) -> Result<Duration, ConfigError> {
        ferrofab_pki::parse_duration(&self.node_cert_validity)
            .map_err(|e| ConfigError::Invalid(format!("pki.node_cert_validity: {e}")))
    }
}

/// When a node counts as gone: it has sent no ReportStatus for this long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesConfig {
    /// Seconds without a heartbeat before the node is marked NotReady.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_seconds: u64,
    /// How often heartbeats are checked.
    #[serde(default = "default_heartbeat_check")]
    pub check_interval_seconds: u64,
    /// Pause after sending one agent a desired-state snapshot of 32 KiB or
    /// more (`api::agent::FULL_PAUSE_BYTES`); a smaller snapshot pauses in
    /// proportion to its size. Changes within the pause are coalesced
    /// into the next snapshot.
    #[serde(default = "default_desired_state_interval")]
    pub desired_state_interval_ms: u64,
    /// Sustained ReportStatus calls per second one node may make (token
    /// bucket refill rate). The agent reports every 5 s and after each
    /// reconcile pass, far below this. A node's first report answering
    /// the latest desired-state snapshot sent to it takes no token
    /// (`report::ReportGate::admit`).
    #[serde(default = "default_report_rate")]
    pub report_rate_per_second: f64,
    /// Reports one node may make in a burst above the sustained rate
    /// (bucket size): a flurry of desired-state changes makes a pass, and
    /// so a report, every `desired_state_interval_ms`.
    #[serde(default = "default_report_burst")]
    pub report_burst: u32,
    /// Most exports, and most connections, one report may list.
    #[serde(default = "default_max_report_entries")]
    pub max_report_entries: usize,
    /// A report that changes nothing but the heartbeat (and capacity
    /// figures) is kept in memory; the stored Node's `last_heartbeat` is
    /// refreshed at most this often, so `node list` stays roughly current
    /// without one durable write per heartbeat.
    #[serde(default = "default_heartbeat_persist")]
    pub heartbeat_persist_interval_seconds: u64,
}

fn default_report_rate() -> f64 {
    10.0
}
fn default_report_burst() -> u32 {
    100
}
fn default_max_report_entries() -> usize {
    10_000
}
fn default_heartbeat_persist() -> u64 {
    15
}

fn default_desired_state_interval() -> u64 {
    100
}

fn default_heartbeat_timeout() -> u64 {
    45
}
fn default_heartbeat_check() -> u64 {
    5
}

impl Default for NodesConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout_seconds: default_heartbeat_timeout(),
            check_interval_seconds: default_heartbeat_check(),
            desired_state_interval_ms: default_desired_state_interval(),
            report_rate_per_second: default_report_rate(),
            report_burst: default_report_burst(),
            max_report_entries: default_max_report_entries(),
            heartbeat_persist_interval_seconds: default_heartbeat_persist(),
        }
    }
}

/// Limits on the gRPC listener and its streams: what one peer may hold
/// open, so no client can exhaust the controller's tasks, sockets or memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Most gRPC connections open at once (TLS pending or established);
    /// more are closed at accept. Keep below the process's open-file limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most gRPC connections open at once from one IP address, so that one
    /// host (TLS needs no client certificate while enrollment is on)
    /// cannot take every slot.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Milliseconds a new connection has to complete its TLS handshake
    /// (a peer that never sends a ClientHello is closed after this).
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout_ms: u64,
    /// Most watch streams (AdminService watches and WatchDesiredState
    /// together) one identity may hold open.
    #[serde(default = "default_max_watches")]
    pub max_watches_per_identity: usize,
}

fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_peer() -> usize {
    128
}
fn default_tls_handshake_timeout() -> u64 {
    10_000
}
fn default_max_watches() -> usize {
    64
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            tls_handshake_timeout_ms: default_tls_handshake_timeout(),
            max_watches_per_identity: default_max_watches(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryConfig {
    /// Seconds after expires_at before a volume with `expiry_action =
    /// delete` is detached and deleted.
    #[serde(default = "default_grace")]
    pub grace_seconds: u64,
    /// Seconds a volume with `expiry_action = retain` (the default) keeps
    /// its data after expires_at, detached, before it is deleted; an
    /// administrator can extend it back to life until then.
    #[serde(default = "default_retain_grace")]
    pub retain_grace_seconds: u64,
    /// Seconds before expires_at from which an Expiring warning is shown.
    #[serde(default = "default_warn")]
    pub warn_seconds: u64,
    /// How often the expiry reconciler runs (system clock).
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
}

fn default_grace() -> u64 {
    3600
}
fn default_retain_grace() -> u64 {
    7 * 86_400
}
fn default_warn() -> u64 {
    86_400
}
fn default_interval() -> u64 {
    30
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self {
            grace_seconds: default_grace(),
            retain_grace_seconds: default_retain_grace(),
            warn_seconds: default_warn(),
            interval_seconds: default_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    #[serde(default)]
    pub header_digest: bool,
    #[serde(default)]
    pub data_digest: bool,
    #[serde(default)]
    pub nr_io_queues: u32,
    #[serde(default)]
    pub queue_size: u32,
    #[serde(default)]
    pub ctrl_loss_tmo: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC (mTLS) listen address.
    pub listen: SocketAddr,
    /// Plain HTTP address for /metrics and /healthz.
    pub http_listen: Option<SocketAddr>,
    /// The redb store file.
    pub store_path: PathBuf,
    pub pki: PkiConfig,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub clock: ClockKind,
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub expiry: ExpiryConfig,
    #[serde(default)]
    pub transport: TransportConfig,
    #[serde(default)]
    pub nodes: NodesConfig,
    /// Limits on what clients may store in one object (`[objects]`).
    #[serde(default)]
    pub objects: crate::validate::ObjectLimits,
    #[serde(default)]
    pub server: ServerConfig,
    /// Which store backend (`[store]`, default redb at `store_path`).
    #[serde(default)]
    pub store: crate::store::StoreConfig,
    /// Data-path authentication (`[auth]`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// The event history (`[events]`, see `ops::events`).
    #[serde(default)]
    pub events: crate::ops::events::EventsConfig,
    /// The HTTP/JSON API and the dashboard (`[http_api]`), off by default.
    #[serde(default)]
    pub http_api: HttpApiConfig,
}

/// `[http_api]`: the HTTPS JSON API (`/v1/...`), its OpenAPI document and
/// the dashboard (`/ui`), on a port of their own with the gRPC port's
/// server certificate. Off unless `listen` is set: a second way in is a
/// choice the operator makes, not a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpApiConfig {
    /// HTTPS listen address, e.g. "0.0.0.0:7444". Unset: not served.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Largest request body, bytes (a create or a patch is a few KiB).
    #[serde(default = "default_http_max_body")]
    pub max_body_bytes: usize,
    /// Largest `limit` of a list request; more is refused, not clamped,
    /// so a client never silently gets less than it asked for.
    #[serde(default = "default_http_max_page")]
    pub max_page_size: u32,
    /// Most watch streams (server-sent events) open at once over HTTP, all
    /// callers together; `server.max_watches_per_identity` applies too.
    #[serde(default = "default_http_max_watches")]
    pub max_watches: usize,
    /// Serve the dashboard at `/ui`.
    #[serde(default = "default_true")]
    pub dashboard: bool,
}

fn default_http_max_body() -> usize {
    1024 * 1024
}
fn default_http_max_page() -> u32 {
    1000
}
fn default_http_max_watches() -> usize {
    256
}

impl Default for HttpApiConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_body_bytes: default_http_max_body(),
            max_page_size: default_http_max_page(),
            max_watches: default_http_max_watches(),
            dashboard: true,
        }
    }
}

/// `[auth]`: DH-HMAC-CHAP between hosts and exports (docs/security.md).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Every export refuses at Connect a host without a key. Off, hosts
    /// that can authenticate (built-in initiator) get keys and must use
    /// them, and the others still connect unauthenticated. Unset (the
    /// default): the cluster's own setting, recorded in the store at its
    /// first start (on for a new cluster, off for one that existed before
    /// the setting, so an upgrade locks nobody out); set, it overrides.
    #[serde(default)]
    pub require: Option<bool>,
    /// Rotate every workstation's host key once it is this old, e.g.
    /// "90d"; empty (the default): only `ferrofab node rotate-key`.
    /// Off by default because a rotation is an operation on every live
    /// connection that an operator should choose to schedule.
    #[serde(default)]
    pub rotate_every: String,
}

/// Shortest `auth.rotate_every`: a rotation must finish (storage nodes
/// report, workstations re-authenticate) well before the next one.
pub const MIN_ROTATE_EVERY: Duration = Duration::from_secs(3600);

impl AuthConfig {
    /// `rotate_every` parsed; `None` when off.
    pub fn rotate_every(&self) -> Result<Option<Duration>, ConfigError> {
        if self.rotate_every.trim().is_empty() {
            return Ok(None);
        }
        let d = ferrofab_pki::parse_duration(&self.rotate_every)
            .map_err(|e| ConfigError::Invalid(format!("auth.rotate_every: {e}")))?;
        if d < MIN_ROTATE_EVERY {
            return Err(ConfigError::Invalid(format!(
                "auth.rotate_every: {} is shorter than the minimum of 1h",
                self.rotate_every
            )));
        }
        Ok(Some(d))
    }
}

fn default_max_message() -> usize {
    ferrofab_proto::MAX_MESSAGE_BYTES
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.auth.rotate_every()?;
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_message_bytes must be at least 1024".into(),
            ));
        }
        if self.expiry.interval_seconds == 0 {
            return Err(ConfigError::Invalid(
                "expiry.interval_seconds must be positive".into(),
            ));
        }
        if self.nodes.heartbeat_timeout_seconds == 0 || self.nodes.check_interval_seconds == 0 {
            return Err(ConfigError::Invalid(
                "nodes.heartbeat_timeout_seconds and nodes.check_interval_seconds must be positive"
                    .into(),
            ));
        }
        self.objects
            .check(self.max_message_bytes)
            .map_err(ConfigError::Invalid)?;
        self.validate_limits()?;
        self.pki.node_validity()?;
        self.store.validate().map_err(ConfigError::Invalid)?;
        self.events.check().map_err(ConfigError::Invalid)?;
        // With replicas, the leader judges liveness of agents streaming to
        // other replicas by the stored last_heartbeat alone.
        if self.store.backend == crate::store::Backend::Etcd
            && self.nodes.heartbeat_persist_interval_seconds >= self.nodes.heartbeat_timeout_seconds
        {
            return Err(ConfigError::Invalid(format!(
                "nodes.heartbeat_persist_interval_seconds ({}) must be below nodes.heartbeat_timeout_seconds ({}) with the etcd store: the leader sees other replicas' agents only through the persisted heartbeat",
                self.nodes.heartbeat_persist_interval_seconds,
                self.nodes.heartbeat_timeout_seconds
            )));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let positive = [
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.max_connections_per_peer",
                self.server.max_connections_per_peer as u64,
            ),
            (
                "server.tls_handshake_timeout_ms",
                self.server.tls_handshake_timeout_ms,
            ),
            (
                "server.max_watches_per_identity",
                self.server.max_watches_per_identity as u64,
            ),
            ("nodes.report_burst", u64::from(self.nodes.report_burst)),
            (
                "nodes.max_report_entries",
                self.nodes.max_report_entries as u64,
            ),
            (
                "nodes.heartbeat_persist_interval_seconds",
                self.nodes.heartbeat_persist_interval_seconds,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{key} must be positive")));
        }
        let rate = self.nodes.report_rate_per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ConfigError::Invalid(
                "nodes.report_rate_per_second must be a positive number".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let text = r#"
listen = "127.0.0.1:1"
store_path = "/x"
colour = "blue"
[pki]
dir = "/etc/ferrofab/pki"
"#;
        let e = toml::from_str::<Config>(text).expect_err("unknown key");
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let base = "listen = \"127.0.0.1:1\"\nstore_path = \"/x\"\n[pki]\ndir = \"/p\"\n";
        for (section, key, value) in [
            ("server", "max_connections", "0"),
            ("server", "tls_handshake_timeout_ms", "0"),
            ("server", "max_watches_per_identity", "0"),
            ("nodes", "report_rate_per_second", "0.0"),
            ("nodes", "report_burst", "0"),
            ("nodes", "max_report_entries", "0"),
            ("nodes", "heartbeat_persist_interval_seconds", "0"),
        ] {
            let text = format!("{base}[{section}]\n{key} = {value}\n");
            let cfg: Config = toml::from_str(&text).expect("parse");
            let e = cfg.validate().expect_err("zero refused");
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn etcd_needs_a_persisted_heartbeat_within_the_timeout() {
        let base = "listen = \"127.0.0.1:1\"\nstore_path = \"/x\"\n[pki]\ndir = \"/p\"\n[nodes]\nheartbeat_persist_interval_seconds = 60\n";
        let redb: Config = toml::from_str(base).expect("parse");
        assert!(redb.validate().is_ok(), "one process knows every heartbeat");
        let text = format!(
            "{base}[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n"
        );
        let etcd: Config = toml::from_str(&text).expect("parse");
        let e = etcd.validate().expect_err("refused on etcd");
        assert!(
            e.to_string()
                .contains("nodes.heartbeat_persist_interval_seconds (60) must be below"),
            "{e}"
        );
    }

    #[test]
    fn pki_defaults_and_durations() {
        let text = "listen = \"127.0.0.1:1\"\nstore_path = \"/x\"\n[pki]\ndir = \"/p\"\n";
        let cfg: Config = toml::from_str(text).expect("parse");
        assert!(cfg.pki.enrollment);
        assert_eq!(
            cfg.pki.node_validity().expect("90d"),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(cfg.nodes.heartbeat_timeout_seconds, 45);
        assert_eq!(cfg.objects.max_object_bytes, 256 * 1024);
        assert_eq!(cfg.server.max_watches_per_identity, 64);
        assert_eq!(cfg.server.max_connections, 1024);
        cfg.validate().expect("valid");
        let big = format!("{text}[objects]\nmax_object_bytes = 4194304\n");
        let cfg: Config = toml::from_str(&big).expect("parse");
        let e = cfg.validate().expect_err("object as big as a message");
        assert!(e.to_string().contains("objects.max_object_bytes"), "{e}");
        let bad = text.replace(
            "dir = \"/p\"",
            "dir = \"/p\"\nnode_cert_validity = \"soon\"",
        );
        let cfg: Config = toml::from_str(&bad).expect("parse");
        let e = cfg.validate().expect_err("bad duration");
        assert!(e.to_string().contains("node_cert_validity"), "{e}");
    }

    #[test]
    fn auth_defaults_off_and_rotate_every_is_checked() {
        let base = "listen = \"127.0.0.1:1\"\nstore_path = \"/x\"\n[pki]\ndir = \"/p\"\n";
        let cfg: Config = toml::from_str(base).expect("parse");
        assert_eq!(cfg.auth.require, None);
        assert_eq!(cfg.auth.rotate_every().expect("off"), None);
        let on: Config = toml::from_str(&format!(
            "{base}[auth]\nrequire = true\nrotate_every = \"90d\"\n"
        ))
        .expect("parse");
        on.validate().expect("valid");
        assert_eq!(
            on.auth.rotate_every().expect("90d"),
            Some(Duration::from_secs(90 * 86_400))
        );
        for bad in ["soon", "10m"] {
            let cfg: Config = toml::from_str(&format!("{base}[auth]\nrotate_every = \"{bad}\"\n"))
                .expect("parse");
            let e = cfg.validate().expect_err(bad);
            assert!(e.to_string().contains("auth.rotate_every"), "{e}");
        }
    }
}
