//! The NVMe/TCP target and discovery controller.
//!
//! [`Target`] is the whole target and its live reconfiguration API: the
//! agent (or `ferrofab-nvmeof serve`) adds and removes listeners,
//! subsystems, namespaces and allowed hosts while hosts are connected, and
//! each change disturbs only what it touches.
//!
//! # Layout
//!
//! Modules, from the wire up (PDUs, spec structures and the DH-HMAC-CHAP
//! formats come from `ferrofab-nvmeof-wire`):
//!
//! * [`socket`] — poll modes and non-blocking socket I/O;
//! * [`conn`] — the per-connection queue state machine (ICReq, Connect,
//!   command dispatch, R2T/H2CData);
//! * [`fabrics`], [`admin`], [`io`] — the command handlers; `auth` — the
//!   target's side of DH-HMAC-CHAP;
//! * [`registry`] — subsystems, namespaces and allow-lists, and below it
//!   [`controller`] — per-association state: properties, features, AERs,
//!   keep-alive (a subsystem lists its controllers and each controller
//!   points at its subsystem, so the two live in one module tree);
//! * `features` and `auth_state` — the per-controller feature values and
//!   the per-queue DH-HMAC-CHAP state, kept below the handlers that change
//!   them and the controller and connection that hold them, so imports
//!   only point down;
//! * [`discovery`] — the discovery log page;
//! * [`listener`] — TCP accept loops; [`limits`] — connection admission
//!   and setup deadlines; [`config`] — the `serve` TOML file and its apply;
//!   `executor` — I/O threads for O_DIRECT namespaces; `sync` — the
//!   poison-tolerant lock helpers every module uses;
//! * [`backend`] — the block backends (regular files and block devices)
//!   namespaces are stored on; the agent opens them directly too.

mod admin;
mod auth;
mod auth_state;
pub mod backend;
pub mod config;
pub mod conn;
mod discovery;
mod executor;
mod fabrics;
mod features;
#[cfg(test)]
mod fuzz;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gather;
mod io;
pub mod limits;
#[cfg(test)]
mod limits_tests;
pub mod listener;
pub mod registry;
/// Kept at the crate root too: the controller module's public path.
pub use registry::controller;
mod rxbuf;
pub mod socket;
mod sync;
#[cfg(any(test, feature = "fuzzing"))]
mod testbed;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::Duration;

use crate::backend::{BackendError, BlockBackend};
use ferrofab_nvmeof_wire::spec::identify::DiscoveryEntry;

pub use limits::ConnectionStats;
pub use listener::ListenerKind;
pub use registry::controller::{Controller, ControllerKind};
pub use registry::{HostAuth, Namespace, NamespaceStatsSnapshot, Subsystem, PREVIOUS_KEY_GRACE};
pub use socket::PollMode;

use registry::Registry;
use sync::lock;

/// NVMe version reported in VS and Identify: 1.3.
pub const NVME_VERSION: u32 = 0x0001_0300;
/// Firmware revision in Identify Controller (8 characters at most).
pub const FIRMWARE_REVISION: &str = concat!("ff", env!("CARGO_PKG_VERSION"));

