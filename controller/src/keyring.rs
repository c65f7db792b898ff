//! The sealing key of the data-path secrets (`pki.dir/authkeys.key`) and
//! the in-memory state every desired-state stream shares: which host key
//! generation each storage node's target holds, and a signal fired when a
//! key changed. A leaf module: the services' shared state holds a
//! [`Keys`], and the `keys` module (which needs that state) does the rest.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use ferrofab_nvmeof_wire::auth::{DhchapSecret, HashId};
use ferrofab_proto::v1::DhchapKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::ApiError;

/// The sealing key's file name in the PKI directory.
pub const KEY_FILE: &str = "authkeys.key";

/// Bytes of a generated secret: 32 is what `nvme gen-dhchap-key` makes by
/// default and what every Linux host and target accepts.
const SECRET_BYTES: usize = 32;
/// Hex digits of the fingerprint shown instead of a secret: 64 bits are
/// enough to tell keys apart and say nothing useful about the key.
const FINGERPRINT_HEX: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot {what} the authentication key file {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the authentication key file {path} must hold exactly 32 bytes (it holds {len}); restore it from a backup")]
    Length { path: String, len: usize },
    #[error("the authentication key file {path} is missing, but the store holds {count} sealed data-path key(s) that only it opens; restore it from a backup of pki.dir")]
    Missing { path: String, count: usize },
    #[error("the authentication key file {path} has mode {mode:o}: it must be readable by the controller's user only (chmod 600 {path})")]
    Mode { path: String, mode: u32 },
    #[error("the authentication key file {path} does not open the sealed key {slot} in the store (another cluster's key file?); restore the one that goes with this store")]
    Mismatch { path: String, slot: String },
}

/// One sealed secret as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct Sealed {
    pub(crate) generation: u64,
    pub(crate) fingerprint: String,
    nonce: String,
    data: String,
}

/// The sealing key, and a signal that wakes every desired-state stream
/// when a key changed (a rotation).
pub struct Keys {
    cipher: XChaCha20Poly1305,
    /// `[auth] require`.
    require: bool,
    /// Where `require` came from: `config` or `cluster`.
    require_source: &'static str,
    pub(crate) changed: tokio::sync::watch::Sender<u64>,
    /// Host key generations each storage node's target holds, from its
    /// reports: (storage node, host NQN) -> generation.
    /// Mirrored in the store (`authkeys/held/<storage node>`, see
    /// `keys::note_held`) and loaded at start-up, so a restarted
    /// controller hands out keys at once.
    pub(crate) applied: Mutex<HashMap<(String, String), u64>>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub(crate) fn internal(why: &str) -> ApiError {
    ApiError::Internal(format!("authentication keys: {why}"))
}

/// Reads the key file, creating it (0600, fresh random bytes) if absent.
fn load_or_create(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let err = |what, source| KeyError::Io {
        what,
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(b) => {
            let b = Zeroizing::new(b);
            if b.len() != 32 {
                return Err(KeyError::Length {
                    path: path.display().to_string(),
                    len: b.len(),
                });
            }
            Ok(b)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = Zeroizing::new(vec![0u8; 32]);
            rand::rngs::OsRng.fill_bytes(&mut key);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err("create", e))?;
            f.write_all(&key).map_err(|e| err("write", e))?;
            f.sync_all().map_err(|e| err("sync", e))?;
            tracing::info!(path = %path.display(), "authentication key file created");
            Ok(key)
        }
        Err(e) => Err(err("read", e)),
    }
}

