//! `discover`, `connect` and `disconnect`: the initiator's command line.
//!
//! `connect` stays in the foreground holding the connection until SIGINT or
//! SIGTERM. So that `disconnect` can find it, it writes a state file
//! `<run-dir>/<subsystem NQN>.pid` (JSON: pid, subnqn, addr) and removes it
//! on exit; `disconnect` signals the pid in it and waits for it to exit.
//!
//! While connected, every namespace is a file in `--expose-dir` (see
//! [`ferrofab_nvmeof_expose::connected`]); the files follow namespace changes and
//! are gone before the controller disconnects, so nothing is left that
//! would fail with I/O errors.
//!
//! With `--expose-block`, every namespace is a block device `/dev/ublkbN`
//! instead (see [`ferrofab_nvmeof_ublk`]; Linux 6.4+ with `ublk_drv`), removed
//! the same way before the controller disconnects.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use ferrofab_nvmeof_bench::PollMode;
use ferrofab_nvmeof_expose::connected::{default_base_name, NamespaceFiles};
use ferrofab_nvmeof_expose::ExposeOptions;
use ferrofab_nvmeof_host::{
    discover_with, BlockIo, ConnectOptions, Controller, ControllerState, DiscoveryEntry,
    HostIdentity, NamespaceEvent, NamespaceInfo,
};
use ferrofab_nvmeof_ublk::{UblkDevice, UblkOptions};
use ferrofab_nvmeof_wire::spec::identify::subtype;
use ferrofab_nvmeof_wire::spec::{DEFAULT_DISCOVERY_PORT, DEFAULT_IO_PORT, DISCOVERY_NQN};
use ferrofab_nvmeof_wire::wire::Digests;

/// Default directory of the state files of `connect`.
pub const DEFAULT_RUN_DIR: &str = "/run/ferrofab/nvmeof";

/// Default directory in which `connect` exposes namespaces as files.
pub const DEFAULT_EXPOSE_DIR: &str = "/run/ferrofab/volumes";

/// How long teardown waits for the files to go before it disconnects
/// anyway. A FUSE request stuck on a namespace (the target is away and the
/// initiator still reconnecting) holds the unmount up; disconnecting fails
/// that request, which lets the unmount finish.
const UNEXPOSE_GRACE: Duration = Duration::from_secs(5);

/// Who we are: explicit values, or the persisted files.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// Host NQN to present (default: from --hostnqn-file, generated once).
    #[arg(long)]
    pub hostnqn: Option<String>,
    /// Host ID (a UUID) to present (default: from --hostid-file).
    #[arg(long)]
    pub hostid: Option<String>,
    #[arg(long, default_value = ferrofab_nvmeof_host::identity::DEFAULT_HOSTNQN_PATH)]
    pub hostnqn_file: PathBuf,
    #[arg(long, default_value = ferrofab_nvmeof_host::identity::DEFAULT_HOSTID_PATH)]
    pub hostid_file: PathBuf,
}

