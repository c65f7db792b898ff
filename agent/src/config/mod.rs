//! The agent's TOML configuration.
//!
//! Unknown keys are errors and every validation error names its key: a typo
//! in a node's config must fail at start, not make the node silently do
//! something else (e.g. export nothing because `pool` was spelt `pools`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::AgentError;

mod data_path;
mod holder;
mod local_api;
mod pool;

pub use data_path::{BuiltinTargetConfig, DriverKind, KernelConfig};
pub use holder::{HolderConfig, DEFAULT_HOLDER_REQUEST_TIMEOUT, DEFAULT_HOLDER_START_TIMEOUT};
pub use local_api::{
    LocalApiConfig, DEFAULT_LOCAL_API_MAX_CONNECTIONS, DEFAULT_LOCAL_API_REQUEST_TIMEOUT,
};
pub use pool::{PoolConfig, Provisioning};

/// Default path of the local API socket.
pub const DEFAULT_API_SOCKET: &str = "/run/ferrofab/agent.sock";
/// Default path of the config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ferrofab/agent.toml";
/// Resync interval when the config does not set one.
pub const DEFAULT_RESYNC: &str = "30s";

/// A node's role, as in `NodeSpec.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Storage,
    Workstation,
}

/// TLS files for talking to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Name to verify the controller's certificate against; defaults to the
    /// endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// The whole agent configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The node's name (its certificate is `node:NAME`).
    pub node: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Controller gRPC endpoints (`https://host:port`): every replica.
    pub controller_endpoints: Vec<String>,
    /// In which order the endpoints are tried: `spread` (default) or
    /// `listed`; see [`EndpointOrder`].
    #[serde(default, skip_serializing_if = "EndpointOrder::is_default")]
    pub controller_endpoint_order: EndpointOrder,
    pub tls: TlsFiles,
    /// Pool name → backing directory or block device.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    /// Addresses the built-in target listens on. Empty: the listeners of
    /// the desired state (the node's data addresses).
    #[serde(default)]
    pub data_listen: Vec<SocketAddr>,
    #[serde(default)]
    pub data_path: DriverKind,
    /// Kernel interface roots for `data_path = "kernel"`.
    #[serde(default, skip_serializing_if = "KernelConfig::is_default")]
    pub kernel: KernelConfig,
    /// Connection limits of the built-in target.
    #[serde(default, skip_serializing_if = "BuiltinTargetConfig::is_default")]
    pub builtin_target: BuiltinTargetConfig,
    /// Directory where attached volumes appear as files (one FUSE mount).
    #[serde(default = "default_expose_dir")]
    pub expose_dir: PathBuf,
    /// Persistent state: desired-state cache, host identity.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Periodic full reconcile, e.g. "30s".
    #[serde(default = "default_resync")]
    pub resync_interval: String,
    /// Plain-HTTP Prometheus endpoint; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default = "default_api_socket")]
    pub api_socket: PathBuf,
    /// Bounds of the local API socket.
    #[serde(default, skip_serializing_if = "LocalApiConfig::is_default")]
    pub local_api: LocalApiConfig,
    /// tracing filter, e.g. "info" or "ferrofab_agent=debug".
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// `[holder]`: the workstation data-path holder process.
    #[serde(default, skip_serializing_if = "HolderConfig::is_default")]
    pub holder: HolderConfig,
    /// How long before an exposed burst volume expires the agent logs a
    /// warning and sets `ferrofab_agent_volume_expiry_warning`, e.g. "24h".
    #[serde(
        default = "default_expiry_warning",
        skip_serializing_if = "is_default_expiry_warning"
    )]
    pub expiry_warning: String,
    /// Log lines on stderr: "human" (default) or "json" (one object a line,
    /// for journald/log shippers), like the controller's `log_format`.
    #[serde(default, skip_serializing_if = "LogFormat::is_default")]
    pub log_format: LogFormat,
}

/// Default of `expiry_warning`: a working day's notice.
pub const DEFAULT_EXPIRY_WARNING: &str = "24h";

fn default_expiry_warning() -> String {
    DEFAULT_EXPIRY_WARNING.into()
}
fn is_default_expiry_warning(v: &String) -> bool {
    v == DEFAULT_EXPIRY_WARNING
}

/// The agent's log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl LogFormat {
    fn is_default(&self) -> bool {
        *self == LogFormat::Human
    }
}

