//! The running agent: wires the controller client, the desired-state cache,
//! the reconcilers, status reports, the local API and metrics together.
//!
//! All state hangs off one `Shared` per agent (no globals), so `ferrofab
//! dev` can run several agents in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrofab_proto::v1::{DesiredState, ReportStatusRequest};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, info_span, warn, Instrument};

use crate::cache::Cache;
use crate::client::ControllerClient;
use crate::config::{AgentConfig, DriverKind, Role};
use crate::driver::kernel::{host::KernelWorkstation, KernelPaths};
use crate::driver::{TargetDriver, WorkstationDriver};
use crate::error::AgentError;
use crate::metrics::{self, Metrics};
use crate::reconcile::storage::StorageReconciler;
use crate::reconcile::workstation::{self, WorkstationReconciler};
use crate::reconcile::PassOutcome;
use crate::status::{self, LocalStatus, NodeNotes};

/// How often status is re-observed and reported between resyncs (heartbeat).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// First retry delay after a pass with errors; doubles up to the resync.
const RETRY_BASE: Duration = Duration::from_millis(100);

/// Sets the process's log filter (the binary passes a tracing reload handle).
pub type LogReload = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Extra start options for embedders and the binary.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Config file to watch for live changes.
    pub config_path: Option<PathBuf>,
    /// Applies `log_level` changes live.
    pub log_reload: Option<LogReload>,
}

/// Entry point of the library.
#[derive(Debug)]
pub struct Agent;

impl Agent {
    /// Starts an agent on the current tokio runtime.
    pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
        Self::start_with(config, StartOptions::default()).await
    }

    /// Starts an agent with a watched config file and/or live log levels.
    pub async fn start_with(
        config: AgentConfig,
        opts: StartOptions,
    ) -> Result<AgentHandle, AgentError> {
        config.validate()?;
        let shared = Arc::new(Shared::new(config.clone())?);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (desired_tx, desired_rx) = watch::channel(None);
        let (report_tx, report_rx) = watch::channel(None);
        let (resync_tx, resync_rx) = watch::channel(config.resync()?);
        let mut tasks = Vec::new();
        let client = ControllerClient::new(&config)?;
        let connected = shared.controller_connected.clone();
        tasks.push(tokio::spawn(
            client
                .run(desired_tx, report_rx, connected, shutdown_rx.clone())
                .instrument(info_span!("client", node = %config.node)),
        ));
        let api = crate::api::AgentApi::new(shared.clone(), ControllerClient::new(&config)?);
        let limits = crate::local_api::ServeLimits {
            config: config.local_api.clone(),
            refused: shared.metrics.local_api_refused.clone(),
        };
        tasks.push(crate::local_api::serve(
            &config.api_socket,
            Arc::new(api),
            limits,
            shutdown_rx.clone(),
        )?);
        let metrics_addr = match config.metrics_listen {
            Some(addr) => {
                let s = shared.clone();
                let render: Arc<dyn Fn() -> String + Send + Sync> =
                    Arc::new(move || s.render_metrics());
                let (bound, task) = metrics::serve(addr, render, shutdown_rx.clone()).await?;
                tasks.push(task);
                Some(bound)
            }
            None => None,
        };
        if let Some(path) = opts.config_path.clone() {
            tasks.push(crate::reload::watch(
                path,
                shared.clone(),
                resync_tx,
                opts.log_reload.clone(),
                shutdown_rx.clone(),
            )?);
        }
        let main = tokio::spawn(
            main_loop(
                shared.clone(),
                desired_rx,
                report_tx,
                resync_rx,
                shutdown_rx,
            )
            .instrument(info_span!("agent", node = %config.node)),
        );
        info!(node = %config.node, roles = ?config.roles, "agent started");
        Ok(AgentHandle {
            shared,
            shutdown_tx,
            main: Some(main),
            tasks,
            metrics_addr,
        })
    }
}

/// A running agent. Dropping it without [`AgentHandle::shutdown`] stops the
/// tasks but leaves the data path to the runtime's teardown.
pub struct AgentHandle {
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    main: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("node", &self.shared.cfg.node)
            .finish_non_exhaustive()
    }
}

impl AgentHandle {
    /// The bound metrics address (useful with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The local status document (what `ferrofab-agent status` shows).
    pub fn status(&self) -> LocalStatus {
        self.shared.local_status()
    }

    /// The NVMe host NQN of this node (workstations).
    pub fn hostnqn(&self) -> Option<String> {
        self.shared.hostnqn.clone()
    }

    /// Stops everything: detaches local attachments (flushing them),
    /// stops the target, unmounts the exposure.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(m) = self.main.take() {
            let _ = m.await;
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.stop_data_path()).await;
        info!(node = %self.shared.cfg.node, "agent stopped");
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

