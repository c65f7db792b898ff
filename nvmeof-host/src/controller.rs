//! A connected controller: the association, its replacement after a
//! connection loss, keep-alive, asynchronous events and namespace tracking.
//!
//! # Reconnect model
//!
//! I/O is a [`Request`] that outlives connections. When any queue of the
//! association fails, [`Shared::fail_association`] takes the association
//! away, drains every queue and moves the I/O requests that were in flight
//! (sent or not, acknowledged never) to `pending`; new I/O joins them.
//! The worker thread reconnects with exponential backoff and re-submits
//! `pending` on the new association. Since reads and writes are
//! idempotent, re-sending a write whose completion was lost is safe; a
//! request completes exactly once (see `Completion`), so nothing that was
//! acknowledged is ever re-reported or lost. After `ctrl_loss_tmo`
//! everything pending fails with [`HostError::ControllerLost`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::assoc::{self, Association, NamespaceInfo};
use super::cmd;
use super::exec::{self, Ctx};
use super::options::ConnectOptions;
use super::queue::{plock, Queue, QueueStats, ReqKind, Request};
use super::spin::SpinPolicy;
use super::HostError;
use ferrofab_nvmeof_wire::spec::identify::IdentifyController;
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{aen, log, validate_nqn};
use ferrofab_nvmeof_wire::wire::Cqe;

/// Where a controller is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerState {
    /// Connected; I/O flows.
    Live,
    /// The connection was lost; I/O waits for a reconnect.
    Reconnecting,
    /// ctrl_loss_tmo expired; all I/O fails.
    Failed,
    /// Disconnected by this host.
    Closed,
}

/// A change in the namespaces of a controller, delivered to watchers
/// registered with [`Controller::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceEvent {
    Added(NamespaceInfo),
    Removed(NamespaceInfo),
    /// Same namespace (same IDs), new size.
    Resized {
        old: NamespaceInfo,
        new: NamespaceInfo,
    },
}

pub(crate) enum Event {
    Aen {
        gen: u64,
        result: Result<Cqe, HostError>,
    },
    Lost,
    Shutdown,
}

type Watcher = Arc<dyn Fn(&NamespaceEvent) + Send + Sync>;

struct Core {
    state: ControllerState,
    assoc: Option<Arc<Association>>,
    pending: VecDeque<Arc<Request>>,
    lost_since: Option<Instant>,
    last_error: String,
}

/// State shared by the [`Controller`], its [`Namespace`](crate::Namespace) handles and its
/// threads.
pub(crate) struct Shared {
    pub opts: ConnectOptions,
    pub ctx: Ctx,
    core: Mutex<Core>,
    namespaces: RwLock<BTreeMap<u32, NamespaceInfo>>,
    watchers: Mutex<Vec<Watcher>>,
    events: Mutex<Sender<Event>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    next_queue: AtomicUsize,
    gen: AtomicU64,
    max_transfer: AtomicUsize,
    /// The DH-HMAC-CHAP secrets in force: those of `opts` until
    /// [`Controller::set_dhchap_secrets`] replaces them (key rotation).
    secrets: Mutex<ferrofab_nvmeof_wire::auth::HostSecrets>,
}

/// A connected NVMe/TCP controller. Dropping it disconnects (see
/// [`Controller::disconnect`] to see the result).
pub struct Controller {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("addr", &self.shared.opts.addr)
            .field("subnqn", &self.shared.opts.subnqn)
            .field("state", &self.state())
            .finish()
    }
}

