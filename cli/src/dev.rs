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
//! This file is the binary's edge, so it reports with anyhow.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use ferrofab_agent::enroll::EnrollArgs;
use ferrofab_agent::{Agent, AgentConfig, AgentHandle, PoolConfig, Provisioning, Role};
use ferrofab_controller::server::{self, Flags, ServerError};
use ferrofab_pki::validity::DEFAULT_CLIENT_VALIDITY;
use ferrofab_pki::{Identity, InitOptions, PkiDir, Validity};
use ferrofab_proto::v1::{self, ApplyRequest, CreateBootstrapTokenRequest, DataAddress};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::args::DevArgs;
use crate::client::{status_error, Admin};
use crate::resource::{readiness, Readiness, Resource};

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

// ------------------------------------------------------------------ paths and state

/// Where everything lives under DIR (absolute: agent configs require it).
#[derive(Debug, Clone)]
struct Paths {
    root: PathBuf,
}

impl Paths {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let root = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        if root.to_str().is_none() {
            bail!("{}: the directory path must be valid UTF-8", root.display());
        }
        Ok(Self { root })
    }
    fn state(&self) -> PathBuf {
        self.root.join("dev.toml")
    }
    fn lock(&self) -> PathBuf {
        self.root.join("dev.lock")
    }
    fn client_config(&self) -> PathBuf {
        self.root.join("client.toml")
    }
    fn controller_config(&self) -> PathBuf {
        self.root.join("controller.toml")
    }
    fn layout(&self) -> PathBuf {
        self.root.join("layout.toml")
    }
    fn pki(&self) -> PkiDir {
        PkiDir::new(self.root.join("pki"))
    }
    fn node(&self, name: &str) -> PathBuf {
        self.root.join("nodes").join(name)
    }
    fn pool(&self) -> PathBuf {
        self.root.join("pools").join(POOL)
    }
    fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
}

/// `Paths::create` checked the root is UTF-8, so every path under it is.
fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Holds an exclusive flock on DIR/dev.lock for the life of the process: a
/// second `dev` on the same directory would fight over the store, the
/// ports and the FUSE mount.
fn lock_dir(paths: &Paths) -> anyhow::Result<File> {
    let path = paths.lock();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another `ferrofab dev` is already running on {} (it holds {})",
            paths.root.display(),
            path.display()
        );
    }
    Ok(file)
}

/// What must stay the same from one run to the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevState {
    /// Controller gRPC (mTLS) port; in client.toml and the agents' configs.
    controller_port: u16,
    /// Controller /metrics and /healthz (plain HTTP).
    http_port: u16,
    /// The storage node's NVMe/TCP port, registered in its node spec.
    data_port: u16,
    /// The demo layout is applied once; later runs leave the objects as
    /// the user changed them (a re-apply would undo a resize or delete).
    #[serde(default)]
    layout_applied: bool,
}

