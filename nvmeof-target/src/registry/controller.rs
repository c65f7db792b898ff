//! The controller state machine: one per host association.
//!
//! A controller is created by an admin-queue Connect and lives until its
//! admin connection closes, its keep-alive timer expires, or the target
//! tears it down (host revoked, subsystem removed). It owns the properties
//! (CC, CSTS), the features the host set, outstanding asynchronous event
//! requests and the changed-namespace log, and knows every queue connection
//! so that tearing it down ends them all.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferrofab_nvmeof_wire::spec::{aen, cc, csts, log};
use ferrofab_nvmeof_wire::wire::pdu::encode_capsule_resp;
use ferrofab_nvmeof_wire::wire::Cqe;

use super::Subsystem;
use crate::features::FeatureValues;
use crate::socket::ConnLink;
use crate::sync::lock;

/// What a controller serves.
#[derive(Debug, Clone)]
pub enum ControllerKind {
    Io(Arc<Subsystem>),
    Discovery,
}

/// Mutable controller state, behind one lock.
#[derive(Debug, Default)]
pub struct CtrlState {
    pub cc: u32,
    pub csts: u32,
    /// Asynchronous Event Configuration (feature 0x0B).
    pub aec: u32,
    /// I/O queues granted by Set Features Number of Queues; 0 = not set.
    pub io_queues_granted: u16,
    pub volatile_write_cache: bool,
    /// Arbitration, Power Management, Temperature Threshold and Error
    /// Recovery as the host last set them.
    pub(crate) features: FeatureValues,
    /// Command IDs of outstanding Asynchronous Event Requests.
    pub aers: Vec<u16>,
    /// Events waiting for an AER to complete.
    pub events: VecDeque<u32>,
    /// Changed Namespace List, until the host reads it.
    pub changed_ns: Vec<u32>,
    /// A namespace event was reported and log 04h not yet read: further
    /// namespace events are masked, as the specification requires.
    pub ns_event_masked: bool,
    pub disc_event_masked: bool,
}

/// One controller (association).
#[derive(Debug)]
pub struct Controller {
    pub cntlid: u16,
    pub kind: ControllerKind,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub admin: Arc<ConnLink>,
    /// Keep-alive timeout in milliseconds; 0 disables it.
    kato_ms: AtomicU32,
    created: Instant,
    /// Milliseconds since `created` of the last command on any queue.
    last_seen_ms: AtomicU64,
    /// While the admin queue authenticates: the time (ms since creation)
    /// by which it must have succeeded, 0 otherwise. It replaces the
    /// keep-alive timer meanwhile: the host cannot send Keep Alive before
    /// it has authenticated, and a slow DH group on a slow host may take
    /// longer than KATO.
    auth_deadline_ms: AtomicU64,
    /// Queues of this controller authenticating for the first time.
    authenticating: std::sync::atomic::AtomicU32,
    state: Mutex<CtrlState>,
    io_queues: Mutex<BTreeMap<u16, Arc<ConnLink>>>,
    dead: AtomicBool,
    /// The host may only read: write-class commands get "Namespace is
    /// Write Protected". Kept here (not looked up per command) so the I/O
    /// path pays one atomic load; the subsystem updates it.
    write_protected: AtomicBool,
}

impl Controller {
    pub fn new(
        cntlid: u16,
        kind: ControllerKind,
        hostnqn: String,
        hostid: [u8; 16],
        kato_ms: u32,
        admin: Arc<ConnLink>,
    ) -> Controller {
        Controller {
            cntlid,
            kind,
            hostnqn,
            hostid,
            admin,
            kato_ms: AtomicU32::new(kato_ms),
            created: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            auth_deadline_ms: AtomicU64::new(0),
            authenticating: std::sync::atomic::AtomicU32::new(0),
            state: Mutex::new(CtrlState {
                volatile_write_cache: true,
                ..Default::default()
            }),
            io_queues: Mutex::new(BTreeMap::new()),
            dead: AtomicBool::new(false),
            write_protected: AtomicBool::new(false),
        }
    }

    /// Whether this controller's host may only read.
    pub fn write_protected(&self) -> bool {
        self.write_protected.load(Ordering::Acquire)
    }

