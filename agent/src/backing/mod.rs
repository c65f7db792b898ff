//! Backing files: the one place that creates, grows, marks and deletes
//! the files that hold volume data on a storage node.
//!
//! Both target drivers serve what this module made: the built-in target
//! gets the opened backend from [`open`], the kernel target (nvmet opens
//! the path itself) has its file grown through [`grow`]. Both go through
//! `ferrofab_nvmeof_target::backend`, so a thick pool's file is allocated the
//! same way whoever serves it.
//!
//! Ownership: before creating a file the agent writes its marker
//! ([`ownership`]); [`delete`] removes only files marked as created by
//! this agent for that volume. Nothing else is ever deleted.

pub mod ownership;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use ferrofab_nvmeof_target::backend::{
    open_backend, BackendError, BackendErrorKind, BlockBackend, DirectIo, FileOptions,
};
use ferrofab_proto::v1::{BackingKind, Export};
use ferrofab_types::Reason;
use tracing::{info, warn};

use crate::config::{PoolConfig, Provisioning};
use crate::error::AgentError;
use crate::problem::Problem;
use ownership::{Marker, MarkerState};

/// The block size files are grown in when the caller does not hold the
/// namespace's own: the smallest one exports may have, so any export
/// size is a whole number of them.
const GROW_BLOCK_SIZE: u32 = 512;

/// Opens (creating if needed, with its ownership marker) the backing
/// store of an export, grown to the desired size. `node` is written into
/// the marker.
pub fn open(node: &str, e: &Export, pool: &PoolConfig) -> Result<Arc<dyn BlockBackend>, Problem> {
    let path = Path::new(&e.backing_path);
    let mut opts = FileOptions {
        create: false,
        size: Some(e.size_bytes),
        block_size: export_block_size(e),
        preallocate: pool.provisioning == Provisioning::Thick,
        ..Default::default()
    };
    let is_device = e.backing_kind == BackingKind::BlockDevice as i32;
    if !is_device && std::fs::symlink_metadata(path).is_err() {
        prepare_create(node, e, path)?;
        opts.create = true;
    }
    let backend = open_backend(path, &opts).map_err(|err| backend_problem("", &err))?;
    if opts.create {
        write_marker(node, e, path, MarkerState::Created)?;
        info!(path = %path.display(), size = e.size_bytes, thick = opts.preallocate, "backing file created");
    }
    Ok(backend)
}

/// Grows the regular file at `path` to `size` bytes if it is smaller;
/// whether it grew. A thick pool's file gets the new range allocated, so
/// writes to it can never fail with `ENOSPC`. For targets that open the
/// file themselves (nvmet); the built-in target grows the backend it
/// holds open.
pub fn grow(path: &Path, size: u64, thick: bool) -> Result<bool, Problem> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Problem::new(
            Reason::GrowFailed,
            format!("growing {}: reading: {e}", path.display()),
        )
    })?;
    if meta.len() >= size {
        return Ok(false);
    }
    let opts = FileOptions {
        create: false,
        size: Some(size),
        block_size: GROW_BLOCK_SIZE,
        preallocate: thick,
        // Only the length and the allocation change: no I/O goes
        // through this handle, so no need to probe O_DIRECT.
        direct_io: DirectIo::Off,
    };
    if let Err(err) = open_backend(path, &opts) {
        // A thick grow that could not allocate has already extended the
        // file: shrink it back, so the next pass tries again instead of
        // finding it "grown" but unallocated. Nobody can have written past
        // the old size yet (the target has not been told of it).
        undo_extension(path, meta.len());
        return Err(backend_problem("growing: ", &err));
    }
    Ok(true)
}

fn undo_extension(path: &Path, len: u64) {
    let grown = std::fs::metadata(path).is_ok_and(|m| m.len() > len);
    if !grown {
        return;
    }
    let undo = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len));
    if let Err(e) = undo {
        warn!(path = %path.display(), error = %e, "undoing a failed grow");
    }
}

/// Deletes the backing data of `volume` at `path` if (and only if) its
/// marker says this agent created it for that volume; an unmarked or
/// foreign file is kept (and logged). Absent data is fine.
pub fn delete(path: &Path, volume: &str) -> Result<(), Problem> {
    if !path.exists() && !ownership::marker_path(path).exists() {
        return Ok(());
    }
    if let Err(why) = ownership::may_delete(path, volume) {
        warn!("{why}");
        return Ok(());
    }
    ownership::delete(path).map_err(|e| Problem::new(Reason::DeleteFailed, e.to_string()))?;
    info!(path = %path.display(), "backing data deleted");
    Ok(())
}

/// The block size of an export (4096 when unset).
pub fn export_block_size(e: &Export) -> u32 {
    if e.block_size == 0 {
        4096
    } else {
        e.block_size
    }
}

