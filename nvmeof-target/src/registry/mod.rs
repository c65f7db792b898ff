//! The subsystem registry: what the target exports and to whom.
//!
//! Subsystems hold namespaces and an allow-list of host NQNs. The registry
//! is shared by every connection thread and changed live by the
//! reconfiguration API, so each piece sits behind its own small lock, and
//! readers on the I/O path only clone `Arc`s out of them.

pub mod controller;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::backend::BlockBackend;

use super::sync::{lock, read, write};
use controller::Controller;

/// A namespace: a backend plus the identity the host sees.
#[derive(Debug)]
pub struct Namespace {
    pub nsid: u32,
    pub backend: Arc<dyn BlockBackend>,
    pub block_size: u32,
    pub uuid: [u8; 16],
    pub nguid: [u8; 16],
    pub read_only: bool,
    /// Backend I/O goes to the target's I/O threads (the backend bypasses
    /// the page cache, so each I/O waits for the device).
    pub offload: bool,
    pub stats: NamespaceStats,
}

impl Namespace {
    /// log2 of the block size, for shifts on the I/O path.
    pub fn block_shift(&self) -> u32 {
        self.block_size.trailing_zeros()
    }

    /// Size in logical blocks.
    pub fn nblocks(&self) -> u64 {
        self.backend.size() >> self.block_shift()
    }
}

/// Data-path counters of one namespace, read by the agent's metrics.
#[derive(Debug, Default)]
pub struct NamespaceStats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub errors: AtomicU64,
    /// Sum of command service times, for an average latency.
    pub busy_ns: AtomicU64,
    /// Commands whose backend I/O ran on the I/O threads.
    pub offloaded: AtomicU64,
    /// Reads whose data went from the page cache to the socket with
    /// `sendfile` (`sendfile_min_bytes`), without a copy by the target.
    pub sent_from_file: AtomicU64,
    /// Reads whose data went from a memory namespace's mapping to the
    /// socket in the connection's gathered send, without a copy by the
    /// target; counted once the send succeeded.
    pub sent_from_memory: AtomicU64,
    /// Gathered sends with reads of this namespace that the socket did not
    /// take whole at once: the rest was copied out and sent after the
    /// stripe locks were dropped (a host reading slowly).
    pub sent_from_memory_partial: AtomicU64,
}

impl NamespaceStats {
    pub fn record_read(&self, bytes: usize, took: Duration) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.busy_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn record_write(&self, bytes: usize, took: Duration) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.busy_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> NamespaceStatsSnapshot {
        NamespaceStatsSnapshot {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            offloaded: self.offloaded.load(Ordering::Relaxed),
            sent_from_file: self.sent_from_file.load(Ordering::Relaxed),
            sent_from_memory: self.sent_from_memory.load(Ordering::Relaxed),
            sent_from_memory_partial: self.sent_from_memory_partial.load(Ordering::Relaxed),
        }
    }
}

/// A copy of [`NamespaceStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceStatsSnapshot {
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    pub errors: u64,
    pub busy_ns: u64,
    pub offloaded: u64,
    pub sent_from_file: u64,
    pub sent_from_memory: u64,
    pub sent_from_memory_partial: u64,
}

/// An NVM subsystem.
#[derive(Debug)]
pub struct Subsystem {
    pub nqn: String,
    pub serial: String,
    pub model: String,
    allow_any_host: AtomicBool,
    hosts: RwLock<BTreeSet<String>>,
    /// Hosts that may connect but only read (a subset of `hosts` in
    /// practice; a host listed here and not allowed simply cannot connect).
    read_only_hosts: RwLock<BTreeSet<String>>,
    namespaces: RwLock<BTreeMap<u32, Arc<Namespace>>>,
    controllers: Mutex<Vec<Weak<Controller>>>,
    /// DH-HMAC-CHAP keys per host NQN. A host with a key must
    /// authenticate on every queue; see [`HostAuth`].
    host_keys: RwLock<BTreeMap<String, Arc<HostAuth>>>,
    /// During a key rotation, each host's key before the last change and
    /// until when it is still accepted (see [`PREVIOUS_KEY_GRACE`]).
    previous_keys: RwLock<BTreeMap<String, (ferrofab_nvmeof_wire::auth::DhchapSecret, Instant)>>,
    /// Refuse at Connect any host that has no key here.
    require_auth: AtomicBool,
}

