//! The agent library's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the agent library. Messages name the
/// object (key, path, volume, endpoint) because they end up in logs,
/// status conditions and the stderr of `ferrofab-agent attach`.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("config key `{key}`: {message}")]
    Config { key: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS material: {0}")]
    Pki(#[from] ferrofab_pki::PkiError),
    #[error("controller at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("controller refused {rpc}: {message}")]
    Rpc { rpc: &'static str, message: String },
    #[error("state cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("local API: {0}")]
    LocalApi(String),
    #[error("{0}")]
    Other(String),
}

impl AgentError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        AgentError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Turns a gRPC status into a one-line reason the operator can act on.
pub(crate) fn rpc_error(rpc: &'static str, s: &tonic::Status) -> AgentError {
    AgentError::Rpc {
        rpc,
        message: format!("{:?}: {}", s.code(), s.message()),
    }
}