impl IdentityArgs {
    fn resolve(&self) -> anyhow::Result<HostIdentity> {
        let parse_id = |s: &str| {
            uuid::Uuid::parse_str(s).with_context(|| format!("--hostid {s:?} is not a UUID"))
        };
        match (&self.hostnqn, &self.hostid) {
            (Some(nqn), Some(id)) => Ok(HostIdentity::new(nqn, parse_id(id)?)?),
            (Some(nqn), None) => {
                let stored = HostIdentity::load_or_create(&self.hostnqn_file, &self.hostid_file)?;
                Ok(HostIdentity::new(nqn, stored.hostid)?)
            }
            (None, id) => {
                let mut stored =
                    HostIdentity::load_or_create(&self.hostnqn_file, &self.hostid_file)?;
                if let Some(id) = id {
                    stored.hostid = parse_id(id)?;
                }
                Ok(stored)
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    /// Address of the discovery controller.
    #[arg(short = 'a', long = "traddr")]
    pub traddr: String,
    #[arg(short = 's', long = "trsvcid", default_value_t = DEFAULT_DISCOVERY_PORT)]
    pub trsvcid: u16,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[arg(short = 'a', long = "traddr")]
    pub traddr: String,
    #[arg(short = 's', long = "trsvcid", default_value_t = DEFAULT_IO_PORT)]
    pub trsvcid: u16,
    /// NQN of the subsystem to connect to.
    #[arg(short = 'n', long = "nqn")]
    pub subnqn: String,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Request header digests (CRC-32C).
    #[arg(long)]
    pub hdr_digest: bool,
    /// Request data digests (CRC-32C).
    #[arg(long)]
    pub data_digest: bool,
    /// I/O queues (TCP connections); default: number of CPUs.
    #[arg(long)]
    pub nr_io_queues: Option<u16>,
    /// Entries per I/O queue.
    #[arg(long, default_value_t = 128)]
    pub queue_size: u16,
    /// Keep-alive timeout in seconds (0 disables keep-alive).
    #[arg(long, default_value_t = 5)]
    pub kato: u64,
    /// Seconds to keep reconnecting after losing the connection before
    /// failing I/O; negative retries forever.
    #[arg(long, default_value_t = 600, allow_negative_numbers = true)]
    pub ctrl_loss_tmo: i64,
    /// Seconds before the first reconnect attempt (doubled per failure, at
    /// most 10 s or this value if larger).
    #[arg(long, default_value_t = 1.0)]
    pub reconnect_delay: f64,
    /// Directory for the state file that `disconnect` uses.
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// How a thread waiting for a completion waits: `interrupt` sleeps,
    /// `adaptive` spins first for a budget learned from recent waits (at
    /// most 50 µs), `busy` spins until it completes.
    #[arg(long, value_enum, default_value_t = PollMode::Adaptive)]
    pub poll_mode: PollMode,
    /// Directory in which each namespace appears as a file.
    #[arg(long, default_value = DEFAULT_EXPOSE_DIR)]
    pub expose_dir: PathBuf,
    /// File name of namespace 1; namespace N is NAME-nN (default: the part
    /// of the subsystem NQN after the last ':').
    #[arg(long)]
    pub name: Option<String>,
    /// Connect without exposing the namespaces as files.
    #[arg(long, conflicts_with = "name")]
    pub no_expose: bool,
    /// Expose every namespace as a block device /dev/ublkbN (ublk, Linux
    /// 6.4+ with the ublk_drv module) instead of a file. Namespaces added
    /// later are not exposed; resizes are not followed.
    #[arg(long, conflicts_with_all = ["no_expose", "name"])]
    pub expose_block: bool,
    /// With --expose-block: queues (threads) per block device.
    #[arg(long, default_value_t = ferrofab_nvmeof_ublk::DEFAULT_QUEUES, requires = "expose_block")]
    pub block_queues: u16,
    /// With --expose-block: requests in flight per queue (at most 1024).
    #[arg(long, default_value_t = ferrofab_nvmeof_ublk::DEFAULT_QUEUE_DEPTH, requires = "expose_block")]
    pub block_queue_depth: u16,
    /// DH-HMAC-CHAP host secret for in-band authentication: a
    /// `DHHC-1:XX:...:` string, or the path of a file holding one (better:
    /// command lines are visible to every user of the machine).
    #[arg(long, value_name = "SECRET|FILE")]
    pub dhchap_secret: Option<String>,
    /// DH-HMAC-CHAP controller secret (bidirectional authentication: the
    /// controller must prove it knows it), as for --dhchap-secret.
    #[arg(long, value_name = "SECRET|FILE")]
    pub dhchap_ctrl_secret: Option<String>,
}

/// A secret given on the command line: the `DHHC-1:` string itself, or a
/// file that holds it. Errors name the flag, never the secret.
pub fn load_secret(
    flag: &str,
    value: &str,
) -> anyhow::Result<ferrofab_nvmeof_wire::auth::DhchapSecret> {
    let text = if value.trim_start().starts_with("DHHC-1:") {
        value.to_string()
    } else {
        // Never echo `value`: it may be a mistyped secret (a stray space,
        // a lower-case prefix), and stderr ends up in logs.
        std::fs::read_to_string(value).map_err(|e| {
            anyhow::anyhow!("{flag}: not a DHHC-1 secret and not a readable file ({e})")
        })?
    };
    ferrofab_nvmeof_wire::auth::DhchapSecret::parse(&text)
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    /// NQN of the subsystem to disconnect.
    #[arg(short = 'n', long = "nqn", required_unless_present = "all")]
    pub subnqn: Option<String>,
    /// Disconnect every connection made by `connect`.
    #[arg(long, conflicts_with = "subnqn")]
    pub all: bool,
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// Seconds to wait for each connect process to exit.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// `host:port`, bracketing IPv6 literals.
fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

pub fn discover(args: DiscoverArgs) -> anyhow::Result<()> {
    let identity = args.identity.resolve()?;
    let opts = ConnectOptions::new(
        host_port(&args.traddr, args.trsvcid),
        DISCOVERY_NQN,
        identity,
    );
    let entries = discover_with(&opts)?;
    if args.json {
        let v: Vec<_> = entries.iter().map(entry_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "records": v }))?
        );
    } else {
        print_entries(&entries);
    }
    Ok(())
}

fn subtype_name(s: u8) -> &'static str {
    match s {
        subtype::REFERRAL => "referral",
        subtype::NVME => "nvme subsystem",
        subtype::CURRENT_DISCOVERY => "current discovery subsystem",
        _ => "unknown",
    }
}

