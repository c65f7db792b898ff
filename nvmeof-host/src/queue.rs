//! One NVMe/TCP connection: a submission/completion queue pair.
//!
//! # Sending: a submission buffer flushed by whoever waits
//!
//! [`Queue::submit`] encodes the command capsule into the queue's
//! submission buffer. A *deferred* submission ([`Queue::submit_deferred`],
//! used by [`crate::Pipeline`]) stops there; an ordinary one flushes the
//! buffer at once. The buffer is flushed with one `writev` by every thread
//! that is about to wait ([`Queue::wait_until`]), when it holds
//! [`TX_BATCH_MAX`] bytes, and by the receiver thread as a safety net, so a
//! window of 32 pipelined commands costs one system call instead of 32.
//! Nothing is lost by deferring: a command holds its slot (and so belongs
//! to the queue's failure path) from the moment it is encoded.
//!
//! # Receiving: leader/follower
//!
//! A thread that waits for a command reads the socket itself instead of
//! sleeping until another thread hands it the completion (a futex wake and
//! a context switch per I/O, on a small machine a second busy core). Of
//! the threads waiting on one queue, one is the *leader*: it flushes,
//! reads and dispatches everything that has arrived (completing other
//! waiters' commands too), then busy-polls for the caller's spin budget
//! (fixed, or learned from this queue's recent waits: see the `spin`
//! module) and sleeps in `poll(2)` on the socket once it has passed. The
//! budget counts from the moment the leader last found the socket empty,
//! so a pipeline whose responses keep coming keeps its core. The others are
//! *followers*: they park until their command is completed by the leader
//! or the leader leaves and hands leadership on (unparking one follower).
//!
//! The per-queue receiver thread covers the socket only while nobody waits
//! on the queue (the outstanding Asynchronous Event Request, Keep Alive
//! between commands, commands a caller has not started waiting for): while
//! waiters exist, or a wait ended within the last [`RX_HANDOFF`] (a
//! pipelined caller between two waits, back within microseconds), it stays
//! parked, checking every [`RX_HANDOFF`], so arriving data wakes exactly one
//! thread, the leader, and no second thread contends for the socket. A
//! leader leaving with commands still outstanding does not wake it: the
//! receiver thread notices within two [`RX_HANDOFF`]s once waits stop.
//! Commands with a completion callback are the exception: nobody waits
//! for them, so while any are pending the receiver thread skips that
//! grace and the last waiter to leave unparks it.
//!
//! # Locks
//!
//! Sends are serialised by the transmit lock, receives by the receive
//! lock; nobody sleeps while holding either (the socket is non-blocking,
//! the leader polls without the receive lock). The two are never *waited
//! for* in the order rx→tx: R2T replies are collected while the receive
//! lock is held and sent after it is released, and a sender that finds the
//! socket full only `try_lock`s the receive side to keep draining incoming
//! data (so a thread-per-connection target that is itself blocked sending
//! to us cannot deadlock against us). Failures (`Queue::fail`) are raised
//! with no lock held, because the failure hook may close the queue and
//! join its receiver thread.
//!
//! Command IDs are slot indices; a slot is held from submission until the
//! response, so a CID is never reused while the controller may still refer
//! to it.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError, Weak};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::cmd::Cmd;
use super::spin::{SpinLearner, SpinPolicy};
use super::HostError;
use ferrofab_nvmeof_wire::spec::admin;
use ferrofab_nvmeof_wire::wire::command::{SGL_DATA_BLOCK_OFFSET, SGL_TRANSPORT_DATA_BLOCK};
use ferrofab_nvmeof_wire::wire::digest::digest_bytes;
use ferrofab_nvmeof_wire::wire::pdu::{
    begin_data_pdu, decode, decode_data_head, encode_capsule_cmd, encode_ic_req, encode_term_req,
    flags, pdu_type, CH_LEN, IC_HLEN, TERM_REQ_MAX_PLEN,
};
use ferrofab_nvmeof_wire::wire::{
    Cqe, DataHeader, DecodeStatus, Decoded, Digests, IcReq, Pdu, R2t, Sgl, Sqe,
};

/// Lock a mutex, ignoring poisoning: every critical section here leaves its
/// data consistent, and a panicking thread must not take the queue down.
pub(crate) fn plock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Smallest free space kept for one `read` call.
const MIN_READ: usize = 64 * 1024;
/// How long the receiver thread sleeps in `poll` before rechecking whether
/// the queue was closed.
const RX_POLL_MS: i32 = 250;
/// While threads wait on a queue (and so read it themselves), the receiver
/// thread parks and looks again after this long: the bound on how late a
/// completion nobody waits for is read once the last waiter has left. Short
/// enough for an AEN or a command whose waiter comes later, long enough
/// that the check costs nothing measurable (500 wake-ups a second, only
/// while someone waits).
pub(crate) const RX_HANDOFF: Duration = Duration::from_millis(2);
/// Longest sleep of a leader in `poll` or a follower in `park` before it
/// rechecks its command, the queue's death and its deadline. Completions
/// and hand-offs wake them earlier; this only bounds the cost of a lost
/// wake-up.
const WAIT_NAP: Duration = Duration::from_millis(100);
/// Flush the submission buffer at once when it holds this many bytes, so
/// deferred writes with in-capsule data do not pile up (32 capsules of
/// 72 bytes, or eight 8 KiB in-capsule writes).
pub(crate) const TX_BATCH_MAX: usize = 64 * 1024;
/// H2CData PDUs gathered into one `writev`: three slices each (header,
/// data, digest), well below the kernel's limit of 1024 slices per call.
const H2C_PDUS_PER_SEND: usize = 64;
/// C2HData payloads at least this large are read from the socket straight
/// into the request's buffer once their header has arrived, instead of into
/// the receive buffer and then copied (a 128 KiB read: one 128 KiB
/// `memcpy` less). Smaller ones arrive whole with the PDUs around them, and
/// one large read of many small PDUs is cheaper than a read each.
const DIRECT_RX_MIN: usize = 16 * 1024;
/// While large C2HData PDUs arrive, reads into the receive buffer take at
/// most this much, so that the next PDU's payload stays in the socket for
/// `fill_direct` instead of being swallowed by a large read and copied
/// (enough for the responses and the next PDU's header in between).
const SMALL_READ: usize = 4096;

/// What a command is for; decides what happens to it when the connection
/// is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqKind {
    /// Namespace I/O: kept and re-sent on the next association.
    Io,
    /// Admin or fabrics command of the initiator itself: fails.
    Admin,
    /// The outstanding Asynchronous Event Request: its completion goes to
    /// the queue's AEN hook.
    Aer,
}

const PENDING: u8 = 0;
const DONE: u8 = 1;

/// A one-shot completion that a waiter can spin on (one atomic load) or
/// park on.
pub(crate) struct Completion {
    state: AtomicU8,
    result: Mutex<Option<Result<Cqe, HostError>>>,
    waiter: Mutex<Option<Thread>>,
    /// Run once by whoever completes it (see `Namespace::submit_then`).
    then: Mutex<Option<Then>>,
}

/// A completion callback (see [`Completion::set_then`]).
pub(crate) type Then = Box<dyn FnOnce() + Send>;

