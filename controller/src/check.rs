//! `ferrofab-controller --check-config`: everything start-up would refuse,
//! found without starting.
//!
//! The checks are the very functions `server::run_until` calls before it
//! opens the store (config parsing and validation, the TLS files of
//! `pki.dir`, the CA key when enrollment is on, the clock/flag pairing),
//! plus a look at where the store would be opened, and the data-path key
//! file `pki.dir/authkeys.key`, checked against the sealed keys of an
//! existing store that no controller holds. Nothing is created or bound:
//! the store is only read, and only when its file exists (a missing one is
//! not created) and is not locked by a running controller (then the key
//! file alone is checked); no socket is bound, so the check can run beside
//! a live controller, e.g. before a
//! restart with a changed config.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::server::{self, Flags, ServerError};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("store_path {path}: {why}")]
    Store { path: String, why: String },
    #[error(transparent)]
    AuthKeys(#[from] crate::keyring::KeyError),
}

/// Loads and checks the configuration at `path`; returns it when start-up
/// would accept it.
pub fn check_config(path: &Path, flags: &Flags) -> Result<Config, CheckError> {
    let cfg = Config::load(path)?;
    server::clock(&cfg, flags)?;
    server::tls_config(&cfg)?;
    server::signer(&cfg)?;
    check_store_path(&cfg.store_path)?;
    check_auth_keys(&cfg)?;
    Ok(cfg)
}

/// `pki.dir/authkeys.key` (docs/security.md): present when the store holds
/// sealed keys, private, 32 bytes, and opening them. The store is only
/// looked into when nothing holds it (a running controller does; then the
/// file alone is checked) and when it is a local redb file.
fn check_auth_keys(cfg: &Config) -> Result<(), CheckError> {
    let sealed = match cfg.store.backend {
        crate::store::Backend::Redb => {
            match crate::store::redb::peek(&cfg.store_path, "authkeys/") {
                Ok(Some(kvs)) => Some(crate::keys::sealed_records(&kvs)),
                Ok(None) => Some(Vec::new()),
                Err(_) => None,
            }
        }
        crate::store::Backend::Etcd => None,
    };
    crate::keyring::check_key_file(&cfg.pki.dir, sealed.as_deref())?;
    Ok(())
}

/// The store may not exist yet (the first start creates it), but its
/// directory must, and an existing path must be a file.
fn check_store_path(p: &Path) -> Result<(), CheckError> {
    let err = |why: &str| CheckError::Store {
        path: p.display().to_string(),
        why: why.into(),
    };
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => return Ok(()),
        Ok(_) => return Err(err("exists but is not a file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&e.to_string())),
    }
    let parent = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if parent.is_dir() {
        Ok(())
    } else {
        Err(CheckError::Store {
            path: p.display().to_string(),
            why: format!("directory {} does not exist", parent.display()),
        })
    }
}
