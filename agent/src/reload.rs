//! Live config changes: the file is watched with `notify`; keys that are
//! safe to change at run time (resync interval, log level) apply at once,
//! others are logged and reported as "restart required" in the node's
//! status, so an operator sees that the file and the process disagree.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::shared::Shared;

/// Sets the process's log filter (the binary passes a tracing reload handle).
pub type LogReload = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Starts watching `path`; returns the task that applies changes.
pub(crate) fn watch(
    path: PathBuf,
    shared: Arc<Shared>,
    resync_tx: watch::Sender<Duration>,
    log_reload: Option<LogReload>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.paths.iter().any(|p| p.file_name() == name.as_deref()) {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| AgentError::Other(format!("watching {}: {e}", path.display())))?;
    // Watch the directory: editors and config management replace the file
    // (rename), which a watch on the file itself would lose.
    let dir = path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| AgentError::Other(format!("watching {}: {e}", dir.display())))?;
    Ok(tokio::spawn(async move {
        let _keep = watcher;
        loop {
            tokio::select! {
                r = rx.recv() => {
                    if r.is_none() {
                        return;
                    }
                    // Let a burst of events (write + rename) settle.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while rx.try_recv().is_ok() {}
                    apply(&path, &shared, &resync_tx, log_reload.as_ref());
                }
                _ = shutdown.changed() => return,
            }
        }
    }))
}

fn apply(
    path: &std::path::Path,
    shared: &Shared,
    resync_tx: &watch::Sender<Duration>,
    log_reload: Option<&LogReload>,
) {
    let new = match AgentConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "config change rejected; the running config stays");
            shared
                .notes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_error = Some(e.to_string());
            return;
        }
    };
    let cur = &shared.cfg;
    if let Ok(d) = new.resync() {
        if *resync_tx.borrow() != d {
            let _ = resync_tx.send(d);
        }
    }
    if new.log_level != cur.log_level {
        match log_reload {
            Some(f) => match f(&new.log_level) {
                Ok(()) => info!(level = %new.log_level, "log level changed"),
                Err(e) => warn!(error = %e, "log level not applied"),
            },
            None => warn!("log level change ignored: no reload hook in this process"),
        }
    }
    let keys: Vec<String> = cur
        .restart_keys(&new)
        .into_iter()
        .map(String::from)
        .collect();
    if !keys.is_empty() {
        warn!(keys = ?keys, "config changes need an agent restart");
    }
    let mut notes = shared.notes.lock().unwrap_or_else(|p| p.into_inner());
    notes.restart_keys = keys;
    notes.last_error = None;
}
