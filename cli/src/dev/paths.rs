//! The directory layout of `ferrofab dev` (where each file lives under
//! DIR), the lock that keeps one run per directory, and atomic writes.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ferrofab_pki::PkiDir;

use super::POOL;

/// Where everything lives under DIR (absolute: agent configs require it).
#[derive(Debug, Clone)]
pub(super) struct Paths {
    pub(super) root: PathBuf,
}

impl Paths {
    pub(super) fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let root = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        if root.to_str().is_none() {
            bail!("{}: the directory path must be valid UTF-8", root.display());
        }
        Ok(Self { root })
    }
    pub(super) fn state(&self) -> PathBuf {
        self.root.join("dev.toml")
    }
    pub(super) fn lock(&self) -> PathBuf {
        self.root.join("dev.lock")
    }
    pub(super) fn client_config(&self) -> PathBuf {
        self.root.join("client.toml")
    }
    pub(super) fn controller_config(&self) -> PathBuf {
        self.root.join("controller.toml")
    }
    pub(super) fn layout(&self) -> PathBuf {
        self.root.join("layout.toml")
    }
    pub(super) fn pki(&self) -> PkiDir {
        PkiDir::new(self.root.join("pki"))
    }
    pub(super) fn node(&self, name: &str) -> PathBuf {
        self.root.join("nodes").join(name)
    }
    pub(super) fn pool(&self) -> PathBuf {
        self.root.join("pools").join(POOL)
    }
    pub(super) fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
}

/// `Paths::create` checked the root is UTF-8, so every path under it is.
pub(super) fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Holds an exclusive flock on DIR/dev.lock for the life of the process: a
/// second `dev` on the same directory would fight over the store, the
/// ports and the FUSE mount.
pub(super) fn lock_dir(paths: &Paths) -> anyhow::Result<File> {
    let path = paths.lock();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another `ferrofab dev` is already running on {} (it holds {})",
            paths.root.display(),
            path.display()
        );
    }
    Ok(file)
}

/// Readers (a second terminal, the next run) never see half a file.
pub(super) fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