/// How long a host's previous key is still accepted after the target was
/// given a new one (a rotation), unless the host authenticates with the
/// new key first. Covers the time the controller takes to hand the new key
/// to the workstation (one status report, normally well under a second,
/// longer while the controller is unreachable). A named constant rather
/// than a setting: it only bounds how long a superseded key stays valid,
/// and ten minutes is short next to rotation periods (hours at least).
pub const PREVIOUS_KEY_GRACE: Duration = Duration::from_secs(600);

/// In-band authentication settings of one host on one subsystem.
///
/// The secrets are read afresh at the start of every authentication
/// transaction, so replacing them (key rotation) takes effect at the
/// host's next (re-)authentication without touching live queues.
#[derive(Clone, PartialEq, Eq)]
pub struct HostAuth {
    /// The host's secret: the host proves it knows it.
    pub key: ferrofab_nvmeof_wire::auth::DhchapSecret,
    /// The controller's secret, for bidirectional authentication: used
    /// only when the host asks the controller to prove itself.
    pub ctrl_key: Option<ferrofab_nvmeof_wire::auth::DhchapSecret>,
    /// Hash to use; `None` takes the first the host offers.
    pub hash: Option<ferrofab_nvmeof_wire::auth::HashId>,
    /// DH group to use; `None` prefers ffdhe2048, then the first the
    /// host offers.
    pub dhgroup: Option<ferrofab_nvmeof_wire::auth::DhGroup>,
}

impl std::fmt::Debug for HostAuth {
    /// Never prints the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAuth")
            .field("ctrl_key", &self.ctrl_key.is_some())
            .field("hash", &self.hash)
            .field("dhgroup", &self.dhgroup)
            .finish_non_exhaustive()
    }
}

impl Subsystem {
    pub fn new(
        nqn: String,
        serial: String,
        model: String,
        allow_any_host: bool,
        hosts: BTreeSet<String>,
    ) -> Subsystem {
        Subsystem {
            nqn,
            serial,
            model,
            allow_any_host: AtomicBool::new(allow_any_host),
            hosts: RwLock::new(hosts),
            read_only_hosts: RwLock::new(BTreeSet::new()),
            namespaces: RwLock::new(BTreeMap::new()),
            controllers: Mutex::new(Vec::new()),
            host_keys: RwLock::new(BTreeMap::new()),
            previous_keys: RwLock::new(BTreeMap::new()),
            require_auth: AtomicBool::new(false),
        }
    }

    /// The host's authentication settings, if it has a key here.
    pub fn host_auth(&self, hostnqn: &str) -> Option<Arc<HostAuth>> {
        read(&self.host_keys).get(hostnqn).cloned()
    }

    /// Hosts that have a key (the keys themselves stay inside).
    pub fn hosts_with_keys(&self) -> Vec<String> {
        read(&self.host_keys).keys().cloned().collect()
    }

    /// Returns whether anything changed. A new host key keeps the one it
    /// replaces acceptable for [`PREVIOUS_KEY_GRACE`], or until the host
    /// authenticates with the new one ([`Self::retire_previous_key`]).
    pub(crate) fn set_host_auth(&self, hostnqn: &str, auth: HostAuth) -> bool {
        let mut map = write(&self.host_keys);
        if map.get(hostnqn).is_some_and(|a| **a == auth) {
            return false;
        }
        if let Some(old) = map.get(hostnqn).filter(|a| a.key != auth.key) {
            write(&self.previous_keys).insert(
                hostnqn.to_string(),
                (old.key.clone(), Instant::now() + PREVIOUS_KEY_GRACE),
            );
        }
        map.insert(hostnqn.to_string(), Arc::new(auth));
        true
    }

    pub(crate) fn remove_host_auth(&self, hostnqn: &str) -> bool {
        write(&self.previous_keys).remove(hostnqn);
        write(&self.host_keys).remove(hostnqn).is_some()
    }

    /// The host key `hostnqn` had before its last rotation, while it is
    /// still accepted: a queue the host opens before it switched to the
    /// new key still authenticates.
    pub(crate) fn previous_host_key(
        &self,
        hostnqn: &str,
    ) -> Option<ferrofab_nvmeof_wire::auth::DhchapSecret> {
        let now = Instant::now();
        let mut map = write(&self.previous_keys);
        map.retain(|_, (_, until)| *until > now);
        map.get(hostnqn).map(|(k, _)| k.clone())
    }

    /// The host authenticated with its current key: it has switched, so
    /// the previous key stops working now rather than at the end of the
    /// grace time. Whether there was one.
    pub(crate) fn retire_previous_key(&self, hostnqn: &str) -> bool {
        write(&self.previous_keys).remove(hostnqn).is_some()
    }