impl Completion {
    fn new() -> Completion {
        Completion {
            state: AtomicU8::new(PENDING),
            result: Mutex::new(None),
            // The submitter is the usual waiter; registering it now saves a
            // lock on the fast path.
            waiter: Mutex::new(Some(thread::current())),
            then: Mutex::new(None),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// Complete once; later calls (a stale duplicate) are ignored.
    fn complete(&self, r: Result<Cqe, HostError>) -> bool {
        {
            let mut g = plock(&self.result);
            if self.state.load(Ordering::Acquire) == DONE {
                return false;
            }
            *g = Some(r);
            self.state.store(DONE, Ordering::Release);
        }
        if let Some(t) = plock(&self.waiter).as_ref() {
            t.unpark();
        }
        let then = plock(&self.then).take();
        if let Some(f) = then {
            f();
        }
        true
    }

    /// Run `f` once when this completes: on the completing thread (the
    /// one that received the response), or here at once if it already
    /// has. Taken under the lock on both sides, so it runs exactly once.
    fn set_then(&self, f: Then) {
        // Nobody waits on it: the submitter registered at `new` would be
        // unparked by every completion for nothing. A digest retry that
        // waits registers itself again (`Request::wait`).
        *plock(&self.waiter) = None;
        *plock(&self.then) = Some(f);
        if self.is_done() {
            let then = plock(&self.then).take();
            if let Some(f) = then {
                f();
            }
        }
    }

    /// Whether it completed with a data digest error (which a waiter
    /// retries).
    fn is_digest_error(&self) -> bool {
        matches!(
            *plock(&self.result),
            Some(Err(HostError::DataDigest { .. }))
        )
    }

    fn take(&self) -> Result<Cqe, HostError> {
        plock(&self.result).take().unwrap_or_else(|| {
            Err(HostError::InvalidArgument(
                "command result was already taken".into(),
            ))
        })
    }

    /// Make a completed request pending again, to send it once more.
    fn reset(&self) {
        let mut g = plock(&self.result);
        *g = None;
        self.state.store(PENDING, Ordering::Release);
    }

    fn set_waiter(&self, t: Thread) {
        *plock(&self.waiter) = Some(t);
    }
}

/// One command and its buffers, shared between the submitter, the queue it
/// is on and (across a reconnect) the controller.
pub(crate) struct Request {
    pub name: &'static str,
    pub sqe: ferrofab_nvmeof_wire::wire::Sqe,
    pub data_out: Vec<u8>,
    pub data_in_len: usize,
    pub data_in: Mutex<Vec<u8>>,
    pub kind: ReqKind,
    pub done: Completion,
    /// The queue it was last submitted on, for busy-polling.
    queue: Mutex<Weak<Queue>>,
    /// Bumped on every submission; data from an older submission of the
    /// same request (a connection that died mid-transfer) is dropped.
    epoch: AtomicU32,
}

impl Request {
    pub fn new(cmd: Cmd, kind: ReqKind) -> Arc<Request> {
        // Filled in order as C2HData arrives (see `put_data`): reserved,
        // not zeroed.
        let data_in = Vec::with_capacity(cmd.data_in_len);
        Request::build(cmd, kind, data_in)
    }

    fn build(cmd: Cmd, kind: ReqKind, data_in: Vec<u8>) -> Arc<Request> {
        Arc::new(Request {
            name: cmd.name,
            sqe: cmd.sqe,
            data_in: Mutex::new(data_in),
            data_in_len: cmd.data_in_len,
            data_out: cmd.data_out,
            kind,
            done: Completion::new(),
            queue: Mutex::new(Weak::new()),
            epoch: AtomicU32::new(0),
        })
    }

    /// [`Request::new`] for a read whose data lands in `buf` (cleared; its
    /// allocation is reused, so a caller streaming reads allocates none).
    pub fn with_buffer(cmd: Cmd, kind: ReqKind, mut buf: Vec<u8>) -> Arc<Request> {
        buf.clear();
        buf.reserve_exact(cmd.data_in_len);
        Request::build(cmd, kind, buf)
    }

    pub fn is_done(&self) -> bool {
        self.done.is_done()
    }

    /// Complete with a result from outside a queue (e.g. a failure while no
    /// association exists).
    pub fn finish(&self, r: Result<Cqe, HostError>) {
        self.done.complete(r);
    }

    /// Prepare a completed request to be submitted again (after a data
    /// digest error: the response has arrived, so no stale completion of
    /// the earlier submission can follow).
    pub fn reset_for_retry(&self) {
        self.done.reset();
    }

    /// Run `f` once when the request completes (see [`Completion::set_then`]).
    /// Counted on the request's queue while pending: nobody waits for it,
    /// so the receiver thread must read for it (see `Queue::callbacks`).
    pub fn then(&self, f: Then) {
        let q = plock(&self.queue).clone();
        if let Some(queue) = q.upgrade() {
            queue.callbacks.fetch_add(1, Ordering::SeqCst);
        }
        self.done.set_then(Box::new(move || {
            if let Some(queue) = q.upgrade() {
                queue.callbacks.fetch_sub(1, Ordering::SeqCst);
            }
            f()
        }));
    }

    /// Whether it completed with a data digest error.
    pub fn is_digest_error(&self) -> bool {
        self.done.is_digest_error()
    }

    /// Take the result of a completed request.
    pub fn take_result(&self) -> Result<Cqe, HostError> {
        self.done.take()
    }

    /// Take the received data of a completed request (its full length; a
    /// short reply, which only Authentication Receive may give, ends in
    /// zeroes).
    pub fn take_data(&self) -> Vec<u8> {
        let mut d = std::mem::take(&mut *plock(&self.data_in));
        d.resize(self.data_in_len, 0);
        d
    }

    /// The queue the request was last submitted on.
    pub fn queue(&self) -> Option<Arc<Queue>> {
        plock(&self.queue).upgrade()
    }

    /// Wait for completion: lead or follow on the request's queue (see the
    /// module docs), busy-polling as `spin` says, then sleeping. With
    /// `timeout`, give up after it and return a timeout error naming the
    /// address.
    pub fn wait(&self, spin: SpinPolicy, timeout: Option<Duration>) -> Result<Cqe, HostError> {
        if self.is_done() {
            // The usual case for a pipeline: no clock read, no waiter.
            return self.take_result();
        }
        self.done.set_waiter(thread::current());
        let start = Instant::now();
        let deadline = timeout.map(|t| start + t);
        loop {
            if self.is_done() {
                return self.take_result();
            }
            let now = Instant::now();
            if let (Some(t), Some(d)) = (timeout, deadline) {
                if now >= d {
                    return Err(self.timeout_error(t));
                }
            }
            match self.queue().filter(|q| !q.is_dead()) {
                Some(q) => q.wait_until(&|| self.is_done(), spin, deadline),
                // Not submitted yet, or its queue died and the controller
                // re-sends it on the next association: whoever submits or
                // fails it unparks us.
                None => {
                    let mut nap = WAIT_NAP;
                    if let Some(d) = deadline {
                        nap = nap.min(d.saturating_duration_since(now));
                    }
                    thread::park_timeout(nap);
                }
            }
        }
    }

    fn timeout_error(&self, t: Duration) -> HostError {
        let addr = plock(&self.queue)
            .upgrade()
            .map(|q| format!("{} (queue {})", q.addr, q.qid))
            .unwrap_or_else(|| "an unconnected queue".into());
        HostError::Timeout {
            what: self.name.to_string(),
            addr,
            after_ms: t.as_millis() as u64,
        }
    }
}

/// Callbacks the owner of a queue installs.
type FailHook = Arc<dyn Fn(HostError) + Send + Sync>;
type AenHook = Arc<dyn Fn(Result<Cqe, HostError>) + Send + Sync>;

#[derive(Default)]
struct Hooks {
    on_fail: Option<FailHook>,
    on_aen: Option<AenHook>,
}

/// Per-command transfer state while the command is outstanding.
struct Slot {
    req: Arc<Request>,
    sent: Instant,
    epoch: u32,
    received: usize,
    h2c_next: usize,
    digest_bad: bool,
}

struct Slots {
    entries: Vec<Option<Slot>>,
    free: Vec<u16>,
    closed: bool,
    outstanding: usize,
    /// Submitters blocked in `take_slot` for a free slot. Freeing a slot
    /// signals the condition variable only when there are any: a signal
    /// is a `futex` system call even when nobody waits.
    starved: usize,
}

impl Slots {
    /// The transfer state of outstanding command `cid`.
    fn outstanding_mut(&mut self, cid: u16) -> Option<&mut Slot> {
        self.entries
            .get_mut(usize::from(cid))
            .and_then(Option::as_mut)
    }
}

/// Receive buffer: PDUs are decoded in place between `start` and `end`.
struct RxBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the decoder asked for to finish the next PDU.
    need: usize,
    /// A large C2HData payload being read straight into its request.
    direct: Option<DirectRx>,
    /// Large C2HData PDUs are arriving: read at most [`SMALL_READ`] into
    /// the buffer, so their payloads are read directly.
    small_reads: bool,
    /// A direct payload that is all in: (CID, flags), acted on by the next
    /// `dispatch_buffered`. `fill_direct` may run with the transmit lock
    /// held (a sender draining the socket), where a completion must not
    /// run: a callback that submits would deadlock on that lock.
    direct_done: Option<(u16, u8)>,
    /// A C2HData PDU was dispatched or started since the last read that
    /// drained the socket; if none was, `small_reads` ends.
    c2h_seen: bool,
}

/// The rest of a C2HData payload that goes from the socket straight into
/// its request's buffer (see [`DIRECT_RX_MIN`]). The PDU's header has been
/// consumed; the next `left` bytes on the socket are its data (only used
/// without data digests, so nothing follows the data).
struct DirectRx {
    req: Arc<Request>,
    epoch: u32,
    cid: u16,
    /// The PDU's flags (LAST, SUCCESS), acted on once the data is in.
    flags: u8,
    left: usize,
}

impl RxBuf {
    /// Read what the non-blocking socket has.
    fn fill(&mut self, mut sock: &TcpStream) -> io::Result<Fill> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = self.end - self.start;
        let target = self.need.max(pending + MIN_READ);
        if self.buf.len() - self.start < target || self.buf.len() - self.end < MIN_READ {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
        }
        if self.buf.len() < target {
            self.buf.resize(target, 0);
        }
        let limit = if self.small_reads {
            (self.end + SMALL_READ.max(self.need.saturating_sub(pending))).min(self.buf.len())
        } else {
            self.buf.len()
        };
        loop {
            match sock.read(&mut self.buf[self.end..limit]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the controller",
                    ))
                }
                Ok(n) => {
                    let room = limit - self.end;
                    self.end += n;
                    return Ok(if n < room { Fill::Drained } else { Fill::More });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::Empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Counters of one queue's data path, to see batching from outside (the
/// benchmark prints system calls per I/O from them; tests check that a
/// pipeline batches). Relaxed atomics: one uncontended add each.
#[derive(Default)]
struct Counters {
    capsules: AtomicU64,
    sends: AtomicU64,
    receives: AtomicU64,
    completions: AtomicU64,
    rx_thread_completions: AtomicU64,
    sleeps: AtomicU64,
    spin_ns: AtomicU64,
    direct_bytes: AtomicU64,
}

/// A snapshot of the I/O queues' counters since they were opened (summed
/// over the queues of the current association; see
/// [`crate::Controller::io_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Command capsules encoded.
    pub capsules: u64,
    /// `writev` calls that wrote something (capsule batches and H2CData).
    pub sends: u64,
    /// `recvfrom` calls that returned data.
    pub receives: u64,
    /// Commands completed.
    pub completions: u64,
    /// Of those, completed by the queue's receiver thread rather than a
    /// waiting thread (each one a thread hand-off).
    pub rx_thread_completions: u64,
    /// Times a waiting thread (the leader) went to sleep in `poll(2)`: each
    /// one a wake-up later, and the core given away meanwhile.
    pub sleeps: u64,
    /// Time waiting threads spent busy-polling, in nanoseconds.
    pub spin_ns: u64,
    /// C2HData payload bytes read from the socket straight into the
    /// request's buffer (see `DIRECT_RX_MIN`; always 0 with data digests).
    pub direct_bytes: u64,
    /// The learned typical wait for the next data, among the waits that
    /// ended within the spin cap (adaptive polling; the largest over the
    /// queues when summed), in nanoseconds.
    pub learned_wait_ns: u64,
}

impl std::ops::AddAssign for QueueStats {
    fn add_assign(&mut self, o: QueueStats) {
        self.capsules += o.capsules;
        self.sends += o.sends;
        self.receives += o.receives;
        self.completions += o.completions;
        self.rx_thread_completions += o.rx_thread_completions;
        self.sleeps += o.sleeps;
        self.spin_ns += o.spin_ns;
        self.direct_bytes += o.direct_bytes;
        self.learned_wait_ns = self.learned_wait_ns.max(o.learned_wait_ns);
    }
}

thread_local! {
    /// Whether the current thread is a queue's receiver thread (for
    /// [`QueueStats::rx_thread_completions`]).
    static ON_RX_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What one read of the socket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Nothing to read.
    Empty,
    /// Less than the room offered: the socket had nothing more at that
    /// moment, so another read would most likely return EAGAIN (a system
    /// call saved per batch; whatever arrives later wakes `poll`).
    Drained,
    /// The buffer filled up: there may be more.
    More,
}

/// H2CData owed to the controller for one R2T.
struct H2cWork {
    req: Arc<Request>,
    epoch: u32,
    r2t: R2t,
}

/// How to open a queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueConfig {
    /// `host:port` as given by the user (used in messages and resolved).
    pub addr: String,
    pub qid: u16,
    pub digests: Digests,
    pub connect_timeout: Duration,
    /// Largest write data sent inside the capsule (IOCCSZ*16-64 on I/O
    /// queues; 0 on the admin queue, where only fabrics commands carry
    /// in-capsule data).
    pub incapsule_max: usize,
    /// Largest PDU accepted from the controller.
    pub max_plen: usize,
    /// Command slots (at most the queue size minus one).
    pub slots: u16,
}

