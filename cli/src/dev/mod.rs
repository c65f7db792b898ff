//! `ferrofab dev`: a whole ferrofab cluster in one process, on loopback.
//!
//! One controller, one storage agent and one workstation agent run on a
//! single tokio runtime, so the first thing a newcomer runs shows the real
//! flow end to end: PKI, bootstrap-token enrollment of both nodes, a
//! declarative Apply of a demo layout, and a volume exposed as a file that
//! `dd` can write. Everything lives in one directory so that a second run
//! resumes where the first stopped:
//!
//! ```text
//! DIR/
//!   dev.toml          ports chosen on the first run (reused, so client.toml
//!                     and the nodes' registered addresses stay valid)
//!   dev.lock          held while running: one `ferrofab dev` per directory
//!   client.toml       admin access: `ferrofab --config DIR/client.toml ...`
//!   controller.toml   the controller's config (rewritten at every start)
//!   controller.redb   the controller's store
//!   layout.toml       the demo layout applied on the first run
//!   pki/              CA, controller and admin certificates
//!   nodes/NAME/       agent.toml, node certificate and key (from enrollment),
//!                     state/ (desired-state cache, host NQN), agent.sock
//!   pools/pool-1/     backing files of the storage node's pool (sparse)
//!   volumes/          the workstation's FUSE exposure, one file per volume
//! ```
//!
//! This module is the binary's edge, so it reports with anyhow. It runs the
//! session (start, wait for a signal, stop); its parts are `paths` (the
//! directory above and its lock), `state` (dev.toml and ports), `supervise`
//! (the running controller and agents), `setup` (PKI, configs, enrollment),
//! `demo` (the demo layout) and `ready` (readiness and the summary).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use ferrofab_agent::Role;
use tracing::warn;

use crate::args::DevArgs;

mod demo;
mod paths;
mod ready;
mod setup;
mod state;
mod supervise;

use demo::apply_demo_layout;
use paths::{lock_dir, Paths};
use ready::{summary, wait_attached};
use setup::{
    connect_admin, ensure_data_address, ensure_pki, node_config, start_agent, write_client_config,
    write_controller_config,
};
use state::DevState;
use supervise::{ControllerTask, Signals, Stack};

const STORAGE_NODE: &str = "storage-1";
const WORKSTATION_NODE: &str = "ws-1";
const POOL: &str = "pool-1";
/// Enrollment happens right after the token is minted; ten minutes leaves
/// room for a slow first build without leaving a usable token around long.
const TOKEN_TTL_SECONDS: u32 = 600;
/// Long enough for a loaded laptop; the wait reports what is still pending.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// An agent that cannot stop in this long is left to process exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports are picked below Linux's ephemeral range (32768+), so a port
/// saved in dev.toml is not later taken by some outgoing connection.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Runs `ferrofab dev` until SIGINT or SIGTERM.
pub fn run(args: &DevArgs) -> anyhow::Result<()> {
    preflight()?;
    let paths = Paths::create(&args.dir)?;
    let _lock = lock_dir(&paths)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(session(paths))
}

/// FUSE needs root here (the agent mounts with mount(2)) and the kernel's
/// /dev/fuse; say so up front instead of failing deep inside the agent.
fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "ferrofab dev must run as root: its workstation agent mounts the volumes \
             with FUSE (e.g. `sudo ./target/release/ferrofab dev`)"
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "ferrofab dev needs /dev/fuse (FUSE) to expose volumes as files: \
             load the module (`modprobe fuse`) or, in a container, pass --device /dev/fuse"
        );
    }
    Ok(())
}

async fn session(paths: Paths) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let mut stack = Stack::default();
    let started = tokio::select! {
        r = start(&paths, &mut stack) => Some(r),
        () = signals.recv() => None,
    };
    let outcome = match started {
        Some(Ok(summary)) => {
            announce(&summary);
            signals.recv().await;
            eprintln!("ferrofab dev: stopping (agents, then the controller)");
            Ok(())
        }
        Some(Err(e)) => Err(e),
        None => {
            eprintln!("ferrofab dev: interrupted during start-up; stopping");
            Ok(())
        }
    };
    // A second signal means "now": skip the clean shutdown.
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("ferrofab dev: second signal; exiting without a clean shutdown");
        std::process::exit(130);
    });
    stack.shutdown().await;
    check_unmounted(&paths.volumes());
    if outcome.is_ok() {
        eprintln!("ferrofab dev: stopped");
    }
    outcome
}

/// The summary and the ready line on stdout. A closed stdout (say, piped
/// into `head`) must not take the cluster down, so write errors are
/// logged rather than panicking like `println!`.
fn announce(summary: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let r = writeln!(out, "{summary}ferrofab dev: ready").and_then(|()| out.flush());
    if let Err(e) = r {
        warn!(error = %e, "cannot write to stdout");
    }
}

/// The workstation agent unmounts on shutdown; a mount left behind (agent
/// timed out) would make DIR/volumes unusable until someone unmounts it.
fn check_unmounted(dir: &Path) {
    use ferrofab_nvmeof_expose::mountpoint;
    if mountpoint::is_mount_point(dir) {
        warn!(dir = %dir.display(), "FUSE mount still present; detaching it");
        if let Err(e) = mountpoint::lazy_unmount(dir) {
            warn!(error = %e, "could not unmount {}", dir.display());
        }
    }
}

/// Brings everything up and returns the summary to print.
async fn start(paths: &Paths, stack: &mut Stack) -> anyhow::Result<String> {
    // Progress on stderr: a first start can take a while on a busy machine,
    // and silence would look like a hang.
    eprintln!("ferrofab dev: starting in {}", paths.root.display());
    let mut state = DevState::load_or_create(paths)?;
    ensure_pki(paths)?;
    write_client_config(paths, &state)?;
    let cfg = write_controller_config(paths, &state)?;
    stack.controller = Some(ControllerTask::start(cfg).await?);
    let mut admin = connect_admin(paths).await?;

    let storage = node_config(&mut admin, paths, &state, STORAGE_NODE, Role::Storage).await?;
    ensure_data_address(&mut admin, &state).await?;
    stack.agents.push((start_agent(storage).await?, None));
    let ws = node_config(
        &mut admin,
        paths,
        &state,
        WORKSTATION_NODE,
        Role::Workstation,
    )
    .await?;
    let holder_dir = ws.state_dir.clone();
    stack
        .agents
        .push((start_agent(ws).await?, Some(holder_dir)));

    apply_demo_layout(&mut admin, paths, &mut state).await?;
    eprintln!("ferrofab dev: controller and agents up; waiting for attached volumes");
    let exposed = wait_attached(&mut admin, &paths.volumes()).await?;
    let http = stack.controller.as_ref().and_then(|c| c.http);
    let agent_metrics: Vec<_> = stack
        .agents
        .iter()
        .filter_map(|(a, _)| a.metrics_addr())
        .collect();
    let mut text = summary(&mut admin, paths, &state, http, &agent_metrics, &exposed).await?;
    if let Some(api) = stack.controller.as_ref().and_then(|c| c.api) {
        text += &ready::dashboard(&mut admin, paths, api).await?;
    }
    Ok(text)
}
