//! Observed state: what the agent reports to the controller (ReportStatus)
//! and shows through the local API. Built from the live data path each
//! time, never from what the agent believes it did.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ferrofab_proto::v1::{Condition, NodeStatus, ReportStatusRequest};
use serde::Serialize;

use crate::config::AgentConfig;
use crate::problem::condition;

/// The words for an attachment's state on a workstation, the same in
/// `ferrofab-agent status`, `ferrofab-agent attachments` and the
/// `ferrofab_agent_connection_state` metric: `pending` until a connection
/// exists, then the initiator's link state. Why an attachment is not
/// `live` is a separate `reason` (a condition reason), never a state.
pub const STATES: [&str; 5] = [
    STATE_PENDING,
    STATE_LIVE,
    "reconnecting",
    "failed",
    "closed",
];
/// Connected, I/O flows.
pub const STATE_LIVE: &str = "live";
/// Not connected yet (or no longer): see the reason.
pub const STATE_PENDING: &str = "pending";

/// The state and reason of a reported connection: `live` when
/// connected, else `pending` with the condition's reason.
pub fn reported_state(c: &ferrofab_proto::v1::ConnectionStatus) -> (&'static str, String) {
    if c.connected {
        (STATE_LIVE, String::new())
    } else {
        let reason = c
            .conditions
            .first()
            .map_or_else(String::new, |c| c.reason.clone());
        (STATE_PENDING, reason)
    }
}

/// What the local API shows about one attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LocalAttachment {
    pub attachment: String,
    pub volume: String,
    pub subsystem_nqn: String,
    pub path: String,
    pub read_only: bool,
    /// `read-write`, `read-only` or `read-write-many` (filled in by the
    /// local API from the desired state; empty when unknown).
    pub access_mode: String,
    /// One of [`STATES`].
    pub state: String,
    /// Why the state is not `live` (a condition reason), when known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub size_bytes: u64,
    /// The burst volume's expiry, RFC 3339 (absent: it never expires).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The same, relative to now ("in 13h", "2h ago").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// Within the agent's `expiry_warning` window.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expiry_warning: bool,
}

/// The agent's version, reported in `NodeStatus.agent_version`.
pub const AGENT_VERSION: &str = concat!("ferrofab-agent ", env!("CARGO_PKG_VERSION"));

/// (total, free) bytes of the filesystem holding `path`.
pub fn statvfs(path: &Path) -> Option<(u64, u64)> {
    statvfs_raw(path).map(|(total, free, _)| (total, free))
}

fn statvfs_raw(path: &Path) -> Option<(u64, u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is a plain struct of integers: all zeroes is valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a plain
    // struct the kernel fills in.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize;
    Some((
        st.f_blocks.saturating_mul(frsize),
        st.f_bavail.saturating_mul(frsize),
        st.f_fsid,
    ))
}

/// Capacity of every pool, counting a filesystem shared by several pools
/// once.
pub fn pool_capacity(cfg: &AgentConfig) -> (u64, u64) {
    let mut seen = BTreeSet::new();
    let (mut total, mut free) = (0u64, 0u64);
    for pool in cfg.pools.values() {
        if let Some((t, f, fsid)) = statvfs_raw(&pool.path) {
            if seen.insert(fsid) {
                total = total.saturating_add(t);
                free = free.saturating_add(f);
            }
        }
    }
    (total, free)
}

/// Node-level conditions beyond what the reconcilers report.
#[derive(Debug, Clone, Default)]
pub struct NodeNotes {
    /// Config keys changed on disk that only take effect after a restart.
    pub restart_keys: Vec<String>,
    pub listener_errors: Vec<String>,
    pub certificate_renewal_due: bool,
    /// Why the kernel data path cannot be driven (missing module or
    /// configfs), one message per role.
    pub data_path_errors: Vec<String>,
    pub last_error: Option<String>,
    /// Whether the workstation driver (and, through the holder, the
    /// running holder) can authenticate: filled in by each reconcile pass
    /// from `WorkstationDriver::dhchap_capable`; false on a node without
    /// the workstation role.
    pub dhchap_capable: bool,
}

