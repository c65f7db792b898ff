//! The on-disk layout of a PKI directory, `pki init`, and writing issued
//! certificates to files with safe permissions.
//!
//! ```text
//! DIR/            0700 when created here
//!   ca.crt        0644  CA certificate (distribute to clients and nodes)
//!   ca.key        0600  CA private key (controller only)
//!   server.crt    0644  controller server certificate
//!   server.key    0600  controller server key
//! ```
//! `pki issue` writes `STEM.crt` / `STEM.key` with the stem from
//! [`Identity::file_stem`] (`admin`, `tenant-NAME`, `node-NAME`).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::validity::{DEFAULT_CA_VALIDITY, DEFAULT_SERVER_VALIDITY};
use crate::{Ca, Identity, PkiError, Validity};

/// CA certificate file name.
pub const CA_CERT_FILE: &str = "ca.crt";
/// CA key file name.
pub const CA_KEY_FILE: &str = "ca.key";
/// Server certificate file name.
pub const SERVER_CERT_FILE: &str = "server.crt";
/// Server key file name.
pub const SERVER_KEY_FILE: &str = "server.key";

/// Mode of private key files: owner read/write only.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: public.
pub const CERT_MODE: u32 = 0o644;

/// A PKI directory and the paths of the files in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiDir {
    root: PathBuf,
}

impl PkiDir {
    /// The layout rooted at `root`; nothing is touched on disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join(CA_CERT_FILE)
    }

    /// `ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.root.join(CA_KEY_FILE)
    }

    /// `server.crt`.
    pub fn server_cert(&self) -> PathBuf {
        self.root.join(SERVER_CERT_FILE)
    }

    /// `server.key`.
    pub fn server_key(&self) -> PathBuf {
        self.root.join(SERVER_KEY_FILE)
    }

    /// `STEM.crt` for an identity.
    pub fn client_cert(&self, identity: &Identity) -> PathBuf {
        self.root.join(format!("{}.crt", identity.file_stem()))
    }

    /// `STEM.key` for an identity.
    pub fn client_key(&self, identity: &Identity) -> PathBuf {
        self.root.join(format!("{}.key", identity.file_stem()))
    }

    /// Loads the CA (certificate and key) from this directory.
    pub fn load_ca(&self) -> Result<Ca, PkiError> {
        let (cert_path, key_path) = (self.ca_cert(), self.ca_key());
        let cert = read_file(&cert_path)?;
        let key = read_file(&key_path)?;
        warn_if_key_exposed(&key_path);
        Ca::from_pem(&display(&cert_path), &cert, &display(&key_path), &key)
    }
}

/// Options of [`init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Server certificate SANs; empty means [`crate::ca::DEFAULT_SERVER_SANS`].
    pub sans: Vec<String>,
    /// Lifetime of the CA certificate.
    pub ca_validity: Duration,
    /// Lifetime of the server certificate.
    pub server_validity: Duration,
    /// Overwrite existing files (which invalidates every certificate issued
    /// by the old CA).
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            sans: Vec::new(),
            ca_validity: DEFAULT_CA_VALIDITY,
            server_validity: DEFAULT_SERVER_VALIDITY,
            force: false,
        }
    }
}

/// Creates a CA and the controller's server certificate in `dir`.
///
/// Without `force`, checks that none of the four files exists before
/// writing any, so a refused init leaves the directory untouched.
/// Returns the paths written.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<Vec<PathBuf>, PkiError> {
    let layout = PkiDir::new(dir);
    let files = [
        layout.ca_cert(),
        layout.ca_key(),
        layout.server_cert(),
        layout.server_key(),
    ];
    if !opts.force {
        ensure_absent(&files)?;
    }
    let ca = Ca::generate(Validity::from_now(opts.ca_validity)?)?;
    let server = ca.issue_server(&opts.sans, Validity::from_now(opts.server_validity)?)?;
    create_dir(dir)?;
    write_cert(&files[0], ca.cert_pem(), opts.force)?;
    write_key(&files[1], &ca.key_pem(), opts.force)?;
    write_cert(&files[2], &server.cert_pem, opts.force)?;
    write_key(&files[3], &server.key_pem, opts.force)?;
    Ok(files.to_vec())
}

/// Issues a client certificate for `identity` and writes `STEM.crt` and
/// `STEM.key` into `out_dir`. Returns `(cert_path, key_path)`.
pub fn issue_to_dir(
    ca: &Ca,
    identity: &Identity,
    validity: Validity,
    out_dir: &Path,
    force: bool,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let layout = PkiDir::new(out_dir);
    let (cert_path, key_path) = (layout.client_cert(identity), layout.client_key(identity));
    if !force {
        ensure_absent(&[cert_path.clone(), key_path.clone()])?;
    }
    let issued = ca.issue(identity, validity)?;
    create_dir(out_dir)?;
    write_cert(&cert_path, &issued.cert_pem, force)?;
    write_key(&key_path, &issued.key_pem, force)?;
    Ok((cert_path, key_path))
}

