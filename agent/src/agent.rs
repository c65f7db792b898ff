//! The running agent: wires the controller client, the desired-state cache,
//! the reconcilers, status reports, the local API and metrics together.
//!
//! All state hangs off one [`Shared`] per agent (`crate::shared`); this
//! module only starts the tasks and runs the main loop over it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrofab_proto::v1::{DesiredState, ReportStatusRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, info_span, Instrument};

use crate::client::ControllerClient;
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::metrics;
use crate::reload::LogReload;
use crate::shared::Shared;
use crate::status::LocalStatus;

/// How often status is re-observed and reported between resyncs (heartbeat).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// First retry delay after a pass with errors; doubles up to the resync.
const RETRY_BASE: Duration = Duration::from_millis(100);

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