/// An open queue.
pub(crate) struct Queue {
    pub qid: u16,
    pub addr: String,
    sock: TcpStream,
    digests: Digests,
    maxh2cdata: usize,
    incapsule_max: usize,
    max_plen: usize,
    tx: Mutex<()>,
    /// Encoded capsules not yet written (see the module docs).
    txq: Mutex<Vec<u8>>,
    /// Whether `txq` holds anything (read without the lock).
    tx_dirty: AtomicBool,
    rx: Mutex<RxBuf>,
    slots: Mutex<Slots>,
    slot_freed: Condvar,
    dead: AtomicBool,
    hooks: Mutex<Hooks>,
    rx_thread: Mutex<Option<JoinHandle<()>>>,
    /// The receiver thread, to unpark it when the queue closes.
    rx_thread_id: OnceLock<Thread>,
    /// Threads inside [`Queue::wait_until`]. While there are any, the
    /// receiver thread stays off the socket so that arriving data wakes
    /// only the leader (a wake-up costs a core's worth of time on a small
    /// machine).
    waiters: AtomicUsize,
    /// Waits that have ended ([`Queue::wait_until`] returned). The
    /// receiver thread keeps off the socket while this moves: a pipelined
    /// caller between two waits would otherwise find it reading (a
    /// contended socket lock and a wake-up of a second thread per batch).
    waits_ended: AtomicU64,
    /// Commands with a completion callback ([`Request::then`]) whose
    /// callback has not run. While there are any, the receiver thread
    /// skips its grace after a wait ended: nobody would otherwise read
    /// their responses (a FUSE reply) until the next synchronous wait.
    callbacks: AtomicUsize,
    /// Whether a waiter is the leader (reads the socket).
    leader: AtomicBool,
    /// Waiters parked behind the leader; it unparks one when it leaves.
    followers: Mutex<Vec<Thread>>,
    /// Whether the leader sleeps in `poll(2)`. Another thread that
    /// completes a command meanwhile (the receiver thread that started
    /// reading just before the leader arrived, a sender that drained the
    /// socket while it was full) took data the leader's `poll` will not
    /// see, so it rings `wake`.
    leader_asleep: AtomicBool,
    /// An eventfd in the leader's `poll` set, for the case above.
    wake: OwnedFd,
    /// How long leaders typically wait for data here (adaptive spinning).
    learner: SpinLearner,
    counters: Counters,
}

impl Queue {
    /// Connect, exchange ICReq/ICResp and start the receiver thread.
    pub fn open(cfg: &QueueConfig) -> Result<Arc<Queue>, HostError> {
        let _span = tracing::debug_span!("queue_open", addr = %cfg.addr, qid = cfg.qid).entered();
        let sock = tcp_connect(&cfg.addr, cfg.qid, cfg.connect_timeout)?;
        let maxh2cdata = initialize_connection(&sock, cfg)?;
        sock.set_nonblocking(true)
            .map_err(|e| unreachable_err(cfg, "set non-blocking", e))?;
        let slots = cfg.slots.max(1);
        let wake = new_eventfd().map_err(|e| unreachable_err(cfg, "create an eventfd", e))?;
        let q = Arc::new(Queue {
            qid: cfg.qid,
            addr: cfg.addr.clone(),
            sock,
            digests: cfg.digests,
            maxh2cdata,
            incapsule_max: cfg.incapsule_max,
            max_plen: cfg.max_plen,
            tx: Mutex::new(()),
            txq: Mutex::new(Vec::with_capacity(4096)),
            tx_dirty: AtomicBool::new(false),
            rx: Mutex::new(RxBuf {
                buf: vec![0u8; 256 * 1024],
                start: 0,
                end: 0,
                need: 0,
                direct: None,
                small_reads: false,
                direct_done: None,
                c2h_seen: false,
            }),
            slots: Mutex::new(Slots {
                entries: (0..slots).map(|_| None).collect(),
                free: (0..slots).rev().collect(),
                closed: false,
                outstanding: 0,
                starved: 0,
            }),
            slot_freed: Condvar::new(),
            dead: AtomicBool::new(false),
            hooks: Mutex::new(Hooks::default()),
            rx_thread: Mutex::new(None),
            rx_thread_id: OnceLock::new(),
            waiters: AtomicUsize::new(0),
            waits_ended: AtomicU64::new(0),
            callbacks: AtomicUsize::new(0),
            leader: AtomicBool::new(false),
            followers: Mutex::new(Vec::new()),
            leader_asleep: AtomicBool::new(false),
            wake,
            learner: SpinLearner::default(),
            counters: Counters::default(),
        });
        let rq = q.clone();
        let handle = thread::Builder::new()
            .name(format!("nvme-rx-q{}", cfg.qid))
            .spawn(move || rq.rx_loop())
            .map_err(|e| unreachable_err(cfg, "spawn the receiver thread", e))?;
        let _ = q.rx_thread_id.set(handle.thread().clone());
        *plock(&q.rx_thread) = Some(handle);
        tracing::debug!(addr = %cfg.addr, qid = cfg.qid, maxh2cdata, "queue connected");
        Ok(q)
    }

    /// Route failures of this queue to `hook` instead of failing its
    /// commands. If the queue already died, the hook runs now.
    pub fn set_fail_hook(&self, hook: FailHook) {
        plock(&self.hooks).on_fail = Some(hook.clone());
        if self.is_dead() {
            hook(self.lost_error("the connection closed during set-up"));
        }
    }

