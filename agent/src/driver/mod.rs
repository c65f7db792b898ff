//! Data-path drivers: what actually serves and consumes namespaces.
//!
//! * `builtin`: the `ferrofab-nvmeof` target and initiator in this process.
//! * `kernel`: Linux nvmet (configfs) and the nvme-fabrics host (sysfs,
//!   `/dev/nvme-fabrics`), driven directly with no helper tools.
//!
//! The storage reconciler talks to a [`TargetDriver`], the workstation
//! role is one [`WorkstationDriver`]; both are chosen per node by
//! `data_path` in the agent config.

pub mod builtin;
pub mod host_auth;
pub mod kernel;
pub mod target_auth;

use std::sync::Arc;

use ferrofab_nvmeof_target::backend::BlockBackend;
use ferrofab_nvmeof_target::TargetStatus;
use ferrofab_proto::v1::{ConnectionStatus, DesiredState, Export, KeyApplied, Listener};

use crate::reconcile::workstation::LocalAttachment;
use crate::reconcile::{PassOutcome, Problem};

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

/// The workstation side of a data path.
pub trait WorkstationDriver: Send + std::fmt::Debug {
    /// One level-triggered pass over the desired connections.
    fn reconcile(&mut self, ds: &DesiredState) -> PassOutcome;
    /// Connection statuses read back from the data path.
    fn observe(&self, ds: &DesiredState) -> Vec<ConnectionStatus>;
    /// Called when the agent stops.
    fn shutdown(&mut self);
    /// Attachments for the local API.
    fn local_attachments(&self) -> Vec<LocalAttachment>;
}
