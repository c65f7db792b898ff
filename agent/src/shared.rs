//! The state one agent shares between its tasks ([`Shared`]): the config,
//! the desired-state cache, the reconcilers and their drivers, the last
//! report and the metrics. A blocking pass and a blocking observation
//! are methods here; `agent` runs them from its main loop, and the
//! local API (`api`) and config reload (`reload`) read and
//! poke the same state. No globals, so `ferrofab dev` can run several
//! agents in one process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferrofab_proto::v1::{DesiredState, ReportStatusRequest};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::cache::Cache;
use crate::config::{AgentConfig, DriverKind, Role};
use crate::driver::initiator;
use crate::driver::kernel::KernelPaths;
use crate::driver::TargetDriver;
use crate::error::AgentError;
use crate::metrics::{self, Metrics};
use crate::problem::PassOutcome;
use crate::reconcile::storage::StorageReconciler;
use crate::reconcile::workstation::WorkstationReconciler;
use crate::status::{self, LocalAttachment, LocalStatus, NodeNotes};

/// Everything one agent shares between its tasks.
pub(crate) struct Shared {
    pub(crate) cfg: Arc<AgentConfig>,
    cache: Cache,
    storage: Option<Mutex<StorageReconciler>>,
    target: Option<Arc<dyn TargetDriver>>,
    workstation: Option<Mutex<WorkstationReconciler>>,
    pub(crate) hostnqn: Option<String>,
    /// The desired state last applied.
    desired: Mutex<DesiredState>,
    /// The last observation (also what was last reported).
    report: Mutex<ReportStatusRequest>,
    pub(crate) notes: Mutex<NodeNotes>,
    pub(crate) metrics: Metrics,
    pub(crate) controller_connected: Arc<AtomicBool>,
    /// Wakes the main loop for an immediate pass.
    pub(crate) trigger: Notify,
    last_reconcile: AtomicU64,
    last_errors: AtomicU64,
    stopped: AtomicBool,
    /// Expiries already warned about (logged once each).
    expiry_warned: Mutex<crate::expiry::Warned>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(cfg: AgentConfig) -> Result<Self, AgentError> {
        let cfg = Arc::new(cfg);
        let cache = Cache::open(&cfg.state_dir)?;
        let cached = cache.load()?;
        let target = if cfg.has_role(Role::Storage) {
            Some(crate::factory::target(&cfg)?)
        } else {
            None
        };
        let storage = target
            .clone()
            .map(|t| StorageReconciler::new(cfg.clone(), t));
        let metrics = Metrics::default();
        let (workstation, hostnqn) = if cfg.has_role(Role::Workstation) {
            let id = initiator::host_identity(&cfg.state_dir)?;
            let nqn = id.hostnqn.clone();
            let driver = crate::factory::workstation(&cfg, id, metrics.holder.clone())?;
            (Some(WorkstationReconciler::new(driver)), Some(nqn))
        } else {
            (None, None)
        };
        if let Some(ds) = &cached {
            info!(
                revision = ds.revision,
                exports = ds.exports.len(),
                connections = ds.connections.len(),
                "desired state loaded from cache"
            );
        }
        Ok(Shared {
            desired: Mutex::new(cached.unwrap_or_default()),
            cfg,
            cache,
            storage: storage.map(Mutex::new),
            target,
            workstation: workstation.map(Mutex::new),
            hostnqn,
            report: Mutex::new(ReportStatusRequest::default()),
            notes: Mutex::new(NodeNotes::default()),
            metrics,
            controller_connected: Arc::new(AtomicBool::new(false)),
            trigger: Notify::new(),
            last_reconcile: AtomicU64::new(0),
            last_errors: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            expiry_warned: Mutex::new(crate::expiry::Warned::default()),
        })
    }

    /// A `Shared` for unit tests of other modules.
    #[cfg(test)]
    pub(crate) fn new_for_tests(cfg: AgentConfig) -> Self {
        Self::new(cfg).expect("test agent state")
    }

