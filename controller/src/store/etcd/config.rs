//! `[store.etcd]`: where the cluster is, how the controller proves
//! itself to it, and the bounds on one request, a list page and the
//! in-memory history; turned into etcd client options at connect time.

use super::*;

/// `[store.etcd]` in the controller configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, `https://host:2379` (or `http://`
    /// for a loopback address only).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Key prefix of every object; must start and end with `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// CA bundle that signed the etcd servers' certificates (https).
    pub ca_file: Option<PathBuf>,
    /// The controller's client certificate and key for etcd (mTLS).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Bound on one request (connect, read, transaction) in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Keys fetched per range request when listing; a list is paged at one
    /// pinned revision, so it stays a consistent snapshot.
    #[serde(default = "default_page")]
    pub list_page_size: usize,
    /// Events kept in memory for watch resume.
    #[serde(default = "default_history")]
    pub history: usize,
    /// TTL of the lease behind the leader key: how long a dead or cut-off
    /// leader keeps the singletons before another replica takes over.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_seconds: u64,
    /// This replica's name among the controllers sharing the store; unique
    /// per replica. Defaults to the host name and the gRPC port.
    pub replica_name: Option<String>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: default_prefix(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            timeout_ms: default_timeout_ms(),
            list_page_size: default_page(),
            history: default_history(),
            lease_ttl_seconds: default_lease_ttl(),
            replica_name: None,
        }
    }
}

fn default_prefix() -> String {
    "/ferrofab/v1/objects/".into()
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_page() -> usize {
    1_000
}
fn default_history() -> usize {
    50_000
}
fn default_lease_ttl() -> u64 {
    10
}

impl EtcdConfig {
    /// Checks what can be checked without connecting. Returns a message
    /// naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("store.etcd.endpoints is empty; list the etcd client URLs".into());
        }
        for e in &self.endpoints {
            let plain = e.strip_prefix("http://");
            match plain {
                Some(rest) if !is_loopback(rest) => {
                    return Err(format!(
                        "store.etcd.endpoints: {e} is plain http to a non-loopback host; use https with store.etcd.ca_file"
                    ))
                }
                Some(_) => {}
                None if e.starts_with("https://") => {
                    if self.ca_file.is_none() {
                        return Err(format!("store.etcd.endpoints: {e} is https but store.etcd.ca_file is not set"));
                    }
                }
                None => return Err(format!("store.etcd.endpoints: {e} must start with https:// or http://")),
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("store.etcd.cert_file and store.etcd.key_file go together".into());
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') || self.prefix.len() < 2 {
            return Err(format!(
                "store.etcd.prefix {:?} must start and end with '/'",
                self.prefix
            ));
        }
        if !(2..=3_600).contains(&self.lease_ttl_seconds) {
            return Err(format!(
                "store.etcd.lease_ttl_seconds {} must be between 2 and 3600",
                self.lease_ttl_seconds
            ));
        }
        if self.replica_name.as_ref().is_some_and(|n| {
            n.is_empty() || n.len() > 253 || n.contains('/') || n.chars().any(char::is_control)
        }) {
            return Err(
                "store.etcd.replica_name must be 1 to 253 characters without '/' or control characters"
                    .into(),
            );
        }
        if self.timeout_ms == 0 || self.list_page_size == 0 || self.history == 0 {
            return Err(
                "store.etcd.timeout_ms, list_page_size and history must be positive".into(),
            );
        }
        Ok(())
    }
}

fn is_loopback(host_port: &str) -> bool {
    let host = host_port.split('/').next().unwrap_or("");
    host.starts_with("127.") || host.starts_with("localhost:") || host.starts_with("[::1]:")
}

fn read_file(p: &PathBuf, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(p).map_err(|e| StoreError::Open {
        path: p.display().to_string(),
        reason: format!("cannot read {what}: {e}"),
    })
}

/// How often the client pings each etcd connection (HTTP/2 keep-alive).
/// Not shorter: etcd sends GOAWAY to clients pinging more often than its
/// `--grpc-keepalive-min-time` (5 s by default), and a stalled watch is
/// also noticed by the first write it misses (`store_etcd_watch_stalls`).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

pub(super) fn connect_options(
    cfg: &EtcdConfig,
    timeout: Duration,
) -> Result<ConnectOptions, StoreError> {
    let mut opts = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout)
        // A connection to a member that was cut off shows no error, and a
        // watch on it just stays silent: HTTP/2 pings find it dead.
        .with_keep_alive(KEEPALIVE_INTERVAL, timeout)
        // A member cut off from its peers (but not from us) cancels our
        // watches and refuses requests ("no leader") instead of serving
        // them stale.
        .with_require_leader(true);
    if let Some(ca) = &cfg.ca_file {
        let mut tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read_file(ca, "store.etcd.ca_file")?));
        if let (Some(c), Some(k)) = (&cfg.cert_file, &cfg.key_file) {
            tls = tls.identity(Identity::from_pem(
                read_file(c, "store.etcd.cert_file")?,
                read_file(k, "store.etcd.key_file")?,
            ));
        }
        opts = opts.with_tls(tls);
    }
    Ok(opts)
}
