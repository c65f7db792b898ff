//! The controller's TOML configuration. Unknown keys are errors: a typo in
//! a security setting must not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA whose certificates clients must present (PEM).
    pub client_ca: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// CA certificate and key used to sign node CSRs at enrollment.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    #[serde(default = "default_node_cert_days")]
    pub cert_validity_days: u32,
}

fn default_node_cert_days() -> u32 {
    365
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryConfig {
    /// Seconds after expires_at before the volume is detached and deleted.
    #[serde(default = "default_grace")]
    pub grace_seconds: u64,
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
    pub tls: TlsConfig,
    pub enrollment: Option<EnrollmentConfig>,
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
[tls]
cert = "a"
key = "b"
client_ca = "c"
"#;
        let e = toml::from_str::<Config>(text).expect_err("unknown key");
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