fn trtype_name(t: u8) -> &'static str {
    match t {
        1 => "rdma",
        2 => "fc",
        3 => "tcp",
        254 => "loop",
        _ => "unknown",
    }
}

fn adrfam_name(a: u8) -> &'static str {
    match a {
        1 => "ipv4",
        2 => "ipv6",
        _ => "other",
    }
}

fn entry_json(e: &DiscoveryEntry) -> serde_json::Value {
    serde_json::json!({
        "trtype": trtype_name(e.trtype),
        "adrfam": adrfam_name(e.adrfam),
        "subtype": subtype_name(e.subtype),
        "treq": e.treq,
        "portid": e.portid,
        "trsvcid": e.trsvcid,
        "subnqn": e.subnqn,
        "traddr": e.traddr,
        "cntlid": e.cntlid,
        "asqsz": e.asqsz,
    })
}

fn print_entries(entries: &[DiscoveryEntry]) {
    println!(
        "{:<4} {:<5} {:<6} {:<28} {:<7} {:<16} {:<8} SUBNQN",
        "#", "TR", "ADRFAM", "SUBTYPE", "PORTID", "TRADDR", "TRSVCID"
    );
    for (i, e) in entries.iter().enumerate() {
        println!(
            "{:<4} {:<5} {:<6} {:<28} {:<7} {:<16} {:<8} {}",
            i,
            trtype_name(e.trtype),
            adrfam_name(e.adrfam),
            subtype_name(e.subtype),
            e.portid,
            e.traddr,
            e.trsvcid,
            e.subnqn
        );
    }
}

fn connect_options(args: &ConnectArgs) -> anyhow::Result<ConnectOptions> {
    let identity = args.identity.resolve()?;
    let mut o = ConnectOptions::new(
        host_port(&args.traddr, args.trsvcid),
        &args.subnqn,
        identity,
    );
    o.digests = Digests {
        header: args.hdr_digest,
        data: args.data_digest,
    };
    if let Some(n) = args.nr_io_queues {
        o.nr_io_queues = n.max(1);
    }
    o.queue_size = args.queue_size.max(2);
    o.kato = Duration::from_secs(args.kato);
    o.ctrl_loss_tmo = u64::try_from(args.ctrl_loss_tmo)
        .ok()
        .map(Duration::from_secs);
    if !(args.reconnect_delay.is_finite() && args.reconnect_delay >= 0.0) {
        bail!("--reconnect-delay must be a non-negative number of seconds");
    }
    o.reconnect_delay = Duration::from_secs_f64(args.reconnect_delay);
    o.max_reconnect_delay = o.max_reconnect_delay.max(o.reconnect_delay);
    args.poll_mode.apply(&mut o);
    o.dhchap_secret = args
        .dhchap_secret
        .as_deref()
        .map(|v| load_secret("--dhchap-secret", v))
        .transpose()?;
    o.dhchap_ctrl_secret = args
        .dhchap_ctrl_secret
        .as_deref()
        .map(|v| load_secret("--dhchap-ctrl-secret", v))
        .transpose()?;
    if o.dhchap_ctrl_secret.is_some() && o.dhchap_secret.is_none() {
        bail!("--dhchap-ctrl-secret needs --dhchap-secret too (the host authenticates first)");
    }
    Ok(o)
}

