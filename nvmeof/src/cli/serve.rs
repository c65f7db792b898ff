//! `ferrofab-nvmeof serve --config target.toml`: run the target from a
//! file, re-applying it live on SIGHUP or when the file changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::Watcher;

use ferrofab_nvmeof_target::config::{apply, ApplyReport, ServeConfig};
use ferrofab_nvmeof_target::Target;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The target configuration file (TOML). See docs/nvmeof-target.md.
    #[arg(short, long)]
    pub config: PathBuf,
    /// Do not watch the file for changes (SIGHUP still re-applies it).
    #[arg(long)]
    pub no_watch: bool,
}

/// Events the serve loop reacts to.
enum Event {
    Reload(&'static str),
    Stop,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = ServeConfig::load(&args.config)?;
    let target = Target::new(cfg.target.clone()).context("invalid [target] options")?;
    let report = apply(&target, &cfg);
    log_report(&report);
    if !report.errors.is_empty() && target.listeners().is_empty() {
        anyhow::bail!("nothing to serve: {}", report.errors.join("; "));
    }
    let (tx, rx) = mpsc::channel();
    install_signal_handlers(tx.clone())?;
    let _watcher = if args.no_watch {
        None
    } else {
        Some(watch_file(&args.config, tx)?)
    };
    let listeners: Vec<String> = target
        .listeners()
        .iter()
        .map(|(a, k)| format!("{a} ({k:?})"))
        .collect();
    // The one line scripts wait for.
    println!(
        "ferrofab-nvmeof: ready, serving {} subsystem(s) on {}",
        target.subsystems().len(),
        listeners.join(", ")
    );
    serve_loop(&target, &args.config, &rx);
    target.shutdown();
    tracing::info!("stopped");
    Ok(())
}

fn serve_loop(target: &Target, path: &Path, rx: &mpsc::Receiver<Event>) {
    while let Ok(event) = rx.recv() {
        match event {
            Event::Stop => return,
            Event::Reload(why) => {
                // Editors write files in several steps; let them finish.
                std::thread::sleep(Duration::from_millis(100));
                while let Ok(Event::Reload(_)) = rx.try_recv() {}
                reload(target, path, why);
            }
        }
    }
}

fn reload(target: &Target, path: &Path, why: &str) {
    match ServeConfig::load(path) {
        Ok(cfg) => {
            tracing::info!(reason = why, "re-applying configuration");
            log_report(&apply(target, &cfg));
        }
        // A broken edit leaves the running configuration alone.
        Err(e) => {
            tracing::error!(error = %e, "configuration not applied; still serving the previous one")
        }
    }
}

fn log_report(report: &ApplyReport) {
    for c in &report.changes {
        tracing::info!(change = %c, "applied");
    }
    for e in &report.errors {
        tracing::error!(error = %e, "could not apply");
    }
}

fn install_signal_handlers(tx: mpsc::Sender<Event>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let event = if sig == SIGHUP {
                    Event::Reload("SIGHUP")
                } else {
                    Event::Stop
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Watch the directory (editors replace files by renaming), and react to
/// events about our file only.
fn watch_file(path: &Path, tx: mpsc::Sender<Event>) -> anyhow::Result<notify::RecommendedWatcher> {
    let file = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let name = file.file_name().map(|n| n.to_os_string());
    let alive = Arc::new(AtomicBool::new(true));
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        let ours = ev
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
        let relevant = ev.kind.is_modify() || ev.kind.is_create();
        if ours
            && relevant
            && alive.load(Ordering::Relaxed)
            && tx.send(Event::Reload("file changed")).is_err()
        {
            alive.store(false, Ordering::Relaxed);
        }
    })
    .context("starting the file watcher")?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok(watcher)
}
