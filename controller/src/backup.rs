//! `ferrofab-controller backup` / `restore`: an encrypted, consistent copy
//! of the control plane's state, and the way to move it between stores
//! (redb → etcd and back: back up from one configuration, restore with the
//! other).
//!
//! **What is in it.** Every store key and value from one list of the whole
//! key space (one redb read transaction, or one pinned etcd revision: a
//! consistent snapshot), plus every regular file at the top of the PKI
//! directory (`ca.crt`, `ca.key`, `server.*` and any issued certificates and
//! keys kept there) with its mode.
//!
//! **Encryption.** XChaCha20-Poly1305 (an AEAD: a wrong key or a modified
//! file is refused, never misread) with a random 24-byte nonce, so random
//! nonces cannot collide in practice. The 32-byte key is either read from a
//! key file (32 raw bytes or 64 hex digits) or derived from a passphrase
//! with Argon2id (64 MiB, 3 passes: memory-hard, so guessing passphrases of
//! a stolen backup is expensive). The header (magic, version, KDF and its
//! parameters, salt, nonce) is authenticated as associated data.
//!
//! ```text
//! "FERROFAB-BACKUP\0"  16 bytes
//! version              u8 = 1
//! kdf                  u8: 1 argon2id(passphrase), 2 key file
//! m_kib, t, p          3 × u32 LE (argon2id parameters; 0 for a key file)
//! salt                 16 bytes
//! nonce                24 bytes
//! ciphertext           JSON payload + 16-byte tag
//! ```
//!
//! **Revisions are not carried over**: the restored objects get new
//! revisions from the target store. Restore into a store that agents have
//! not followed before, and restart the controller afterwards.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::{self, SharedStore, Txn, TxnResult};

const MAGIC: &[u8; 16] = b"FERROFAB-BACKUP\0";
const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const KDF_KEY_FILE: u8 = 2;
const HEADER_LEN: usize = 16 + 1 + 1 + 12 + 16 + 24;
/// Argon2id cost for new backups.
const ARGON_M_KIB: u32 = 64 * 1024;
const ARGON_T: u32 = 3;
const ARGON_P: u32 = 1;
/// Most Argon2id memory a backup header may ask for on restore (1 GiB):
/// the header is read before it is authenticated, so its parameters are
/// bounded before any memory is committed.
const MAX_ARGON_M_KIB: u32 = 1024 * 1024;
const MAX_ARGON_T: u32 = 16;
const MAX_ARGON_P: u32 = 16;
/// Largest backup file restore reads (4 GiB): far above any control
/// plane's state; a larger file is refused before it is read.
const MAX_BACKUP_BYTES: u64 = 4 << 30;
/// Puts per restore transaction, under etcd's default `--max-txn-ops` of
/// 128 so a stock etcd accepts every transaction.
const RESTORE_TXN_OPS: usize = 100;

/// Where the encryption key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The first line of this file is the passphrase.
    PassphraseFile(PathBuf),
    /// 32 raw bytes or 64 hex digits.
    KeyFile(PathBuf),
}

#[derive(Serialize, Deserialize)]
struct Payload1 {
    format: u32,
    /// The store revision the snapshot was read at (informational).
    store_revision: u64,
    created_unix_seconds: u64,
    objects: Vec<Object>,
    files: Vec<File>,
}