impl DevState {
    fn load_or_create(paths: &Paths) -> anyhow::Result<Self> {
        let path = paths.state();
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                let st: Self = toml::from_str(&t).with_context(|| path.display().to_string())?;
                st.check_ports_free(&path)?;
                Ok(st)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let st = Self::fresh()?;
                st.save(paths)?;
                Ok(st)
            }
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }

    fn fresh() -> anyhow::Result<Self> {
        let mut seed = port_seed();
        let mut taken = Vec::new();
        for _ in 0..3 {
            let p = pick_port(&taken, &mut seed)?;
            taken.push(p);
        }
        Ok(Self {
            controller_port: taken[0],
            http_port: taken[1],
            data_port: taken[2],
            layout_applied: false,
        })
    }

    fn save(&self, paths: &Paths) -> anyhow::Result<()> {
        let body = toml::to_string_pretty(self).context("encoding dev.toml")?;
        let text =
            format!("# Written by `ferrofab dev`: the ports of this directory's cluster.\n{body}");
        write_atomic(&paths.state(), &text)
    }

    /// A saved port someone else now uses would otherwise surface as a
    /// bind error deep in the controller or, for the data port, as an
    /// attachment that never becomes ready.
    fn check_ports_free(&self, path: &Path) -> anyhow::Result<()> {
        for (what, port) in [
            ("controller_port", self.controller_port),
            ("http_port", self.http_port),
            ("data_port", self.data_port),
        ] {
            if !port_free(port) {
                bail!(
                    "port {port} ({what} in {}) is in use by another program; stop it and retry",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

fn port_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A free loopback port in [`PORT_RANGE`] not already in `taken`.
fn pick_port(taken: &[u16], seed: &mut u64) -> anyhow::Result<u16> {
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..500 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = PORT_RANGE.start + ((*seed >> 33) % span) as u16;
        if !taken.contains(&port) && port_free(port) {
            return Ok(port);
        }
    }
    bail!(
        "no free loopback port found in {}..{}",
        PORT_RANGE.start,
        PORT_RANGE.end
    )
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Readers (a second terminal, the next run) never see half a file.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

// ------------------------------------------------------------------ session

/// What has been started, so that any exit path stops exactly that.
#[derive(Default)]
struct Stack {
    controller: Option<ControllerTask>,
    /// In start order: storage, then workstation; with the state
    /// directory of the workstation's data-path holder.
    agents: Vec<(AgentHandle, Option<PathBuf>)>,
}

impl Stack {
    /// Workstation first (its detach flushes through the storage target),
    /// then storage, then the controller the agents were talking to.
    async fn shutdown(mut self) {
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
struct ControllerTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
    http: Option<SocketAddr>,
}

impl ControllerTask {
    async fn start(cfg: ferrofab_controller::config::Config) -> anyhow::Result<Self> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = async move {
            let _ = stop_rx.await;
        };
        let ready = move |grpc: SocketAddr, http: Option<SocketAddr>| {
            let _ = ready_tx.send((grpc, http));
        };
        let task = tokio::spawn(server::run_until(cfg, Flags::default(), stop, ready));
        match ready_rx.await {
            Ok((grpc, http)) => {
                info!(%grpc, "controller serving");
                Ok(Self {
                    stop: stop_tx,
                    task,
                    http,
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

    async fn stop(self) {
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
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
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
    summary(&mut admin, paths, &state, http, &exposed).await
}

// ------------------------------------------------------------------ PKI and configs

/// A CA, the controller's server certificate (localhost, 127.0.0.1, ::1)
/// and an admin client certificate, each created only if missing.
fn ensure_pki(paths: &Paths) -> anyhow::Result<()> {
    let pki = paths.pki();
    if !pki.ca_cert().exists() {
        ferrofab_pki::init(pki.root(), &InitOptions::default()).context("creating the PKI")?;
        info!(dir = %pki.root().display(), "created CA and controller certificate");
    }
    let admin = Identity::Admin;
    if !pki.client_cert(&admin).exists() {
        let ca = pki.load_ca()?;
        let validity = Validity::from_now(DEFAULT_CLIENT_VALIDITY)?;
        ferrofab_pki::issue_to_dir(&ca, &admin, validity, pki.root(), true)
            .context("issuing the admin certificate")?;
    }
    Ok(())
}

fn endpoint(state: &DevState) -> String {
    format!("https://127.0.0.1:{}", state.controller_port)
}

/// Paths relative to the file, so the directory can be used as is from
/// any working directory.
fn write_client_config(paths: &Paths, state: &DevState) -> anyhow::Result<()> {
    let text = format!(
        "# Admin access to the `ferrofab dev` cluster in this directory:\n\
         #   ferrofab --config {} volume list\n\
         endpoint = \"{}\"\n\n[tls]\nca = \"pki/ca.crt\"\ncert = \"pki/admin.crt\"\nkey = \"pki/admin.key\"\n",
        path_text(&paths.client_config()),
        endpoint(state)
    );
    write_atomic(&paths.client_config(), &text)
}

/// Written to a file and loaded back through the controller's own parser,
/// so dev runs exactly the configuration a user could run by hand.
fn write_controller_config(
    paths: &Paths,
    state: &DevState,
) -> anyhow::Result<ferrofab_controller::config::Config> {
    let mut pki = toml::Table::new();
    pki.insert("dir".into(), path_text(paths.pki().root()).into());
    pki.insert("enrollment".into(), true.into());
    let mut t = toml::Table::new();
    t.insert(
        "listen".into(),
        format!("127.0.0.1:{}", state.controller_port).into(),
    );
    t.insert(
        "http_listen".into(),
        format!("127.0.0.1:{}", state.http_port).into(),
    );
    t.insert(
        "store_path".into(),
        path_text(&paths.root.join("controller.redb")).into(),
    );
    t.insert("pki".into(), pki.into());
    let text = format!(
        "# Written by `ferrofab dev` at every start (ports: dev.toml).\n{}",
        toml::to_string_pretty(&t).context("encoding controller.toml")?
    );
    let path = paths.controller_config();
    write_atomic(&path, &text)?;
    Ok(ferrofab_controller::config::Config::load(&path)?)
}

async fn connect_admin(paths: &Paths) -> anyhow::Result<Admin> {
    let cfg = crate::config::load(Some(&paths.client_config()), None)?;
    crate::client::connect(&cfg).await
}

// ------------------------------------------------------------------ nodes

/// The node's agent config: enrolled through a bootstrap token on the
/// first run (the real flow: the key never leaves the node's directory),
/// then completed with dev's local paths.
async fn node_config(
    admin: &mut Admin,
    paths: &Paths,
    state: &DevState,
    name: &str,
    role: Role,
) -> anyhow::Result<AgentConfig> {
    let dir = paths.node(name);
    let file = dir.join("agent.toml");
    let enrolled = ["agent.toml", "node.crt", "node.key", "ca.crt"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if !enrolled {
        enroll(admin, paths, state, name, role, &file).await?;
    }
    let mut cfg = AgentConfig::load(&file)?;
    cfg.controller_endpoints = vec![endpoint(state)];
    cfg.roles = vec![role];
    cfg.state_dir = dir.join("state");
    cfg.api_socket = dir.join("agent.sock");
    cfg.metrics_listen = None;
    match role {
        Role::Storage => {
            let pool = paths.pool();
            std::fs::create_dir_all(&pool)
                .with_context(|| format!("creating {}", pool.display()))?;
            cfg.pools = BTreeMap::from([(
                POOL.to_owned(),
                PoolConfig {
                    path: pool,
                    provisioning: Provisioning::Thin,
                },
            )]);
        }
        Role::Workstation => cfg.expose_dir = paths.volumes(),
    }
    write_atomic(&file, &cfg.to_toml()?)?;
    Ok(cfg)
}

async fn enroll(
    admin: &mut Admin,
    paths: &Paths,
    state: &DevState,
    name: &str,
    role: Role,
    file: &Path,
) -> anyhow::Result<()> {
    let token = admin
        .create_bootstrap_token(CreateBootstrapTokenRequest {
            node: name.to_owned(),
            ttl_seconds: TOKEN_TTL_SECONDS,
        })
        .await
        .map_err(|s| status_error(&format!("bootstrap token for node {name:?}"), s))?
        .into_inner()
        .token;
    let data_addresses = match role {
        Role::Storage => vec![format!("127.0.0.1:{}", state.data_port)],
        Role::Workstation => Vec::new(),
    };
    let args = EnrollArgs {
        token,
        controller: format!("127.0.0.1:{}", state.controller_port),
        ca: Some(paths.pki().ca_cert()),
        node: Some(name.to_owned()),
        roles: vec![role],
        config: file.to_path_buf(),
        data_addresses,
        state_dir: Some(paths.node(name).join("state")),
        keep_config: false,
    };
    let out = ferrofab_agent::enroll::enroll(&args)
        .await
        .with_context(|| format!("enrolling node {name}"))?;
    info!(node = name, host_nqn = %out.host_nqn, "enrolled");
    Ok(())
}

/// The storage node's registered data address must be dev.toml's data
/// port: workstations connect to what the node spec says.
async fn ensure_data_address(admin: &mut Admin, state: &DevState) -> anyhow::Result<()> {
    let what = format!("node {STORAGE_NODE:?}");
    let mut node = <v1::Node as Resource>::get(admin, STORAGE_NODE)
        .await
        .map_err(|s| status_error(&what, s))?;
    let want = vec![DataAddress {
        address: "127.0.0.1".into(),
        port: u32::from(state.data_port),
        transport: "tcp".into(),
    }];
    let spec = node.spec.get_or_insert_with(Default::default);
    if spec.data_addresses == want {
        return Ok(());
    }
    spec.data_addresses = want;
    <v1::Node as Resource>::update(admin, node)
        .await
        .map_err(|s| status_error(&what, s))?;
    Ok(())
}

async fn start_agent(cfg: AgentConfig) -> anyhow::Result<AgentHandle> {
    let name = cfg.node.clone();
    Agent::start(cfg)
        .await
        .with_context(|| format!("starting the agent of node {name}"))
}

// ------------------------------------------------------------------ demo layout

/// The layout as a file the user can read, edit and re-apply.
fn demo_layout(paths: &Paths) -> String {
    let pool_path = toml::Value::String(path_text(&paths.pool()));
    format!(
        r#"# The demo layout `ferrofab dev` applied on its first run. Edit and
# re-apply with: ferrofab --config client.toml apply -f layout.toml
[[tenant]]
name = "demo"
allowed_nodes = ["{WORKSTATION_NODE}"]

[[pool]]
name = "{POOL}"
node = "{STORAGE_NODE}"
backing = "directory"
path = {pool_path}
capacity = "16GiB"

[[volume]]
name = "demo-1"
tenant = "demo"
size = "1GiB"
pool = "{POOL}"

[[volume]]
name = "demo-2"
tenant = "demo"
size = "2GiB"
pool = "{POOL}"

[[attachment]]
name = "demo-1-{WORKSTATION_NODE}"
volume = "demo-1"
node = "{WORKSTATION_NODE}"
mode = "read-write"
"#
    )
}

/// Through the same parser and RPC as `ferrofab apply -f`. Only once per
/// directory: see [`DevState::layout_applied`].
async fn apply_demo_layout(
    admin: &mut Admin,
    paths: &Paths,
    state: &mut DevState,
) -> anyhow::Result<()> {
    if state.layout_applied {
        return Ok(());
    }
    let text = demo_layout(paths);
    write_atomic(&paths.layout(), &text)?;
    let layout = crate::layout::parse(&text).context("the built-in demo layout")?;
    let resp = admin
        .apply(ApplyRequest {
            layout: Some(layout),
            dry_run: false,
            prune: false,
            prune_nodes: false,
        })
        .await
        .map_err(|s| status_error("demo layout", s))?
        .into_inner();
    info!(
        revision = resp.revision,
        objects = resp.diffs.len(),
        "demo layout applied"
    );
    state.layout_applied = true;
    state.save(paths)
}

// ------------------------------------------------------------------ readiness

/// An attachment of the workstation whose file is there.
#[derive(Debug, Clone)]
struct Exposed {
    volume: String,
    path: PathBuf,
}

/// Waits until every attachment to the workstation is Ready and its file
/// exists (attachments the user deleted are simply not waited for).
async fn wait_attached(admin: &mut Admin, volumes: &Path) -> anyhow::Result<Vec<Exposed>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (ready, pending) = attachment_states(admin, volumes).await?;
        if pending.is_empty() {
            return Ok(ready);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {}s waiting for {}",
                READY_TIMEOUT.as_secs(),
                pending.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (ready, descriptions of the pending). A Failed phase counts as pending:
/// right after start the target may still be coming up, and the timeout
/// reports the reason if it never does.
async fn attachment_states(
    admin: &mut Admin,
    volumes: &Path,
) -> anyhow::Result<(Vec<Exposed>, Vec<String>)> {
    let all = <v1::Attachment as Resource>::list(admin, "")
        .await
        .map_err(|s| status_error("attachments", s))?;
    let mut ready = Vec::new();
    let mut pending = Vec::new();
    for a in all {
        let Some(spec) = a.spec.as_ref().filter(|s| s.node == WORKSTATION_NODE) else {
            continue;
        };
        let name = a.metadata.as_ref().map_or("", |m| m.name.as_str());
        let path = exposed_path(&a, volumes);
        match readiness(&a) {
            Readiness::Ready if path.exists() => ready.push(Exposed {
                volume: spec.volume.clone(),
                path,
            }),
            Readiness::Ready => pending.push(format!(
                "attachment/{name} (file {} not there yet)",
                path.display()
            )),
            Readiness::Pending(why) | Readiness::Failed(why) => {
                pending.push(format!("attachment/{name} ({why})"))
            }
        }
    }
    Ok((ready, pending))
}

/// The agent reports the file it exposed; before its first report the
/// file is named after the volume in the exposure directory.
fn exposed_path(a: &v1::Attachment, volumes: &Path) -> PathBuf {
    match a.status.as_ref().map(|s| s.device_path.as_str()) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => volumes.join(a.spec.as_ref().map_or("", |s| s.volume.as_str())),
    }
}

// ------------------------------------------------------------------ summary

async fn summary(
    admin: &mut Admin,
    paths: &Paths,
    state: &DevState,
    http: Option<SocketAddr>,
    exposed: &[Exposed],
) -> anyhow::Result<String> {
    let volumes = <v1::Volume as Resource>::list(admin, "")
        .await
        .map_err(|s| status_error("volumes", s))?;
    let client = path_text(&paths.client_config());
    let mut out = format!("ferrofab dev: cluster in {}\n", paths.root.display());
    out += &format!("  controller  {}", endpoint(state));
    if let Some(h) = http {
        out += &format!("  (metrics http://{h}/metrics)");
    }
    out += &format!(
        "\n  node        {STORAGE_NODE}  storage      NVMe/TCP 127.0.0.1:{}, pool {POOL} in {}\n",
        state.data_port,
        paths.pool().display()
    );
    out += &format!(
        "  node        {WORKSTATION_NODE}       workstation  volumes appear in {}\n",
        paths.volumes().display()
    );
    for v in &volumes {
        out += &volume_line(v, exposed);
    }
    if let Some(first) = exposed.first() {
        let p = first.path.display();
        out += &format!(
            "\ntry:\n  dd if=/dev/urandom of={p} bs=1M count=64 conv=fsync\n  \
             dd if={p} bs=1M count=64 | sha256sum\n"
        );
    } else {
        out += "\nno volume is attached to the workstation\n";
    }
    out += &format!(
        "  ferrofab --config {client} volume list\n\
         client config (admin): {client}\n\
         stop with Ctrl-C; run the same command again to resume\n"
    );
    Ok(out)
}

fn volume_line(v: &v1::Volume, exposed: &[Exposed]) -> String {
    let name = v.metadata.as_ref().map_or("", |m| m.name.as_str());
    let size = v.spec.as_ref().map_or("", |s| s.size.as_str());
    let at = exposed.iter().find(|e| e.volume == name).map_or_else(
        || "not attached".to_owned(),
        |e| format!("attached to {WORKSTATION_NODE}: {}", e.path.display()),
    );
    format!("  volume      {name:<10} {size:<6} thin, {at}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_layout_parses() {
        let paths = Paths {
            root: PathBuf::from("/tmp/x \"y\""),
        };
        let l = crate::layout::parse(&demo_layout(&paths)).unwrap();
        assert_eq!(l.volumes.len(), 2);
        assert_eq!(l.attachments.len(), 1);
        let pool = l.pools[0].spec.as_ref().unwrap();
        assert_eq!(
            pool.backing.as_ref().unwrap().path,
            "/tmp/x \"y\"/pools/pool-1"
        );
    }

    #[test]
    fn picked_ports_are_distinct_and_in_range() {
        let st = DevState::fresh().unwrap();
        let ports = [st.controller_port, st.http_port, st.data_port];
        for p in ports {
            assert!(PORT_RANGE.contains(&p), "{p}");
        }
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        assert_ne!(ports[0], ports[2]);
        let back: DevState = toml::from_str(&toml::to_string(&st).unwrap()).unwrap();
        assert_eq!(back.data_port, st.data_port);
    }
}