    pub(crate) fn set_write_protected(&self, on: bool) {
        self.write_protected.store(on, Ordering::Release);
    }

    pub fn subsystem(&self) -> Option<&Arc<Subsystem>> {
        match &self.kind {
            ControllerKind::Io(s) => Some(s),
            ControllerKind::Discovery => None,
        }
    }

    pub fn is_discovery(&self) -> bool {
        matches!(self.kind, ControllerKind::Discovery)
    }

    pub fn subnqn(&self) -> &str {
        match &self.kind {
            ControllerKind::Io(s) => &s.nqn,
            ControllerKind::Discovery => ferrofab_nvmeof_wire::spec::DISCOVERY_NQN,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, CtrlState> {
        lock(&self.state)
    }

    pub fn kato_ms(&self) -> u32 {
        self.kato_ms.load(Ordering::Relaxed)
    }

    pub fn set_kato_ms(&self, ms: u32) {
        self.kato_ms.store(ms, Ordering::Relaxed);
    }

    /// Any command counts as a sign of life, not only Keep Alive: a host
    /// busy with I/O must never be dropped for skipping one.
    pub fn touch(&self) {
        let ms = self.created.elapsed().as_millis() as u64;
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    /// A queue starts its first authentication: it has `limit` to
    /// succeed, and until then the keep-alive timer waits (the host sends
    /// no Keep Alive while it computes a DH value for a new queue).
    pub(crate) fn begin_auth(&self, limit: std::time::Duration) {
        let now = self.created.elapsed().as_millis() as u64;
        let until = now.saturating_add(limit.as_millis() as u64).max(1);
        self.authenticating.fetch_add(1, Ordering::AcqRel);
        self.auth_deadline_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// A queue authenticated (or closed before it did): once no queue is
    /// authenticating, the keep-alive timer applies again, from now.
    pub(crate) fn end_auth(&self) {
        self.touch();
        let before = self
            .authenticating
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .unwrap_or(0);
        if before <= 1 {
            self.auth_deadline_ms.store(0, Ordering::Release);
        }
    }

    /// Whether a queue is authenticating past the deadline.
    pub fn auth_expired(&self) -> bool {
        let until = self.auth_deadline_ms.load(Ordering::Relaxed);
        until != 0 && self.created.elapsed().as_millis() as u64 > until
    }

    /// Whether the keep-alive timer has expired (never while the admin
    /// queue authenticates, see [`Controller::auth_expired`]).
    pub fn kato_expired(&self) -> bool {
        if self.auth_deadline_ms.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let kato = u64::from(self.kato_ms());
        if kato == 0 {
            return false;
        }
        let now = self.created.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)) > kato
    }

    pub fn is_ready(&self) -> bool {
        self.state().csts & csts::RDY != 0
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Register an I/O queue connection. Fails if the qid is taken.
    pub fn add_io_queue(&self, link: Arc<ConnLink>) -> bool {
        let mut q = lock(&self.io_queues);
        if q.contains_key(&link.qid) {
            return false;
        }
        q.insert(link.qid, link);
        true
    }

    pub fn remove_io_queue(&self, qid: u16, link: &Arc<ConnLink>) {
        let mut q = lock(&self.io_queues);
        if q.get(&qid).is_some_and(|l| Arc::ptr_eq(l, link)) {
            q.remove(&qid);
        }
    }

    pub fn io_queue_count(&self) -> usize {
        lock(&self.io_queues).len()
    }

    /// End every I/O queue connection (controller reset or teardown).
    fn kill_io_queues(&self) {
        let queues: Vec<_> = std::mem::take(&mut *lock(&self.io_queues))
            .into_values()
            .collect();
        for q in queues {
            q.kill();
        }
    }

    /// End the association: every queue connection is closed and the host
    /// has to connect again.
    pub fn teardown(&self, reason: &str) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(cntlid = self.cntlid, subnqn = self.subnqn(), hostnqn = %self.hostnqn, reason, "controller torn down");
        self.kill_io_queues();
        self.admin.kill();
    }

    /// A write to CC. Returns what the caller must do outside the lock.
    pub fn set_cc(&self, new: u32) -> CcChange {
        let mut st = self.state();
        let old = st.cc;
        st.cc = new;
        let was_enabled = old & cc::EN != 0;
        let enable = new & cc::EN != 0;
        if !was_enabled && enable {
            if !valid_queue_entry_sizes(new) && !self.is_discovery() {
                st.csts |= csts::CFS;
                return CcChange::None;
            }
            st.csts = (st.csts | csts::RDY) & !csts::SHST_MASK;
            return CcChange::None;
        }
        if was_enabled && !enable {
            reset_state(&mut st);
            drop(st);
            self.kill_io_queues();
            return CcChange::Reset;
        }
        if cc::shn(new) != 0 && cc::shn(old) == 0 {
            st.csts = (st.csts & !csts::SHST_MASK) | csts::SHST_OCCURRING;
            return CcChange::Shutdown;
        }
        CcChange::None
    }

    /// Called once a shutdown's data is durable.
    pub fn shutdown_complete(&self) {
        let mut st = self.state();
        st.csts = (st.csts & !csts::SHST_MASK) | csts::SHST_COMPLETE;
    }

    /// Record that namespace `nsid` changed, and raise a Namespace
    /// Attribute Changed event if the host asked for them.
    pub fn namespace_changed(&self, nsid: u32) {
        let mut st = self.state();
        if st.changed_ns.len() >= log::CHANGED_NS_LIST_LEN / 4 {
            st.changed_ns = vec![u32::MAX];
        } else if !st.changed_ns.contains(&nsid) && st.changed_ns.first() != Some(&u32::MAX) {
            st.changed_ns.push(nsid);
        }
        if st.aec & aen::CFG_NS_ATTR != 0 && !st.ns_event_masked {
            st.ns_event_masked = true;
            st.events.push_back(aen::NS_ATTR_CHANGED);
        }
        self.deliver_events(st);
    }

    /// Raise a discovery log change event if the host asked for them.
    pub fn discovery_changed(&self) {
        let mut st = self.state();
        if st.aec & aen::CFG_DISCOVERY != 0 && !st.disc_event_masked {
            st.disc_event_masked = true;
            st.events.push_back(aen::DISCOVERY_CHANGED);
        }
        self.deliver_events(st);
    }

    /// Pair queued events with outstanding AERs and send the completions
    /// on the admin connection.
    fn deliver_events(&self, mut st: std::sync::MutexGuard<'_, CtrlState>) {
        let mut out = Vec::new();
        while !st.aers.is_empty() && !st.events.is_empty() {
            let cid = st.aers.remove(0);
            let event = st.events.pop_front().unwrap_or_default();
            let cqe = Cqe {
                result: u64::from(event),
                sqhd: self.admin.sqhd(),
                sqid: 0,
                cid,
                status: 0,
            };
            encode_capsule_resp(&mut out, &cqe, self.admin.digests);
        }
        drop(st);
        if !out.is_empty() {
            if let Err(e) = self.admin.send(&out) {
                tracing::debug!(cntlid = self.cntlid, error = %e, "could not deliver asynchronous event");
            }
        }
    }
}

/// What a CC write asks of the connection that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcChange {
    None,
    /// CC.EN went from 1 to 0: the controller was reset.
    Reset,
    /// CC.SHN was set: flush, then report shutdown complete.
    Shutdown,
}

/// A fabrics controller only supports 64-byte SQ and 16-byte CQ entries.
fn valid_queue_entry_sizes(cc_value: u32) -> bool {
    let iosqes = (cc_value >> cc::IOSQES_SHIFT) & 0xF;
    let iocqes = (cc_value >> cc::IOCQES_SHIFT) & 0xF;
    iosqes == 6 && iocqes == 4
}

fn reset_state(st: &mut CtrlState) {
    st.csts = 0;
    st.aec = 0;
    st.io_queues_granted = 0;
    st.features = Default::default();
    st.aers.clear();
    st.events.clear();
    st.changed_ns.clear();
    st.ns_event_masked = false;
    st.disc_event_masked = false;
}