fn print_namespaces(ctrl: &Controller, namespaces: &[NamespaceInfo]) {
    if let Some(id) = ctrl.identify() {
        println!(
            "connected to {} at {}: controller {} ({} {}), {} I/O queues",
            ctrl.subnqn(),
            ctrl.addr(),
            id.cntlid,
            id.model,
            id.serial,
            ctrl.io_queues()
        );
    }
    println!("{:<6} {:>16} {:>8} UUID", "NSID", "SIZE", "BLOCK");
    for n in namespaces {
        let uuid = n
            .uuid
            .map(|u| uuid::Uuid::from_bytes(u).to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<6} {:>16} {:>8} {}",
            n.nsid,
            n.size_bytes(),
            n.block_size,
            uuid
        );
    }
}

/// Expose every namespace of `ctrl` as a file, unless `--no-expose`. The
/// returned files follow namespace changes through [`apply_event`]; they
/// must be closed before the controller disconnects (see [`teardown`]).
pub fn expose(ctrl: &Controller, args: &ConnectArgs) -> anyhow::Result<Option<NamespaceFiles>> {
    if args.no_expose {
        return Ok(None);
    }
    let base = match &args.name {
        Some(n) => n.clone(),
        None => default_base_name(ctrl.subnqn()),
    };
    let mut files = NamespaceFiles::mount(
        &args.expose_dir,
        ctrl.subnqn(),
        &base,
        &ExposeOptions::default(),
    )
    .with_context(|| format!("exposing namespaces in {}", args.expose_dir.display()))?;
    for info in ctrl.namespaces() {
        expose_namespace(ctrl, &mut files, info.nsid)?;
    }
    Ok(Some(files))
}

fn expose_namespace(
    ctrl: &Controller,
    files: &mut NamespaceFiles,
    nsid: u32,
) -> anyhow::Result<()> {
    let ns = ctrl.namespace(nsid)?;
    let size = ns.size();
    let path = files
        .add_namespace(nsid, ns)
        .with_context(|| format!("exposing namespace {nsid}"))?;
    println!(
        "namespace {nsid} exposed at {} ({size} bytes)",
        path.display()
    );
    Ok(())
}

/// Make the files follow a namespace change. Failures are logged, not
/// fatal: the other namespaces stay usable.
fn apply_event(ctrl: &Controller, files: &mut NamespaceFiles, ev: &NamespaceEvent) {
    let result = match ev {
        NamespaceEvent::Added(info) => expose_namespace(ctrl, files, info.nsid),
        NamespaceEvent::Removed(info) => files
            .remove(info.nsid)
            .map(|()| println!("namespace {} removed", info.nsid))
            .map_err(Into::into),
        NamespaceEvent::Resized { new, .. } => files
            .refresh(new.nsid)
            .map(|size| println!("namespace {} resized to {size} bytes", new.nsid))
            .map_err(Into::into),
    };
    if let Err(e) = result {
        tracing::warn!(event = ?ev, error = format!("{e:#}"), "namespace change not applied");
    }
}

pub fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let opts = connect_options(&args)?;
    if args.expose_block {
        ublk_options(&args)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let state = StateFile::create(&args.run_dir, &opts.subnqn, &opts.addr)?;
    let ctrl = Controller::connect(opts)?;
    // Watchers run on the controller's worker thread and must not block,
    // and changing files needs the controller: hand events to this thread.
    let (tx, events) = mpsc::channel();
    ctrl.watch(move |ev| {
        let _ = tx.send(ev.clone());
    });
    print_namespaces(&ctrl, &ctrl.namespaces());
    if args.expose_block {
        let devices = match expose_block(&ctrl, &args) {
            Ok(d) => d,
            Err(e) => {
                let _ = ctrl.disconnect();
                return Err(e);
            }
        };
        let outcome = run_connected(&ctrl, None, &devices, &events, &stop);
        if outcome.is_ok() {
            tracing::info!("signal received; disconnecting");
        }
        let res = teardown_block(devices, ctrl);
        drop(state);
        return outcome.and(res);
    }
    let mut files = expose(&ctrl, &args)?;
    let outcome = run_connected(&ctrl, files.as_mut(), &[], &events, &stop);
    if outcome.is_ok() {
        tracing::info!("signal received; disconnecting");
    }
    let res = teardown(files, ctrl);
    drop(state);
    outcome.and(res)
}