    pub fn set_aen_hook(&self, hook: AenHook) {
        plock(&self.hooks).on_aen = Some(hook);
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Commands outstanding on this queue.
    pub fn outstanding(&self) -> usize {
        plock(&self.slots).outstanding
    }

    fn lost_error(&self, why: &str) -> HostError {
        HostError::ConnectionLost {
            addr: self.addr.clone(),
            qid: self.qid,
            why: why.to_string(),
        }
    }

    fn io_error(&self, what: &str, e: &io::Error) -> HostError {
        self.lost_error(&format!("{what}: {e}"))
    }

    fn protocol(&self, why: String) -> HostError {
        HostError::Protocol {
            addr: self.addr.clone(),
            qid: self.qid,
            why,
        }
    }

    /// Send a request. Blocks while all slots are busy. Err means the queue
    /// is dead and the request was *not* taken; Ok means it is now owned by
    /// the queue (if sending fails the failure path takes it).
    pub fn submit(self: &Arc<Self>, req: &Arc<Request>) -> Result<(), HostError> {
        self.enqueue(req)?;
        self.flush();
        Ok(())
    }

    /// Like [`Queue::submit`], but leave the capsule in the submission
    /// buffer: it goes out with the next flush, at the latest when a thread
    /// waits on this queue. The caller must wait (or [`Queue::flush`]).
    pub fn submit_deferred(self: &Arc<Self>, req: &Arc<Request>) -> Result<(), HostError> {
        if self.enqueue(req)? {
            self.flush();
        }
        Ok(())
    }

    /// Take a slot and encode the capsule into the submission buffer.
    /// Returns whether the buffer is full enough to flush now.
    fn enqueue(self: &Arc<Self>, req: &Arc<Request>) -> Result<bool, HostError> {
        let epoch = req.epoch.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        if req.data_in_len > 0 {
            // A re-sent read fills its buffer afresh.
            plock(&req.data_in).clear();
        }
        let cid = self.take_slot(req, epoch)?;
        *plock(&req.queue) = Arc::downgrade(self);
        let mut sqe = req.sqe;
        sqe.cid = cid;
        let out_len = req.data_out.len();
        let incapsule =
            out_len > 0 && (out_len <= self.incapsule_max || sqe.opcode == admin::FABRICS);
        sqe.sgl = if incapsule {
            Sgl {
                address: 0,
                length: out_len as u32,
                id: SGL_DATA_BLOCK_OFFSET,
            }
        } else {
            Sgl {
                address: 0,
                length: out_len.max(req.data_in_len) as u32,
                id: SGL_TRANSPORT_DATA_BLOCK,
            }
        };
        let data: &[u8] = if incapsule { &req.data_out } else { &[] };
        tracing::trace!(qid = self.qid, cid, cmd = req.name, "submit");
        self.counters.capsules.fetch_add(1, Ordering::Relaxed);
        let mut q = plock(&self.txq);
        encode_capsule_cmd(&mut q, &sqe, data, self.digests);
        self.tx_dirty.store(true, Ordering::Release);
        Ok(q.len() >= TX_BATCH_MAX)
    }

    /// Write the submission buffer, if it holds anything, with one
    /// `writev`. A failure fails the queue (its commands then take the
    /// failure path).
    pub fn flush(&self) {
        if !self.tx_dirty.load(Ordering::Acquire) || self.is_dead() {
            return;
        }
        let res = {
            let _g = plock(&self.tx);
            // Taken under the transmit lock, so capsules leave in the
            // order they were encoded.
            let mut batch = {
                let mut q = plock(&self.txq);
                self.tx_dirty.store(false, Ordering::Release);
                std::mem::take(&mut *q)
            };
            let res = self.write_locked(&[&batch]);
            batch.clear();
            let mut q = plock(&self.txq);
            if q.is_empty() && q.capacity() < batch.capacity() {
                // Keep the larger buffer for the next batch.
                std::mem::swap(&mut *q, &mut batch);
            }
            res
        };
        match res {
            Ok(true) => self.poll_progress(true),
            Ok(false) => {}
            Err(e) => self.fail(e),
        }
    }

    fn take_slot(&self, req: &Arc<Request>, epoch: u32) -> Result<u16, HostError> {
        let mut s = plock(&self.slots);
        loop {
            if s.closed {
                return Err(self.lost_error("queue closed"));
            }
            if let Some(cid) = s.free.pop() {
                s.entries[usize::from(cid)] = Some(Slot {
                    req: req.clone(),
                    sent: Instant::now(),
                    epoch,
                    received: 0,
                    h2c_next: 0,
                    digest_bad: false,
                });
                s.outstanding += 1;
                return Ok(cid);
            }
            if self.tx_dirty.load(Ordering::Acquire) && !self.is_dead() {
                // Deferred capsules hold slots: send them, or no slot may
                // ever come free.
                drop(s);
                self.flush();
                s = plock(&self.slots);
                continue;
            }
            s.starved += 1;
            s = self
                .slot_freed
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            s.starved -= 1;
        }
    }

    /// When the oldest outstanding command was sent; None if idle.
    pub fn oldest_outstanding(&self) -> Option<Instant> {
        plock(&self.slots)
            .entries
            .iter()
            .flatten()
            .map(|s| s.sent)
            .min()
    }

    /// Mark the queue failed. The first failure wins; the hook (or, without
    /// one, failing every outstanding command) runs once.
    pub fn fail(&self, err: HostError) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(addr = %self.addr, qid = self.qid, error = %err, "queue failed");
        let hook = plock(&self.hooks).on_fail.clone();
        match hook {
            Some(h) => h(err),
            None => {
                for r in self.kill() {
                    self.finish(&r, Err(err.clone()));
                }
            }
        }
    }

    /// Close the queue and hand back every command still outstanding.
    pub fn kill(&self) -> Vec<Arc<Request>> {
        self.dead.store(true, Ordering::Release);
        let drained: Vec<Arc<Request>> = {
            let mut s = plock(&self.slots);
            if s.closed {
                Vec::new()
            } else {
                s.closed = true;
                s.outstanding = 0;
                s.entries
                    .iter_mut()
                    .filter_map(Option::take)
                    .map(|sl| sl.req)
                    .collect()
            }
        };
        self.slot_freed.notify_all();
        let _ = self.sock.shutdown(Shutdown::Both);
        // A payload cut off mid-way would keep its request (and a lent
        // buffer) until the queue is dropped. Whoever holds the lock now
        // is reading and fails on the shut-down socket.
        if let Ok(mut rx) = self.rx.try_lock() {
            rx.direct = None;
            rx.direct_done = None;
        }
        for t in plock(&self.followers).iter() {
            t.unpark();
        }
        if let Some(t) = self.rx_thread_id.get() {
            t.unpark();
        }
        drained
    }