impl Controller {
    /// Connect to `opts.subnqn` at `opts.addr`: admin queue, enable,
    /// Identify, I/O queues, namespace scan, then keep-alive and the
    /// asynchronous event request run in the background. The first
    /// association is not retried: failing here is reported at once.
    pub fn connect(opts: ConnectOptions) -> Result<Controller, HostError> {
        validate_nqn(&opts.subnqn)
            .map_err(|why| HostError::InvalidArgument(format!("subsystem NQN: {why}")))?;
        let (tx, rx) = mpsc::channel();
        let secrets = ferrofab_nvmeof_wire::auth::HostSecrets {
            host: opts.dhchap_secret.clone(),
            ctrl: opts.dhchap_ctrl_secret.clone(),
        };
        let shared = Arc::new(Shared {
            ctx: Ctx::from_opts(&opts),
            opts,
            core: Mutex::new(Core {
                state: ControllerState::Reconnecting,
                assoc: None,
                pending: VecDeque::new(),
                lost_since: None,
                last_error: String::new(),
            }),
            namespaces: RwLock::new(BTreeMap::new()),
            watchers: Mutex::new(Vec::new()),
            events: Mutex::new(tx),
            worker: Mutex::new(None),
            next_queue: AtomicUsize::new(0),
            gen: AtomicU64::new(1),
            max_transfer: AtomicUsize::new(4096),
            secrets: Mutex::new(secrets),
        });
        let a = assoc::establish(&shared.opts, 1)?;
        let ctrl = Controller {
            shared: shared.clone(),
        };
        shared.install(a)?;
        let weak = Arc::downgrade(&shared);
        let handle = thread::Builder::new()
            .name("nvme-ctrl".into())
            .spawn(move || worker_loop(weak, rx))
            .map_err(|e| HostError::InvalidArgument(format!("cannot spawn a thread: {e}")))?;
        *plock(&shared.worker) = Some(handle);
        Ok(ctrl)
    }

    pub fn addr(&self) -> &str {
        &self.shared.opts.addr
    }

    pub fn subnqn(&self) -> &str {
        &self.shared.opts.subnqn
    }

    pub fn state(&self) -> ControllerState {
        plock(&self.shared.core).state
    }

    /// Identify Controller of the current association.
    pub fn identify(&self) -> Option<IdentifyController> {
        self.shared.assoc().map(|a| a.ctrl.clone())
    }

    /// Controller ID of the current association.
    pub fn cntlid(&self) -> Option<u16> {
        self.shared.assoc().map(|a| a.cntlid)
    }

    /// Number of I/O queues of the current association.
    pub fn io_queues(&self) -> usize {
        self.shared.assoc().map_or(0, |a| a.io.len())
    }

    /// Data-path counters of the current association's I/O queues (command
    /// capsules, `writev` and `recvfrom` calls, completions and how many of
    /// them the receiver threads made): how well submissions are batched
    /// and how often a completion crossed threads.
    pub fn io_stats(&self) -> QueueStats {
        let mut total = QueueStats::default();
        if let Some(a) = self.shared.assoc() {
            for q in &a.io {
                total += q.stats();
            }
        }
        total
    }

    /// The namespaces as of the last scan, by NSID.
    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        self.shared.read_namespaces().values().cloned().collect()
    }

    /// Call `f` on every namespace change (resize seen through an
    /// asynchronous event or a reconnect, namespace added or removed). It
    /// runs on the controller's worker thread and must not block for long.
    pub fn watch(&self, f: impl Fn(&NamespaceEvent) + Send + Sync + 'static) {
        plock(&self.shared.watchers).push(Arc::new(f));
    }

    /// Scan the namespaces now and notify watchers of changes.
    pub fn rescan(&self) -> Result<(), HostError> {
        self.shared.rescan()
    }

    /// Re-authenticate every queue of the live association now (a new
    /// DH-HMAC-CHAP transaction per queue, with the current secrets), while
    /// I/O goes on. On failure the controller may refuse further commands
    /// on that queue; the error says which queue and why.
    pub fn reauthenticate(&self) -> Result<(), HostError> {
        self.shared.reauthenticate()
    }

    /// Replace the DH-HMAC-CHAP secrets (key rotation) and re-authenticate
    /// every queue with them. Later reconnects use them too. The
    /// controller must already accept the new host secret.
    pub fn set_dhchap_secrets(
        &self,
        host: Option<ferrofab_nvmeof_wire::auth::DhchapSecret>,
        ctrl: Option<ferrofab_nvmeof_wire::auth::DhchapSecret>,
    ) -> Result<(), HostError> {
        *plock(&self.shared.secrets) = ferrofab_nvmeof_wire::auth::HostSecrets { host, ctrl };
        self.shared.reauthenticate()
    }

    /// Orderly disconnect: let in-flight I/O finish (bounded), close the
    /// I/O queues, shut the controller down (CC.SHN, wait for CSTS.SHST)
    /// and close the admin queue. I/O still pending fails with
    /// [`HostError::Disconnected`].
    pub fn disconnect(self) -> Result<(), HostError> {
        self.shared.shutdown()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Err(e) = self.shared.shutdown() {
            tracing::warn!(error = %e, "disconnect on drop");
        }
    }
}