fn fingerprint(secret: &str) -> String {
    let d = HashId::Sha256.digest(secret.as_bytes());
    let mut s = String::with_capacity(FINGERPRINT_HEX);
    for b in d.iter().take(FINGERPRINT_HEX / 2) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Keys {
    /// The key file in `pki_dir` (created on first start).
    pub fn open(pki_dir: &Path, require: bool) -> Result<Keys, KeyError> {
        let path: PathBuf = pki_dir.join(KEY_FILE);
        let key = load_or_create(&path)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|_| KeyError::Length {
            path: path.display().to_string(),
            len: key.len(),
        })?;
        Ok(Keys {
            cipher,
            require,
            require_source: "config",
            changed: tokio::sync::watch::channel(0).0,
            applied: Mutex::new(HashMap::new()),
        })
    }

    /// Whether every export requires authentication (`[auth] require`).
    pub fn require(&self) -> bool {
        self.require
    }

    /// Records where `require` came from (`keys::require_policy`).
    pub fn with_require_source(mut self, source: &'static str) -> Self {
        self.require_source = source;
        self
    }

    /// `config` or `cluster`, for GetServerInfo.
    pub fn require_source(&self) -> &'static str {
        self.require_source
    }

    /// Fires whenever a key is rotated.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn seal(
        &self,
        slot: &str,
        generation: u64,
        secret: &str,
    ) -> Result<Sealed, ApiError> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: secret.as_bytes(),
                    aad: slot.as_bytes(),
                },
            )
            .map_err(|_| internal("sealing failed"))?;
        Ok(Sealed {
            generation,
            fingerprint: fingerprint(secret),
            nonce: b64().encode(nonce),
            data: b64().encode(ct),
        })
    }

    pub(crate) fn unseal(&self, slot: &str, s: &Sealed) -> Result<DhchapKey, ApiError> {
        let nonce: [u8; 24] = b64()
            .decode(&s.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| internal(&format!("{slot}: bad nonce")))?;
        let ct = b64()
            .decode(&s.data)
            .map_err(|_| internal(&format!("{slot}: bad ciphertext")))?;
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    (&nonce).into(),
                    Payload {
                        msg: &ct,
                        aad: slot.as_bytes(),
                    },
                )
                .map_err(|_| {
                    internal(&format!(
                        "{slot} does not open with {KEY_FILE} (a different key file?)"
                    ))
                })?,
        );
        let secret = String::from_utf8(plain.to_vec())
            .map_err(|_| internal(&format!("{slot}: not text")))?;
        Ok(DhchapKey {
            secret,
            generation: s.generation,
            fingerprint: s.fingerprint.clone(),
        })
    }

    pub(crate) fn fresh(&self, slot: &str, generation: u64) -> Result<Sealed, ApiError> {
        let secret = DhchapSecret::generate(SECRET_BYTES, Some(HashId::Sha256))
            .map_err(|e| internal(&e.to_string()))?;
        let text = Zeroizing::new(secret.encode());
        self.seal(slot, generation, &text)
    }
}

/// `--check-config`: the key file in `pki_dir` is as start-up needs it.
/// `sealed` holds the sealed keys found in the store (slot, record), or
/// `None` when the store could not be looked into. Without a key file a
/// store without sealed keys is fine (the first start creates the file);
/// with one, it must be private, 32 bytes long and open the store's keys.
pub fn check_key_file(pki_dir: &Path, sealed: Option<&[(String, Sealed)]>) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let path = pki_dir.join(KEY_FILE);
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let count = sealed.map_or(0, <[_]>::len);
            return if count == 0 {
                Ok(())
            } else {
                Err(KeyError::Missing { path: shown, count })
            };
        }
        Err(source) => {
            return Err(KeyError::Io {
                what: "read",
                path: shown,
                source,
            })
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode { path: shown, mode });
    }
    let keys = Keys::open(pki_dir, false)?;
    if let Some((slot, s)) = sealed.and_then(<[_]>::first) {
        keys.unseal(slot, s).map_err(|_| KeyError::Mismatch {
            path: shown,
            slot: slot.clone(),
        })?;
    }
    Ok(())
}

pub(crate) fn applied(keys: &Keys) -> std::sync::MutexGuard<'_, HashMap<(String, String), u64>> {
    keys.applied.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Keys::open(dir.path(), false).expect("create");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = a.fresh("authkeys/host/ws1", 1).expect("seal");
        let b = Keys::open(dir.path(), false).expect("reopen");
        let k = b.unseal("authkeys/host/ws1", &sealed).expect("unseal");
        assert!(k.secret.starts_with("DHHC-1:01:"));
        assert!(DhchapSecret::parse(&k.secret).is_ok());
        assert_eq!(k.fingerprint, fingerprint(&k.secret));
        // Bound to its slot: moved elsewhere it does not open.
        assert!(b.unseal("authkeys/host/ws2", &sealed).is_err());
        // The stored record never holds the secret in clear.
        let json = serde_json::to_string(&sealed).expect("json");
        assert!(!json.contains(&k.secret));
    }

    #[test]
    fn a_truncated_key_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(KEY_FILE), b"short").expect("write");
        let e = Keys::open(dir.path(), false).err().expect("refused");
        assert!(e.to_string().contains(KEY_FILE), "{e}");
    }
}
