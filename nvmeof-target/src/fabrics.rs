//! Fabrics commands: Connect (which turns a connection into a queue) and
//! Property Get/Set (which drive the controller's enable, reset and
//! shutdown).

use std::sync::Arc;

use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{cc, get_str_nul, prop, CNTLID_DYNAMIC, DISCOVERY_NQN};
use ferrofab_nvmeof_wire::wire::{get_u16, Sqe};

use super::conn::{Conn, QueueState};
use super::registry::controller::{CcChange, Controller, ControllerKind};
use super::socket::ConnLink;

/// Size of the Connect command's data.
const CONNECT_DATA_LEN: usize = 1024;
/// Offsets in the Connect data, reported back in Invalid Parameters.
const OFF_CNTLID: u16 = 16;
const OFF_SUBNQN: u16 = 256;
const OFF_HOSTNQN: u16 = 512;
/// Offsets in the Connect command itself.
const OFF_QID: u16 = 42;
const OFF_SQSIZE: u16 = 44;

/// Connect command fields.
#[derive(Debug)]
struct ConnectRequest {
    qid: u16,
    sqsize: u16,
    sqflow_disabled: bool,
    kato_ms: u32,
    hostid: [u8; 16],
    cntlid: u16,
    subnqn: String,
    hostnqn: String,
}

/// Why a Connect was refused: the status, plus where the offending
/// parameter is (IATTR says data or command, IPO the byte offset).
struct Refusal {
    status: Status,
    in_data: bool,
    offset: u16,
    why: String,
}

impl Refusal {
    fn param(in_data: bool, offset: u16, why: String) -> Refusal {
        Refusal {
            status: Status::CONNECT_INVALID_PARAMETERS,
            in_data,
            offset,
            why,
        }
    }

    /// DW0 of the completion: IPO in bits 15:0, IATTR in bits 23:16.
    fn result(&self) -> u64 {
        u64::from(self.offset) | (u64::from(u8::from(self.in_data)) << 16)
    }
}

fn parse_connect(sqe: &Sqe, data: &[u8]) -> Result<ConnectRequest, Refusal> {
    let recfmt = (sqe.cdw10 & 0xFFFF) as u16;
    if recfmt != 0 {
        return Err(Refusal {
            status: Status::CONNECT_INCOMPATIBLE_FORMAT,
            in_data: false,
            offset: 40,
            why: format!("record format {recfmt} is not supported"),
        });
    }
    // Exactly 1024 bytes, as Linux nvmet requires too: in-capsule data
    // is already capped by the capsule size, and nothing past the
    // structure means anything.
    if data.len() != CONNECT_DATA_LEN {
        return Err(Refusal::param(
            true,
            0,
            format!("Connect data is {} bytes, expected 1024", data.len()),
        ));
    }
    let mut hostid = [0u8; 16];
    hostid.copy_from_slice(&data[..16]);
    Ok(ConnectRequest {
        qid: (sqe.cdw10 >> 16) as u16,
        sqsize: (sqe.cdw11 & 0xFFFF) as u16,
        sqflow_disabled: (sqe.cdw11 >> 16) & 0x4 != 0,
        kato_ms: sqe.cdw12,
        hostid,
        cntlid: get_u16(data, 16),
        subnqn: get_str_nul(&data[256..512]),
        hostnqn: get_str_nul(&data[512..768]),
    })
}

impl Conn {
    pub(crate) fn connect(&mut self, sqe: Sqe, data: Option<&[u8]>) {
        let result = parse_connect(&sqe, data.unwrap_or(&[])).and_then(|req| {
            let ctrl = self.admit(&req)?;
            Ok((req, ctrl))
        });
        match result {
            Ok((req, ctrl)) => self.become_queue(sqe.cid, req, ctrl),
            Err(refusal) => {
                tracing::warn!(peer = %self.peer, reason = %refusal.why, status = %refusal.status, "Connect refused");
                self.complete(sqe.cid, refusal.status, refusal.result());
            }
        }
    }

    /// Decide whether this Connect may proceed and find or create its
    /// controller.
    fn admit(&self, req: &ConnectRequest) -> Result<Arc<Controller>, Refusal> {
        let opts = &self.target.opts;
        if req.sqsize == 0 || u32::from(req.sqsize) >= u32::from(opts.queue_depth) {
            return Err(Refusal::param(
                false,
                OFF_SQSIZE,
                format!(
                    "queue size {} (0-based) outside 1..{}",
                    req.sqsize,
                    opts.queue_depth - 1
                ),
            ));
        }
        let kind = self.subsystem_for(req)?;
        if req.qid == 0 {
            return self.new_controller(req, kind);
        }
        self.existing_controller(req, &kind)
    }