    /// Kill and wait for the receiver thread (unless called from it).
    pub fn close(&self) -> Vec<Arc<Request>> {
        let drained = self.kill();
        let handle = plock(&self.rx_thread).take();
        if let Some(h) = handle {
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
        drained
    }

    /// This queue's counters.
    pub fn stats(&self) -> QueueStats {
        let c = &self.counters;
        QueueStats {
            capsules: c.capsules.load(Ordering::Relaxed),
            sends: c.sends.load(Ordering::Relaxed),
            receives: c.receives.load(Ordering::Relaxed),
            completions: c.completions.load(Ordering::Relaxed),
            rx_thread_completions: c.rx_thread_completions.load(Ordering::Relaxed),
            sleeps: c.sleeps.load(Ordering::Relaxed),
            spin_ns: c.spin_ns.load(Ordering::Relaxed),
            direct_bytes: c.direct_bytes.load(Ordering::Relaxed),
            learned_wait_ns: self.learner.average().as_nanos() as u64,
        }
    }

    fn finish(&self, req: &Arc<Request>, r: Result<Cqe, HostError>) {
        self.counters.completions.fetch_add(1, Ordering::Relaxed);
        if ON_RX_THREAD.with(|c| c.get()) {
            self.counters
                .rx_thread_completions
                .fetch_add(1, Ordering::Relaxed);
        }
        if req.kind == ReqKind::Aer {
            let hook = plock(&self.hooks).on_aen.clone();
            if let Some(h) = hook {
                h(r.clone());
            }
        }
        req.done.complete(r);
        if self.leader_asleep.load(Ordering::SeqCst) {
            self.ring();
        }
    }

    /// Wake the leader from `poll(2)` (see `leader_asleep`).
    fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own eventfd. A
        // full counter (EAGAIN) still leaves it readable, which is all
        // that matters.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// The leader's sleep: until the socket is readable, the queue closes,
    /// another thread completes a command (`ring`) or `ms` pass. Returns at
    /// once if `done()` already holds.
    fn leader_sleep(&self, done: &dyn Fn() -> bool, ms: i32) {
        self.counters.sleeps.fetch_add(1, Ordering::Relaxed);
        self.leader_asleep.store(true, Ordering::SeqCst);
        // Checked after announcing the sleep: a completion before this
        // point is seen here, one after it rings.
        if !done() {
            let mut p = [
                libc::pollfd {
                    fd: self.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds for the duration of the call.
            unsafe { libc::poll(p.as_mut_ptr(), 2, ms) };
            if p[1].revents & libc::POLLIN != 0 {
                let mut buf = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a live buffer (resets
                // the eventfd counter).
                unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            }
        }
        self.leader_asleep.store(false, Ordering::SeqCst);
    }

    // ---- receive side ---------------------------------------------------

    fn rx_loop(self: Arc<Self>) {
        let _span = tracing::debug_span!("rx", addr = %self.addr, qid = self.qid).entered();
        ON_RX_THREAD.with(|c| c.set(true));
        let mut seen_waits = self.waits_ended.load(Ordering::SeqCst);
        while !self.is_dead() {
            let waits = self.waits_ended.load(Ordering::SeqCst);
            let grace = waits != seen_waits && self.callbacks.load(Ordering::SeqCst) == 0;
            if self.waiters.load(Ordering::SeqCst) > 0 || grace {
                // The waiters read the socket, and a caller that waited
                // within the last RX_HANDOFF is most likely coming back
                // (see the module docs) unless callbacks are pending.
                seen_waits = waits;
                thread::park_timeout(RX_HANDOFF);
                continue;
            }
            // Safety net: deferred capsules nobody has flushed yet.
            self.flush();
            self.poll_progress(true);
            if self.is_dead() || self.waiters.load(Ordering::SeqCst) > 0 {
                continue;
            }
            self.poll_readable(RX_POLL_MS);
        }
        tracing::debug!("receiver thread exits");
    }

    /// Whether the socket has data (or an error or hang-up) now: `poll(2)`
    /// with a zero timeout, which does not take the socket lock.
    fn readable_now(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, 0) != 0 }
    }

    /// Sleep in `poll(2)` until the socket is readable (or closed), at most
    /// `ms` milliseconds.
    fn poll_readable(&self, ms: i32) {
        let mut p = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, ms) };
    }