fn worker_loop(weak: Weak<Shared>, rx: Receiver<Event>) {
    loop {
        let tick = match weak.upgrade() {
            Some(s) => s.tick_interval(),
            None => return,
        };
        let ev = rx.recv_timeout(tick);
        let Some(s) = weak.upgrade() else { return };
        match ev {
            Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Event::Aen { gen, result }) => s.on_aen(gen, result),
            Ok(Event::Lost) => {
                if !s.reconnect_loop(&rx) {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                s.check_io_timeout();
                s.keep_alive();
            }
        }
    }
}

impl Shared {
    /// The connect options with the secrets now in force.
    fn current_opts(&self) -> ConnectOptions {
        let mut o = self.opts.clone();
        let s = plock(&self.secrets).clone();
        o.dhchap_secret = s.host;
        o.dhchap_ctrl_secret = s.ctrl;
        o
    }

    fn reauthenticate(&self) -> Result<(), HostError> {
        let Some(a) = self.assoc() else {
            return Err(HostError::Disconnected {
                subnqn: self.opts.subnqn.clone(),
                addr: self.opts.addr.clone(),
            });
        };
        let secrets = plock(&self.secrets).clone();
        let Some(host) = &secrets.host else {
            return Err(HostError::InvalidArgument(
                "re-authentication needs a DH-HMAC-CHAP secret".into(),
            ));
        };
        let s = super::auth::Secrets {
            host,
            ctrl: secrets.ctrl.as_ref(),
        };
        for q in std::iter::once(&a.admin).chain(a.io.iter()) {
            super::auth::authenticate(q, &self.ctx, &s)?;
        }
        tracing::info!(queues = a.io.len() + 1, "re-authenticated");
        Ok(())
    }

    pub(crate) fn assoc(&self) -> Option<Arc<Association>> {
        plock(&self.core).assoc.clone()
    }

