//! The last applied desired state, persisted in the state directory.
//!
//! This is what makes the agent statically stable: after a restart with the
//! controller unreachable, exports and attachments are rebuilt from this
//! file exactly as they were (same NQN, namespace identity and backing
//! file), so hosts reconnect within their ctrl-loss timeout and lose
//! nothing. Writes are atomic (temporary file, fsync, rename, fsync of the
//! directory): a crash leaves either the old or the new snapshot.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ferrofab_proto::v1::DesiredState;
use prost::Message;

use crate::error::AgentError;

/// File name of the cached snapshot inside the state directory.
pub const CACHE_FILE: &str = "desired-state.pb";

/// The on-disk desired-state cache of one agent.
#[derive(Debug, Clone)]
pub struct Cache {
    path: PathBuf,
}

impl Cache {
    /// The cache in `state_dir` (created if missing, mode 0700).
    pub fn open(state_dir: &Path) -> Result<Self, AgentError> {
        ensure_dir(state_dir)?;
        Ok(Cache {
            path: state_dir.join(CACHE_FILE),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached snapshot; `None` if there is none yet. A damaged file is
    /// an error rather than "nothing": starting empty would tear down every
    /// export this node serves.
    pub fn load(&self) -> Result<Option<DesiredState>, AgentError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(AgentError::io(
                    format!("reading {}", self.path.display()),
                    e,
                ))
            }
        };
        DesiredState::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| AgentError::Cache {
                path: self.path.clone(),
                message: format!("cannot decode (remove it to start empty): {e}"),
            })
    }

    /// Replaces the snapshot atomically.
    pub fn store(&self, ds: &DesiredState) -> Result<(), AgentError> {
        write_atomic(&self.path, &ds.encode_to_vec(), 0o600)
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| AgentError::io(format!("creating {}", dir.display()), e))
}

/// tmp + fsync + rename + fsync(dir): readers see the old or the new
/// content, never a torn file, even across a power cut.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), AgentError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let what = |op: &str| format!("{op} {}", tmp.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| AgentError::io(what("creating"), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| AgentError::io(what("writing"), e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        AgentError::io(format!("renaming into {}", path.display()), e)
    })?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::Export;

    #[test]
    fn stores_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(&dir.path().join("state")).unwrap();
        assert!(c.load().unwrap().is_none());
        let ds = DesiredState {
            node: "s1".into(),
            revision: 7,
            exports: vec![Export {
                volume: "v".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        c.store(&ds).unwrap();
        assert_eq!(c.load().unwrap(), Some(ds));
        // No temporary files left behind.
        let n = fs::read_dir(dir.path().join("state")).unwrap().count();
        assert_eq!(n, 1);
    }

    #[test]
    fn damaged_cache_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        fs::write(c.path(), b"\xff\xff\xff garbage").unwrap();
        assert!(c.load().is_err());
    }
}
