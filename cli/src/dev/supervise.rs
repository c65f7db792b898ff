//! Process supervision: the controller and agents started so far, the
//! signals that stop them, and the orderly shutdown of the session.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use ferrofab_agent::AgentHandle;
use ferrofab_controller::server::{self, Flags, ServerError};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::STOP_TIMEOUT;

/// What has been started, so that any exit path stops exactly that.
#[derive(Default)]
pub(super) struct Stack {
    pub(super) controller: Option<ControllerTask>,
    /// In start order: storage, then workstation; with the state
    /// directory of the workstation's data-path holder.
    pub(super) agents: Vec<(AgentHandle, Option<PathBuf>)>,
}

impl Stack {
    /// Workstation first (its detach flushes through the storage target),
    /// then storage, then the controller the agents were talking to.
    pub(super) async fn shutdown(mut self) {
        while let Some((agent, holder)) = self.agents.pop() {
            if tokio::time::timeout(STOP_TIMEOUT, agent.shutdown())
                .await
                .is_err()
            {
                warn!("an agent did not stop within {STOP_TIMEOUT:?}; leaving it to process exit");
            }
            // The holder outlives its agent by design; `dev` leaves no
            // mount behind, so it goes too (before storage: its detach
            // flushes through the storage target).
            if let Some(dir) = holder {
                let stopped = tokio::task::spawn_blocking(move || {
                    ferrofab_agent::holder::cli::stop(&dir, STOP_TIMEOUT)
                })
                .await;
                match stopped {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %e, "stopping the data-path holder"),
                    Err(e) => warn!(error = %e, "stopping the data-path holder"),
                }
            }
        }
        if let Some(c) = self.controller.take() {
            c.stop().await;
        }
    }
}

/// The controller running as a task of this runtime.
pub(super) struct ControllerTask {
    pub(super) stop: oneshot::Sender<()>,
    pub(super) task: JoinHandle<Result<(), ServerError>>,
    pub(super) http: Option<SocketAddr>,
    /// The HTTPS JSON API and dashboard, when `[http_api]` serves them.
    pub(super) api: Option<SocketAddr>,
}

impl ControllerTask {
    pub(super) async fn start(cfg: ferrofab_controller::config::Config) -> anyhow::Result<Self> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = async move {
            let _ = stop_rx.await;
        };
        let ready = move |b: server::Bound| {
            let _ = ready_tx.send(b);
        };
        let task = tokio::spawn(server::run_until(cfg, Flags::default(), stop, ready));
        match ready_rx.await {
            Ok(b) => {
                info!(grpc = %b.grpc, "controller serving");
                Ok(Self {
                    stop: stop_tx,
                    task,
                    http: b.http,
                    api: b.api,
                })
            }
            // `ready` was dropped unused: run_until returned before serving.
            Err(_) => Err(match task.await {
                Ok(Err(e)) => anyhow!(e),
                Ok(Ok(())) => anyhow!("stopped before serving"),
                Err(e) => anyhow!("task failed: {e}"),
            })
            .context("starting the controller"),
        }
    }

    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(STOP_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) => info!("controller stopped"),
            Ok(Ok(Err(e))) => warn!(error = %e, "controller stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "controller task failed"),
            Err(_) => warn!("controller did not stop within {STOP_TIMEOUT:?}"),
        }
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, as one stream.
pub(super) struct Signals {
    pub(super) int: Signal,
    pub(super) term: Signal,
}

impl Signals {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    pub(super) async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