    pub(crate) fn read_namespaces(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, NamespaceInfo>> {
        self.namespaces.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn namespace_info(&self, nsid: u32) -> Option<NamespaceInfo> {
        self.read_namespaces().get(&nsid).cloned()
    }

    /// A queue index for a new pipeline, spreading pipelines over the I/O
    /// queues.
    pub(crate) fn pick_queue(&self) -> usize {
        self.next_queue.fetch_add(1, Ordering::Relaxed)
    }

    /// I/O queue `hint` of the live association (modulo their number).
    pub(crate) fn io_queue(&self, hint: usize) -> Option<Arc<Queue>> {
        let a = self.assoc()?;
        let n = a.io.len();
        (n > 0).then(|| a.io[hint % n].clone())
    }

    pub(crate) fn max_transfer(&self) -> usize {
        self.max_transfer.load(Ordering::Relaxed)
    }

    /// How I/O waiters spin before sleeping (`poll_spin`, `poll_adaptive`).
    pub(crate) fn spin_policy(&self) -> SpinPolicy {
        SpinPolicy::from_opts(self.opts.poll_spin, self.opts.poll_adaptive)
    }

    fn send_event(&self, e: Event) {
        let _ = plock(&self.events).send(e);
    }

    fn tick_interval(&self) -> Duration {
        if self.opts.kato.is_zero() {
            Duration::from_secs(1)
        } else {
            (self.opts.kato / 2).max(Duration::from_millis(100))
        }
    }

    fn disconnected(&self) -> HostError {
        HostError::Disconnected {
            subnqn: self.opts.subnqn.clone(),
            addr: self.opts.addr.clone(),
        }
    }

    fn lost_error(&self, last: &str) -> HostError {
        HostError::ControllerLost {
            subnqn: self.opts.subnqn.clone(),
            addr: self.opts.addr.clone(),
            tmo_s: self.opts.ctrl_loss_tmo.map_or(0, |d| d.as_secs()),
            last: last.to_string(),
        }
    }

    /// Send an I/O request on the live association, or park it while
    /// reconnecting, or fail it if the controller is gone.
    pub(crate) fn submit(&self, req: &Arc<Request>) {
        self.submit_to(req, None);
    }

    /// Where a request goes: `None` spreads requests over the I/O queues
    /// and sends at once; `Some(hint)` always uses I/O queue `hint` (modulo
    /// their number) and leaves the capsule in its submission buffer, for a
    /// [`crate::Pipeline`] that waits on that one queue and so flushes it.
    pub(crate) fn submit_to(&self, req: &Arc<Request>, pinned: Option<usize>) {
        loop {
            let a = {
                let mut core = plock(&self.core);
                match core.state {
                    ControllerState::Live => match core.assoc.clone() {
                        Some(a) => a,
                        None => {
                            core.pending.push_back(req.clone());
                            return;
                        }
                    },
                    ControllerState::Reconnecting => {
                        core.pending.push_back(req.clone());
                        return;
                    }
                    ControllerState::Failed => {
                        let e = self.lost_error(&core.last_error);
                        drop(core);
                        req.finish(Err(e));
                        return;
                    }
                    ControllerState::Closed => {
                        drop(core);
                        req.finish(Err(self.disconnected()));
                        return;
                    }
                }
            };
            let n = a.io.len().max(1);
            let i = pinned.unwrap_or_else(|| self.next_queue.fetch_add(1, Ordering::Relaxed)) % n;
            let Some(q) = a.io.get(i) else {
                self.fail_association(a.gen, HostError::InvalidArgument("no I/O queues".into()));
                continue;
            };
            let sent = if pinned.is_some() {
                q.submit_deferred(req)
            } else {
                q.submit(req)
            };
            match sent {
                Ok(()) => return,
                Err(e) => self.fail_association(a.gen, e),
            }
        }
    }

    /// The association of generation `gen` is broken: take it down and keep
    /// its I/O for the next one. Later calls for the same generation do
    /// nothing.
    pub(crate) fn fail_association(&self, gen: u64, err: HostError) {
        let a = {
            let mut core = plock(&self.core);
            let current = matches!(&core.assoc, Some(a) if a.gen == gen);
            if !current || core.state != ControllerState::Live {
                return;
            }
            core.state = ControllerState::Reconnecting;
            core.lost_since = Some(Instant::now());
            core.last_error = err.to_string();
            core.assoc.take()
        };
        let Some(a) = a else { return };
        tracing::warn!(addr = %self.opts.addr, subnqn = %self.opts.subnqn, error = %err,
            "connection lost; reconnecting");
        let mut keep = Vec::new();
        for q in a.queues() {
            for r in q.kill() {
                match r.kind {
                    ReqKind::Io => keep.push(r),
                    ReqKind::Admin | ReqKind::Aer => r.finish(Err(err.clone())),
                }
            }
        }
        let mut core = plock(&self.core);
        if core.state == ControllerState::Reconnecting {
            tracing::info!(
                requests = keep.len(),
                "in-flight I/O kept for the next association"
            );
            core.pending.extend(keep);
        } else {
            let e = self.disconnected();
            drop(core);
            for r in keep {
                r.finish(Err(e.clone()));
            }
        }
        self.send_event(Event::Lost);
    }

    /// Make `a` the live association, re-send pending I/O and rescan.
    fn install(self: &Arc<Self>, a: Association) -> Result<(), HostError> {
        let a = Arc::new(a);
        let pending = {
            let mut core = plock(&self.core);
            if core.state == ControllerState::Closed || core.state == ControllerState::Failed {
                drop(core);
                close_association(&a, &self.disconnected());
                return Err(self.disconnected());
            }
            core.state = ControllerState::Live;
            core.assoc = Some(a.clone());
            core.lost_since = None;
            std::mem::take(&mut core.pending)
        };
        self.max_transfer.store(a.max_transfer, Ordering::Relaxed);
        for q in a.queues() {
            let w = Arc::downgrade(self);
            let gen = a.gen;
            q.set_fail_hook(Arc::new(move |e| {
                if let Some(s) = w.upgrade() {
                    s.fail_association(gen, e);
                }
            }));
        }
        let w = Arc::downgrade(self);
        let gen = a.gen;
        a.admin.set_aen_hook(Arc::new(move |result| {
            if let Some(s) = w.upgrade() {
                s.send_event(Event::Aen { gen, result });
            }
        }));
        if a.ctrl.oaes & aen::CFG_NS_ATTR != 0 {
            self.arm_aer(&a);
        }
        if !pending.is_empty() {
            tracing::info!(
                requests = pending.len(),
                "re-sending I/O on the new association"
            );
        }
        for r in pending {
            self.submit(&r);
        }
        self.rescan()
    }

    fn arm_aer(&self, a: &Association) {
        let req = Request::new(cmd::async_event_request(), ReqKind::Aer);
        if let Err(e) = a.admin.submit(&req) {
            tracing::debug!(error = %e, "could not arm the asynchronous event request");
        }
    }

    /// Tear the association down if an I/O command has waited longer than
    /// `io_timeout` (a target that keeps the connection but stopped
    /// answering). Checked every keep-alive tick.
    fn check_io_timeout(&self) {
        let Some(limit) = self.opts.io_timeout else {
            return;
        };
        let Some(a) = self.assoc() else { return };
        for q in &a.io {
            if let Some(t) = q.oldest_outstanding().filter(|t| t.elapsed() >= limit) {
                let e = HostError::Timeout {
                    what: format!("I/O command on queue {}", q.qid),
                    addr: self.opts.addr.clone(),
                    after_ms: t.elapsed().as_millis() as u64,
                };
                self.fail_association(a.gen, e);
                return;
            }
        }
    }

    fn keep_alive(&self) {
        if self.opts.kato.is_zero() {
            return;
        }
        let Some(a) = self.assoc() else { return };
        let mut ctx = self.ctx.clone();
        ctx.timeout = self.opts.kato;
        match exec::exec(&a.admin, cmd::keep_alive(), &ctx) {
            Ok(_) => tracing::trace!("keep-alive"),
            Err(e @ HostError::Command { .. }) => tracing::warn!(error = %e, "keep-alive refused"),
            Err(e) => self.fail_association(a.gen, e),
        }
    }

    fn on_aen(&self, gen: u64, result: Result<Cqe, HostError>) {
        let Some(a) = self.assoc().filter(|a| a.gen == gen) else {
            return;
        };
        let cqe = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "asynchronous event request ended");
                return;
            }
        };
        if !cqe.is_success() {
            let st = Status::from_field(cqe.status);
            tracing::warn!(status = %st, "asynchronous event request failed; not re-armed");
            return;
        }
        let dw0 = cqe.result as u32;
        let lid = ((dw0 >> 16) & 0xFF) as u8;
        tracing::info!(dw0 = format_args!("{dw0:#010x}"), "asynchronous event");
        if dw0 == aen::NS_ATTR_CHANGED {
            // Reading the log with RAE=0 unmasks further notices.
            let c = cmd::get_log_page(log::CHANGED_NS_LIST, log::CHANGED_NS_LIST_LEN, 0, false);
            if let Err(e) = exec::exec(&a.admin, c, &self.ctx) {
                tracing::warn!(error = %e, "reading the changed namespace list");
            }
            self.arm_aer(&a);
            if let Err(e) = self.rescan() {
                tracing::warn!(error = %e, "rescan after namespace change");
            }
            return;
        }
        if lid != 0 {
            let c = cmd::get_log_page(lid, 4096, 0, false);
            let _ = exec::exec(&a.admin, c, &self.ctx);
        }
        self.arm_aer(&a);
    }

    /// Re-identify namespaces and tell watchers what changed.
    pub(crate) fn rescan(&self) -> Result<(), HostError> {
        let a = self.assoc().ok_or_else(|| self.disconnected())?;
        let found = assoc::scan_namespaces(&a.admin, &self.ctx)?;
        let new: BTreeMap<u32, NamespaceInfo> = found.into_iter().map(|n| (n.nsid, n)).collect();
        let events = {
            let mut cur = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
            let ev = diff_namespaces(&cur, &new);
            *cur = new;
            ev
        };
        let watchers: Vec<Watcher> = plock(&self.watchers).clone();
        for e in &events {
            tracing::info!(event = ?e, "namespace change");
            for w in &watchers {
                w(e);
            }
        }
        Ok(())
    }

    /// Keep trying to re-establish the association. Returns false when the
    /// worker should exit.
    fn reconnect_loop(self: &Arc<Self>, rx: &Receiver<Event>) -> bool {
        let mut delay = self.opts.reconnect_delay;
        let mut attempt = 0u32;
        loop {
            let (state, since) = {
                let core = plock(&self.core);
                (core.state, core.lost_since)
            };
            if state != ControllerState::Reconnecting {
                return state == ControllerState::Live;
            }
            let since = since.unwrap_or_else(Instant::now);
            if let Some(tmo) = self.opts.ctrl_loss_tmo {
                if since.elapsed() >= tmo {
                    self.give_up();
                    return false;
                }
            }
            if attempt > 0 {
                let mut wait = delay;
                if let Some(tmo) = self.opts.ctrl_loss_tmo {
                    wait = wait.min(tmo.saturating_sub(since.elapsed()));
                }
                match rx.recv_timeout(wait) {
                    Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => return false,
                    _ => {}
                }
                delay = (delay * 2).min(self.opts.max_reconnect_delay);
                if let Some(tmo) = self.opts.ctrl_loss_tmo {
                    if since.elapsed() >= tmo {
                        continue;
                    }
                }
            }
            attempt += 1;
            let gen = self.gen.fetch_add(1, Ordering::AcqRel) + 1;
            match assoc::establish(&self.current_opts(), gen) {
                Ok(a) => match self.install(a) {
                    Ok(()) => {
                        tracing::info!(attempt, "reconnected");
                        return true;
                    }
                    Err(e) => {
                        tracing::warn!(attempt, error = %e, "new association failed at once");
                        let live = plock(&self.core).state;
                        if live == ControllerState::Closed {
                            return false;
                        }
                        // A failure inside install already queued a Lost
                        // event and set Reconnecting; go round again.
                    }
                },
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "reconnect attempt failed");
                    plock(&self.core).last_error = e.to_string();
                }
            }
        }
    }

    /// ctrl_loss_tmo expired: fail everything pending and all future I/O.
    fn give_up(&self) {
        let (pending, err) = {
            let mut core = plock(&self.core);
            core.state = ControllerState::Failed;
            let err = self.lost_error(&core.last_error);
            (std::mem::take(&mut core.pending), err)
        };
        tracing::error!(error = %err, requests = pending.len(), "giving up on the controller");
        for r in pending {
            r.finish(Err(err.clone()));
        }
    }

    fn shutdown(&self) -> Result<(), HostError> {
        let (a, pending) = {
            let mut core = plock(&self.core);
            if core.state == ControllerState::Closed {
                return Ok(());
            }
            core.state = ControllerState::Closed;
            (core.assoc.take(), std::mem::take(&mut core.pending))
        };
        let _span =
            tracing::info_span!("disconnect", addr = %self.opts.addr, subnqn = %self.opts.subnqn)
                .entered();
        let closed = self.disconnected();
        for r in pending {
            r.finish(Err(closed.clone()));
        }
        self.send_event(Event::Shutdown);
        if let Some(h) = plock(&self.worker).take() {
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
        let Some(a) = a else { return Ok(()) };
        let deadline = Instant::now() + self.opts.admin_timeout;
        while a.io.iter().map(|q| q.outstanding()).sum::<usize>() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        for q in &a.io {
            for r in q.close() {
                r.finish(Err(closed.clone()));
            }
        }
        let res = if a.admin.is_dead() {
            Ok(())
        } else {
            assoc::shutdown_controller(&a.admin, &self.ctx, self.opts.shutdown_timeout)
        };
        for r in a.admin.close() {
            r.finish(Err(closed.clone()));
        }
        tracing::info!("disconnected");
        res
    }
}

