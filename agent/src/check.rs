//! `ferrofab-agent --check-config`: what `run` would refuse at start-up,
//! found without starting.
//!
//! The config is parsed and validated exactly as `run` does, the TLS
//! files are loaded and checked as the controller client loads them, and
//! the paths the agent needs but never creates (pool backings, and the
//! kernel interface roots with `data_path = "kernel"`) must exist. Nothing
//! is created, opened for writing or bound: no state directory, no socket,
//! no FUSE mount, no metrics listener.

use std::path::Path;

use crate::config::{AgentConfig, DriverKind};
use crate::error::AgentError;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] AgentError),
    #[error("tls: {0}")]
    Tls(ferrofab_pki::PkiError),
    #[error("{key} {path}: {why}")]
    Path {
        key: String,
        path: String,
        why: String,
    },
}

/// Loads and checks the configuration at `path`.
pub fn check_config(path: &Path) -> Result<AgentConfig, CheckError> {
    let cfg = AgentConfig::load(path)?;
    ferrofab_pki::load_client_tls(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)
        .map_err(CheckError::Tls)?;
    for (name, pool) in &cfg.pools {
        must_exist(&format!("pools.{name}.path"), &pool.path)?;
    }
    if cfg.data_path == DriverKind::Kernel {
        must_exist("kernel.configfs", &cfg.kernel.configfs)?;
        must_exist("kernel.sysfs", &cfg.kernel.sysfs)?;
        must_exist("kernel.dev", &cfg.kernel.dev)?;
    }
    Ok(cfg)
}

fn must_exist(key: &str, p: &Path) -> Result<(), CheckError> {
    std::fs::metadata(p)
        .map(|_| ())
        .map_err(|e| CheckError::Path {
            key: key.into(),
            path: p.display().to_string(),
            why: if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist".into()
            } else {
                e.to_string()
            },
        })
}