    pub fn require_auth(&self) -> bool {
        self.require_auth.load(Ordering::Acquire)
    }

    pub(crate) fn set_require_auth(&self, on: bool) {
        self.require_auth.store(on, Ordering::Release);
    }

    /// Deny by default: a host gets in only if it is listed or the
    /// subsystem was explicitly opened to any host.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.allow_any_host.load(Ordering::Acquire) || read(&self.hosts).contains(hostnqn)
    }

    pub fn allow_any_host(&self) -> bool {
        self.allow_any_host.load(Ordering::Acquire)
    }

    pub(crate) fn set_allow_any_host(&self, allow: bool) {
        self.allow_any_host.store(allow, Ordering::Release);
    }

    pub fn hosts(&self) -> Vec<String> {
        read(&self.hosts).iter().cloned().collect()
    }

    /// Returns whether the host was newly added.
    pub(crate) fn add_host(&self, hostnqn: &str) -> bool {
        write(&self.hosts).insert(hostnqn.to_string())
    }

    pub(crate) fn remove_host(&self, hostnqn: &str) -> bool {
        write(&self.hosts).remove(hostnqn)
    }

    pub fn read_only_hosts(&self) -> Vec<String> {
        read(&self.read_only_hosts).iter().cloned().collect()
    }

    pub fn host_read_only(&self, hostnqn: &str) -> bool {
        read(&self.read_only_hosts).contains(hostnqn)
    }

    /// Marks a host read-only (or not); its live controllers follow at
    /// once. Returns whether anything changed.
    pub(crate) fn set_host_read_only(&self, hostnqn: &str, on: bool) -> bool {
        let changed = {
            let mut set = write(&self.read_only_hosts);
            if on {
                set.insert(hostnqn.to_string())
            } else {
                set.remove(hostnqn)
            }
        };
        // The set is written before the controllers are visited, and
        // `attach_controller` reads it after registering: either way a new
        // controller ends up with the current value.
        for c in self.controllers() {
            if c.hostnqn == hostnqn {
                c.set_write_protected(on);
            }
        }
        changed
    }

    pub fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        read(&self.namespaces).get(&nsid).cloned()
    }

    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        read(&self.namespaces).values().cloned().collect()
    }

    pub fn nsids(&self) -> Vec<u32> {
        read(&self.namespaces).keys().copied().collect()
    }

    /// Inserts the namespace unless its NSID is taken.
    pub(crate) fn insert_namespace(&self, ns: Arc<Namespace>) -> bool {
        let mut map = write(&self.namespaces);
        if map.contains_key(&ns.nsid) {
            return false;
        }
        map.insert(ns.nsid, ns);
        true
    }

    /// Puts `ns` in place of the namespace with its nsid, if there is
    /// one, in one step: no command finds the nsid missing in between.
    pub(crate) fn replace_namespace(&self, ns: Arc<Namespace>) -> Option<Arc<Namespace>> {
        let mut map = write(&self.namespaces);
        let old = map.get_mut(&ns.nsid)?;
        Some(std::mem::replace(old, ns))
    }

    pub(crate) fn remove_namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        write(&self.namespaces).remove(&nsid)
    }

    pub(crate) fn attach_controller(&self, ctrl: &Arc<Controller>) {
        let mut list = lock(&self.controllers);
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(ctrl));
        drop(list);
        ctrl.set_write_protected(self.host_read_only(&ctrl.hostnqn));
    }

    /// Live controllers of this subsystem.
    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        let mut list = lock(&self.controllers);
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }
}

/// The registry of subsystems, plus the discovery generation counter.
#[derive(Debug, Default)]
pub struct Registry {
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    /// Bumped on every change a discovery log page would show.
    genctr: AtomicU64,
}

impl Registry {
    pub fn get(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        read(&self.subsystems).get(nqn).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Subsystem>> {
        read(&self.subsystems).values().cloned().collect()
    }

    pub(crate) fn insert(&self, subsys: Arc<Subsystem>) -> bool {
        let mut map = write(&self.subsystems);
        if map.contains_key(&subsys.nqn) {
            return false;
        }
        map.insert(subsys.nqn.clone(), subsys);
        true
    }

    pub(crate) fn remove(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        write(&self.subsystems).remove(nqn)
    }

    pub fn genctr(&self) -> u64 {
        self.genctr.load(Ordering::Acquire)
    }

    pub(crate) fn bump_genctr(&self) -> u64 {
        self.genctr.fetch_add(1, Ordering::AcqRel) + 1
    }
}