fn close_association(a: &Association, err: &HostError) {
    for q in a.queues() {
        for r in q.close() {
            r.finish(Err(err.clone()));
        }
    }
}

/// Events that turn namespace map `old` into `new`.
pub(crate) fn diff_namespaces(
    old: &BTreeMap<u32, NamespaceInfo>,
    new: &BTreeMap<u32, NamespaceInfo>,
) -> Vec<NamespaceEvent> {
    let mut ev = Vec::new();
    for (nsid, o) in old {
        match new.get(nsid) {
            None => ev.push(NamespaceEvent::Removed(o.clone())),
            Some(n) if !o.same_identity(n) => {
                ev.push(NamespaceEvent::Removed(o.clone()));
                ev.push(NamespaceEvent::Added(n.clone()));
            }
            Some(n) if n != o => ev.push(NamespaceEvent::Resized {
                old: o.clone(),
                new: n.clone(),
            }),
            Some(_) => {}
        }
    }
    for (nsid, n) in new {
        if !old.contains_key(nsid) {
            ev.push(NamespaceEvent::Added(n.clone()));
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(nsid: u32, blocks: u64, id: u8) -> NamespaceInfo {
        NamespaceInfo {
            nsid,
            blocks,
            block_size: 512,
            nguid: Some([id; 16]),
            uuid: None,
            eui64: None,
        }
    }

    #[test]
    fn namespace_diff() {
        let old: BTreeMap<_, _> = [(1, ns(1, 100, 1)), (2, ns(2, 100, 2)), (3, ns(3, 5, 3))].into();
        let new: BTreeMap<_, _> = [(1, ns(1, 200, 1)), (2, ns(2, 100, 9)), (4, ns(4, 1, 4))].into();
        let ev = diff_namespaces(&old, &new);
        assert_eq!(
            ev,
            vec![
                NamespaceEvent::Resized {
                    old: ns(1, 100, 1),
                    new: ns(1, 200, 1)
                },
                NamespaceEvent::Removed(ns(2, 100, 2)),
                NamespaceEvent::Added(ns(2, 100, 9)),
                NamespaceEvent::Removed(ns(3, 5, 3)),
                NamespaceEvent::Added(ns(4, 1, 4)),
            ]
        );
        assert!(diff_namespaces(&new, &new).is_empty());
    }
}