/// The node part of a report.
pub fn node_status(cfg: &AgentConfig, notes: &NodeNotes) -> NodeStatus {
    let (capacity, free) = pool_capacity(cfg);
    NodeStatus {
        agent_version: AGENT_VERSION.into(),
        capacity_bytes: capacity,
        free_bytes: free,
        conditions: node_conditions(notes),
        // What the workstation driver in use can do now (a holder from
        // before keys cannot), so the controller issues no key that the
        // data path would refuse.
        dhchap_capable: notes.dhchap_capable,
        // nvmet keeps one controller secret per host, not per subsystem.
        dhchap_unidirectional: cfg.data_path == crate::config::DriverKind::Kernel
            && cfg.has_role(crate::config::Role::Storage),
        // Both storage drivers read the allowed hosts back from the target
        // into every export report (`ExportStatus.allowed_hosts`).
        reports_allowed_hosts: true,
        ..Default::default()
    }
}

fn node_conditions(notes: &NodeNotes) -> Vec<Condition> {
    let mut v = Vec::new();
    v.push(if notes.restart_keys.is_empty() {
        condition(
            "ConfigApplied",
            true,
            "ConfigCurrent",
            "running config matches the file",
        )
    } else {
        condition(
            "ConfigApplied",
            false,
            "RestartRequired",
            format!(
                "changed keys need an agent restart: {}",
                notes.restart_keys.join(", ")
            ),
        )
    });
    v.push(if notes.listener_errors.is_empty() {
        condition(
            "DataListeners",
            true,
            "Listening",
            "all data listeners bound",
        )
    } else {
        condition(
            "DataListeners",
            false,
            "ListenFailed",
            notes.listener_errors.join("; "),
        )
    });
    if !notes.data_path_errors.is_empty() {
        v.push(condition(
            "DataPath",
            false,
            "KernelModuleMissing",
            notes.data_path_errors.join("; "),
        ));
    }
    if notes.certificate_renewal_due {
        v.push(condition(
            "Certificate",
            false,
            "RenewalDue",
            "the node certificate is past two thirds of its lifetime; the agent renews it through the controller (re-enroll if that keeps failing)",
        ));
    }
    v
}

/// What `ferrofab-agent status` prints (schema_version 1).
#[derive(Debug, Clone, Serialize)]
pub struct LocalStatus {
    pub schema_version: u32,
    pub node: String,
    pub version: String,
    pub roles: Vec<String>,
    pub controller_connected: bool,
    pub desired_revision: u64,
    pub last_reconcile_unix: u64,
    pub reconcile_errors: usize,
    pub restart_required: Vec<String>,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub exports: Vec<LocalExport>,
    pub attachments: Vec<LocalAttachment>,
}

/// One export as the local API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LocalExport {
    pub volume: String,
    pub subsystem_nqn: String,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// The local view of a report.
pub fn local_exports(report: &ReportStatusRequest) -> Vec<LocalExport> {
    report
        .exports
        .iter()
        .map(|e| {
            let c = e.conditions.first();
            LocalExport {
                volume: e.volume.clone(),
                subsystem_nqn: e.subsystem_nqn.clone(),
                ready: e.ready,
                reason: c.map(|c| c.reason.clone()).unwrap_or_default(),
                message: c.map(|c| c.message.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_reports_something_for_tmp() {
        let (t, f) = statvfs(Path::new("/tmp")).unwrap();
        assert!(t > 0 && f <= t);
        assert!(statvfs(Path::new("/nonexistent/x")).is_none());
    }

    #[test]
    fn restart_condition_names_keys() {
        let notes = NodeNotes {
            restart_keys: vec!["pools".into()],
            ..Default::default()
        };
        let c = node_conditions(&notes);
        assert_eq!(c[0].reason, "RestartRequired");
        assert!(c[0].message.contains("pools"));
        let notes = NodeNotes {
            data_path_errors: vec!["kernel module nvmet is not loaded".into()],
            ..Default::default()
        };
        let c = node_conditions(&notes);
        assert!(c
            .iter()
            .any(|c| c.reason == "KernelModuleMissing" && c.message.contains("nvmet")));
    }
}