fn default_expose_dir() -> PathBuf {
    PathBuf::from("/run/ferrofab/volumes")
}
/// Default `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferrofab/agent";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_resync() -> String {
    DEFAULT_RESYNC.into()
}
fn default_api_socket() -> PathBuf {
    PathBuf::from(DEFAULT_API_SOCKET)
}
fn default_log_level() -> String {
    "info".into()
}

/// The field serde's "missing field `X`" names: the key a required
/// setting lacks (an empty or template config has no span to point at).
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_string)
}

fn invalid(key: &str, message: impl Into<String>) -> AgentError {
    AgentError::Config {
        key: key.into(),
        message: message.into(),
    }
}

/// The dotted key (`holder.start_timeout`) whose key or value `span`
/// covers, so an error about a bad value names the setting, not just the
/// value; else the spanned text itself if it is one line. A span over a
/// whole table (or the document) names nothing useful: `None`.
fn key_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let spanned = text.get(span.clone())?.trim();
    if spanned.contains('\n') {
        return None;
    }
    let line_start = text.get(..span.start)?.rfind('\n').map_or(0, |i| i + 1);
    let before = text.get(line_start..span.start)?;
    // `key = value` with the span on the value, or the key itself.
    let key = match before.split_once('=') {
        Some((key, _)) => key,
        None if before.trim().is_empty() => spanned,
        None => return Some(spanned.to_string()),
    };
    let key = key.trim().trim_matches('"');
    let table = text
        .get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(table_name);
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// `holder` of a `[holder]` or `[[holder]]` header line, ignoring a
/// trailing comment.
fn table_name(line: &str) -> Option<&str> {
    let inner = line.trim_start_matches('[');
    Some(inner.get(..inner.find(']')?)?.trim())
}

/// How an agent orders `controller_endpoints` when it (re)connects: it
/// takes the first endpoint in that order that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointOrder {
    /// A fixed order of its own per node, derived from the node's name
    /// (`ferrofab_proto::failover::spread_order`): a fleet with one shared
    /// list spreads evenly over the replicas, and over the survivors when
    /// one is lost, instead of all agents using the first replica and all
    /// moving to the second.
    #[default]
    Spread,
    /// The list's own order: for a preferred replica (say, the one in the
    /// same room), with the others as fallbacks.
    Listed,
}

impl EndpointOrder {
    fn is_default(&self) -> bool {
        *self == EndpointOrder::default()
    }

    /// `endpoints` in the order `node` tries them.
    pub fn arrange(self, node: &str, endpoints: &[String]) -> Vec<String> {
        match self {
            EndpointOrder::Listed => endpoints.to_vec(),
            EndpointOrder::Spread => ferrofab_proto::failover::spread_order(node, endpoints.len())
                .into_iter()
                .filter_map(|i| endpoints.get(i).cloned())
                .collect(),
        }
    }
}

impl AgentConfig {
    /// A minimal config for `node`, used by `enroll` when no file exists yet.
    pub fn new(node: &str, endpoint: &str, tls: TlsFiles) -> Self {
        AgentConfig {
            node: node.into(),
            roles: Vec::new(),
            controller_endpoints: vec![endpoint.into()],
            controller_endpoint_order: EndpointOrder::default(),
            tls,
            pools: BTreeMap::new(),
            data_listen: Vec::new(),
            data_path: DriverKind::Builtin,
            kernel: KernelConfig::default(),
            builtin_target: BuiltinTargetConfig::default(),
            expose_dir: default_expose_dir(),
            state_dir: default_state_dir(),
            resync_interval: default_resync(),
            metrics_listen: None,
            api_socket: default_api_socket(),
            local_api: LocalApiConfig::default(),
            log_level: default_log_level(),
            holder: HolderConfig::default(),
            expiry_warning: default_expiry_warning(),
            log_format: LogFormat::Human,
        }
    }