/// Errors with the first of `paths` that exists.
fn ensure_absent(paths: &[PathBuf]) -> Result<(), PkiError> {
    for p in paths {
        match fs::symlink_metadata(p) {
            Ok(_) => return Err(PkiError::AlreadyExists { path: p.clone() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PkiError::io(p, e)),
        }
    }
    Ok(())
}

/// Creates `dir` (and parents) as 0700 if missing.
fn create_dir(dir: &Path) -> Result<(), PkiError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| PkiError::io(dir, e))
}

/// Writes a private key with mode 0600.
pub fn write_key(path: &Path, pem: &str, force: bool) -> Result<(), PkiError> {
    write_file(path, pem.as_bytes(), KEY_MODE, force)
}

/// Writes a certificate with mode 0644.
pub fn write_cert(path: &Path, pem: &str, force: bool) -> Result<(), PkiError> {
    write_file(path, pem.as_bytes(), CERT_MODE, force)
}

/// Writes `contents` with `mode`.
///
/// Without `force` the file is created exclusively (never following or
/// replacing anything already there). With `force` a temporary file is
/// written and renamed over the target, so readers never see a half-written
/// key and the old file's (possibly looser) permissions are not inherited.
fn write_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), PkiError> {
    if !force {
        return write_new(path, contents, mode);
    }
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        PkiError::io(path, e)
    })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => PkiError::AlreadyExists {
                path: path.to_owned(),
            },
            _ => PkiError::io(path, e),
        })?;
    // The umask may have narrowed the mode at creation; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| PkiError::io(path, e))?;
    f.write_all(contents).map_err(|e| PkiError::io(path, e))?;
    f.sync_all().map_err(|e| PkiError::io(path, e))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|e| PkiError::io(path, e))
}

/// Logs a warning when a private key is readable by group or others; not an
/// error, because some deployments deliberately share keys with a group.
pub(crate) fn warn_if_key_exposed(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "private key is readable by group or others; chmod 600 it"
            );
        }
    }
}

pub(crate) fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CertInfo;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_writes_four_files_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let files = init(&dir, &InitOptions::default()).unwrap();
        assert_eq!(files.len(), 4);
        let l = PkiDir::new(&dir);
        assert_eq!(mode(&l.ca_key()), 0o600);
        assert_eq!(mode(&l.server_key()), 0o600);
        assert_eq!(mode(&l.ca_cert()), 0o644);
        assert_eq!(mode(&dir), 0o700);
        l.load_ca().unwrap();
    }

    #[test]
    fn init_refuses_to_overwrite_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &InitOptions::default()).unwrap();
        let before = fs::read(tmp.path().join(CA_CERT_FILE)).unwrap();
        let e = init(tmp.path(), &InitOptions::default()).unwrap_err();
        assert!(matches!(e, PkiError::AlreadyExists { .. }), "{e}");
        assert!(e.to_string().contains("ca.crt"), "{e}");
        assert_eq!(fs::read(tmp.path().join(CA_CERT_FILE)).unwrap(), before);
        let forced = InitOptions {
            force: true,
            ..Default::default()
        };
        init(tmp.path(), &forced).unwrap();
        assert_ne!(fs::read(tmp.path().join(CA_CERT_FILE)).unwrap(), before);
        assert_eq!(mode(&tmp.path().join(CA_KEY_FILE)), 0o600);
    }

    #[test]
    fn refused_init_leaves_partial_dir_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(SERVER_KEY_FILE), b"x").unwrap();
        assert!(init(tmp.path(), &InitOptions::default()).is_err());
        assert!(!tmp.path().join(CA_CERT_FILE).exists());
    }

    #[test]
    fn init_then_issue_then_parse_identity() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &InitOptions::default()).unwrap();
        let ca = PkiDir::new(tmp.path()).load_ca().unwrap();
        let id = Identity::tenant("neuro").unwrap();
        let v = Validity::from_now(Duration::from_secs(3600)).unwrap();
        let (crt, key) = issue_to_dir(&ca, &id, v, tmp.path(), false).unwrap();
        assert!(crt.ends_with("tenant-neuro.crt"));
        assert_eq!(mode(&key), 0o600);
        let info = CertInfo::from_pem(&fs::read(&crt).unwrap()).unwrap();
        assert_eq!(info.identity, Some(id.clone()));
        assert!(issue_to_dir(&ca, &id, v, tmp.path(), false).is_err());
        issue_to_dir(&ca, &id, v, tmp.path(), true).unwrap();
    }

    #[test]
    fn load_ca_names_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let e = PkiDir::new(tmp.path()).load_ca().unwrap_err();
        assert!(e.to_string().contains("ca.crt"), "{e}");
    }
}