/// The ublk sizes from the command line, checked one option at a time so
/// the error names the one that is wrong (before anything connects).
fn ublk_options(args: &ConnectArgs) -> anyhow::Result<UblkOptions> {
    let d = UblkOptions::default();
    UblkOptions {
        queues: args.block_queues,
        ..d.clone()
    }
    .validate()
    .with_context(|| format!("--block-queues {}", args.block_queues))?;
    UblkOptions {
        queue_depth: args.block_queue_depth,
        ..d.clone()
    }
    .validate()
    .with_context(|| format!("--block-queue-depth {}", args.block_queue_depth))?;
    Ok(UblkOptions {
        queues: args.block_queues,
        queue_depth: args.block_queue_depth,
        ..d
    })
}

/// Expose every namespace as a ublk block device. If one fails, those
/// already made are removed (by their `Drop`) and the error names ublk.
fn expose_block(ctrl: &Controller, args: &ConnectArgs) -> anyhow::Result<Vec<UblkDevice>> {
    let mut opts = ublk_options(args)?;
    // Discard and write-zeroes only where the controller implements the
    // commands they become (unknown: advertise, and a refusal answers
    // -EOPNOTSUPP so the block layer stops sending them).
    if let Some(id) = ctrl.identify() {
        opts = opts.with_oncs(id.oncs);
    }
    if !(opts.discard && opts.write_zeroes) {
        tracing::info!(
            discard = opts.discard,
            write_zeroes = opts.write_zeroes,
            "the controller lacks Dataset Management or Write Zeroes; not advertised"
        );
    }
    let namespaces = ctrl.namespaces();
    if namespaces.is_empty() {
        tracing::warn!(
            subnqn = ctrl.subnqn(),
            "the subsystem has no namespace: no block device exposed (namespaces added later are not exposed either)"
        );
    }
    let mut devices = Vec::new();
    for info in namespaces {
        let ns = ctrl.namespace(info.nsid)?;
        let size = ns.size();
        let dev = UblkDevice::create(ns, &opts)
            .with_context(|| format!("exposing namespace {} as a block device", info.nsid))?;
        println!(
            "namespace {} exposed at {} ({size} bytes)",
            info.nsid,
            dev.path().display()
        );
        devices.push(dev);
    }
    Ok(devices)
}

/// Remove the block devices, then disconnect; as [`teardown`], a device
/// whose removal waits on a request stuck on a lost connection gets
/// [`UNEXPOSE_GRACE`], then the controller is disconnected, which fails
/// that request and lets the removal finish.
fn teardown_block(devices: Vec<UblkDevice>, ctrl: Controller) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("unexpose".into())
        .spawn(move || {
            let results: Vec<_> = devices.into_iter().map(UblkDevice::stop).collect();
            let _ = tx.send(results);
        });
    let mut removed = None;
    if spawned.is_ok() {
        match rx.recv_timeout(UNEXPOSE_GRACE) {
            Ok(r) => removed = Some(r),
            Err(_) => tracing::warn!(
                "block devices still busy after {UNEXPOSE_GRACE:?}; disconnecting to unblock them"
            ),
        }
    }
    let disconnected = ctrl.disconnect();
    if removed.is_none() && spawned.is_ok() {
        removed = rx.recv().ok();
    }
    for r in removed.into_iter().flatten() {
        if let Err(e) = r {
            tracing::warn!(error = %e, "removing a block device");
        }
    }
    disconnected?;
    Ok(())
}

/// Follow namespace changes until a signal arrives. Fails if the
/// controller is lost for good (ctrl-loss-tmo expired), since the files
/// could only return errors from then on, or if a block device died (a
/// queue failed: the kernel removed the device, so nothing is exposed).
fn run_connected(
    ctrl: &Controller,
    mut files: Option<&mut NamespaceFiles>,
    devices: &[UblkDevice],
    events: &Receiver<NamespaceEvent>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => {
                if let Some(f) = files.as_deref_mut() {
                    apply_event(ctrl, f, &ev);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(100)),
        }
        if ctrl.state() == ControllerState::Failed {
            bail!(
                "lost {} at {} for longer than --ctrl-loss-tmo",
                ctrl.subnqn(),
                ctrl.addr()
            );
        }
        if let Some((path, why)) = devices
            .iter()
            .find_map(|d| d.failure().map(|why| (d.path(), why)))
        {
            bail!(
                "block device {} stopped serving ({why}); the kernel removed it",
                path.display()
            );
        }
    }
    Ok(())
}