/// A backend error as a condition: a full pool is the pool's problem.
fn backend_problem(context: &str, err: &BackendError) -> Problem {
    let reason = match err.kind() {
        BackendErrorKind::NoSpace => Reason::PoolFull,
        BackendErrorKind::Busy => Reason::BackingFileBusy,
        BackendErrorKind::NotFound => Reason::BackingFileMissing,
        _ if context.is_empty() => Reason::BackingFileError,
        _ => Reason::GrowFailed,
    };
    let prefix = if reason == Reason::PoolFull {
        "pool directory full: "
    } else {
        ""
    };
    Problem::new(reason, format!("{prefix}{context}{err}"))
}

/// Before creating a file: refuse if it existed before (data loss must be
/// seen), check the pool directory, and mark the file as ours.
fn prepare_create(node: &str, e: &Export, path: &Path) -> Result<(), Problem> {
    if ownership::read(path).is_some_and(|m| m.state == MarkerState::Created) {
        return Err(Problem::new(
            Reason::BackingFileMissing,
            missing_message(path),
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Err(Problem::new(
            Reason::PoolDirectoryMissing,
            format!("pool directory {} does not exist", dir.display()),
        ));
    }
    write_marker(node, e, path, MarkerState::Creating)
}

/// Writes the ownership marker of the export's backing file.
pub(crate) fn write_marker(
    node: &str,
    e: &Export,
    path: &Path,
    state: MarkerState,
) -> Result<(), Problem> {
    let m = Marker {
        schema_version: 1,
        volume: e.volume.clone(),
        volume_uid: e.volume_uid.clone(),
        node: node.into(),
        state,
    };
    ownership::write(path, &m).map_err(|err| {
        let reason = match &err {
            AgentError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Reason::PoolFull
            }
            _ => Reason::BackingFileError,
        };
        Problem::new(reason, err.to_string())
    })
}

/// (device, inode) of `path`, or `None` if it does not exist: tells a
/// file deleted or replaced behind the agent's back from the one opened.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// "backing file missing", plus where this process still holds it open.
pub fn missing_message(path: &Path) -> String {
    let held = deleted_fd_of(path)
        .map(|fd| {
            format!(
                "; this agent still serves the deleted file: copy /proc/{}/fd/{fd} back before restarting it",
                std::process::id()
            )
        })
        .unwrap_or_default();
    format!(
        "backing file missing: {} was removed out of band{held}",
        path.display()
    )
}

/// The descriptor of this process that points at `path` after it was
/// unlinked.
fn deleted_fd_of(path: &Path) -> Option<String> {
    let want = format!("{} (deleted)", path.display());
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(Result::ok)
        .find(|d| {
            std::fs::read_link(d.path())
                .map(|t| t.to_string_lossy() == want)
                .unwrap_or(false)
        })
        .map(|d| d.file_name().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn grow_extends_and_allocates_for_thick_pools_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data");
        std::fs::write(&f, vec![0u8; 4096]).unwrap();
        assert!(grow(&f, 8192, false).unwrap());
        assert!(!grow(&f, 8192, false).unwrap(), "never twice");
        assert!(!grow(&f, 4096, false).unwrap(), "never shrinks");
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 8192);
        assert!(grow(&f, 1 << 20, true).unwrap());
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert!(m.blocks() * 512 >= (1 << 20) - 8192, "thick grow allocates");
        let p = grow(&dir.path().join("gone"), 8192, false).unwrap_err();
        assert_eq!(p.reason, Reason::GrowFailed, "{p}");
    }

    /// A thick grow the pool has no room for fails with `PoolFull` and
    /// leaves the file as it was, so the next pass retries it (instead of
    /// finding it long enough but unallocated). Mounts a 1 MiB tmpfs:
    /// needs root, like the FUSE tests of this crate.
    #[test]
    fn a_thick_grow_without_room_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (needs root)");
        let f = dir.path().join("data");
        std::fs::write(&f, vec![1u8; 4096]).unwrap();
        let r = grow(&f, 8 << 20, true);
        let len = std::fs::metadata(&f).unwrap().len();
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        let p = r.unwrap_err();
        assert_eq!(p.reason, Reason::PoolFull, "{p}");
        assert_eq!(len, 4096);
    }

    #[test]
    fn delete_keeps_unmarked_and_foreign_data() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data");
        std::fs::write(&f, b"precious").unwrap();
        delete(&f, "v").unwrap();
        assert!(f.exists(), "no marker: kept");
        let e = Export {
            volume: "other".into(),
            ..Default::default()
        };
        write_marker("s1", &e, &f, MarkerState::Created).unwrap();
        delete(&f, "v").unwrap();
        assert!(f.exists(), "another volume's: kept");
        delete(&f, "other").unwrap();
        assert!(!f.exists());
        assert!(!ownership::marker_path(&f).exists());
        delete(&f, "other").unwrap();
    }
}
