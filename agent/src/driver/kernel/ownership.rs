//! What the kernel driver created, so that it adopts its own objects on
//! start and never touches an admin's (nvmetcli, hand-made, another tool).
//!
//! The kernel keeps no owner for configfs objects or fabrics controllers,
//! so the agent records each object in a state file *before* creating it
//! (a crash in between leaves a record of an object that may not exist,
//! never an object nobody claims). Records are verified against the live
//! trees: a record whose object is gone is dropped, and a subsystem must
//! also carry the model marker the agent writes into `attr_model`, so an
//! NQN re-created by someone else after the agent's record is not adopted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::cache::write_atomic;
use crate::error::AgentError;

/// `attr_model` of every subsystem the agent creates (what hosts see as
/// the model number), the kernel-side half of the ownership mark.
pub const MODEL_MARKER: &str = "ferrofab";

/// File name of the target-side record in the state directory.
pub const TARGET_STATE_FILE: &str = "kernel-target.json";
/// File name of the host-side record in the state directory.
pub const HOST_STATE_FILE: &str = "kernel-host.json";

/// nvmet objects created by this agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedTarget {
    #[serde(default)]
    pub subsystems: BTreeSet<String>,
    /// Port IDs (`nvmet/ports/<id>`).
    #[serde(default)]
    pub ports: BTreeSet<u16>,
    /// Host NQNs (`nvmet/hosts/<nqn>`) the agent made; hosts that already
    /// existed are used but never removed.
    #[serde(default)]
    pub hosts: BTreeSet<String>,
}

/// One fabrics controller the agent connected, by attachment name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedController {
    /// Controller name (`nvme3`), `None` while the connect is in flight.
    pub controller: Option<String>,
    pub subsysnqn: String,
    pub transport: String,
    pub traddr: String,
    pub trsvcid: String,
    pub exposure_name: String,
    pub volume: String,
    pub uuid: String,
    pub read_only: bool,
    /// The option string written to `/dev/nvme-fabrics`, so a changed
    /// connection (address, digests, ...) is noticed and redone. Without
    /// the DH-HMAC-CHAP secrets, which are added only to what is written.
    pub options: String,
    /// The host and controller keys the controller authenticates with
    /// (generation and fingerprint, never the secret), so a rotation is
    /// noticed and followed on the live controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctrl_key: Option<KeyId>,
}

/// Which key (what may be recorded and shown of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyId {
    pub generation: u64,
    pub fingerprint: String,
}

impl KeyId {
    pub fn of(k: Option<&ferrofab_proto::v1::DhchapKey>) -> Option<KeyId> {
        k.map(|k| KeyId {
            generation: k.generation,
            fingerprint: k.fingerprint.clone(),
        })
    }
}

/// Controllers connected by this agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedHost {
    #[serde(default)]
    pub controllers: BTreeMap<String, OwnedController>,
}

/// A JSON record in the state directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(state_dir: &Path, name: &str) -> Self {
        StateFile {
            path: state_dir.join(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record, or an empty one. An unreadable record is reported and
    /// treated as empty: the agent then owns nothing, which can only make
    /// it report conflicts, never delete something.
    pub fn load<T: DeserializeOwned + Default>(&self) -> T {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                warn!(path = %self.path.display(), error = %e, "unreadable ownership record; owning nothing");
                T::default()
            }),
            Err(_) => T::default(),
        }
    }

    pub fn store<T: Serialize>(&self, v: &T) -> Result<(), AgentError> {
        if let Some(dir) = self.path.parent() {
            crate::cache::ensure_dir(dir)?;
        }
        let json = serde_json::to_vec_pretty(v)
            .map_err(|e| AgentError::Other(format!("encoding {}: {e}", self.path.display())))?;
        write_atomic(&self.path, &json, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_own_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), TARGET_STATE_FILE);
        assert_eq!(f.load::<OwnedTarget>(), OwnedTarget::default());
        let mut t = OwnedTarget::default();
        t.subsystems.insert("nqn.x".into());
        t.ports.insert(3);
        f.store(&t).unwrap();
        assert_eq!(f.load::<OwnedTarget>(), t);
        std::fs::write(f.path(), b"{not json").unwrap();
        assert_eq!(f.load::<OwnedTarget>(), OwnedTarget::default());
    }
}
