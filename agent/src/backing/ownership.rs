//! Ownership markers: the agent deletes only what it created.
//!
//! Before creating a backing file the agent writes a sidecar
//! `<file>.ferrofab-owner` (JSON: volume, uid, node, state). A file without
//! a marker — pre-existing data, an operator's copy, a block device — is
//! never deleted, whatever a desired state says. The `state` field makes
//! creation crash-safe: `creating` means "the file may or may not exist
//! yet, creating it is fine"; `created` means "the file existed", so a
//! missing file is data loss to report, never something to silently
//! replace with zeroes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::write_atomic;
use crate::error::AgentError;

/// Suffix of the sidecar marker file.
pub const MARKER_SUFFIX: &str = ".ferrofab-owner";

/// Where in its life a backing file created by the agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkerState {
    Creating,
    Created,
}

/// The content of a marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub schema_version: u32,
    pub volume: String,
    pub volume_uid: String,
    pub node: String,
    pub state: MarkerState,
}

/// Path of the marker of `backing`.
pub fn marker_path(backing: &Path) -> PathBuf {
    let mut s = backing.as_os_str().to_owned();
    s.push(MARKER_SUFFIX);
    PathBuf::from(s)
}

/// Reads the marker of `backing`; `None` if absent or unreadable (an
/// unreadable marker proves nothing, so it counts as absent).
pub fn read(backing: &Path) -> Option<Marker> {
    let text = std::fs::read(marker_path(backing)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes (atomically) the marker of `backing`.
pub fn write(backing: &Path, m: &Marker) -> Result<(), AgentError> {
    let json = serde_json::to_vec_pretty(m)
        .map_err(|e| AgentError::Other(format!("encoding owner marker: {e}")))?;
    write_atomic(&marker_path(backing), &json, 0o600)
}

/// Why data may not be deleted, or `Ok` if it may.
pub fn may_delete(backing: &Path, volume: &str) -> Result<(), String> {
    match read(backing) {
        None => Err(format!(
            "{} has no ownership marker ({}): not created by this agent, kept",
            backing.display(),
            marker_path(backing).display()
        )),
        Some(m) if m.volume != volume => Err(format!(
            "{} is marked as owned by volume {:?}, not {volume:?}: kept",
            backing.display(),
            m.volume
        )),
        Some(_) => Ok(()),
    }
}

/// Deletes the backing file and then its marker (in that order, so a
/// crash in between leaves a marker that makes the retry safe).
pub fn delete(backing: &Path) -> Result<(), AgentError> {
    for p in [backing.to_path_buf(), marker_path(backing)] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::io(format!("removing {}", p.display()), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(volume: &str) -> Marker {
        Marker {
            schema_version: 1,
            volume: volume.into(),
            volume_uid: "u1".into(),
            node: "s1".into(),
            state: MarkerState::Created,
        }
    }

    #[test]
    fn never_deletes_without_marker() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data");
        std::fs::write(&f, b"precious").unwrap();
        assert!(may_delete(&f, "v").is_err());
        write(&f, &marker("other")).unwrap();
        assert!(may_delete(&f, "v").unwrap_err().contains("other"));
        write(&f, &marker("v")).unwrap();
        assert!(may_delete(&f, "v").is_ok());
        delete(&f).unwrap();
        assert!(!f.exists());
        assert!(!marker_path(&f).exists());
        delete(&f).unwrap();
    }

    #[test]
    fn marker_path_is_a_sidecar() {
        assert_eq!(
            marker_path(Path::new("/p/uid")),
            PathBuf::from("/p/uid.ferrofab-owner")
        );
    }
}
