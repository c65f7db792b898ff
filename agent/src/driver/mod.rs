//! Data-path drivers: what actually serves and consumes namespaces.
//!
//! Both roles have fine-grained driver traits with one reconciler each
//! above them (`reconcile`); the drivers know how, the reconcilers
//! know when. `factory` picks the drivers from the config
//! (`data_path`, and `holder.enabled` for the built-in workstation).
//!
//! | role        | trait                 | built-in                                   | kernel                   |
//! |-------------|-----------------------|--------------------------------------------|--------------------------|
//! | storage     | [`TargetDriver`]      | [`builtin::BuiltinTarget`] (in process)    | [`kernel::configfs`]     |
//! | workstation | [`WorkstationDriver`] | [`initiator::BuiltinInitiator`] in the holder process, reached through `holder::driver` (or in process with `holder.enabled = false`) | [`kernel::host`] |
//!
//! * `builtin` and `initiator`: the `ferrofab-nvmeof` target and initiator.
//! * `kernel`: Linux nvmet (configfs) and the nvme-fabrics host (sysfs,
//!   `/dev/nvme-fabrics`), driven directly with no helper tools.
//!
//! Backing files are not the drivers' business: `backing` makes, grows
//! and deletes them (nvmet's driver asks it to grow the file nvmet opened).

pub mod builtin;
pub mod host_auth;
pub mod initiator;
pub mod kernel;
pub mod target_auth;

use std::sync::Arc;

use ferrofab_nvmeof_target::backend::BlockBackend;
use ferrofab_nvmeof_target::TargetStatus;
use ferrofab_proto::v1::{Connection, ConnectionStatus, Export, KeyApplied, Listener};

use crate::problem::Problem;

/// The namespace ID every export uses (one volume per subsystem).
pub const NSID: u32 = 1;

/// The target side of a data path. Every method is idempotent and touches
/// only the object it names (and only objects this agent owns).
pub trait TargetDriver: Send + Sync + std::fmt::Debug {
    /// What the target really serves now, read back from the data path.
    fn status(&self) -> TargetStatus;
    /// Called when the agent stops.
    fn shutdown(&self);
    /// Makes the listeners exactly `wanted`; one message per failure.
    fn sync_listeners(&self, wanted: &[Listener]) -> Vec<String>;
    /// Whether this agent serves `nqn` (a foreign object does not count).
    fn has_subsystem(&self, nqn: &str) -> bool;
    fn add_subsystem(&self, e: &Export) -> Result<(), Problem>;
    fn has_namespace(&self, nqn: &str) -> bool;
    /// Adds namespace 1 of `e`. `backend` is the backing store the agent
    /// opened (created and sized); a driver that opens the path itself
    /// may simply drop it.
    fn add_namespace(&self, e: &Export, backend: Arc<dyn BlockBackend>) -> Result<(), Problem>;
    /// Grows namespace 1 to `size` if smaller; whether it grew. `thick`:
    /// the pool preallocates, so the new space must be allocated too.
    fn grow(&self, nqn: &str, size: u64, thick: bool) -> Result<bool, Problem>;
    /// Makes the allow-list exactly `hosts`.
    fn sync_hosts(&self, nqn: &str, hosts: &[String]) -> Result<(), Problem>;
    /// Makes the read-only subset of the allow-list exactly `hosts`: their
    /// write-class commands are refused. The kernel target (nvmet) has no
    /// per-host read-only, so its driver keeps this default and read-only
    /// attachments are enforced on the workstation alone (see
    /// docs/agent.md, "Access modes").
    fn sync_read_only_hosts(&self, _nqn: &str, _hosts: &[String]) -> Result<(), Problem> {
        Ok(())
    }
    /// Makes the DH-HMAC-CHAP keys and policy of `e`'s subsystem what `e`
    /// says (before hosts are admitted). A driver without authentication
    /// support keeps this default, and reports no keys held.
    fn sync_auth(&self, _e: &Export) -> Result<(), Problem> {
        Ok(())
    }
    /// The host key generations the target holds for `nqn`.
    fn host_keys_applied(&self, _nqn: &str) -> Vec<KeyApplied> {
        Vec::new()
    }
    /// Host NQNs of connected controllers, where the data path can tell.
    fn connected_hosts(&self, nqn: &str) -> Vec<String>;
    /// Removes a subsystem this agent owns (a no-op if absent).
    fn remove_subsystem(&self, nqn: &str) -> Result<(), Problem>;
    /// NQNs of the subsystems this agent owns.
    fn subsystems(&self) -> Vec<String>;
}

/// The workstation side of a data path: connections to storage nodes and
/// the files or links that expose them. Every method is idempotent and
/// touches only attachments this driver made (an admin's own `nvme
/// connect` is never listed, so never disconnected).
pub trait WorkstationDriver: Send + std::fmt::Debug {
    /// Makes the driver ready for `wanted` (mounts the exposure directory,
    /// starts or adopts the holder, checks kernel modules). An error
    /// blocks the whole pass and is every connection's status.
    fn prepare(&mut self, wanted: &[Connection]) -> Result<(), Problem>;
    /// Refuses, before anything is touched, a connection this driver
    /// cannot make (an unsafe exposure name, options it cannot express).
    fn check(&self, c: &Connection) -> Result<(), Problem>;
    /// What this driver has attached now, read back from the data path.
    fn list(&self) -> Listing;
    /// Whether the live attachment named `attachment` still serves `c`:
    /// made for the same session and not failed for good. One that does
    /// not is disconnected and connected again.
    fn serves(&self, attachment: &str, c: &Connection) -> bool;
    /// Connects `c` and exposes its namespace 1; whether anything changed.
    fn connect(&mut self, c: &Connection) -> Result<bool, Problem>;
    /// Keeps a live attachment of `c` exposed: re-creates a missing
    /// exposure, takes a grown namespace's new size, follows informational
    /// fields (the expiry). Whether anything changed.
    fn expose(&mut self, c: &Connection) -> Result<bool, Problem>;
    /// Removes the exposure, then disconnects (flushing); whether there
    /// was anything to remove.
    fn disconnect(&mut self, attachment: &str) -> Result<bool, Problem>;
    /// Called when the agent stops.
    fn shutdown(&mut self);
    /// Whether connections made now can authenticate with the keys the
    /// controller sends (DH-HMAC-CHAP). The agent reports it
    /// (`NodeStatus.dhchap_capable`) and the controller issues a host key
    /// only to a node that says so; a driver that cannot keeps this
    /// default, and its connections go without a key.
    fn dhchap_capable(&self) -> bool {
        false
    }
}

/// What a workstation driver reads back: its attachments, or (when the
/// data path cannot be read now) the ones it saw last.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub attachments: Vec<Attachment>,
    /// Set when the data path could not be listed now: `attachments` are
    /// as last seen, which says nothing about whether they went away.
    pub stale: Option<Problem>,
}

impl Listing {
    pub fn get(&self, attachment: &str) -> Option<&Attachment> {
        self.attachments.iter().find(|a| a.attachment == attachment)
    }
}

/// One attachment as a workstation driver reads it back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attachment {
    pub attachment: String,
    pub volume: String,
    pub subsystem_nqn: String,
    pub read_only: bool,
    /// Where it is exposed (the file or the link).
    pub path: String,
    /// The controller's state, lower case (`live`, `reconnecting`, `gone`…).
    pub state: String,
    /// Whether the controller is up (a detaching one reports it).
    pub live: bool,
    pub size_bytes: u64,
    /// Its status while desired, with the driver's own wording.
    pub status: ConnectionStatus,
}