    pub(crate) fn desired(&self) -> DesiredState {
        lock(&self.desired).clone()
    }

    pub(crate) fn last_report(&self) -> ReportStatusRequest {
        lock(&self.report).clone()
    }

    /// Persists a new desired state (before acting on it, so a crash
    /// mid-pass resumes from it).
    pub(crate) fn accept(&self, ds: DesiredState) {
        let old_rev = lock(&self.desired).revision;
        if ds.revision < old_rev {
            warn!(old = old_rev, new = ds.revision, "controller sent an older revision than the cache (restored controller?); applying it");
        }
        // Names that would become paths are checked on arrival too: a bad
        // one is logged and counted now; the drivers refuse the object
        // itself with a status (and touch nothing for it).
        for m in crate::names::refused(&ds) {
            warn!(revision = ds.revision, "desired state: {m}");
            self.metrics.refused_names.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = self.cache.store(&ds) {
            error!(error = %e, "cannot persist the desired state; continuing from memory");
        }
        *lock(&self.desired) = ds;
    }

    /// One reconcile pass over every role (blocking).
    pub(crate) fn pass(&self) -> PassOutcome {
        if self.stopped.load(Ordering::Acquire) {
            return PassOutcome::default();
        }
        let ds = self.desired();
        let t0 = Instant::now();
        let mut out = PassOutcome::default();
        if let Some(s) = &self.storage {
            let mut s = lock(s);
            out.add(s.reconcile(&ds));
            lock(&self.notes).listener_errors = s.listener_errors().to_vec();
        }
        if let Some(w) = &self.workstation {
            let mut w = lock(w);
            out.add(w.reconcile(&ds));
            lock(&self.notes).dhchap_capable = w.driver().dhchap_capable();
        }
        self.metrics.observe_pass(t0.elapsed(), out.errors);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reconcile.store(now, Ordering::Relaxed);
        self.last_errors.store(out.errors as u64, Ordering::Relaxed);
        if out.changes > 0 || out.errors > 0 {
            info!(
                revision = ds.revision,
                changes = out.changes,
                errors = out.errors,
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "reconciled"
            );
        }
        out
    }

    /// Reads the data path back into a status report (blocking).
    pub(crate) fn observe(&self) -> ReportStatusRequest {
        let ds = self.desired();
        let exports = self
            .storage
            .as_ref()
            .map(|s| lock(s).observe(&ds))
            .unwrap_or_default();
        let connections = self
            .workstation
            .as_ref()
            .map(|w| lock(w).observe(&ds))
            .unwrap_or_default();
        lock(&self.notes).data_path_errors = self.data_path_errors();
        if self.workstation.is_some() {
            // Every heartbeat: an expiry entering the window is warned
            // about within seconds even when nothing else changes.
            let now = crate::expiry::now();
            let list = self.expiries(now);
            lock(&self.expiry_warned).check(&list, now);
        }
        let notes = lock(&self.notes).clone();
        let r = ReportStatusRequest {
            node: self.cfg.node.clone(),
            node_status: Some(status::node_status(&self.cfg, &notes)),
            exports,
            connections,
            desired_revision: ds.revision,
        };
        *lock(&self.report) = r.clone();
        r
    }

    /// Missing kernel modules or configfs, for the node's conditions.
    fn data_path_errors(&self) -> Vec<String> {
        if self.cfg.data_path != DriverKind::Kernel {
            return Vec::new();
        }
        let paths = KernelPaths::from_config(&self.cfg.kernel);
        let target = self
            .storage
            .as_ref()
            .and_then(|_| paths.target_unavailable());
        let host = self
            .workstation
            .as_ref()
            .and_then(|_| paths.host_unavailable());
        target.into_iter().chain(host).collect()
    }

    pub(crate) fn local_attachments(&self) -> Vec<LocalAttachment> {
        let mut list = self
            .workstation
            .as_ref()
            .map(|w| lock(w).local_attachments())
            .unwrap_or_default();
        let now = crate::expiry::now();
        crate::expiry::annotate(&mut list, &self.expiries(now), now);
        list
    }

    /// The exposed volumes' expiries, from the desired connections.
    fn expiries(&self, now: i64) -> Vec<crate::expiry::VolumeExpiry> {
        let window = self.cfg.expiry_warning().unwrap_or(86_400);
        crate::expiry::expiries(&lock(&self.desired).connections, now, window)
    }

    pub(crate) fn local_status(&self) -> LocalStatus {
        let report = self.last_report();
        let node = report.node_status.clone().unwrap_or_default();
        LocalStatus {
            schema_version: crate::local_api::SCHEMA_VERSION,
            node: self.cfg.node.clone(),
            version: status::AGENT_VERSION.into(),
            roles: self
                .cfg
                .roles
                .iter()
                .map(|r| format!("{r:?}").to_lowercase())
                .collect(),
            controller_connected: self.controller_connected.load(Ordering::Acquire),
            desired_revision: report.desired_revision,
            last_reconcile_unix: self.last_reconcile.load(Ordering::Relaxed),
            reconcile_errors: self.last_errors.load(Ordering::Relaxed) as usize,
            restart_required: lock(&self.notes).restart_keys.clone(),
            capacity_bytes: node.capacity_bytes,
            free_bytes: node.free_bytes,
            exports: status::local_exports(&report),
            attachments: {
                let mut list = attachments_from_report(&report, &self.cfg);
                let now = crate::expiry::now();
                crate::expiry::annotate(&mut list, &self.expiries(now), now);
                list
            },
        }
    }

    /// Prometheus text for this agent.
    pub(crate) fn render_metrics(&self) -> String {
        let mut out = String::new();
        metrics::render_build_info("agent", &mut out);
        self.metrics.render_core(&mut out);
        metrics::render_gauge(
            "ferrofab_agent_controller_connected",
            "1 while the desired-state stream to the controller is up.",
            u64::from(self.controller_connected.load(Ordering::Acquire)),
            &mut out,
        );
        let report = self.last_report();
        if let Some(t) = &self.target {
            let names = report
                .exports
                .iter()
                .map(|e| (e.subsystem_nqn.clone(), e.volume.clone()))
                .collect();
            metrics::render_target_named(&t.status(), &names, &mut out);
        }
        let conns: Vec<(String, String, String)> = report
            .connections
            .iter()
            .map(|c| {
                let state = c
                    .conditions
                    .first()
                    .map_or("Unknown", |c| c.reason.as_str());
                (c.volume.clone(), c.attachment.clone(), state.to_string())
            })
            .collect();
        metrics::render_connections(&conns, &mut out);
        if self.workstation.is_some() {
            crate::expiry::render(&self.expiries(crate::expiry::now()), &mut out);
        }
        out
    }

    pub(crate) fn stop_data_path(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(w) = &self.workstation {
            lock(w).shutdown();
        }
        if let Some(t) = &self.target {
            t.shutdown();
        }
    }
}

/// Attachments as the local API shows them, from the last observation
/// (never blocked by a pass in progress).
fn attachments_from_report(r: &ReportStatusRequest, cfg: &AgentConfig) -> Vec<LocalAttachment> {
    let mut v: Vec<_> = r
        .connections
        .iter()
        .map(|c| {
            let cond = c.conditions.first();
            LocalAttachment {
                attachment: c.attachment.clone(),
                volume: c.volume.clone(),
                subsystem_nqn: String::new(),
                path: if c.device_path.is_empty() {
                    cfg.expose_dir.join(&c.volume).display().to_string()
                } else {
                    c.device_path.clone()
                },
                read_only: false,
                access_mode: String::new(),
                state: if c.connected {
                    "connected".into()
                } else {
                    cond.map_or("pending".into(), |c| c.reason.clone())
                },
                size_bytes: 0,
                ..Default::default()
            }
        })
        .collect();
    v.sort_by(|a, b| a.attachment.cmp(&b.attachment));
    v
}