#[derive(Serialize, Deserialize)]
struct Object {
    key: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
struct File {
    path: String,
    mode: u32,
    data: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Counts of what a backup or restore handled, for the operator's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub objects: usize,
    pub files: usize,
    pub revision: u64,
}

/// Writes an encrypted backup of `cfg`'s store and PKI directory to `out`.
pub async fn backup(cfg: &Config, key: &KeySource, out: &Path) -> anyhow::Result<Summary> {
    let store = store::open(&cfg.store, &cfg.store_path).context("cannot open the store")?;
    let (kvs, revision) = store.list("").context("cannot read the store")?;
    let files = read_pki_files(&cfg.pki.dir)?;
    let payload = Payload1 {
        format: 1,
        store_revision: revision,
        created_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        objects: kvs
            .iter()
            .map(|kv| Object {
                key: kv.key.clone(),
                value: b64().encode(&kv.value),
            })
            .collect(),
        files,
    };
    let summary = Summary {
        objects: payload.objects.len(),
        files: payload.files.len(),
        revision,
    };
    let plain = serde_json::to_vec(&payload).context("cannot encode the backup")?;
    let sealed = seal(key, &plain)?;
    write_private(out, &sealed)?;
    Ok(summary)
}

fn read_pki_files(dir: &Path) -> anyhow::Result<Vec<File>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the PKI directory {}", dir.display()))?;
    let mut names = BTreeSet::new();
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            if let Some(n) = e.file_name().to_str() {
                names.insert(n.to_string());
            }
        }
    }
    for name in names {
        let p = dir.join(&name);
        let data = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let mode = std::fs::metadata(&p)
            .with_context(|| format!("cannot stat {}", p.display()))?
            .permissions()
            .mode()
            & 0o777;
        out.push(File {
            path: name,
            mode,
            data: b64().encode(data),
        });
    }
    Ok(out)
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Restores `from` into `cfg`'s store and PKI directory. Refuses a store
/// that holds any key, or PKI files that differ, unless `force`; with
/// `force` the store ends up holding exactly the backup's keys.
pub async fn restore(
    cfg: &Config,
    key: &KeySource,
    from: &Path,
    force: bool,
) -> anyhow::Result<Summary> {
    let sealed = read_bounded(from)?;
    let plain = open_sealed(key, &sealed)?;
    let payload: Payload1 =
        serde_json::from_slice(&plain).context("the backup's content is not understood")?;
    if payload.format != 1 {
        bail!(
            "backup format {} is not supported by this controller",
            payload.format
        );
    }
    let objects = decode_objects(&payload.objects)?;
    let files = decode_files(&payload.files)?;
    check_pki(&cfg.pki.dir, &files, force)?;
    let store = store::open(&cfg.store, &cfg.store_path).context("cannot open the store")?;
    let (existing, _) = store.list("").context("cannot read the store")?;
    if !existing.is_empty() && !force {
        bail!(
            "the store already holds {} keys; restore refuses a non-empty store (pass --force to replace its content)",
            existing.len()
        );
    }
    let keep: BTreeSet<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    let mut ops = Txn::new();
    for kv in &existing {
        if !keep.contains(kv.key.as_str()) {
            ops = ops.delete(kv.key.clone());
        }
    }
    write_chunked(&store, ops).await?;
    let mut puts = Txn::new();
    for (k, v) in &objects {
        puts = puts.put(k.clone(), v.clone());
    }
    write_chunked(&store, puts).await?;
    write_pki(&cfg.pki.dir, &files)?;
    Ok(Summary {
        objects: objects.len(),
        files: files.len(),
        revision: store.revision(),
    })
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > MAX_BACKUP_BYTES {
        bail!(
            "{} is {len} bytes, more than the {MAX_BACKUP_BYTES} a backup may be",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn decode_objects(objects: &[Object]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    objects
        .iter()
        .map(|o| {
            let v = b64()
                .decode(&o.value)
                .with_context(|| format!("backup object {} is not valid base64", o.key))?;
            Ok((o.key.clone(), v))
        })
        .collect()
}

fn decode_files(files: &[File]) -> anyhow::Result<Vec<(String, u32, Vec<u8>)>> {
    files
        .iter()
        .map(|f| {
            let plain_name = Path::new(&f.path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
                && !f.path.contains('/');
            if !plain_name || f.path.is_empty() {
                bail!("backup file name {:?} is not a plain file name", f.path);
            }
            let d = b64()
                .decode(&f.data)
                .with_context(|| format!("backup file {} is not valid base64", f.path))?;
            Ok((f.path.clone(), f.mode & 0o777, d))
        })
        .collect()
}

fn check_pki(dir: &Path, files: &[(String, u32, Vec<u8>)], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    for (name, _, data) in files {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(have) if have != *data => bail!(
                "{} exists with other content; restore refuses to overwrite PKI files (pass --force)",
                p.display()
            ),
            _ => {}
        }
    }
    Ok(())
}

fn write_pki(dir: &Path, files: &[(String, u32, Vec<u8>)]) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, mode, data) in files {
        let p = dir.join(name);
        let tmp = dir.join(format!(".{name}.restore"));
        write_private(&tmp, data)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))
            .with_context(|| format!("cannot set the mode of {}", p.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// Commits `txn`'s ops in transactions of at most [`RESTORE_TXN_OPS`].
async fn write_chunked(store: &SharedStore, txn: Txn) -> anyhow::Result<()> {
    for chunk in txn.ops.chunks(RESTORE_TXN_OPS) {
        let t = Txn {
            compares: Vec::new(),
            ops: chunk.to_vec(),
            leader: None,
        };
        let r = store
            .txn(t)
            .await
            .context("the store stopped")?
            .context("cannot write to the store")?;
        if !matches!(r, TxnResult::Committed { .. }) {
            bail!("an unconditional restore write was refused: {r:?}");
        }
    }
    Ok(())
}

fn header(kdf: u8, params: (u32, u32, u32), salt: &[u8; 16], nonce: &[u8; 24]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(kdf);
    for v in [params.0, params.1, params.2] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(salt);
    h.extend_from_slice(nonce);
    h
}

fn seal(source: &KeySource, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let (kdf, params) = match source {
        KeySource::PassphraseFile(_) => (KDF_ARGON2ID, (ARGON_M_KIB, ARGON_T, ARGON_P)),
        KeySource::KeyFile(_) => (KDF_KEY_FILE, (0, 0, 0)),
    };
    let key = derive(source, kdf, params, &salt)?;
    let mut out = header(kdf, params, &salt, &nonce);
    let cipher = XChaCha20Poly1305::new(&key.into());
    let ct = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plain,
                aad: &out,
            },
        )
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_sealed(source: &KeySource, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    let Some(h) = sealed.get(..HEADER_LEN) else {
        bail!("not a ferrofab backup (too short)");
    };
    if &h[..16] != MAGIC {
        bail!("not a ferrofab backup (bad magic)");
    }
    if h[16] != VERSION {
        bail!("backup version {} is not supported", h[16]);
    }
    let kdf = h[17];
    let word = |i: usize| u32::from_le_bytes([h[18 + i], h[19 + i], h[20 + i], h[21 + i]]);
    let params = (word(0), word(4), word(8));
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&h[30..46]);
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&h[46..70]);
    let expected = match source {
        KeySource::PassphraseFile(_) => KDF_ARGON2ID,
        KeySource::KeyFile(_) => KDF_KEY_FILE,
    };
    if kdf != expected {
        bail!(
            "this backup was sealed with a {}; pass {}",
            if kdf == KDF_ARGON2ID {
                "passphrase"
            } else {
                "key file"
            },
            if kdf == KDF_ARGON2ID {
                "--passphrase-file"
            } else {
                "--key-file"
            }
        );
    }
    let key = derive(source, kdf, params, &salt)?;
    let cipher = XChaCha20Poly1305::new(&key.into());
    cipher
        .decrypt(
            (&nonce).into(),
            Payload {
                msg: &sealed[HEADER_LEN..],
                aad: h,
            },
        )
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot decrypt the backup: wrong passphrase or key, or the file was modified"
            )
        })
}