    fn subsystem_for(&self, req: &ConnectRequest) -> Result<ControllerKind, Refusal> {
        if req.subnqn == DISCOVERY_NQN {
            return Ok(ControllerKind::Discovery);
        }
        let Some(subsys) = self.target.registry.get(&req.subnqn) else {
            return Err(Refusal::param(
                true,
                OFF_SUBNQN,
                format!("unknown subsystem {:?}", req.subnqn),
            ));
        };
        if !subsys.host_allowed(&req.hostnqn) {
            return Err(Refusal {
                status: Status::CONNECT_INVALID_HOST,
                in_data: true,
                offset: OFF_HOSTNQN,
                why: format!("host {:?} is not allowed on {:?}", req.hostnqn, req.subnqn),
            });
        }
        if subsys.require_auth() && subsys.host_auth(&req.hostnqn).is_none() {
            self.target
                .gate
                .counters
                .auth_refused_connects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(Refusal {
                status: Status::AUTH_REQUIRED,
                in_data: true,
                offset: OFF_HOSTNQN,
                why: format!(
                    "{:?} requires authentication and host {:?} has no key",
                    req.subnqn, req.hostnqn
                ),
            });
        }
        Ok(ControllerKind::Io(subsys))
    }

    fn new_controller(
        &self,
        req: &ConnectRequest,
        kind: ControllerKind,
    ) -> Result<Arc<Controller>, Refusal> {
        if req.cntlid != CNTLID_DYNAMIC {
            return Err(Refusal::param(
                true,
                OFF_CNTLID,
                format!("admin Connect asked for controller {} (only the dynamic model, 0xFFFF, is served)", req.cntlid),
            ));
        }
        let Some(link) = &self.link else {
            return Err(Refusal::param(
                false,
                0,
                "connection not initialised".into(),
            ));
        };
        let kato = if matches!(kind, ControllerKind::Discovery) && req.kato_ms == 0 {
            0
        } else {
            req.kato_ms
        };
        self.target
            .create_controller(kind, req.hostnqn.clone(), req.hostid, kato, link.clone())
            .ok_or_else(|| Refusal {
                status: Status::CONNECT_CONTROLLER_BUSY,
                in_data: false,
                offset: 0,
                why: "no free controller ID".into(),
            })
    }