    /// Wait on this queue until `done()` holds, the queue dies or
    /// `deadline` passes, reading the socket as the leader or parking as a
    /// follower (see the module docs). Flushes the submission buffer first.
    /// Busy-polls as `spin` says, then sleeps in `poll(2)`.
    pub fn wait_until(&self, done: &dyn Fn() -> bool, spin: SpinPolicy, deadline: Option<Instant>) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.flush();
        while !done() && !self.is_dead() && deadline.is_none_or(|d| Instant::now() < d) {
            if self
                .leader
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.lead(done, spin, deadline);
                self.leader.store(false, Ordering::SeqCst);
                if self.waiters.load(Ordering::SeqCst) > 1 {
                    if let Some(t) = plock(&self.followers).first() {
                        t.unpark();
                    }
                }
            } else {
                self.follow(done, deadline);
            }
        }
        self.waits_ended.fetch_add(1, Ordering::SeqCst);
        if self.waiters.fetch_sub(1, Ordering::SeqCst) == 1
            && self.callbacks.load(Ordering::SeqCst) > 0
        {
            // Callbacks are pending and nobody reads: the receiver thread.
            if let Some(t) = self.rx_thread_id.get() {
                t.unpark();
            }
        }
    }

    /// The leader's loop: flush, read and dispatch, then spin or sleep
    /// until the socket is readable. The spin budget counts from the moment
    /// the socket was found empty; how long data then took to arrive is
    /// what the queue learns (adaptive polling).
    fn lead(&self, done: &dyn Fn() -> bool, spin: SpinPolicy, deadline: Option<Instant>) {
        // Since when the leader has found nothing new (None: data came in
        // at the last look), and since when it has been spinning.
        let mut empty_since: Option<Instant> = None;
        let mut spinning_since: Option<Instant> = None;
        let exit = |spinning_since: Option<Instant>, now: Instant| {
            if let Some(t) = spinning_since {
                let ns = now.saturating_duration_since(t).as_nanos() as u64;
                self.counters.spin_ns.fetch_add(ns, Ordering::Relaxed);
            }
        };
        loop {
            self.flush();
            // Spinning on an empty socket asks poll(2) first: a read that
            // finds nothing still takes the socket lock, and the segments
            // the peer delivers meanwhile wait in the socket's backlog.
            if empty_since.is_none() || self.readable_now() {
                let seen = self.counters.receives.load(Ordering::Relaxed);
                // The data found now arrived before this look: measured
                // from here, the wait excludes dispatching it and sending
                // the H2CData its R2Ts ask for (tens of µs for large
                // writes).
                let look = Instant::now();
                self.poll_progress(true);
                if self.counters.receives.load(Ordering::Relaxed) != seen {
                    if let Some(t) = empty_since.take() {
                        self.learner.record(look.saturating_duration_since(t), spin);
                    }
                }
            }
            let now = Instant::now();
            if done() || self.is_dead() {
                return exit(spinning_since, now);
            }
            let mut nap = WAIT_NAP;
            if let Some(d) = deadline {
                if now >= d {
                    return exit(spinning_since, now);
                }
                nap = nap.min(d - now);
            }
            let since = *empty_since.get_or_insert(now);
            if now.saturating_duration_since(since) < self.learner.budget(spin) {
                spinning_since.get_or_insert(now);
                std::hint::spin_loop();
                continue;
            }
            exit(spinning_since.take(), now);
            let ms = nap.as_millis().clamp(1, i32::MAX as u128) as i32;
            self.leader_sleep(done, ms);
        }
    }

    /// A follower parks until its command completes (the completion
    /// unparks it) or the leader leaves and hands over.
    fn follow(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) {
        let me = thread::current();
        plock(&self.followers).push(me.clone());
        // Registered before looking: a leader that leaves after this load
        // sees us in the list and unparks us.
        if self.leader.load(Ordering::SeqCst) && !done() && !self.is_dead() {
            let mut nap = WAIT_NAP;
            if let Some(d) = deadline {
                nap = nap.min(d.saturating_duration_since(Instant::now()));
            }
            thread::park_timeout(nap);
        }
        let mut f = plock(&self.followers);
        if let Some(i) = f.iter().position(|t| t.id() == me.id()) {
            f.swap_remove(i);
        }
    }

    /// Read and dispatch what has arrived, then send any H2CData owed.
    /// With `blocking` false, returns at once if another thread is reading.
    pub fn poll_progress(&self, blocking: bool) {
        if self.is_dead() {
            return;
        }
        let mut work = Vec::new();
        let res = {
            let mut rx = if blocking {
                plock(&self.rx)
            } else {
                match self.rx.try_lock() {
                    Ok(g) => g,
                    Err(TryLockError::WouldBlock) => return,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                }
            };
            self.pump(&mut rx, &mut work)
        };
        if let Err(e) = res {
            self.fail(e);
            return;
        }
        if !work.is_empty() {
            if let Err(e) = self.send_h2c(&work) {
                self.fail(e);
            }
        }
    }

    fn pump(&self, rx: &mut RxBuf, work: &mut Vec<H2cWork>) -> Result<(), HostError> {
        loop {
            self.dispatch_buffered(rx, work)?;
            let fill = self.fill_rx(rx, "receive")?;
            if matches!(fill, Fill::More | Fill::Drained) {
                self.counters.receives.fetch_add(1, Ordering::Relaxed);
            }
            match fill {
                Fill::More => continue,
                Fill::Drained => {
                    self.dispatch_buffered(rx, work)?;
                    // Large reads have stopped coming: read in full again.
                    rx.small_reads &= std::mem::take(&mut rx.c2h_seen);
                    return Ok(());
                }
                Fill::Empty => return Ok(()),
            }
        }
    }

    /// One read of the socket: into the request whose payload is being
    /// received directly, else into the receive buffer.
    fn fill_rx(&self, rx: &mut RxBuf, what: &str) -> Result<Fill, HostError> {
        if rx.direct.is_some() {
            return self.fill_direct(rx);
        }
        rx.fill(&self.sock).map_err(|e| self.io_error(what, &e))
    }

    /// If the partial PDU at the start of the receive buffer is a C2HData
    /// of at least [`DIRECT_RX_MIN`] bytes (no data digest) whose header is
    /// in, for an outstanding read whose data so far arrived in order: move
    /// the data buffered so far into the request and have `fill_direct`
    /// read the rest straight after it. Anything unusual (an unknown CID, a
    /// range out of bounds, a header digest error) is left to the ordinary
    /// path, which reports it once the PDU is complete.
    fn start_direct(&self, rx: &mut RxBuf) {
        let avail = &rx.buf[rx.start..rx.end];
        let head = match decode_data_head(avail, self.digests, self.max_plen) {
            Ok(Some(h))
                if h.pdu_type == pdu_type::C2H_DATA
                    && h.ddgst_len == 0
                    && h.hdr.datal as usize >= DIRECT_RX_MIN
                    && avail.len() < h.plen =>
            {
                h
            }
            _ => return,
        };
        let hdr = head.hdr;
        let have = &avail[head.data_start..];
        let (req, epoch) = {
            let mut s = plock(&self.slots);
            let Some(slot) = s.outstanding_mut(hdr.cccid) else {
                return;
            };
            let at = hdr.datao as usize;
            if at + hdr.datal as usize > slot.req.data_in_len
                || slot.req.epoch.load(Ordering::Acquire) != slot.epoch
            {
                return;
            }
            let mut buf = plock(&slot.req.data_in);
            if buf.len() != at {
                return;
            }
            buf.reserve_exact(hdr.datal as usize);
            buf.extend_from_slice(have);
            slot.received += hdr.datal as usize;
            (slot.req.clone(), slot.epoch)
        };
        rx.direct = Some(DirectRx {
            req,
            epoch,
            cid: hdr.cccid,
            flags: head.flags,
            left: hdr.datal as usize - have.len(),
        });
        rx.start = 0;
        rx.end = 0;
        rx.need = 0;
        rx.small_reads = true;
    }

    /// Read the rest of a direct payload into its request (and whatever
    /// follows it into the receive buffer, in the same `readv`). Once it is
    /// in, the PDU is recorded in `direct_done` for `dispatch_buffered`,
    /// not completed here: this may run under the transmit lock.
    fn fill_direct(&self, rx: &mut RxBuf) -> Result<Fill, HostError> {
        let Some(d) = rx.direct.as_mut() else {
            return Ok(Fill::Empty);
        };
        let mut data = plock(&d.req.data_in);
        if d.req.epoch.load(Ordering::Acquire) != d.epoch {
            // Re-sent elsewhere: this connection is being torn down.
            drop(data);
            rx.direct = None;
            return Err(self.lost_error("a read was re-sent while its data arrived"));
        }
        // The receive buffer is empty while a payload is read directly.
        rx.start = 0;
        rx.end = 0;
        data.reserve_exact(d.left);
        let spare = data.spare_capacity_mut();
        let iov = [
            libc::iovec {
                iov_base: spare.as_mut_ptr().cast(),
                iov_len: d.left,
            },
            libc::iovec {
                iov_base: rx.buf.as_mut_ptr().cast(),
                iov_len: rx.buf.len().min(SMALL_READ),
            },
        ];
        let n = loop {
            // SAFETY: both iovecs point into live allocations we hold
            // exclusively (the request's spare capacity of at least
            // `d.left` bytes under its lock, the receive buffer under the
            // receive lock) for the duration of the call.
            let r = unsafe { libc::readv(self.sock.as_raw_fd(), iov.as_ptr(), 2) };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(Fill::Empty),
                _ => return Err(self.io_error("receive", &e)),
            }
        };
        if n == 0 {
            return Err(self.lost_error("receive: connection closed by the controller"));
        }
        let room = d.left + rx.buf.len().min(SMALL_READ);
        let k = n.min(d.left);
        let len = data.len();
        // SAFETY: the kernel wrote `k` bytes at the start of the spare
        // capacity, which `reserve_exact` made at least `d.left` long.
        unsafe { data.set_len(len + k) };
        drop(data);
        self.counters
            .direct_bytes
            .fetch_add(k as u64, Ordering::Relaxed);
        d.left -= k;
        rx.end = n - k;
        if d.left == 0 {
            rx.direct_done = Some((d.cid, d.flags));
            rx.direct = None;
        }
        Ok(if n < room { Fill::Drained } else { Fill::More })
    }

    fn dispatch_buffered(&self, rx: &mut RxBuf, work: &mut Vec<H2cWork>) -> Result<(), HostError> {
        // A direct payload finished by the last read comes before what
        // followed it into the buffer (its CapsuleResp, say).
        if let Some((cid, fl)) = rx.direct_done.take() {
            self.after_c2h(cid, fl)?;
        }
        loop {
            let avail = &rx.buf[rx.start..rx.end];
            match decode(avail, self.digests, self.max_plen) {
                Ok(DecodeStatus::Need(n)) => {
                    rx.need = n;
                    if !self.digests.data {
                        if is_large_c2h(avail) {
                            // Its header is not all in: read a little (the
                            // rest of it), not the payload.
                            rx.need = 0;
                            rx.small_reads = true;
                            rx.c2h_seen = true;
                        }
                        self.start_direct(rx);
                    }
                    return Ok(());
                }
                Ok(DecodeStatus::Complete(d)) => {
                    let len = d.len;
                    if let Pdu::C2hData { data, .. } = &d.pdu {
                        // A large payload that arrived whole was copied:
                        // read less at a time while they keep coming.
                        rx.small_reads = !self.digests.data && data.len() >= DIRECT_RX_MIN;
                        rx.c2h_seen = true;
                    }
                    self.dispatch(d, work)?;
                    rx.start += len;
                }
                Err(e) => {
                    let mut term = Vec::new();
                    let hdr = &avail[..avail.len().min(TERM_REQ_MAX_PLEN)];
                    encode_term_req(&mut term, pdu_type::H2C_TERM_REQ, e.fes(), e.fei(), hdr);
                    let _ = self.send_raw_best_effort(&term);
                    return Err(self.protocol(format!("malformed PDU: {e}")));
                }
            }
        }
    }

    fn dispatch(&self, d: Decoded<'_>, work: &mut Vec<H2cWork>) -> Result<(), HostError> {
        match d.pdu {
            Pdu::CapsuleResp(cqe) => self.on_response(cqe),
            Pdu::C2hData { hdr, flags, data } => self.on_c2h(hdr, flags, data, d.data_digest_ok),
            Pdu::R2t(r) => self.on_r2t(r, work),
            Pdu::C2hTermReq(t) => Err(self.protocol(format!(
                "controller terminated the connection (FES {:#x}, FEI {:#x})",
                t.fes, t.fei
            ))),
            other => Err(self.protocol(format!(
                "unexpected PDU from the controller: {}",
                pdu_name(&other)
            ))),
        }
    }

    /// Remove the slot of `cid`, freeing the CID.
    fn release_slot(&self, cid: u16) -> Option<Slot> {
        let (slot, starved) = {
            let mut s = plock(&self.slots);
            let slot = s.entries.get_mut(usize::from(cid))?.take()?;
            s.free.push(cid);
            s.outstanding = s.outstanding.saturating_sub(1);
            (slot, s.starved > 0)
        };
        if starved {
            self.slot_freed.notify_one();
        }
        Some(slot)
    }

    fn on_response(&self, cqe: Cqe) -> Result<(), HostError> {
        let Some(slot) = self.release_slot(cqe.cid) else {
            return Err(self.protocol(format!(
                "response for command ID {} which is not outstanding",
                cqe.cid
            )));
        };
        let req = &slot.req;
        let result = if slot.digest_bad {
            Err(HostError::DataDigest {
                addr: self.addr.clone(),
                qid: self.qid,
            })
        } else if cqe.is_success() && !short_reply_ok(&req.sqe) && !self.all_data_in(&slot) {
            Err(self.protocol(format!(
                "{} completed with {} of {} data bytes",
                req.name, slot.received, req.data_in_len
            )))
        } else {
            Ok(cqe)
        };
        tracing::trace!(
            qid = self.qid,
            cid = cqe.cid,
            status = cqe.status,
            "complete"
        );
        self.finish(req, result);
        Ok(())
    }

    /// Whether every byte a command asked for was received and placed in
    /// its buffer (which `take_data` would otherwise pad with zeroes).
    fn all_data_in(&self, slot: &Slot) -> bool {
        slot.received == slot.req.data_in_len
            && (slot.req.data_in_len == 0 || plock(&slot.req.data_in).len() == slot.req.data_in_len)
    }

    fn on_c2h(
        &self,
        hdr: DataHeader,
        fl: u8,
        data: &[u8],
        digest_ok: bool,
    ) -> Result<(), HostError> {
        let (req, epoch) = {
            let mut s = plock(&self.slots);
            let Some(slot) = s.outstanding_mut(hdr.cccid) else {
                return Err(self.protocol(format!(
                    "C2HData for command ID {} which is not outstanding",
                    hdr.cccid
                )));
            };
            let end = hdr.datao as usize + data.len();
            if hdr.datao as usize != slot.received {
                // Data comes in order (NVMe/TCP): a range sent twice or a
                // gap would otherwise complete the read with zeroes.
                return Err(self.protocol(format!(
                    "C2HData offset {} for {} after {} bytes: out of order or repeated",
                    hdr.datao, slot.req.name, slot.received
                )));
            }
            if end > slot.req.data_in_len {
                return Err(self.protocol(format!(
                    "C2HData offset {} length {} beyond the {} bytes of {}",
                    hdr.datao,
                    data.len(),
                    slot.req.data_in_len,
                    slot.req.name
                )));
            }
            slot.received += data.len();
            slot.digest_bad |= !digest_ok;
            (slot.req.clone(), slot.epoch)
        };
        if digest_ok {
            let mut buf = plock(&req.data_in);
            if req.epoch.load(Ordering::Acquire) == epoch {
                put_data(&mut buf, hdr.datao as usize, data);
            }
        }
        self.after_c2h(hdr.cccid, fl)
    }

    /// A C2HData PDU's data is in: with SUCCESS, it completes the command.
    fn after_c2h(&self, cid: u16, fl: u8) -> Result<(), HostError> {
        if fl & flags::SUCCESS != 0 {
            if fl & flags::LAST_PDU == 0 {
                return Err(self.protocol("C2HData with SUCCESS but without LAST".into()));
            }
            let cqe = Cqe {
                cid,
                sqid: self.qid,
                ..Default::default()
            };
            return self.on_response(cqe);
        }
        Ok(())
    }

    fn on_r2t(&self, r: R2t, work: &mut Vec<H2cWork>) -> Result<(), HostError> {
        let mut s = plock(&self.slots);
        let Some(slot) = s.outstanding_mut(r.cccid) else {
            return Err(self.protocol(format!(
                "R2T for command ID {} which is not outstanding",
                r.cccid
            )));
        };
        let len = slot.req.data_out.len();
        let end = r.r2to as usize + r.r2tl as usize;
        if r.r2tl == 0 || end > len || (r.r2to as usize) < slot.h2c_next {
            return Err(self.protocol(format!(
                "R2T offset {} length {} invalid for {} of {len} bytes (already sent up to {})",
                r.r2to, r.r2tl, slot.req.name, slot.h2c_next
            )));
        }
        slot.h2c_next = end;
        work.push(H2cWork {
            req: slot.req.clone(),
            epoch: slot.epoch,
            r2t: r,
        });
        Ok(())
    }

    // ---- send side ------------------------------------------------------

    /// Send the data the R2Ts of `work` asked for, in PDUs of at most
    /// MAXH2CDATA, gathered into one `writev` per [`H2C_PDUS_PER_SEND`]
    /// PDUs (a pipeline of large writes gets its R2Ts in groups). Data goes
    /// from the request's buffer straight to the socket; only the headers
    /// and digests are built here.
    fn send_h2c(&self, work: &[H2cWork]) -> Result<(), HostError> {
        let mut heads = Vec::with_capacity(work.len() * 32);
        let mut digs = Vec::new();
        // Per PDU: its header in `heads`, its data, its digest in `digs`.
        let mut pdus: Vec<(Range<usize>, &[u8], Range<usize>)> = Vec::with_capacity(work.len());
        for w in work {
            if w.req.epoch.load(Ordering::Acquire) != w.epoch {
                continue;
            }
            let start = w.r2t.r2to as usize;
            let end = start + w.r2t.r2tl as usize;
            let mut off = start;
            while off < end {
                let n = (end - off).min(self.maxh2cdata);
                let data = &w.req.data_out[off..off + n];
                let hdr = DataHeader {
                    cccid: w.r2t.cccid,
                    ttag: w.r2t.ttag,
                    datao: off as u32,
                    datal: n as u32,
                };
                let fl = if off + n == end { flags::LAST_PDU } else { 0 };
                let h = heads.len();
                begin_data_pdu(&mut heads, pdu_type::H2C_DATA, &hdr, fl, self.digests);
                let d = digs.len();
                if self.digests.data {
                    digs.extend_from_slice(&digest_bytes(data));
                }
                pdus.push((h..heads.len(), data, d..digs.len()));
                off += n;
            }
        }
        for group in pdus.chunks(H2C_PDUS_PER_SEND) {
            let bufs: Vec<&[u8]> = group
                .iter()
                .flat_map(|(h, data, d)| [&heads[h.clone()], *data, &digs[d.clone()]])
                .collect();
            self.send(&bufs)?;
        }
        Ok(())
    }

    fn send_raw_best_effort(&self, bytes: &[u8]) -> io::Result<()> {
        let _g = self.tx.try_lock();
        (&self.sock).write(bytes).map(|_| ())
    }

    /// Write all of `bufs`. While the socket is full, keep draining incoming
    /// data into the receive buffer if nobody else is, and dispatch it once
    /// done.
    fn send(&self, bufs: &[&[u8]]) -> Result<(), HostError> {
        let buffered = {
            let _g = plock(&self.tx);
            self.write_locked(bufs)?
        };
        if buffered {
            self.poll_progress(true);
        }
        Ok(())
    }

    /// The body of [`Queue::send`], with the transmit lock held by the
    /// caller. Returns whether incoming data was buffered meanwhile.
    fn write_locked(&self, bufs: &[&[u8]]) -> Result<bool, HostError> {
        let mut buffered = false;
        {
            let mut slices: Vec<IoSlice<'_>> = bufs
                .iter()
                .filter(|b| !b.is_empty())
                .map(|b| IoSlice::new(b))
                .collect();
            let mut s: &mut [IoSlice<'_>] = &mut slices;
            while !s.is_empty() {
                if self.is_dead() {
                    return Err(self.lost_error("queue closed while sending"));
                }
                match (&self.sock).write_vectored(s) {
                    Ok(0) => return Err(self.lost_error("send wrote nothing")),
                    Ok(n) => {
                        self.counters.sends.fetch_add(1, Ordering::Relaxed);
                        IoSlice::advance_slices(&mut s, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        buffered |= self.wait_writable()?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.io_error("send", &e)),
                }
            }
        }
        Ok(buffered)
    }

    /// Wait until the socket takes more data. Returns whether incoming data
    /// was moved into the receive buffer meanwhile.
    fn wait_writable(&self) -> Result<bool, HostError> {
        let fd = self.sock.as_raw_fd();
        if let Ok(mut rx) = self.rx.try_lock() {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLOUT | libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut p, 1, 100) };
            if p.revents & libc::POLLIN != 0 {
                self.fill_rx(&mut rx, "receive while sending")?;
                return Ok(true);
            }
            return Ok(false);
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: as above.
        unsafe { libc::poll(&mut p, 1, 10) };
        Ok(false)
    }
}