fn derive(
    source: &KeySource,
    kdf: u8,
    (m, t, p): (u32, u32, u32),
    salt: &[u8; 16],
) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    match source {
        KeySource::KeyFile(path) => {
            let raw = std::fs::read(path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            key = parse_key(&raw).with_context(|| format!("key file {}", path.display()))?;
        }
        KeySource::PassphraseFile(path) => {
            if kdf != KDF_ARGON2ID {
                bail!("unknown key derivation {kdf}");
            }
            if m > MAX_ARGON_M_KIB || t > MAX_ARGON_T || p > MAX_ARGON_P {
                bail!("the backup asks for argon2id cost m={m} KiB t={t} p={p}, above the bound m={MAX_ARGON_M_KIB} t={MAX_ARGON_T} p={MAX_ARGON_P}");
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
            let pass = text.lines().next().unwrap_or("");
            if pass.is_empty() {
                bail!("the passphrase file {} is empty", path.display());
            }
            let params = argon2::Params::new(m, t, p, Some(32))
                .map_err(|e| anyhow::anyhow!("argon2id parameters: {e}"))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(pass.as_bytes(), salt, &mut key)
                .map_err(|e| anyhow::anyhow!("argon2id: {e}"))?;
        }
    }
    Ok(key)
}

/// 32 raw bytes, or 64 hex digits (surrounding whitespace ignored).
fn parse_key(raw: &[u8]) -> anyhow::Result<[u8; 32]> {
    if let Ok(k) = <[u8; 32]>::try_from(raw) {
        return Ok(k);
    }
    let text = std::str::from_utf8(raw).unwrap_or("").trim();
    // Byte slicing below needs one byte per char: refuse non-ASCII text
    // instead of panicking on a char boundary.
    if text.len() != 64 || !text.is_ascii() {
        bail!("must hold 32 raw bytes or 64 hex digits");
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| anyhow::anyhow!("must hold 32 raw bytes or 64 hex digits"))?;
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_key_text_is_refused_without_panic() {
        // "é" (2 bytes) at byte 61: the pair 60..62 ends inside it.
        let text = format!("{}é0", "0".repeat(61));
        assert_eq!(text.len(), 64);
        assert!(parse_key(text.as_bytes()).is_err());
    }

    fn key_file(dir: &Path) -> KeySource {
        let p = dir.join("k");
        std::fs::write(
            &p,
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
        )
        .expect("write key");
        KeySource::KeyFile(p)
    }

    #[test]
    fn sealed_payload_round_trips_and_tampering_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = key_file(dir.path());
        let sealed = seal(&k, b"hello").expect("seal");
        assert_eq!(open_sealed(&k, &sealed).expect("open"), b"hello");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open_sealed(&k, &bad).is_err(), "a modified file is refused");
        let mut hdr = sealed.clone();
        hdr[20] ^= 1; // argon parameter word: authenticated too
        assert!(open_sealed(&k, &hdr).is_err());
        let other = dir.path().join("k2");
        std::fs::write(&other, [7u8; 32]).expect("write");
        let err = open_sealed(&KeySource::KeyFile(other), &sealed).expect_err("wrong key");
        assert!(err.to_string().contains("wrong passphrase or key"), "{err}");
    }

    #[test]
    fn passphrase_backups_need_the_passphrase_and_bound_the_kdf_cost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pass");
        std::fs::write(&p, "correct horse\n").expect("write");
        let src = KeySource::PassphraseFile(p.clone());
        let sealed = seal(&src, b"x").expect("seal");
        assert_eq!(open_sealed(&src, &sealed).expect("open"), b"x");
        std::fs::write(&p, "wrong horse\n").expect("write");
        assert!(open_sealed(&src, &sealed).is_err());
        // A header asking for 4 GiB of memory is refused before deriving.
        let mut greedy = sealed.clone();
        greedy[18..22].copy_from_slice(&(4u32 << 20).to_le_bytes());
        let err = open_sealed(&src, &greedy).expect_err("bounded");
        assert!(err.to_string().contains("above the bound"), "{err}");
        let err = open_sealed(&key_file(dir.path()), &sealed).expect_err("kind");
        assert!(err.to_string().contains("--passphrase-file"), "{err}");
    }

    #[test]
    fn file_names_from_a_backup_are_plain() {
        let f = |path: &str| File {
            path: path.into(),
            mode: 0o600,
            data: String::new(),
        };
        assert!(decode_files(&[f("ca.key")]).is_ok());
        for bad in ["../x", "/etc/passwd", "a/b", "", ".."] {
            assert!(decode_files(&[f(bad)]).is_err(), "{bad}");
        }
    }
}
