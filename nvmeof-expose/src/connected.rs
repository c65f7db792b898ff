//! The files of one connected controller, as `ferrofab-nvmeof connect`
//! shows them: one file per namespace in a shared directory such as
//! `/run/ferrofab/volumes`.
//!
//! Several `connect` processes (one per subsystem) share that directory,
//! but a FUSE mount belongs to one process. So each process mounts its own
//! hidden directory `DIR/.mnt/<subsystem>` and puts a relative symlink
//! `DIR/NAME -> .mnt/<subsystem>/NAME` next to the others. Every tool that
//! opens the path (losetup, dd, mkfs, fio) follows the link to the FUSE
//! file, and `stat` reports the live namespace size.
//!
//! Names: namespace 1 is `NAME`, namespace N > 1 is `NAME-nN`, so the common
//! one-namespace case gets the plain name and the mapping needs no state.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ExposeError, ExposeOptions, Exposer};
use ferrofab_nvmeof_host::{DynBlockIo, Namespace};

/// Sub-directory of the exposure directory holding the per-process mounts.
pub const MOUNTS_DIR: &str = ".mnt";

/// File name of namespace `nsid` for base name `base`.
pub fn file_name(base: &str, nsid: u32) -> String {
    if nsid == 1 {
        base.to_string()
    } else {
        format!("{base}-n{nsid}")
    }
}

/// The default base name: what follows the last ':' of the subsystem NQN
/// (`nqn.2026-11.io.ferrofab:scratch` → `scratch`), the part that names
/// the volume, made safe as a single path component.
pub fn default_base_name(subnqn: &str) -> String {
    let tail = subnqn.rsplit(':').next().unwrap_or(subnqn);
    let safe = path_component(tail);
    if safe.is_empty() || safe == "." || safe == ".." {
        path_component(subnqn)
    } else {
        safe
    }
}