    /// A config for unit tests: no controller, placeholder TLS files.
    #[cfg(test)]
    pub(crate) fn for_tests(node: &str) -> Self {
        let mut cfg = Self::new(
            node,
            "https://127.0.0.1:1",
            TlsFiles {
                ca: "/x".into(),
                cert: "/x".into(),
                key: "/x".into(),
                server_name: None,
            },
        );
        // In-process unit tests have no agent binary to start a holder.
        cfg.holder.enabled = false;
        cfg
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Io {
            what: format!("reading config {}", path.display()),
            source: e,
        })?;
        Self::parse(&text).map_err(|e| match e {
            AgentError::Config { key, message } => AgentError::Config {
                key,
                message: format!("{message} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, AgentError> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| {
            let key = missing_field(e.message())
                .or_else(|| e.span().and_then(|s| key_at(text, s)))
                .unwrap_or_default();
            invalid(&key, e.message().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), AgentError> {
        ferrofab_pki::validate_name(&self.node).map_err(|e| invalid("node", e.to_string()))?;
        if self.controller_endpoints.is_empty() {
            return Err(invalid("controller_endpoints", "at least one is required"));
        }
        for ep in &self.controller_endpoints {
            if !ep.starts_with("https://") {
                return Err(invalid(
                    "controller_endpoints",
                    format!("{ep:?} must start with https://"),
                ));
            }
        }
        self.resync()?;
        self.expiry_warning()?;
        self.local_api.validate()?;
        self.holder.timeouts()?;
        if let Some(b) = &self.holder.binary {
            if !b.is_absolute() {
                return Err(invalid("holder.binary", "must be an absolute path"));
            }
        }
        for (name, pool) in &self.pools {
            if !pool.path.is_absolute() {
                return Err(invalid(
                    &format!("pools.{name}.path"),
                    "must be an absolute path",
                ));
            }
        }
        for (key, p) in [
            ("expose_dir", &self.expose_dir),
            ("state_dir", &self.state_dir),
            ("api_socket", &self.api_socket),
            ("kernel.configfs", &self.kernel.configfs),
            ("kernel.sysfs", &self.kernel.sysfs),
            ("kernel.dev", &self.kernel.dev),
        ] {
            if !p.is_absolute() {
                return Err(invalid(key, "must be an absolute path"));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("log_level", e.to_string()))?;
        self.builtin_target
            .target_options()
            .validate()
            .map_err(|e| invalid("builtin_target", e.to_string()))?;
        Ok(())
    }

    /// The expiry warning window in seconds.
    pub fn expiry_warning(&self) -> Result<i64, AgentError> {
        let d = ferrofab_pki::parse_duration(&self.expiry_warning)
            .map_err(|e| invalid("expiry_warning", e.to_string()))?;
        if d > Duration::from_secs(366 * 86_400) {
            return Err(invalid("expiry_warning", "must be at most 366d"));
        }
        Ok(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// The resync interval as a duration.
    pub fn resync(&self) -> Result<Duration, AgentError> {
        let d = ferrofab_pki::parse_duration(&self.resync_interval)
            .map_err(|e| invalid("resync_interval", e.to_string()))?;
        if d.is_zero() {
            return Err(invalid("resync_interval", "must be more than 0s"));
        }
        Ok(d)
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The TOML text of this config (for `enroll`, which writes it).
    pub fn to_toml(&self) -> Result<String, AgentError> {
        toml::to_string_pretty(self).map_err(|e| invalid("", e.to_string()))
    }

    /// Keys whose change needs a restart (everything but the live ones),
    /// compared with `new`.
    pub fn restart_keys(&self, new: &AgentConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |k: &'static str, same: bool| {
            if !same {
                keys.push(k);
            }
        };
        check("node", self.node == new.node);
        check("roles", self.roles == new.roles);
        check(
            "controller_endpoints",
            self.controller_endpoints == new.controller_endpoints,
        );
        check(
            "controller_endpoint_order",
            self.controller_endpoint_order == new.controller_endpoint_order,
        );
        check("tls", self.tls == new.tls);
        check("pools", self.pools == new.pools);
        check("data_listen", self.data_listen == new.data_listen);
        check("data_path", self.data_path == new.data_path);
        check("kernel", self.kernel == new.kernel);
        check("builtin_target", self.builtin_target == new.builtin_target);
        check("expose_dir", self.expose_dir == new.expose_dir);
        check("state_dir", self.state_dir == new.state_dir);
        check("metrics_listen", self.metrics_listen == new.metrics_listen);
        check("api_socket", self.api_socket == new.api_socket);
        check("local_api", self.local_api == new.local_api);
        check("holder", self.holder == new.holder);
        check("expiry_warning", self.expiry_warning == new.expiry_warning);
        check("log_format", self.log_format == new.log_format);
        keys
    }

    /// The pool whose directory contains `path`, if any. Paths are compared
    /// lexically after refusing `..`, so a desired state cannot point the
    /// agent outside its pools.
    pub fn pool_of(&self, path: &Path) -> Option<(&str, &PoolConfig)> {
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return None;
        }
        self.pools
            .iter()
            .find(|(_, p)| path == p.path || path.starts_with(&p.path))
            .map(|(n, p)| (n.as_str(), p))
    }
}

#[cfg(test)]
mod tests {
    use ferrofab_nvmeof_target::TargetOptions;

    use super::*;

    const MIN: &str = r#"
node = "s1"
roles = ["storage"]
controller_endpoints = ["https://127.0.0.1:7443"]
[tls]
ca = "/etc/ferrofab/ca.crt"
cert = "/etc/ferrofab/node.crt"
key = "/etc/ferrofab/node.key"
[pools.fast]
path = "/srv/ferrofab/fast"
"#;

    #[test]
    fn a_missing_required_key_is_named() {
        let e = AgentConfig::parse("# only comments, like the packaged template\n").unwrap_err();
        match e {
            AgentError::Config { key, message } => {
                assert_eq!(key, "node", "{message}");
                assert!(message.contains("missing field"), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn endpoint_order_spreads_by_default_and_can_follow_the_list() {
        let eps: Vec<String> = ["https://a:1", "https://b:1", "https://c:1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = AgentConfig::parse(MIN).unwrap();
        assert_eq!(c.controller_endpoint_order, EndpointOrder::Spread);
        // Same set, this node's own fixed order, and not every node's the same.
        let mine = EndpointOrder::Spread.arrange("s1", &eps);
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(sorted, eps);
        assert_eq!(mine, EndpointOrder::Spread.arrange("s1", &eps));
        let firsts: std::collections::BTreeSet<String> = (0..30)
            .map(|i| EndpointOrder::Spread.arrange(&format!("w{i}"), &eps)[0].clone())
            .collect();
        assert_eq!(firsts.len(), 3, "{firsts:?}");

        let listed = MIN.replacen("[tls]", "controller_endpoint_order = \"listed\"\n[tls]", 1);
        let c = AgentConfig::parse(&listed).unwrap();
        assert_eq!(c.controller_endpoint_order, EndpointOrder::Listed);
        assert_eq!(EndpointOrder::Listed.arrange("s1", &eps), eps);

        let bad = format!("{MIN}[holder] # the holder\nstart_timeout = 5\n");
        match AgentConfig::parse(&bad).unwrap_err() {
            AgentError::Config { key, .. } => assert_eq!(key, "holder.start_timeout"),
            other => panic!("{other}"),
        }
        let bad = format!("{MIN}[holder]\nstart_timeoot = \"5s\"\n");
        match AgentConfig::parse(&bad).unwrap_err() {
            AgentError::Config { key, message } => {
                assert_eq!(key, "holder.start_timeoot", "{message}")
            }
            other => panic!("{other}"),
        }
        let bad = MIN.replacen("[tls]", "controller_endpoint_order = \"random\"\n[tls]", 1);
        match AgentConfig::parse(&bad).unwrap_err() {
            AgentError::Config { key, message } => {
                assert_eq!(key, "controller_endpoint_order", "{message}");
                assert!(message.contains("spread"), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn parses_minimal_with_defaults() {
        let c = AgentConfig::parse(MIN).unwrap();
        assert_eq!(c.resync().unwrap(), Duration::from_secs(30));
        assert_eq!(c.api_socket, PathBuf::from(DEFAULT_API_SOCKET));
        assert_eq!(c.pools["fast"].provisioning, Provisioning::Thin);
        assert_eq!(c.data_path, DriverKind::Builtin);
        assert_eq!(c.kernel.configfs, PathBuf::from("/sys/kernel/config"));
    }

    #[test]
    fn kernel_driver_and_roots_parse() {
        let c = AgentConfig::parse(&format!(
            "data_path = \"kernel\"\n{MIN}\n[kernel]\nsysfs = \"/tmp/sys\"\n"
        ))
        .unwrap();
        assert_eq!(c.data_path, DriverKind::Kernel);
        assert_eq!(c.kernel.sysfs, PathBuf::from("/tmp/sys"));
        assert_eq!(c.kernel.dev, PathBuf::from("/dev"));
        let e = AgentConfig::parse(&format!("{MIN}\n[kernel]\nsysfs = \"rel\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel.sysfs"), "{e}");
    }

    /// `holder.raise_fuse_max_pages_limit`: on unless turned off, and
    /// the holder is started with `--keep-fuse-max-pages-limit` then.
    #[test]
    fn the_fuse_max_pages_sysctl_can_be_left_alone() {
        let c = AgentConfig::parse(MIN).unwrap();
        assert!(c.holder.raise_fuse_max_pages_limit);
        let c = AgentConfig::parse(&format!(
            "{MIN}\n[holder]\nraise_fuse_max_pages_limit = false\n"
        ))
        .unwrap();
        assert!(!c.holder.raise_fuse_max_pages_limit);
        let args = crate::holder::run_args(&crate::factory::holder_spawn_spec(&c).unwrap());
        assert!(
            args.iter().any(|a| a == "--keep-fuse-max-pages-limit"),
            "{args:?}"
        );
        let c = AgentConfig::parse(MIN).unwrap();
        let args = crate::holder::run_args(&crate::factory::holder_spawn_spec(&c).unwrap());
        assert!(
            !args.iter().any(|a| a == "--keep-fuse-max-pages-limit"),
            "{args:?}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = AgentConfig::parse(&format!("{MIN}\nresync = \"1s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("resync"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = AgentConfig::parse(&MIN.replace("/srv/ferrofab/fast", "rel"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pools.fast.path"), "{e}");
        let e = AgentConfig::parse(&format!("resync_interval = \"soon\"\n{MIN}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("resync_interval"), "{e}");
        let e = AgentConfig::parse(&MIN.replace("https://", "http://"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("controller_endpoints"), "{e}");
    }

    #[test]
    fn pool_of_refuses_escapes() {
        let c = AgentConfig::parse(MIN).unwrap();
        assert!(c.pool_of(Path::new("/srv/ferrofab/fast/abc")).is_some());
        assert!(c.pool_of(Path::new("/srv/ferrofab/fast/../x")).is_none());
        assert!(c.pool_of(Path::new("/srv/ferrofab/fastest/x")).is_none());
        assert!(c.pool_of(Path::new("/etc/passwd")).is_none());
    }

    #[test]
    fn restart_keys_ignore_live_ones() {
        let a = AgentConfig::parse(MIN).unwrap();
        let mut b = a.clone();
        b.resync_interval = "5s".into();
        b.log_level = "debug".into();
        assert!(a.restart_keys(&b).is_empty());
        b.pools.clear();
        assert_eq!(a.restart_keys(&b), vec!["pools"]);
    }

    #[test]
    fn builtin_target_limits_are_read_and_checked() {
        let a = AgentConfig::parse(MIN).unwrap();
        assert_eq!(a.builtin_target, BuiltinTargetConfig::default());
        assert_eq!(a.builtin_target.target_options(), TargetOptions::default());
        let b = AgentConfig::parse(&format!(
            "{MIN}\n[builtin_target]\nmax_connections = 100\nmax_connections_per_peer = 10\nicreq_timeout_ms = 1000\n"
        ))
        .unwrap();
        let o = b.builtin_target.target_options();
        assert_eq!((o.max_connections, o.max_connections_per_peer), (100, 10));
        assert_eq!((o.icreq_timeout_ms, o.connect_timeout_ms), (1000, 10_000));
        assert_eq!(a.restart_keys(&b), vec!["builtin_target"]);
        assert_eq!(AgentConfig::parse(&b.to_toml().unwrap()).unwrap(), b);
        let err = AgentConfig::parse(&format!(
            "{MIN}\n[builtin_target]\nmax_connections = 10\nmax_connections_per_peer = 11\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("builtin_target") && err.contains("max_connections_per_peer"),
            "{err}"
        );
    }

    #[test]
    fn expiry_warning_defaults_to_a_day_and_is_checked() {
        let a = AgentConfig::parse(MIN).unwrap();
        assert_eq!(a.expiry_warning().unwrap(), 86_400);
        assert!(!a.to_toml().unwrap().contains("expiry_warning"));
        let b = AgentConfig::parse(&format!("expiry_warning = \"2h\"\n{MIN}")).unwrap();
        assert_eq!(b.expiry_warning().unwrap(), 7200);
        assert_eq!(a.restart_keys(&b), vec!["expiry_warning"]);
        let e = AgentConfig::parse(&format!("expiry_warning = \"soon\"\n{MIN}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expiry_warning"), "{e}");
    }

    #[test]
    fn round_trips_through_toml() {
        let a = AgentConfig::parse(MIN).unwrap();
        let b = AgentConfig::parse(&a.to_toml().unwrap()).unwrap();
        assert_eq!(a, b);
    }
}