/// Everything one agent shares between its tasks.
pub(crate) struct Shared {
    pub(crate) cfg: Arc<AgentConfig>,
    cache: Cache,
    storage: Option<Mutex<StorageReconciler>>,
    target: Option<Arc<dyn TargetDriver>>,
    workstation: Option<Mutex<Box<dyn WorkstationDriver>>>,
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
    fn new(cfg: AgentConfig) -> Result<Self, AgentError> {
        let cfg = Arc::new(cfg);
        let cache = Cache::open(&cfg.state_dir)?;
        let cached = cache.load()?;
        let storage = if cfg.has_role(Role::Storage) {
            Some(StorageReconciler::new(cfg.clone())?)
        } else {
            None
        };
        let target = storage.as_ref().map(|s| s.driver_handle());
        let metrics = Metrics::default();
        let (workstation, hostnqn) = if cfg.has_role(Role::Workstation) {
            let id = workstation::host_identity(&cfg.state_dir)?;
            let nqn = id.hostnqn.clone();
            let w: Box<dyn WorkstationDriver> = match cfg.data_path {
                DriverKind::Builtin if cfg.holder.enabled => {
                    let (start, request) = cfg.holder.timeouts()?;
                    Box::new(
                        crate::holder::driver::HolderWorkstation::new(
                            holder_spawn_spec(&cfg)?,
                            nqn.clone(),
                            start,
                            request,
                        )
                        .with_counters(metrics.holder.clone()),
                    )
                }
                DriverKind::Builtin => Box::new(WorkstationReconciler::new(cfg.clone(), id)),
                DriverKind::Kernel => Box::new(KernelWorkstation::new(
                    &cfg,
                    KernelPaths::from_config(&cfg.kernel),
                    id,
                )),
            };
            (Some(w), Some(nqn))
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
    fn accept(&self, ds: DesiredState) {
        let old_rev = lock(&self.desired).revision;
        if ds.revision < old_rev {
            warn!(old = old_rev, new = ds.revision, "controller sent an older revision than the cache (restored controller?); applying it");
        }
        // Names that would become paths are checked on arrival too: a bad
        // one is logged and counted now; the drivers refuse the object
        // itself with a status (and touch nothing for it).
        for m in crate::reconcile::names::refused(&ds) {
            warn!(revision = ds.revision, "desired state: {m}");
            self.metrics.refused_names.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = self.cache.store(&ds) {
            error!(error = %e, "cannot persist the desired state; continuing from memory");
        }
        *lock(&self.desired) = ds;
    }

    /// One reconcile pass over every role (blocking).
    fn pass(&self) -> PassOutcome {
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
            out.add(lock(w).reconcile(&ds));
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
    fn observe(&self) -> ReportStatusRequest {
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

    pub(crate) fn local_attachments(&self) -> Vec<crate::reconcile::workstation::LocalAttachment> {
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
    fn render_metrics(&self) -> String {
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

    fn stop_data_path(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(w) = &self.workstation {
            lock(w).shutdown();
        }
        if let Some(t) = &self.target {
            t.shutdown();
        }
    }
}

/// How this agent starts its data-path holder: the configured binary, or
/// its own executable (which has the `holder run` subcommand).
fn holder_spawn_spec(cfg: &AgentConfig) -> Result<crate::holder::SpawnSpec, AgentError> {
    let binary = match &cfg.holder.binary {
        Some(b) => b.clone(),
        None => live_exe_path(std::env::current_exe().map_err(|e| AgentError::Io {
            what: "locating the agent executable for the data-path holder".into(),
            source: e,
        })?),
    };
    Ok(crate::holder::SpawnSpec {
        binary,
        state_dir: cfg.state_dir.clone(),
        expose_dir: cfg.expose_dir.clone(),
        log_level: cfg.log_level.clone(),
    })
}

/// After a package upgrade replaced the running binary, Linux reports it
/// as `PATH (deleted)`; the new binary at `PATH` is the one to start.
fn live_exe_path(p: PathBuf) -> PathBuf {
    match p.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(live) => PathBuf::from(live),
        None => p,
    }
}

/// Attachments as the local API shows them, from the last observation
/// (never blocked by a pass in progress).
fn attachments_from_report(
    r: &ReportStatusRequest,
    cfg: &AgentConfig,
) -> Vec<crate::reconcile::workstation::LocalAttachment> {
    let mut v: Vec<_> = r
        .connections
        .iter()
        .map(|c| {
            let cond = c.conditions.first();
            crate::reconcile::workstation::LocalAttachment {
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

async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared) -> T + Send + 'static,
) -> Option<T> {
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(v) => Some(v),
        Err(e) => {
            error!(error = %e, "reconcile task failed");
            None
        }
    }
}

/// Reconciles on every new desired state, on the resync period, on
/// request (local API) and sooner after failures; observes and reports
/// after each pass and on every heartbeat.
async fn main_loop(
    shared: Arc<Shared>,
    mut desired_rx: watch::Receiver<Option<DesiredState>>,
    report_tx: watch::Sender<Option<ReportStatusRequest>>,
    resync_rx: watch::Receiver<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut resync = *resync_rx.borrow();
    let mut resync_rx = LiveSetting::new(resync_rx);
    let mut retry = RETRY_BASE;
    let mut next_pass = Instant::now();
    let mut heartbeat = tokio::time::interval(HEARTBEAT.min(resync));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        shared
            .metrics
            .main_loop_wakeups
            .fetch_add(1, Ordering::Relaxed);
        if Instant::now() >= next_pass {
            let out = blocking(&shared, Shared::pass).await.unwrap_or_default();
            next_pass = if out.errors > 0 {
                let d = retry;
                retry = (retry * 2).min(resync);
                Instant::now() + d
            } else {
                retry = RETRY_BASE;
                Instant::now() + resync
            };
            publish(&shared, &report_tx).await;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            r = desired_rx.changed() => {
                if r.is_err() {
                    return;
                }
                let ds = desired_rx.borrow_and_update().clone();
                if let Some(ds) = ds {
                    let s = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || s.accept(ds)).await;
                    next_pass = Instant::now();
                }
            }
            _ = tokio::time::sleep_until(next_pass.into()) => {}
            _ = shared.trigger.notified() => next_pass = Instant::now(),
            _ = heartbeat.tick() => publish(&shared, &report_tx).await,
            r = resync_rx.changed() => {
                resync = r;
                info!(resync_s = resync.as_secs(), "resync interval changed");
                next_pass = next_pass.min(Instant::now() + resync);
            }
        }
    }
}

/// A live setting (from the watched config file) as a select! branch.
///
/// Without a watched config file (`ferrofab dev`, embedders) the sender is
/// dropped at start, and a closed `watch::Receiver::changed` is ready at
/// once on every poll: polled raw in the main loop's select! it turned the
/// loop into a busy loop (a whole core per agent while idle). Once the
/// sender is gone this branch never fires again instead.
struct LiveSetting<T> {
    rx: Option<watch::Receiver<T>>,
}

impl<T: Clone> LiveSetting<T> {
    fn new(rx: watch::Receiver<T>) -> Self {
        LiveSetting { rx: Some(rx) }
    }

    /// The new value when it changes; pending forever once nobody can
    /// change it any more.
    async fn changed(&mut self) -> T {
        if let Some(rx) = self.rx.as_mut() {
            if rx.changed().await.is_ok() {
                return rx.borrow_and_update().clone();
            }
            self.rx = None;
        }
        std::future::pending().await
    }
}

async fn publish(shared: &Arc<Shared>, tx: &watch::Sender<Option<ReportStatusRequest>>) {
    if let Some(r) = blocking(shared, Shared::observe).await {
        let _ = tx.send(Some(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_binary_is_started_from_its_live_path() {
        assert_eq!(
            live_exe_path("/usr/bin/ferrofab-agent (deleted)".into()),
            PathBuf::from("/usr/bin/ferrofab-agent")
        );
        assert_eq!(
            live_exe_path("/usr/bin/ferrofab-agent".into()),
            PathBuf::from("/usr/bin/ferrofab-agent")
        );
    }

    /// An agent started without a watched config file (as `ferrofab dev`
    /// starts its two) must sleep between events: its main loop used to
    /// spin on the closed resync channel. Counts wake-ups while another
    /// task yields 200 times: a busy loop is polled again at each yield,
    /// a sleeping one not at all. No clock is involved.
    #[tokio::test]
    async fn main_loop_sleeps_without_a_watched_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AgentConfig::for_tests("n1");
        cfg.state_dir = dir.path().join("state");
        let shared = Arc::new(Shared::new(cfg).unwrap());
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        let (_desired_tx, desired_rx) = watch::channel(None);
        let (report_tx, mut report_rx) = watch::channel(None);
        // No config file is watched: the sender goes away at once.
        let (resync_tx, resync_rx) = watch::channel(Duration::from_secs(3600));
        drop(resync_tx);
        let task = tokio::spawn(main_loop(
            shared.clone(),
            desired_rx,
            report_tx,
            resync_rx,
            shutdown_rx,
        ));
        // The first pass and its report: the loop then waits.
        report_rx.changed().await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let before = shared.metrics.main_loop_wakeups.load(Ordering::Relaxed);
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        let after = shared.metrics.main_loop_wakeups.load(Ordering::Relaxed);
        task.abort();
        assert!(
            after - before <= 2,
            "the idle main loop woke {} times",
            after - before
        );
    }

    #[test]
    fn a_closed_live_setting_stays_pending() {
        use std::task::{Context, Poll, Waker};
        fn poll_once<F: std::future::Future>(f: F) -> Poll<F::Output> {
            let mut f = std::pin::pin!(f);
            f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        }
        let (tx, rx) = watch::channel(1u32);
        let mut raw = rx.clone();
        let mut live = LiveSetting::new(rx);
        assert!(poll_once(live.changed()).is_pending());
        tx.send(2).unwrap();
        assert_eq!(poll_once(live.changed()), Poll::Ready(2));
        drop(tx);
        // The hazard: a closed receiver is ready on every poll.
        assert!(poll_once(raw.changed()).is_ready());
        assert!(poll_once(raw.changed()).is_ready());
        for _ in 0..3 {
            assert!(poll_once(live.changed()).is_pending());
        }
    }
}