/// Replace what cannot appear in one path component (or would surprise a
/// shell user) with '_'.
fn path_component(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._+@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The mounted files of one controller. Dropping it removes the links and
/// unmounts; [`NamespaceFiles::close`] does the same and reports errors.
pub struct NamespaceFiles {
    exposer: Option<Exposer>,
    dir: PathBuf,
    /// The mount point relative to `dir`, which is what the links hold so
    /// they stay valid if the whole tree is bind-mounted elsewhere.
    mount_rel: PathBuf,
    base: String,
    exposed: BTreeMap<u32, String>,
}

impl NamespaceFiles {
    /// Mount the hidden directory for the connection `key` (the subsystem
    /// NQN) under `dir`; files are named after `base`.
    pub fn mount(
        dir: &Path,
        key: &str,
        base: &str,
        opts: &ExposeOptions,
    ) -> Result<Self, ExposeError> {
        super::validate_name(base)?;
        let mount_rel = Path::new(MOUNTS_DIR).join(path_component(key));
        let exposer = Exposer::mount(&dir.join(&mount_rel), opts)?;
        // The mount point is absolute now; keep `dir` consistent with it.
        let dir = exposer
            .mountpoint()
            .ancestors()
            .nth(2)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.to_path_buf());
        Ok(Self {
            exposer: Some(exposer),
            dir,
            mount_rel,
            base: base.to_string(),
            exposed: BTreeMap::new(),
        })
    }

    /// The path users open for namespace `nsid`.
    pub fn path_of(&self, nsid: u32) -> PathBuf {
        self.dir.join(file_name(&self.base, nsid))
    }

    /// Exposed namespaces and their paths.
    pub fn paths(&self) -> Vec<(u32, PathBuf)> {
        self.exposed.keys().map(|&n| (n, self.path_of(n))).collect()
    }

    fn volumes(&self) -> Result<&Exposer, ExposeError> {
        self.exposer
            .as_ref()
            .ok_or_else(|| ExposeError::NotFound("(unmounted)".into()))
    }

    /// Expose namespace `nsid`. Exposing one that is already there only
    /// refreshes its size, so a namespace reported twice (initial scan and
    /// an `Added` event racing it) is harmless.
    pub fn add(&mut self, nsid: u32, dev: Arc<DynBlockIo>) -> Result<PathBuf, ExposeError> {
        self.add_with(nsid, |v, name| v.add(name, dev))
    }

    /// [`NamespaceFiles::add`] for an initiator namespace (see
    /// [`super::Volumes::add_namespace`]).
    pub fn add_namespace(&mut self, nsid: u32, ns: Namespace) -> Result<PathBuf, ExposeError> {
        self.add_with(nsid, |v, name| v.add_namespace(name, ns))
    }

    fn add_with(
        &mut self,
        nsid: u32,
        add: impl FnOnce(&Exposer, &str) -> Result<PathBuf, ExposeError>,
    ) -> Result<PathBuf, ExposeError> {
        let name = file_name(&self.base, nsid);
        if self.exposed.contains_key(&nsid) {
            self.volumes()?.refresh_size(&name)?;
            return Ok(self.path_of(nsid));
        }
        add(self.volumes()?, &name)?;
        let link = self.path_of(nsid);
        if let Err(e) = self.make_link(&name, &link) {
            let _ = self.volumes()?.remove(&name);
            return Err(e);
        }
        self.exposed.insert(nsid, name);
        Ok(link)
    }

    /// Create `link -> .mnt/<key>/name`, replacing only a link of ours that
    /// is dangling (left by a process that died), never a user's file.
    fn make_link(&self, name: &str, link: &Path) -> Result<(), ExposeError> {
        let target = self.mount_rel.join(name);
        match std::fs::symlink_metadata(link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ExposeError::Link(link.to_path_buf(), e)),
            Ok(_) if self.is_stale_link(link) => {
                std::fs::remove_file(link).map_err(|e| ExposeError::Link(link.to_path_buf(), e))?
            }
            Ok(_) => return Err(ExposeError::NameTaken(link.to_path_buf())),
        }
        std::os::unix::fs::symlink(&target, link)
            .map_err(|e| ExposeError::Link(link.to_path_buf(), e))
    }

    /// A link into our mounts directory that no longer resolves, or one
    /// that already points where we would point it.
    fn is_stale_link(&self, link: &Path) -> bool {
        let Ok(dest) = std::fs::read_link(link) else {
            return false;
        };
        if !dest.starts_with(MOUNTS_DIR) {
            return false;
        }
        let expected = link
            .file_name()
            .map(|n| self.mount_rel.join(n))
            .is_some_and(|t| t == dest);
        expected || std::fs::metadata(link).is_err()
    }

    /// Remove the link if it still points to our file.
    fn remove_link(&self, name: &str) {
        let link = self.dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|d| d == self.mount_rel.join(name)) {
            if let Err(e) = std::fs::remove_file(&link) {
                tracing::warn!(link = %link.display(), error = %e, "removing link");
            }
        }
    }

    /// Stop exposing namespace `nsid` (it was removed on the target).
    pub fn remove(&mut self, nsid: u32) -> Result<(), ExposeError> {
        let name = self
            .exposed
            .remove(&nsid)
            .ok_or_else(|| ExposeError::NotFound(file_name(&self.base, nsid)))?;
        self.remove_link(&name);
        self.volumes()?.remove(&name)
    }

    /// Make a new namespace size visible; returns it.
    pub fn refresh(&self, nsid: u32) -> Result<u64, ExposeError> {
        let name = self
            .exposed
            .get(&nsid)
            .ok_or_else(|| ExposeError::NotFound(file_name(&self.base, nsid)))?;
        self.volumes()?.refresh_size(name)
    }

    /// Remove every link and file, unmount, and remove the mount point.
    /// Blocks until the FUSE threads stopped; asynchronous requests still
    /// in flight at the initiator are answered later by the thread that
    /// completes them (a reply to a closed mount fails, logged by fuser).
    pub fn close(mut self) -> Result<(), ExposeError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), ExposeError> {
        let Some(exposer) = self.exposer.take() else {
            return Ok(());
        };
        for name in std::mem::take(&mut self.exposed).into_values() {
            self.remove_link(&name);
            let _ = exposer.remove(&name);
        }
        let mountpoint = exposer.mountpoint().to_path_buf();
        exposer.unmount()?;
        // Only an empty, unmounted directory goes; anything else stays.
        let _ = std::fs::remove_dir(&mountpoint);
        Ok(())
    }
}

impl Drop for NamespaceFiles {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!(error = %e, "tearing the exposed files down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name("vol", 1), "vol");
        assert_eq!(file_name("vol", 7), "vol-n7");
        assert_eq!(
            default_base_name("nqn.2026-11.io.ferrofab:lightsheet-scratch"),
            "lightsheet-scratch"
        );
        assert_eq!(default_base_name("nqn.x:a:b/c d"), "b_c_d");
        assert_eq!(default_base_name("nqn.x:"), "nqn.x_");
        assert_eq!(default_base_name("plain"), "plain");
        assert_eq!(default_base_name("nqn.x:.."), "nqn.x_..");
    }
}