/// Tunables of the target. The defaults suit the Linux host driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetOptions {
    /// How I/O queue threads wait for commands.
    pub poll_mode: PollMode,
    /// How admin queue threads wait. Admin traffic is rare, so sleeping
    /// costs no latency that matters.
    pub admin_poll_mode: PollMode,
    /// I/O queues granted per controller at most.
    pub max_io_queues: u16,
    /// Entries per queue (CAP.MQES + 1, and MAXCMD).
    pub queue_depth: u16,
    /// Write data up to this size travels inside the command capsule.
    pub in_capsule_data: u32,
    /// MAXH2CDATA: the largest H2CData PDU payload.
    pub max_h2c_data: u32,
    /// Largest single transfer (MDTS), a power of two of at least 4 KiB.
    pub mdts_bytes: u32,
    /// Highest namespace ID (Identify NN).
    pub max_namespaces: u32,
    /// Threads for backend I/O on namespaces that bypass the page cache
    /// (`O_DIRECT`), so a queue keeps the device busy at the host's queue
    /// depth. 0 runs all backend I/O on the queue's own thread.
    pub io_threads: u16,
    /// Open TCP connections at most, over all listeners. Each costs a
    /// thread, so this bounds threads and memory whatever peers do; a
    /// connection over the cap is closed at once.
    pub max_connections: u32,
    /// Open TCP connections from one peer IP address at most. A host
    /// needs 1 + its I/O queue count per controller.
    pub max_connections_per_peer: u32,
    /// A connection that sends no complete ICReq within this many
    /// milliseconds is closed.
    pub icreq_timeout_ms: u32,
    /// A connection that has no Fabrics Connect within this many
    /// milliseconds of its ICResp is closed.
    pub connect_timeout_ms: u32,
    /// A controller whose admin queue must authenticate (DH-HMAC-CHAP) and
    /// has not succeeded within this many milliseconds of its Connect is
    /// torn down. Meanwhile it replaces the keep-alive timeout, which the
    /// host cannot honour before it has authenticated.
    pub auth_timeout_ms: u32,
    /// Reads of at least this many bytes from a namespace stored in a file
    /// in memory (tmpfs), on a connection without data digest, are sent with
    /// `sendfile(2)`: the kernel hands the cached pages to the socket, which
    /// saves copying them into the send buffer. Smaller reads are copied,
    /// so that many of them still leave in one system call. 0 turns
    /// `sendfile` off.
    pub sendfile_min_bytes: u32,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            poll_mode: PollMode::default(),
            admin_poll_mode: PollMode::Interrupt,
            max_io_queues: 64,
            queue_depth: 128,
            in_capsule_data: 16 * 1024,
            max_h2c_data: 128 * 1024,
            mdts_bytes: 1024 * 1024,
            max_namespaces: 1024,
            io_threads: 16,
            max_connections: 4096,
            max_connections_per_peer: 512,
            icreq_timeout_ms: 5_000,
            connect_timeout_ms: 10_000,
            auth_timeout_ms: 120_000,
            sendfile_min_bytes: 64 * 1024,
        }
    }
}

impl TargetOptions {
    /// Check values a config file could get wrong.
    pub fn validate(&self) -> Result<(), TargetError> {
        let bad = |what: &str| Err(TargetError::InvalidOption(what.to_string()));
        if !(2..=4096).contains(&self.queue_depth) {
            return bad("queue_depth must be between 2 and 4096");
        }
        if self.max_io_queues == 0 || self.max_io_queues > 1024 {
            return bad("max_io_queues must be between 1 and 1024");
        }
        if !self.mdts_bytes.is_power_of_two() || self.mdts_bytes < 4096 {
            return bad("mdts_bytes must be a power of two of at least 4096");
        }
        if self.max_h2c_data < 4096 || !self.max_h2c_data.is_multiple_of(4) {
            return bad("max_h2c_data must be a multiple of 4 of at least 4096");
        }
        if !self.in_capsule_data.is_multiple_of(16) || self.in_capsule_data > 1024 * 1024 {
            return bad("in_capsule_data must be a multiple of 16 up to 1 MiB");
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.max_connections_per_peer == 0
            || self.max_connections_per_peer > self.max_connections
        {
            return bad("max_connections_per_peer must be between 1 and max_connections");
        }
        if self.icreq_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return bad("icreq_timeout_ms and connect_timeout_ms must be at least 1");
        }
        if self.auth_timeout_ms == 0 {
            return bad("auth_timeout_ms must be at least 1");
        }
        Ok(())
    }

    /// The CAP property.
    pub(crate) fn cap(&self) -> u64 {
        let mqes = u64::from(self.queue_depth - 1);
        let cqr = 1 << 16;
        let timeout_500ms = 15u64 << 24;
        let css_nvm = 1u64 << 37;
        mqes | cqr | timeout_500ms | css_nvm
    }

    /// MDTS as Identify encodes it: a power of two of 4 KiB pages.
    pub(crate) fn mdts_field(&self) -> u8 {
        (self.mdts_bytes / ferrofab_nvmeof_wire::spec::PAGE_SIZE as u32).trailing_zeros() as u8
    }