    fn existing_controller(
        &self,
        req: &ConnectRequest,
        kind: &ControllerKind,
    ) -> Result<Arc<Controller>, Refusal> {
        let refuse = |why: String| Refusal::param(true, OFF_CNTLID, why);
        let ctrl = self
            .target
            .controller(req.cntlid)
            .ok_or_else(|| refuse(format!("no controller {}", req.cntlid)))?;
        let same_subsystem = match (kind, &ctrl.kind) {
            (ControllerKind::Io(a), ControllerKind::Io(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !same_subsystem || ctrl.hostnqn != req.hostnqn || ctrl.hostid != req.hostid {
            return Err(refuse(format!(
                "controller {} belongs to another host or subsystem",
                req.cntlid
            )));
        }
        if !ctrl.is_ready() {
            return Err(refuse(format!("controller {} is not enabled", req.cntlid)));
        }
        let granted = ctrl.state().io_queues_granted;
        let limit = if granted == 0 {
            self.target.opts.max_io_queues
        } else {
            granted
        };
        if req.qid > limit {
            return Err(Refusal::param(
                false,
                OFF_QID,
                format!("queue {} beyond the {limit} I/O queues granted", req.qid),
            ));
        }
        Ok(ctrl)
    }

    /// Connect succeeded: this connection is now queue `req.qid`.
    fn become_queue(&mut self, cid: u16, req: ConnectRequest, ctrl: Arc<Controller>) {
        let Some(old) = self.link.take() else {
            return;
        };
        let link = if req.qid == 0 {
            ctrl.admin.clone()
        } else {
            // The link's qid is fixed at creation, so make the queue's own.
            match old.clone_for_queue(req.qid) {
                Ok(link) => Arc::new(link),
                Err(e) => {
                    self.link = Some(old);
                    tracing::warn!(error = %e, "could not set up queue");
                    self.complete(cid, Status::INTERNAL_ERROR, 0);
                    return;
                }
            }
        };
        if req.qid != 0 && !ctrl.add_io_queue(link.clone()) {
            self.link = Some(old);
            let refusal = Refusal::param(
                false,
                OFF_QID,
                format!("queue {} is already connected", req.qid),
            );
            self.complete(cid, refusal.status, refusal.result());
            return;
        }
        self.link = Some(link);
        tracing::info!(
            cntlid = ctrl.cntlid,
            qid = req.qid,
            subnqn = ctrl.subnqn(),
            hostnqn = %req.hostnqn,
            sqsize = req.sqsize,
            "queue connected"
        );
        ctrl.touch();
        let cntlid = ctrl.cntlid;
        self.queue = Some(QueueState {
            qid: req.qid,
            ctrl,
            sqsize: req.sqsize,
            sqhd: 0,
            sqflow_disabled: req.sqflow_disabled,
        });
        // DW0: the controller ID, plus AUTHREQ.ATR when the host has a key:
        // it must authenticate this queue before anything else.
        let mut dw0 = u32::from(cntlid);
        if self.host_has_key() {
            // Every queue that must authenticate holds the controller's
            // authentication deadline (and pauses its keep-alive timer: the
            // host sends no Keep Alive while it computes a DH value for a new
            // queue). `counted` makes its first success, or its close, end
            // that hold again; without it the deadline outlived the
            // authentication and tore the healthy controller down.
            self.auth = Some(super::auth_state::QueueAuth::new(true));
            dw0 |= ferrofab_nvmeof_wire::auth::CONNECT_ATR;
            if let Some(q) = &self.queue {
                q.ctrl
                    .begin_auth(std::time::Duration::from_millis(u64::from(
                        self.target.opts.auth_timeout_ms,
                    )));
            }
        }
        self.complete(cid, Status::SUCCESS, u64::from(dw0));
    }

    pub(crate) fn property_get(&mut self, sqe: Sqe) {
        let Some(ctrl) = self.queue.as_ref().map(|q| q.ctrl.clone()) else {
            return;
        };
        if let Err(status) = no_data(&sqe) {
            self.target.count_length_refusal();
            return self.complete(sqe.cid, status, 0);
        }
        let eight_bytes = sqe.cdw10 & 0x7 == 1;
        let offset = sqe.cdw11;
        let value = match offset {
            prop::CAP => Some(self.target.opts.cap()),
            prop::VS => Some(u64::from(super::NVME_VERSION)),
            prop::CC => Some(u64::from(ctrl.state().cc)),
            prop::CSTS => Some(u64::from(ctrl.state().csts)),
            prop::NSSR | prop::INTMS | prop::INTMC => Some(0),
            _ => None,
        };
        match value {
            Some(v) if eight_bytes || offset != prop::CAP => {
                let v = if eight_bytes { v } else { v & 0xFFFF_FFFF };
                self.complete(sqe.cid, Status::SUCCESS, v);
            }
            _ => self.complete(sqe.cid, Status::INVALID_FIELD, 0),
        }
    }

    pub(crate) fn property_set(&mut self, sqe: Sqe) {
        let Some(ctrl) = self.queue.as_ref().map(|q| q.ctrl.clone()) else {
            return;
        };
        if let Err(status) = no_data(&sqe) {
            self.target.count_length_refusal();
            return self.complete(sqe.cid, status, 0);
        }
        let offset = sqe.cdw11;
        let value = sqe.cdw12;
        if offset != prop::CC {
            self.complete(sqe.cid, Status::INVALID_FIELD, 0);
            return;
        }
        match ctrl.set_cc(value) {
            CcChange::None => {}
            CcChange::Reset => tracing::info!(cntlid = ctrl.cntlid, "controller reset by host"),
            CcChange::Shutdown => {
                // Data must be durable before the host is told the
                // shutdown is complete.
                if let Some(subsys) = ctrl.subsystem() {
                    for ns in subsys.namespaces() {
                        if let Err(e) = ns.backend.flush() {
                            tracing::error!(nsid = ns.nsid, error = %e, "flush at shutdown failed");
                        }
                    }
                }
                ctrl.shutdown_complete();
                tracing::info!(
                    cntlid = ctrl.cntlid,
                    shn = cc::shn(value),
                    "controller shut down by host"
                );
            }
        }
        self.complete(sqe.cid, Status::SUCCESS, 0);
    }
}

/// Property Get and Set carry their value in the command: an SGL with a
/// length is Data SGL Length Invalid.
fn no_data(sqe: &Sqe) -> Result<(), Status> {
    if sqe.sgl.length != 0 {
        return Err(Status::DATA_SGL_LENGTH_INVALID);
    }
    Ok(())
}

impl ConnLink {
    /// A link for an I/O queue on the same socket as this one.
    fn clone_for_queue(&self, qid: u16) -> std::io::Result<ConnLink> {
        Ok(ConnLink::new(
            self.try_clone_stream()?,
            self.peer,
            qid,
            self.digests,
        ))
    }
}