/// Place C2HData bytes at `at` of a read's buffer, which fills in order:
/// appended when they continue it (nothing zeroed first), else written in
/// place.
fn put_data(buf: &mut Vec<u8>, at: usize, data: &[u8]) {
    if at > buf.len() {
        buf.resize(at, 0);
    }
    let overlap = (buf.len() - at).min(data.len());
    buf[at..at + overlap].copy_from_slice(&data[..overlap]);
    buf.extend_from_slice(&data[overlap..]);
}

/// Whether `avail`, the start of a partial PDU, is a C2HData large enough
/// to be received directly (known from the common header's PDU length)
/// whose header (and header digest, if any) is not all in yet.
fn is_large_c2h(avail: &[u8]) -> bool {
    use ferrofab_nvmeof_wire::wire::pdu::CommonHeader;
    CommonHeader::parse(avail).is_some_and(|ch| {
        ch.pdu_type == pdu_type::C2H_DATA
            && ch.plen as usize >= DIRECT_RX_MIN
            && avail.len() < usize::from(ch.hlen) + 4
    })
}

/// Authentication Receive returns as many bytes as the message has: its
/// allocation length is only the room the host offers. Every other command
/// must transfer exactly what it asked for.
fn short_reply_ok(sqe: &Sqe) -> bool {
    sqe.opcode == admin::FABRICS && sqe.fctype() == ferrofab_nvmeof_wire::spec::fctype::AUTH_RECV
}