/// Remove the files, then disconnect. The files go first so no user can
/// open a file whose I/O would only fail; if that takes longer than
/// [`UNEXPOSE_GRACE`], the controller is disconnected to unblock it.
fn teardown(files: Option<NamespaceFiles>, ctrl: Controller) -> anyhow::Result<()> {
    let closing = files.map(|f| {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("unexpose".into())
            .spawn(move || {
                let _ = tx.send(f.close());
            });
        (rx, spawned)
    });
    let mut unexposed = None;
    if let Some((rx, Ok(_))) = &closing {
        match rx.recv_timeout(UNEXPOSE_GRACE) {
            Ok(r) => unexposed = Some(r),
            Err(_) => tracing::warn!(
                "files still busy after {UNEXPOSE_GRACE:?}; disconnecting to unblock them"
            ),
        }
    }
    let disconnected = ctrl.disconnect();
    if let (None, Some((rx, Ok(_)))) = (&unexposed, &closing) {
        unexposed = rx.recv().ok();
    }
    match unexposed {
        Some(Err(e)) => tracing::warn!(
            error = %e,
            "files still open (by a process or a loop device); detached lazily, their I/O fails from now on"
        ),
        Some(Ok(())) => tracing::info!("files removed"),
        None => {}
    }
    disconnected?;
    Ok(())
}

/// The state file of a running `connect`; removed on drop.
struct StateFile {
    path: PathBuf,
}

fn state_file_name(subnqn: &str) -> String {
    let safe: String = subnqn
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.pid")
}

/// Whether `pid` still runs. A zombie (exited, not yet reaped by its
/// parent) does not: it holds no connection any more, and waiting for its
/// parent to reap it could take forever.
fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    let exists = pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
    exists && !is_zombie(pid)
}

/// The state letter in /proc/PID/stat follows the parenthesised command
/// name, which may itself contain spaces and parentheses.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z")
}

fn read_state(path: &Path) -> Option<(i32, String)> {
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    let pid = i32::try_from(v.get("pid")?.as_i64()?).ok()?;
    Some((pid, v.get("subnqn")?.as_str()?.to_string()))
}