    pub(crate) fn icreq_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.icreq_timeout_ms))
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.connect_timeout_ms))
    }

    /// Fabrics commands may carry up to 8 KiB in the capsule on any queue.
    pub(crate) fn admin_in_capsule_data(&self) -> usize {
        8192
    }
}

/// Errors of the reconfiguration API.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid NQN: {0}")]
    InvalidNqn(String),
    #[error("subsystem {0} already exists")]
    SubsystemExists(String),
    #[error("no subsystem {0}")]
    UnknownSubsystem(String),
    #[error("namespace {nsid} already exists in {nqn}")]
    NamespaceExists { nqn: String, nsid: u32 },
    #[error("no namespace {nsid} in {nqn}")]
    UnknownNamespace { nqn: String, nsid: u32 },
    #[error("invalid namespace ID {0} (must be 1 to the target's max_namespaces)")]
    InvalidNsid(u32),
    #[error("invalid block size {0} (must be 512 or 4096)")]
    InvalidBlockSize(u32),
    #[error(
        "namespace {nsid} in {nqn}: size {size} is not a multiple of the block size {block_size}"
    )]
    UnalignedSize {
        nqn: String,
        nsid: u32,
        size: u64,
        block_size: u32,
    },
    #[error("namespace {nsid} in {nqn} cannot shrink from {from} to {to} bytes")]
    Shrink {
        nqn: String,
        nsid: u32,
        from: u64,
        to: u64,
    },
    #[error("no listener on {0}")]
    UnknownListener(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid target option: {0}")]
    InvalidOption(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Everything a subsystem is created with.
#[derive(Debug, Clone)]
pub struct SubsystemConfig {
    pub nqn: String,
    /// Serial number shown by Identify; derived from the NQN if empty.
    pub serial: String,
    /// Model shown by Identify.
    pub model: String,
    /// Explicitly open the subsystem to every host. Off by default:
    /// an empty allow-list admits nobody.
    pub allow_any_host: bool,
    pub allowed_hosts: Vec<String>,
}

/// Everything a namespace is created with.
#[derive(Debug, Clone)]
pub struct NamespaceConfig {
    pub nsid: u32,
    pub backend: Arc<dyn BlockBackend>,
    pub block_size: u32,
    /// Stable identity; derive it from something persistent so that hosts
    /// see the same namespace after a restart.
    pub uuid: uuid::Uuid,
    pub nguid: [u8; 16],
    pub read_only: bool,
}

/// Shared state of a running target.
#[derive(Debug)]
pub struct TargetInner {
    pub(crate) opts: TargetOptions,
    pub(crate) registry: Registry,
    controllers: Mutex<BTreeMap<u16, Weak<Controller>>>,
    next_cntlid: AtomicU16,
    listeners: Mutex<Vec<Arc<listener::ListenerState>>>,
    next_portid: AtomicU16,
    stop: AtomicBool,
    pub(crate) executor: Option<executor::Executor>,
    /// Commands refused because a length in them was over MDTS or
    /// disagreed with the command's SGL (see docs/nvmeof-target.md,
    /// "Command limits"): a host doing this is broken or hostile.
    refused_lengths: AtomicU64,
    /// Write-class commands refused to a read-only host.
    refused_write_protected: AtomicU64,
    /// Connection caps and counters.
    pub(crate) gate: Arc<limits::ConnGate>,
}

impl TargetInner {
    /// Count a command refused for a length (MDTS, SGL mismatch).
    pub(crate) fn count_length_refusal(&self) {
        self.refused_lengths.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a write-class command refused to a read-only host.
    pub(crate) fn count_write_protected(&self) {
        self.refused_write_protected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn poll_mode(&self, qid: u16) -> PollMode {
        if qid == 0 {
            self.opts.admin_poll_mode
        } else {
            self.opts.poll_mode
        }
    }

    /// Create a controller with a fresh cntlid (1..=0xFFEF, the range the
    /// specification leaves for them).
    pub(crate) fn create_controller(
        &self,
        kind: ControllerKind,
        hostnqn: String,
        hostid: [u8; 16],
        kato_ms: u32,
        admin: Arc<socket::ConnLink>,
    ) -> Option<Arc<Controller>> {
        let mut table = lock(&self.controllers);
        table.retain(|_, w| w.strong_count() > 0);
        let cntlid = (0..0xFFEF).find_map(|_| {
            let id = self.next_cntlid.fetch_add(1, Ordering::Relaxed) % 0xFFEF + 1;
            (!table.contains_key(&id)).then_some(id)
        })?;
        let ctrl = Arc::new(Controller::new(
            cntlid, kind, hostnqn, hostid, kato_ms, admin,
        ));
        if let Some(subsys) = ctrl.subsystem() {
            subsys.attach_controller(&ctrl);
        }
        table.insert(cntlid, Arc::downgrade(&ctrl));
        Some(ctrl)
    }

    pub(crate) fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        lock(&self.controllers)
            .get(&cntlid)
            .and_then(Weak::upgrade)
            .filter(|c| !c.is_dead())
    }

    pub(crate) fn forget_controller(&self, cntlid: u16) {
        lock(&self.controllers).remove(&cntlid);
    }

    fn all_controllers(&self) -> Vec<Arc<Controller>> {
        lock(&self.controllers)
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    pub(crate) fn discovery_entries(
        &self,
        hostnqn: &str,
        local: SocketAddr,
    ) -> (u64, Vec<DiscoveryEntry>) {
        let listeners = lock(&self.listeners).clone();
        // Read the counter first: if a change races with building the
        // list, the host sees a new genctr next time and reads again.
        let genctr = self.registry.genctr();
        (
            genctr,
            discovery::entries_for(&self.registry, &listeners, hostnqn, local),
        )
    }

    /// Tell connected discovery hosts that the log page changed.
    fn discovery_changed(&self) {
        self.registry.bump_genctr();
        for ctrl in self
            .all_controllers()
            .into_iter()
            .filter(|c| c.is_discovery())
        {
            ctrl.discovery_changed();
        }
    }

    fn subsystem(&self, nqn: &str) -> Result<Arc<Subsystem>, TargetError> {
        self.registry
            .get(nqn)
            .ok_or_else(|| TargetError::UnknownSubsystem(nqn.to_string()))
    }
}

/// A running target. Dropping it stops the listeners and ends every
/// connection.
#[derive(Debug)]
pub struct Target {
    inner: Arc<TargetInner>,
}

impl Target {
    pub fn new(opts: TargetOptions) -> Result<Target, TargetError> {
        opts.validate()?;
        conn::map_large_buffers_separately();
        let executor = match opts.io_threads {
            0 => None,
            n => Some(executor::Executor::start(usize::from(n)).map_err(|e| {
                TargetError::InvalidOption(format!("cannot start {n} I/O threads: {e}"))
            })?),
        };
        let gate = Arc::new(limits::ConnGate::new(
            opts.max_connections,
            opts.max_connections_per_peer,
        ));
        let inner = Arc::new(TargetInner {
            gate,
            opts,
            registry: Registry::default(),
            controllers: Mutex::new(BTreeMap::new()),
            next_cntlid: AtomicU16::new(0),
            listeners: Mutex::new(Vec::new()),
            next_portid: AtomicU16::new(1),
            stop: AtomicBool::new(false),
            executor,
            refused_lengths: AtomicU64::new(0),
            refused_write_protected: AtomicU64::new(0),
        });
        spawn_keep_alive_watchdog(&inner);
        Ok(Target { inner })
    }

    pub fn options(&self) -> &TargetOptions {
        &self.inner.opts
    }

    /// Listen on `addr` (port 0 picks a free port). Returns the bound
    /// address.
    pub fn add_listener(
        &self,
        addr: SocketAddr,
        kind: ListenerKind,
        advertise: Option<String>,
    ) -> Result<SocketAddr, TargetError> {
        let portid = self.inner.next_portid.fetch_add(1, Ordering::Relaxed);
        let state = listener::spawn(self.inner.clone(), addr, kind, portid, advertise)
            .map_err(|source| TargetError::Bind { addr, source })?;
        let bound = state.bound;
        lock(&self.inner.listeners).push(state);
        tracing::info!(addr = %bound, ?kind, "listener added");
        self.inner.discovery_changed();
        Ok(bound)
    }

    /// Stop accepting on `addr`. Established connections stay up.
    pub fn remove_listener(&self, addr: SocketAddr) -> Result<(), TargetError> {
        let mut list = lock(&self.inner.listeners);
        let Some(pos) = list.iter().position(|l| l.bound == addr) else {
            return Err(TargetError::UnknownListener(addr));
        };
        list.remove(pos).stop();
        drop(list);
        tracing::info!(%addr, "listener removed");
        self.inner.discovery_changed();
        Ok(())
    }

    pub fn listeners(&self) -> Vec<(SocketAddr, ListenerKind)> {
        lock(&self.inner.listeners)
            .iter()
            .map(|l| (l.bound, l.kind))
            .collect()
    }

    pub fn add_subsystem(&self, cfg: SubsystemConfig) -> Result<(), TargetError> {
        ferrofab_nvmeof_wire::spec::validate_nqn(&cfg.nqn).map_err(TargetError::InvalidNqn)?;
        if cfg.nqn == ferrofab_nvmeof_wire::spec::DISCOVERY_NQN {
            return Err(TargetError::InvalidNqn(
                "the discovery NQN cannot be a subsystem".into(),
            ));
        }
        for h in &cfg.allowed_hosts {
            ferrofab_nvmeof_wire::spec::validate_nqn(h).map_err(TargetError::InvalidNqn)?;
        }
        let serial = if cfg.serial.is_empty() {
            derive_serial(&cfg.nqn)
        } else {
            cfg.serial.clone()
        };
        let model = if cfg.model.is_empty() {
            "ferrofab".to_string()
        } else {
            cfg.model.clone()
        };
        let subsys = Subsystem::new(
            cfg.nqn.clone(),
            serial,
            model,
            cfg.allow_any_host,
            cfg.allowed_hosts.iter().cloned().collect(),
        );
        if !self.inner.registry.insert(Arc::new(subsys)) {
            return Err(TargetError::SubsystemExists(cfg.nqn));
        }
        tracing::info!(nqn = %cfg.nqn, hosts = cfg.allowed_hosts.len(), allow_any_host = cfg.allow_any_host, "subsystem added");
        self.inner.discovery_changed();
        Ok(())
    }

    /// Remove a subsystem and end every controller on it.
    pub fn remove_subsystem(&self, nqn: &str) -> Result<(), TargetError> {
        let subsys = self
            .inner
            .registry
            .remove(nqn)
            .ok_or_else(|| TargetError::UnknownSubsystem(nqn.to_string()))?;
        for ctrl in subsys.controllers() {
            ctrl.teardown("subsystem removed");
        }
        tracing::info!(nqn, "subsystem removed");
        self.inner.discovery_changed();
        Ok(())
    }

    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.inner.registry.get(nqn)
    }

    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.inner.registry.all()
    }

    pub fn allow_host(&self, nqn: &str, hostnqn: &str) -> Result<(), TargetError> {
        ferrofab_nvmeof_wire::spec::validate_nqn(hostnqn).map_err(TargetError::InvalidNqn)?;
        let subsys = self.inner.subsystem(nqn)?;
        if subsys.add_host(hostnqn) {
            tracing::info!(nqn, hostnqn, "host allowed");
            self.inner.discovery_changed();
        }
        Ok(())
    }

    /// Revoke a host: it can no longer connect, and its controllers on the
    /// subsystem end now.
    pub fn revoke_host(&self, nqn: &str, hostnqn: &str) -> Result<(), TargetError> {
        let subsys = self.inner.subsystem(nqn)?;
        let removed = subsys.remove_host(hostnqn);
        self.drop_disallowed(&subsys);
        if removed {
            tracing::info!(nqn, hostnqn, "host revoked");
            self.inner.discovery_changed();
        }
        Ok(())
    }

    /// Lets `hostnqn` only read namespaces of subsystem `nqn` (or write
    /// again): write-class commands (Write, Write Zeroes, Dataset
    /// Management) from it complete with "Namespace is Write Protected",
    /// and Identify Namespace shows it the namespace as write protected.
    /// Applies to its live controllers at once.
    pub fn set_host_read_only(
        &self,
        nqn: &str,
        hostnqn: &str,
        read_only: bool,
    ) -> Result<(), TargetError> {
        ferrofab_nvmeof_wire::spec::validate_nqn(hostnqn).map_err(TargetError::InvalidNqn)?;
        let subsys = self.inner.subsystem(nqn)?;
        if subsys.set_host_read_only(hostnqn, read_only) {
            tracing::info!(nqn, hostnqn, read_only, "host access mode changed");
        }
        Ok(())
    }

    pub fn set_allow_any_host(&self, nqn: &str, allow: bool) -> Result<(), TargetError> {
        let subsys = self.inner.subsystem(nqn)?;
        if subsys.allow_any_host() != allow {
            subsys.set_allow_any_host(allow);
            self.drop_disallowed(&subsys);
            self.inner.discovery_changed();
        }
        Ok(())
    }

    /// Give `hostnqn` a DH-HMAC-CHAP key (and optionally a controller key)
    /// on subsystem `nqn`. From its next Connect on, the host must
    /// authenticate every queue; queues already connected re-check at their
    /// next (re-)authentication, which uses the new key (rotation).
    pub fn set_host_key(
        &self,
        nqn: &str,
        hostnqn: &str,
        auth: HostAuth,
    ) -> Result<(), TargetError> {
        ferrofab_nvmeof_wire::spec::validate_nqn(hostnqn).map_err(TargetError::InvalidNqn)?;
        let subsys = self.inner.subsystem(nqn)?;
        if subsys.set_host_auth(hostnqn, auth) {
            // Never the key itself.
            tracing::info!(nqn, hostnqn, "host key set");
        }
        Ok(())
    }

    /// Remove a host's key. Its live queues keep running; unless the
    /// subsystem requires authentication, its next Connect is accepted
    /// without authentication.
    pub fn remove_host_key(&self, nqn: &str, hostnqn: &str) -> Result<(), TargetError> {
        let subsys = self.inner.subsystem(nqn)?;
        if subsys.remove_host_auth(hostnqn) {
            tracing::info!(nqn, hostnqn, "host key removed");
        }
        Ok(())
    }

    /// Require authentication on `nqn`: a host without a key is refused
    /// at Connect (Authentication Required). Controllers of hosts without
    /// a key that are connected now end when this is switched on.
    pub fn set_require_auth(&self, nqn: &str, on: bool) -> Result<(), TargetError> {
        let subsys = self.inner.subsystem(nqn)?;
        if subsys.require_auth() != on {
            subsys.set_require_auth(on);
            tracing::info!(nqn, require_auth = on, "authentication policy changed");
            if on {
                for ctrl in subsys.controllers() {
                    if subsys.host_auth(&ctrl.hostnqn).is_none() {
                        ctrl.teardown("subsystem now requires authentication");
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_disallowed(&self, subsys: &Subsystem) {
        for ctrl in subsys.controllers() {
            if !subsys.host_allowed(&ctrl.hostnqn) {
                ctrl.teardown("host access revoked");
            }
        }
    }

    pub fn add_namespace(&self, nqn: &str, cfg: NamespaceConfig) -> Result<(), TargetError> {
        let subsys = self.inner.subsystem(nqn)?;
        let ns = self.build_namespace(nqn, cfg)?;
        let (nsid, size) = (ns.nsid, ns.backend.size());
        if !subsys.insert_namespace(Arc::new(ns)) {
            return Err(TargetError::NamespaceExists {
                nqn: nqn.to_string(),
                nsid,
            });
        }
        tracing::info!(nqn, nsid, size, "namespace added");
        notify_namespace_changed(&subsys, nsid);
        Ok(())
    }

    /// Replace an existing namespace's description in one step, e.g. its
    /// `read_only` or UUID, keeping whatever backend `cfg` names (the same
    /// one keeps the data). Commands already running finish on the old
    /// description; hosts get a Namespace Attribute Changed event.
    pub fn replace_namespace(&self, nqn: &str, cfg: NamespaceConfig) -> Result<(), TargetError> {
        let subsys = self.inner.subsystem(nqn)?;
        let ns = self.build_namespace(nqn, cfg)?;
        let nsid = ns.nsid;
        subsys
            .replace_namespace(Arc::new(ns))
            .ok_or_else(|| TargetError::UnknownNamespace {
                nqn: nqn.to_string(),
                nsid,
            })?;
        tracing::info!(nqn, nsid, "namespace changed");
        notify_namespace_changed(&subsys, nsid);
        Ok(())
    }

    /// A namespace from `cfg`, checked: nsid, block size, whole blocks.
    fn build_namespace(&self, nqn: &str, cfg: NamespaceConfig) -> Result<Namespace, TargetError> {
        if cfg.nsid == 0 || cfg.nsid > self.inner.opts.max_namespaces {
            return Err(TargetError::InvalidNsid(cfg.nsid));
        }
        if cfg.block_size != 512 && cfg.block_size != 4096 {
            return Err(TargetError::InvalidBlockSize(cfg.block_size));
        }
        let size = cfg.backend.size();
        if !size.is_multiple_of(u64::from(cfg.block_size)) {
            return Err(TargetError::UnalignedSize {
                nqn: nqn.to_string(),
                nsid: cfg.nsid,
                size,
                block_size: cfg.block_size,
            });
        }
        let offload = self.inner.executor.is_some() && cfg.backend.info().direct_io;
        Ok(Namespace {
            offload,
            nsid: cfg.nsid,
            backend: cfg.backend,
            block_size: cfg.block_size,
            uuid: *cfg.uuid.as_bytes(),
            nguid: cfg.nguid,
            read_only: cfg.read_only,
            stats: Default::default(),
        })
    }

    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<(), TargetError> {
        let subsys = self.inner.subsystem(nqn)?;
        subsys
            .remove_namespace(nsid)
            .ok_or_else(|| TargetError::UnknownNamespace {
                nqn: nqn.to_string(),
                nsid,
            })?;
        tracing::info!(nqn, nsid, "namespace removed");
        notify_namespace_changed(&subsys, nsid);
        Ok(())
    }

    /// Grow a namespace online: the backend grows, NSZE follows, and
    /// every connected host gets a Namespace Attribute Changed event.
    pub fn resize_namespace(&self, nqn: &str, nsid: u32, new_size: u64) -> Result<(), TargetError> {
        let subsys = self.inner.subsystem(nqn)?;
        let ns = subsys
            .namespace(nsid)
            .ok_or_else(|| TargetError::UnknownNamespace {
                nqn: nqn.to_string(),
                nsid,
            })?;
        let old = ns.backend.size();
        if new_size < old {
            return Err(TargetError::Shrink {
                nqn: nqn.to_string(),
                nsid,
                from: old,
                to: new_size,
            });
        }
        if !new_size.is_multiple_of(u64::from(ns.block_size)) {
            return Err(TargetError::UnalignedSize {
                nqn: nqn.to_string(),
                nsid,
                size: new_size,
                block_size: ns.block_size,
            });
        }
        if new_size == old {
            return Ok(());
        }
        ns.backend.resize(new_size)?;
        tracing::info!(nqn, nsid, from = old, to = new_size, "namespace grown");
        notify_namespace_changed(&subsys, nsid);
        Ok(())
    }

    /// A point-in-time description of everything the target serves.
    pub fn status(&self) -> TargetStatus {
        let listeners = lock(&self.inner.listeners)
            .iter()
            .map(|l| ListenerStatus {
                address: l.bound,
                kind: l.kind,
            })
            .collect();
        let subsystems = self
            .inner
            .registry
            .all()
            .iter()
            .map(|s| subsystem_status(s))
            .collect();
        TargetStatus {
            listeners,
            subsystems,
            genctr: self.inner.registry.genctr(),
            commands_refused_length: self.inner.refused_lengths.load(Ordering::Relaxed),
            commands_refused_write_protected: self
                .inner
                .refused_write_protected
                .load(Ordering::Relaxed),
            connections: Some(self.inner.gate.stats()),
        }
    }

    /// Stop listening and end every connection.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::Release);
        for l in lock(&self.inner.listeners).drain(..) {
            l.stop();
        }
        for ctrl in self.inner.all_controllers() {
            ctrl.teardown("target shutting down");
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn notify_namespace_changed(subsys: &Subsystem, nsid: u32) {
    for ctrl in subsys.controllers() {
        ctrl.namespace_changed(nsid);
    }
}

/// A serial number that is stable for a given NQN (20 ASCII characters
/// at most).
pub fn derive_serial(nqn: &str) -> String {
    let h = ferrofab_nvmeof_wire::wire::digest::crc32c(nqn.as_bytes());
    let h2 = ferrofab_nvmeof_wire::wire::digest::crc32c(&h.to_le_bytes());
    format!("ff{h:08x}{h2:08x}")
}

/// A namespace UUID that is stable for a given subsystem and NSID, for
/// configurations that do not pin one.
pub fn derive_uuid(nqn: &str, nsid: u32) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{nqn}/{nsid}").as_bytes(),
    )
}

/// The keep-alive watchdog: a controller whose host has been silent for
/// longer than KATO is torn down, as the specification requires, so a
/// vanished host does not hold its resources forever.
fn spawn_keep_alive_watchdog(inner: &Arc<TargetInner>) {
    let weak = Arc::downgrade(inner);
    let spawned = thread::Builder::new().name("nvmeof-kato".into()).spawn(move || loop {
        thread::sleep(Duration::from_millis(100));
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if inner.stopping() {
            return;
        }
        for ctrl in inner.all_controllers() {
            if ctrl.auth_expired() {
                tracing::warn!(cntlid = ctrl.cntlid, hostnqn = %ctrl.hostnqn, auth_timeout_ms = inner.opts.auth_timeout_ms, "a queue did not authenticate in time");
                inner.gate.counters.auth_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctrl.teardown("authentication timeout");
                inner.forget_controller(ctrl.cntlid);
            } else if ctrl.kato_expired() {
                tracing::warn!(cntlid = ctrl.cntlid, hostnqn = %ctrl.hostnqn, kato_ms = ctrl.kato_ms(), "keep-alive timeout");
                ctrl.teardown("keep-alive timeout");
                inner.forget_controller(ctrl.cntlid);
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the keep-alive watchdog");
    }
}

/// What [`Target::status`] returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetStatus {
    pub listeners: Vec<ListenerStatus>,
    pub subsystems: Vec<SubsystemStatus>,
    pub genctr: u64,
    /// Commands refused since start because a length in them was over
    /// MDTS or disagreed with their SGL.
    pub commands_refused_length: u64,
    /// Write-class commands refused since start to read-only hosts.
    pub commands_refused_write_protected: u64,
    /// Connection counters; `None` for targets that do not keep them
    /// (the kernel's).
    pub connections: Option<ConnectionStats>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerStatus {
    pub address: SocketAddr,
    pub kind: ListenerKind,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SubsystemStatus {
    pub nqn: String,
    pub serial: String,
    pub allow_any_host: bool,
    pub allowed_hosts: Vec<String>,
    /// Allowed hosts that may only read.
    pub read_only_hosts: Vec<String>,
    pub namespaces: Vec<NamespaceStatus>,
    pub controllers: Vec<ControllerStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NamespaceStatus {
    pub nsid: u32,
    pub size: u64,
    pub block_size: u32,
    pub path: String,
    pub uuid: uuid::Uuid,
    pub stats: NamespaceStatsSnapshot,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ControllerStatus {
    pub cntlid: u16,
    pub hostnqn: String,
    pub peer: SocketAddr,
    pub io_queues: usize,
}

fn subsystem_status(s: &Subsystem) -> SubsystemStatus {
    SubsystemStatus {
        nqn: s.nqn.clone(),
        serial: s.serial.clone(),
        allow_any_host: s.allow_any_host(),
        allowed_hosts: s.hosts(),
        read_only_hosts: s.read_only_hosts(),
        namespaces: s
            .namespaces()
            .iter()
            .map(|ns| NamespaceStatus {
                nsid: ns.nsid,
                size: ns.backend.size(),
                block_size: ns.block_size,
                path: ns.backend.info().path.display().to_string(),
                uuid: uuid::Uuid::from_bytes(ns.uuid),
                stats: ns.stats.snapshot(),
            })
            .collect(),
        controllers: s
            .controllers()
            .iter()
            .filter(|c| !c.is_dead())
            .map(|c| ControllerStatus {
                cntlid: c.cntlid,
                hostnqn: c.hostnqn.clone(),
                peer: c.admin.peer,
                io_queues: c.io_queue_count(),
            })
            .collect(),
    }
}