fn pdu_name(p: &Pdu<'_>) -> &'static str {
    match p {
        Pdu::IcReq(_) => "ICReq",
        Pdu::IcResp(_) => "ICResp",
        Pdu::H2cTermReq(_) => "H2CTermReq",
        Pdu::C2hTermReq(_) => "C2HTermReq",
        Pdu::CapsuleCmd { .. } => "CapsuleCmd",
        Pdu::CapsuleResp(_) => "CapsuleResp",
        Pdu::H2cData { .. } => "H2CData",
        Pdu::C2hData { .. } => "C2HData",
        Pdu::R2t(_) => "R2T",
    }
}

fn unreachable_err(cfg: &QueueConfig, what: &str, e: io::Error) -> HostError {
    HostError::Unreachable {
        addr: cfg.addr.clone(),
        qid: cfg.qid,
        source: Arc::new(io::Error::new(e.kind(), format!("{what}: {e}"))),
    }
}

/// A non-blocking eventfd.
fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open a TCP connection with TCP_NODELAY (every PDU is latency-critical).
fn tcp_connect(addr: &str, qid: u16, timeout: Duration) -> Result<TcpStream, HostError> {
    let err = |e: io::Error| HostError::Unreachable {
        addr: addr.to_string(),
        qid,
        source: Arc::new(e),
    };
    let addrs: Vec<_> = addr.to_socket_addrs().map_err(err)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_nodelay(true).map_err(err)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

/// ICReq/ICResp on a fresh blocking socket. Returns MAXH2CDATA.
fn initialize_connection(sock: &TcpStream, cfg: &QueueConfig) -> Result<usize, HostError> {
    let bad = |why: String| HostError::BadIcResp {
        addr: cfg.addr.clone(),
        qid: cfg.qid,
        why,
    };
    let lost = |what: &str, e: io::Error| HostError::ConnectionLost {
        addr: cfg.addr.clone(),
        qid: cfg.qid,
        why: format!("{what}: {e}"),
    };
    sock.set_read_timeout(Some(cfg.connect_timeout))
        .map_err(|e| lost("set timeout", e))?;
    let mut req = Vec::with_capacity(IC_HLEN);
    encode_ic_req(
        &mut req,
        &IcReq {
            pfv: 0,
            hpda: 0,
            digests: cfg.digests,
            maxr2t: 0,
        },
    );
    let mut s = sock;
    s.write_all(&req).map_err(|e| lost("send ICReq", e))?;
    let mut buf = vec![0u8; CH_LEN];
    s.read_exact(&mut buf)
        .map_err(|e| lost("receive ICResp", e))?;
    let plen = ferrofab_nvmeof_wire::wire::get_u32(&buf, 4) as usize;
    if !(CH_LEN..=TERM_REQ_MAX_PLEN).contains(&plen) {
        return Err(bad(format!("PDU length {plen} (expected 128)")));
    }
    buf.resize(plen, 0);
    s.read_exact(&mut buf[CH_LEN..])
        .map_err(|e| lost("receive ICResp", e))?;
    sock.set_read_timeout(None)
        .map_err(|e| lost("set timeout", e))?;
    let resp = match decode(&buf, Digests::default(), IC_HLEN) {
        Ok(DecodeStatus::Complete(Decoded {
            pdu: Pdu::IcResp(r),
            ..
        })) => r,
        Ok(DecodeStatus::Complete(Decoded {
            pdu: Pdu::C2hTermReq(t),
            ..
        })) => {
            return Err(bad(format!(
                "controller terminated the connection (FES {:#x}, FEI {:#x})",
                t.fes, t.fei
            )))
        }
        Ok(DecodeStatus::Complete(d)) => {
            return Err(bad(format!("got {} instead of ICResp", pdu_name(&d.pdu))))
        }
        Ok(DecodeStatus::Need(_)) => return Err(bad("truncated ICResp".into())),
        Err(e) => return Err(bad(e.to_string())),
    };
    validate_ic_resp(&resp, cfg.digests).map_err(bad)?;
    Ok(resp.maxh2cdata as usize)
}

/// The rules of NVMe/TCP for an ICResp answering our ICReq.
pub(crate) fn validate_ic_resp(
    r: &ferrofab_nvmeof_wire::wire::IcResp,
    wanted: Digests,
) -> Result<(), String> {
    if r.pfv != 0 {
        return Err(format!("PDU format version {} (expected 0)", r.pfv));
    }
    if r.digests != wanted {
        return Err(format!(
            "digests header={} data={} but header={} data={} were requested",
            r.digests.header, r.digests.data, wanted.header, wanted.data
        ));
    }
    if r.cpda > 31 {
        return Err(format!("CPDA {} out of range (0..=31)", r.cpda));
    }
    if r.maxh2cdata < 4096 || !r.maxh2cdata.is_multiple_of(4) {
        return Err(format!(
            "MAXH2CDATA {} (must be a multiple of 4 and at least 4096)",
            r.maxh2cdata
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_nvmeof_wire::wire::IcResp;

    #[test]
    fn ic_resp_rules() {
        let both = Digests {
            header: true,
            data: true,
        };
        let ok = IcResp {
            pfv: 0,
            cpda: 0,
            digests: both,
            maxh2cdata: 4 << 20,
        };
        assert!(validate_ic_resp(&ok, both).is_ok());
        assert!(validate_ic_resp(&ok, Digests::default())
            .unwrap_err()
            .contains("requested"));
        assert!(validate_ic_resp(&IcResp { pfv: 1, ..ok }, both).is_err());
        assert!(validate_ic_resp(
            &IcResp {
                maxh2cdata: 4094,
                ..ok
            },
            both
        )
        .is_err());
        assert!(validate_ic_resp(
            &IcResp {
                maxh2cdata: 4098,
                ..ok
            },
            both
        )
        .is_err());
        assert!(validate_ic_resp(&IcResp { cpda: 40, ..ok }, both).is_err());
    }

    /// A queue connected to a scripted peer (this test's end of the
    /// socket), with the receiver thread kept off the socket so the test
    /// decides who reads.
    fn scripted_queue() -> (Arc<Queue>, TcpStream) {
        use ferrofab_nvmeof_wire::wire::pdu::encode_ic_resp;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let peer = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut icreq = [0u8; IC_HLEN];
            s.read_exact(&mut icreq).unwrap();
            let mut out = Vec::new();
            encode_ic_resp(
                &mut out,
                &IcResp {
                    pfv: 0,
                    cpda: 0,
                    digests: Digests::default(),
                    maxh2cdata: 1 << 20,
                },
            );
            s.write_all(&out).unwrap();
            s
        });
        let q = Queue::open(&QueueConfig {
            addr,
            qid: 1,
            digests: Digests::default(),
            connect_timeout: Duration::from_secs(5),
            incapsule_max: 4096,
            max_plen: 1 << 20,
            slots: 4,
        })
        .unwrap();
        // A "waiter" keeps the receiver thread parked.
        q.waiters.fetch_add(1, Ordering::SeqCst);
        (q, peer.join().unwrap())
    }

    /// A 64 KiB read on `q` whose C2HData (SUCCESS, no CapsuleResp) has
    /// its header and first 1000 bytes sent, and is being received
    /// directly. Returns the request and the rest of the PDU.
    fn direct_read_started(q: &Arc<Queue>, peer: &mut TcpStream) -> (Arc<Request>, Vec<u8>) {
        use ferrofab_nvmeof_wire::wire::pdu::encode_data_pdu;
        let req = Request::new(super::super::cmd::read(1, 0, 128, 512), ReqKind::Io);
        q.submit(&req).unwrap();
        let mut capsule = [0u8; 72];
        peer.read_exact(&mut capsule).unwrap();
        let mut pdu = Vec::new();
        let hdr = DataHeader {
            cccid: 0,
            ..Default::default()
        };
        let fl = flags::LAST_PDU | flags::SUCCESS;
        encode_data_pdu(
            &mut pdu,
            pdu_type::C2H_DATA,
            &hdr,
            fl,
            &[7u8; 65536],
            Digests::default(),
        );
        let rest = pdu.split_off(pdu.len() - 65536 + 1000);
        peer.write_all(&pdu).unwrap();
        while plock(&q.rx).direct.is_none() {
            q.poll_readable(1000);
            q.poll_progress(true);
        }
        (req, rest)
    }

    /// A direct payload that completes while a sender holds the transmit
    /// lock (draining the socket in `wait_writable`) is completed only by
    /// the next dispatch, with the lock released: a callback can submit.
    #[test]
    fn direct_payload_completes_outside_the_transmit_lock() {
        let (q, mut peer) = scripted_queue();
        let (req, rest) = direct_read_started(&q, &mut peer);
        let tx_free = Arc::new(Mutex::new(Vec::new()));
        let seen = tx_free.clone();
        let q2 = q.clone();
        req.then(Box::new(move || {
            let free = q2.tx.try_lock().is_ok();
            plock(&seen).push(free);
        }));
        peer.write_all(&rest).unwrap();
        q.poll_readable(1000);
        {
            let _tx = plock(&q.tx);
            assert!(q.wait_writable().unwrap(), "data was read");
        }
        q.poll_progress(true);
        assert!(req.is_done());
        assert_eq!(*plock(&tx_free), vec![true], "callback ran once, tx free");
        assert!(req.take_data() == vec![7u8; 65536]);
        q.close();
    }

    /// A queue killed mid-payload lets go of the request at once.
    #[test]
    fn kill_drops_a_direct_payload() {
        let (q, mut peer) = scripted_queue();
        let (req, _rest) = direct_read_started(&q, &mut peer);
        assert!(Arc::strong_count(&req) > 1);
        let drained = q.kill();
        drop(drained);
        assert!(plock(&q.rx).direct.is_none());
        assert_eq!(Arc::strong_count(&req), 1, "queue still holds the request");
        q.close();
    }

    #[test]
    fn completion_is_one_shot() {
        let c = Completion::new();
        assert!(!c.is_done());
        assert!(c.complete(Ok(Cqe::default())));
        assert!(!c.complete(Err(HostError::InvalidArgument("late".into()))));
        assert!(c.is_done());
        assert!(c.take().is_ok());
    }
}