impl StateFile {
    fn create(dir: &Path, subnqn: &str, addr: &str) -> anyhow::Result<StateFile> {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating run directory {}", dir.display()))?;
        let path = dir.join(state_file_name(subnqn));
        if let Some((pid, _)) = read_state(&path) {
            if pid_alive(pid) && pid != std::process::id() as i32 {
                bail!(
                    "{subnqn} is already connected by process {pid} (state file {})",
                    path.display()
                );
            }
        }
        let body = serde_json::json!({ "pid": std::process::id(), "subnqn": subnqn, "addr": addr });
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, body.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(StateFile { path })
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

pub fn disconnect(args: DisconnectArgs) -> anyhow::Result<()> {
    let entries = match fs::read_dir(&args.run_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if args.all {
                return Ok(());
            }
            bail!(
                "no connections (run directory {} does not exist)",
                args.run_dir.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.run_dir.display())),
    };
    let mut targets = Vec::new();
    for ent in entries.flatten() {
        let path = ent.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pid") {
            continue;
        }
        let Some((pid, subnqn)) = read_state(&path) else {
            continue;
        };
        if args.all || args.subnqn.as_deref() == Some(subnqn.as_str()) {
            targets.push((pid, subnqn, path));
        }
    }
    if targets.is_empty() && !args.all {
        bail!(
            "{} is not connected (no state file in {})",
            args.subnqn.as_deref().unwrap_or(""),
            args.run_dir.display()
        );
    }
    let mut failed = Vec::new();
    for (pid, subnqn, path) in targets {
        if !pid_alive(pid) {
            let _ = fs::remove_file(&path);
            println!("{subnqn}: stale state file removed (process {pid} is gone)");
            continue;
        }
        // SAFETY: sending SIGTERM to a pid we read from our own state file.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if pid_alive(pid) {
            failed.push(format!(
                "{subnqn} (process {pid} still running after {} s)",
                args.timeout
            ));
        } else {
            println!("{subnqn}: disconnected");
        }
    }
    if !failed.is_empty() {
        bail!("could not disconnect: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct ConnectWrap {
        #[command(flatten)]
        a: ConnectArgs,
    }

    fn parse_connect(extra: &[&str]) -> Result<ConnectArgs, clap::Error> {
        use clap::Parser;
        let mut all = vec![
            "connect",
            "-a",
            "127.0.0.1",
            "-n",
            "nqn.2026-12.io.ferrofab:x",
        ];
        all.extend_from_slice(extra);
        ConnectWrap::try_parse_from(all).map(|w| w.a)
    }

    #[test]
    fn expose_block_options() {
        let a = parse_connect(&["--expose-block", "--block-queue-depth", "128"]).unwrap();
        assert!(a.expose_block);
        assert_eq!(a.block_queue_depth, 128);
        assert_eq!(a.block_queues, ferrofab_nvmeof_ublk::DEFAULT_QUEUES);
        // A block device or no exposure, not both; the ublk sizes only
        // mean something with --expose-block.
        assert!(parse_connect(&["--expose-block", "--no-expose"]).is_err());
        assert!(parse_connect(&["--expose-block", "--name", "x"]).is_err());
        assert!(parse_connect(&["--block-queues", "2"]).is_err());
    }

    #[test]
    fn bad_block_options_name_the_option() {
        let a = parse_connect(&["--expose-block", "--block-queues", "0"]).unwrap();
        let e = format!("{:#}", ublk_options(&a).unwrap_err());
        assert!(e.starts_with("--block-queues 0: "), "{e}");
        let a = parse_connect(&["--expose-block", "--block-queue-depth", "5000"]).unwrap();
        let e = format!("{:#}", ublk_options(&a).unwrap_err());
        assert!(e.starts_with("--block-queue-depth 5000: "), "{e}");
        let a = parse_connect(&["--expose-block", "--block-queues", "4"]).unwrap();
        assert_eq!(ublk_options(&a).unwrap().queues, 4);
    }

    #[test]
    fn dhchap_secret_from_the_command_line_or_a_file() {
        let secret = ferrofab_nvmeof_wire::auth::DhchapSecret::new(&[9u8; 32], None).unwrap();
        let text = secret.encode();
        assert_eq!(load_secret("--dhchap-secret", &text).unwrap(), secret);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{text}\n")).unwrap();
        assert_eq!(
            load_secret("--dhchap-secret", path.to_str().unwrap()).unwrap(),
            secret
        );
        let e = load_secret("--dhchap-ctrl-secret", "/nonexistent/key").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--dhchap-ctrl-secret: not a DHHC-1 secret and not a readable file"),
            "{e}"
        );
        let bad = text.replace(":00:", ":09:");
        let e = load_secret("--dhchap-secret", &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--dhchap-secret") && !e.contains(&text[10..]),
            "{e}"
        );
    }

    /// A mistyped secret (not starting exactly with `DHHC-1:`) is tried
    /// as a path; the error must not print it.
    #[test]
    fn mistyped_secret_is_not_echoed() {
        let text = ferrofab_nvmeof_wire::auth::DhchapSecret::new(&[7u8; 32], None)
            .unwrap()
            .encode();
        for typo in [
            format!("dhhc-1{}", &text[6..]),
            format!("DHHC-1 {}", &text[7..]),
            format!("\"{text}\""),
        ] {
            let e = load_secret("--dhchap-secret", &typo)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("--dhchap-secret: not a DHHC-1 secret"), "{e}");
            assert!(!e.contains(&text[10..40]), "the secret leaked: {e}");
        }
    }

    #[test]
    fn addresses_and_names() {
        assert_eq!(host_port("10.0.0.1", 4420), "10.0.0.1:4420");
        assert_eq!(host_port("::1", 4420), "[::1]:4420");
        assert_eq!(
            state_file_name("nqn.2026-11.io.ferrofab:a/b"),
            "nqn.2026-11.io.ferrofab:a_b.pid"
        );
    }

    #[test]
    fn reaped_and_zombie_processes_are_not_alive() {
        assert!(pid_alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id() as i32;
        let zombie = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            is_zombie(pid)
        });
        assert!(zombie, "child never became a zombie");
        assert!(!pid_alive(pid));
        child.wait().expect("reap");
        assert!(!pid_alive(pid));
    }
}
