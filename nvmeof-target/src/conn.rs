//! The queue connection state machine: one TCP connection, one queue.
//!
//! A connection starts waiting for ICReq, becomes a queue at Connect, and
//! then serves commands until it closes. Each connection has its own
//! thread, which reads whatever the socket holds, handles every complete
//! PDU in it, and sends all the responses in one write: at queue depth 32
//! that turns 32 system calls into one. Backend I/O runs inline on the same
//! thread, so a 4 KiB read from the page cache is answered without any
//! hand-off between threads.
//!
//! Anything the peer gets wrong at the PDU level ends the connection with a
//! C2HTermReq; anything wrong inside a command fails that command with an
//! NVMe status and the connection goes on.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{admin, fctype};
use ferrofab_nvmeof_wire::wire::command::{SGL_DATA_BLOCK_OFFSET, SGL_TRANSPORT_DATA_BLOCK};
use ferrofab_nvmeof_wire::wire::pdu::{
    self, encode_capsule_resp, encode_ic_resp, encode_r2t, encode_term_req, fes, pdu_type,
};
use ferrofab_nvmeof_wire::wire::{
    Cqe, DataHeader, DecodeStatus, Decoded, Digests, IcReq, IcResp, Pdu, PduError, R2t, Sqe,
};

use super::limits::ConnPermit;
use super::registry::controller::Controller;
use super::rxbuf::RxBuf;
use super::socket::{read_some, ConnLink};
use super::TargetInner;

/// Flush the send buffer once it holds this much, even mid-batch, so a
/// burst of large reads does not pile up in memory.
const TX_FLUSH_THRESHOLD: usize = 256 * 1024;
/// Starting size of the send buffer.
const TX_INITIAL: usize = 64 * 1024;
/// A send buffer that grew past this (one large read answered in one
/// C2HData PDU) is given back after it is flushed, so an idle connection
/// never keeps more than this. It covers a read at the default MDTS (1 MiB)
/// on top of a flush threshold's worth of earlier replies, so ordinary
/// I/O never reallocates (each reallocation of a buffer this size is an
/// mmap and munmap, see [`release_memory`]); a larger `mdts_bytes` pays
/// that for reads above it.
const TX_KEEP: usize = 2 * 1024 * 1024;
/// A connection whose buffers ever grew past this asks the allocator to
/// return free memory to the OS when it closes (see [`release_memory`]).
const TRIM_AFTER: usize = 4 * 1024 * 1024;

/// The setup step a new connection is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetupStage {
    IcReq,
    Connect,
}

/// Why a connection ends.
#[derive(Debug)]
pub(crate) enum Close {
    /// The peer broke the protocol; a termination request was queued.
    Protocol(String),
    /// The host asked (Disconnect) or the peer hung up.
    Orderly(&'static str),
    /// The peer did not finish setting up in time. Logged at debug level
    /// only: a flood of idle connections must not flood the log as well
    /// (the metrics count them).
    SetupTimeout(String),
}

/// The queue this connection became at Connect.
#[derive(Debug)]
pub(crate) struct QueueState {
    pub qid: u16,
    pub ctrl: Arc<Controller>,
    /// 0-based submission queue size from Connect.
    pub sqsize: u16,
    pub sqhd: u16,
    /// The host disabled SQ flow control (Connect CATTR bit 2), which also
    /// allows completing reads with the C2HData SUCCESS flag.
    pub sqflow_disabled: bool,
}

/// Data the host still owes for a command, requested with one R2T.
#[derive(Debug)]
pub(crate) struct PendingData {
    pub sqe: Sqe,
    pub len: u32,
    pub received: u32,
    pub kind: PendingKind,
    /// Set when a piece arrived with a bad digest or failed to store: the
    /// rest is drained and the command then fails with this status.
    pub failed: Option<Status>,
}

#[derive(Debug)]
pub(crate) enum PendingKind {
    /// An NVM Write: aligned pieces go straight to the backend; from the
    /// first unaligned piece on, the rest is staged and written at the end.
    Write {
        ns: Arc<super::registry::Namespace>,
        offset: u64,
        staged_from: Option<u32>,
        staging: Vec<u8>,
    },
    /// Any other command with host-to-controller data: collected whole,
    /// then executed as if it had come in the capsule.
    Collect(Vec<u8>),
}

pub(crate) struct Conn {
    pub(crate) target: Arc<TargetInner>,
    stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) link: Option<Arc<ConnLink>>,
    pub(crate) digests: Digests,
    pub(crate) queue: Option<QueueState>,
    /// In-band authentication of this queue, when its host has a key.
    pub(crate) auth: Option<super::auth_state::QueueAuth>,
    rx: RxBuf,
    /// More received bytes follow the PDU being handled.
    rx_backlog: bool,
    pub(crate) tx: Vec<u8>,
    /// Reads from memory namespaces whose data goes out from the mapping,
    /// spliced into `tx` at the flush (`gather.rs`), and their bytes.
    pub(crate) tx_mem: Vec<super::gather::MemSend>,
    pub(crate) tx_mem_bytes: usize,
    /// Largest size either buffer reached, to decide on trimming at close.
    peak_buffer: usize,
    /// PDUs handled so far (the fuzzers count their inputs with it).
    pub(crate) pdus_handled: u64,
    pub(crate) pending: HashMap<u16, PendingData>,
    /// Transfer tag → command ID of the outstanding R2Ts.
    pending_ttags: HashMap<u16, u16>,
    next_ttag: u16,
    disconnect_requested: bool,
    /// Commands of this connection being run by the I/O threads.
    pub(crate) in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// The connection's slot under the target's connection caps, given
    /// back when the connection is dropped.
    permit: Option<ConnPermit>,
    /// When the connection was accepted (the ICReq timeout runs from here).
    accepted_at: Instant,
    /// When ICResp went out (the Connect timeout runs from here).
    icresp_at: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(
        target: Arc<TargetInner>,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Conn {
        Conn {
            target,
            stream,
            peer,
            local,
            link: None,
            digests: Digests::default(),
            queue: None,
            auth: None,
            rx: RxBuf::default(),
            rx_backlog: false,
            tx: Vec::with_capacity(TX_INITIAL),
            tx_mem: Vec::new(),
            tx_mem_bytes: 0,
            peak_buffer: 0,
            pdus_handled: 0,
            pending: HashMap::new(),
            pending_ttags: HashMap::new(),
            next_ttag: 0,
            disconnect_requested: false,
            in_flight: Arc::default(),
            permit: None,
            accepted_at: Instant::now(),
            icresp_at: None,
        }
    }

    /// Hold `permit` for as long as the connection lives.
    pub(crate) fn with_permit(mut self, permit: ConnPermit) -> Conn {
        self.permit = Some(permit);
        self
    }

    /// Until the host has connected a queue, how long it may still take:
    /// an ICReq within `icreq_timeout_ms` of the accept, a Connect within
    /// `connect_timeout_ms` of the ICResp. Without these, idle
    /// unauthenticated connections would hold a thread each forever.
    fn setup_deadline(&self) -> Option<(Instant, SetupStage)> {
        if self.queue.is_some() {
            return None;
        }
        let opts = &self.target.opts;
        Some(match self.icresp_at {
            None => (self.accepted_at + opts.icreq_timeout(), SetupStage::IcReq),
            Some(at) => (at + opts.connect_timeout(), SetupStage::Connect),
        })
    }

    /// Count a setup timeout and say what timed out.
    fn setup_timed_out(&self, stage: SetupStage) -> Close {
        let c = &self.target.gate.counters;
        match stage {
            SetupStage::IcReq => {
                c.icreq_timeouts.fetch_add(1, Ordering::Relaxed);
                Close::SetupTimeout(format!(
                    "no ICReq within icreq_timeout_ms = {}",
                    self.target.opts.icreq_timeout_ms
                ))
            }
            SetupStage::Connect => {
                c.connect_timeouts.fetch_add(1, Ordering::Relaxed);
                Close::SetupTimeout(format!(
                    "no Connect within connect_timeout_ms = {} of the ICResp",
                    self.target.opts.connect_timeout_ms
                ))
            }
        }
    }

    /// Serve the connection until it closes.
    pub(crate) fn run(mut self) {
        let span = tracing::debug_span!("conn", peer = %self.peer);
        let _enter = span.enter();
        // A bug must cost one connection, never the whole target.
        let reason = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve())) {
            Ok(r) => r,
            Err(_) => {
                // A bug: logged at error level so that runs which silence
                // the per-connection warnings (the fuzzers) still see it.
                tracing::error!("internal error (panic) while serving the connection");
                Ok(Close::Protocol(
                    "internal error while serving the connection".into(),
                ))
            }
        };
        match &reason {
            Ok(Close::Protocol(why)) => tracing::warn!(reason = %why, "connection terminated"),
            Ok(Close::Orderly(why)) => tracing::debug!(reason = why, "connection closed"),
            Ok(Close::SetupTimeout(why)) => tracing::debug!(reason = %why, "connection timed out"),
            Err(e) => tracing::debug!(error = %e, "connection lost"),
        }
        self.cleanup();
    }

    fn serve(&mut self) -> io::Result<Close> {
        loop {
            self.make_rx_room();
            let mode = self
                .target
                .poll_mode(self.queue.as_ref().map_or(0, |q| q.qid));
            let deadline = self.setup_deadline();
            let n = match read_some(
                &mut self.stream,
                self.rx.spare(),
                mode,
                deadline.map(|d| d.0),
            ) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    let stage = deadline.map_or(SetupStage::IcReq, |d| d.1);
                    return Ok(self.setup_timed_out(stage));
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(Close::Orderly("peer closed the connection"));
            }
            self.rx.filled(n);
            let outcome = self.process_rx();
            self.flush_tx()?;
            if let Err(close) = outcome {
                return Ok(close);
            }
        }
    }

    /// Handle every complete PDU in the receive buffer.
    pub(crate) fn process_rx(&mut self) -> Result<(), Close> {
        // The buffer is moved out while PDUs borrowed from it are handled
        // (the placeholder allocates nothing).
        let mut rx = std::mem::replace(&mut self.rx, RxBuf::empty());
        let mut consumed = 0;
        let result = self.process_buffer(rx.pending(), &mut consumed);
        rx.consume(consumed);
        self.rx = rx;
        self.rx_backlog = false;
        let need = result?;
        self.rx.ensure(need);
        self.peak_buffer = self.peak_buffer.max(self.rx.capacity());
        self.rx.shrink_if_drained();
        Ok(())
    }

    /// Handle the complete PDUs at the front of `pending`, counting the
    /// bytes handled in `consumed`. Returns how many bytes the next,
    /// incomplete PDU needs in all.
    fn process_buffer(&mut self, pending: &[u8], consumed: &mut usize) -> Result<usize, Close> {
        loop {
            let buf = &pending[*consumed..];
            match pdu::decode(buf, self.digests, self.max_plen()) {
                Ok(DecodeStatus::Need(n)) => return Ok(n),
                Ok(DecodeStatus::Complete(d)) => {
                    *consumed += d.len;
                    self.rx_backlog = *consumed < pending.len();
                    self.pdus_handled += 1;
                    self.handle_pdu(d)?;
                    if self.tx.len() >= TX_FLUSH_THRESHOLD || self.tx_mem_full() {
                        self.flush_tx().map_err(|_| Close::Orderly("send failed"))?;
                    }
                }
                Err(e) => return Err(self.terminate(&e, buf)),
            }
        }
    }

    /// Queue a C2HTermReq for a framing error.
    fn terminate(&mut self, err: &PduError, offending: &[u8]) -> Close {
        let hlen = offending.get(2).copied().unwrap_or(8).max(8) as usize;
        let quoted = &offending[..offending.len().min(hlen)];
        encode_term_req(
            &mut self.tx,
            pdu_type::C2H_TERM_REQ,
            err.fes(),
            err.fei(),
            quoted,
        );
        Close::Protocol(err.to_string())
    }

    fn protocol_error(&mut self, what: String, fes_code: u16) -> Close {
        encode_term_req(&mut self.tx, pdu_type::C2H_TERM_REQ, fes_code, 0, &[]);
        Close::Protocol(what)
    }

    /// Largest PDU accepted: a capsule with in-capsule data, or an
    /// H2CData PDU, plus headers and digests.
    fn max_plen(&self) -> usize {
        let opts = &self.target.opts;
        let admin = self.queue.as_ref().is_none_or(|q| q.qid == 0);
        let capsule_data = if admin {
            opts.admin_in_capsule_data()
        } else {
            opts.in_capsule_data as usize
        };
        let data = capsule_data.max(opts.max_h2c_data as usize);
        data + 72 + 8
    }

    fn make_rx_room(&mut self) {
        let limit = self.max_plen() * 2;
        self.rx.make_room(limit);
    }

    /// Whether the reads queued from memory namespaces should go out now
    /// (`gather::MAX_MEM_READS`, `gather::MEM_FLUSH_BYTES`).
    fn tx_mem_full(&self) -> bool {
        self.tx_mem.len() >= super::gather::MAX_MEM_READS
            || self.tx_mem_bytes >= super::gather::MEM_FLUSH_BYTES
    }

    pub(crate) fn flush_tx(&mut self) -> io::Result<()> {
        if self.tx.is_empty() && self.tx_mem.is_empty() {
            return Ok(());
        }
        let result = match &self.link {
            Some(link) if !self.tx_mem.is_empty() => link.send_gathered(&self.tx, &self.tx_mem),
            Some(link) => link.send(&self.tx),
            // Before ICReq completes there is no shared link yet (and no
            // queue, so no read has queued data from memory).
            None => super::socket::write_all(&mut self.stream, &self.tx),
        };
        self.tx.clear();
        self.tx_mem.clear();
        self.tx_mem_bytes = 0;
        self.peak_buffer = self.peak_buffer.max(self.tx.capacity());
        if self.tx.capacity() > TX_KEEP {
            // A fresh, small buffer: the large block is freed whole.
            self.tx = Vec::with_capacity(TX_INITIAL);
        }
        result
    }

    fn handle_pdu(&mut self, d: Decoded<'_>) -> Result<(), Close> {
        if self.link.is_none() {
            return match d.pdu {
                Pdu::IcReq(req) => self.handle_ic_req(req),
                _ => {
                    Err(self
                        .protocol_error("first PDU was not ICReq".into(), fes::PDU_SEQUENCE_ERROR))
                }
            };
        }
        match d.pdu {
            Pdu::CapsuleCmd { sqe, data } => {
                self.handle_capsule(sqe, data, d.data_digest_ok);
                self.check_disconnect()
            }
            Pdu::H2cData { hdr, last, data } => {
                self.handle_h2c_data(hdr, last, data, d.data_digest_ok)
            }
            Pdu::H2cTermReq(t) => Err(Close::Protocol(format!(
                "host terminated the connection (fes {:#x}, fei {})",
                t.fes, t.fei
            ))),
            other => Err(self.protocol_error(
                format!("unexpected PDU from host: {other:?}"),
                fes::PDU_SEQUENCE_ERROR,
            )),
        }
    }

    fn handle_ic_req(&mut self, req: IcReq) -> Result<(), Close> {
        if req.pfv != 0 {
            return Err(self.protocol_error(
                format!("unsupported PDU format version {}", req.pfv),
                fes::UNSUPPORTED_PARAMETER,
            ));
        }
        if req.hpda != 0 {
            // Data is always placed right after the header (CPDA 0); a host
            // that needs padding before data is not supported.
            return Err(self.protocol_error(
                format!("unsupported host PDU data alignment {}", req.hpda),
                fes::UNSUPPORTED_PARAMETER,
            ));
        }
        let digests = req.digests;
        encode_ic_resp(
            &mut self.tx,
            &IcResp {
                pfv: 0,
                cpda: 0,
                digests,
                maxh2cdata: self.target.opts.max_h2c_data,
            },
        );
        // The ICResp goes out in one write before anything else, and
        // before digests apply.
        self.flush_tx().map_err(|_| Close::Orderly("send failed"))?;
        let writer = self
            .stream
            .try_clone()
            .map_err(|_| Close::Orderly("could not clone socket"))?;
        self.digests = digests;
        self.link = Some(Arc::new(ConnLink::new(writer, self.peer, 0, digests)));
        self.icresp_at = Some(Instant::now());
        tracing::debug!(
            hdgst = digests.header,
            ddgst = digests.data,
            "connection initialised"
        );
        Ok(())
    }

    /// After a Disconnect command the connection closes once its
    /// response is out.
    fn check_disconnect(&mut self) -> Result<(), Close> {
        if self.disconnect_requested {
            return Err(Close::Orderly("host sent Disconnect"));
        }
        Ok(())
    }

    fn handle_capsule(&mut self, sqe: Sqe, data: &[u8], data_digest_ok: bool) {
        if let Some(q) = &mut self.queue {
            q.sqhd = if q.sqhd >= q.sqsize { 0 } else { q.sqhd + 1 };
            if let Some(link) = &self.link {
                link.sqhd.store(q.sqhd, Ordering::Relaxed);
            }
            q.ctrl.touch();
        }
        if !data_digest_ok {
            self.complete(sqe.cid, Status::TRANSIENT_TRANSPORT_ERROR, 0);
            return;
        }
        let inline = match self.inline_data(&sqe, data) {
            Ok(inline) => inline,
            Err(status) => {
                self.complete(sqe.cid, status, 0);
                return;
            }
        };
        self.dispatch(sqe, inline);
    }

    /// Where a command's host-to-controller data is: `Some` when it came in
    /// the capsule, `None` when it is to be fetched with R2T (or there is
    /// none).
    fn inline_data<'a>(&self, sqe: &Sqe, data: &'a [u8]) -> Result<Option<&'a [u8]>, Status> {
        match sqe.sgl.id {
            SGL_DATA_BLOCK_OFFSET => {
                let start =
                    usize::try_from(sqe.sgl.address).map_err(|_| Status::SGL_OFFSET_INVALID)?;
                let len = sqe.sgl.length as usize;
                let limit = if self.is_admin() || sqe.opcode == admin::FABRICS {
                    self.target.opts.admin_in_capsule_data()
                } else {
                    self.target.opts.in_capsule_data as usize
                };
                if len > limit {
                    return Err(Status::DATA_SGL_LENGTH_INVALID);
                }
                // The offset is the host's: a sum past usize::MAX must be
                // refused, not overflow.
                start
                    .checked_add(len)
                    .and_then(|end| data.get(start..end))
                    .map(Some)
                    .ok_or(Status::DATA_SGL_LENGTH_INVALID)
            }
            SGL_TRANSPORT_DATA_BLOCK if data.is_empty() => Ok(None),
            SGL_TRANSPORT_DATA_BLOCK => Err(Status::SGL_OFFSET_INVALID),
            _ => Err(Status::SGL_TYPE_INVALID),
        }
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.queue.as_ref().is_none_or(|q| q.qid == 0)
    }

    /// Route a command to its handler.
    pub(crate) fn dispatch(&mut self, sqe: Sqe, data: Option<&[u8]>) {
        if sqe.opcode == admin::FABRICS {
            self.fabrics_command(sqe, data);
            return;
        }
        if self.queue.is_none() {
            // Nothing but Connect is allowed before Connect.
            self.complete(sqe.cid, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        if self.refuse_unauthenticated(&sqe) {
            return;
        }
        if self.is_admin() {
            self.admin_command(sqe, data);
        } else {
            self.io_command(sqe, data);
        }
    }

    fn fabrics_command(&mut self, sqe: Sqe, data: Option<&[u8]>) {
        match (sqe.fctype(), self.queue.is_some()) {
            (fctype::CONNECT, false) => self.connect(sqe, data),
            (fctype::CONNECT, true) => self.complete(sqe.cid, Status::COMMAND_SEQUENCE_ERROR, 0),
            (_, false) => self.complete(sqe.cid, Status::COMMAND_SEQUENCE_ERROR, 0),
            (fctype::AUTH_SEND, true) => self.auth_send(sqe, data),
            (fctype::AUTH_RECV, true) => self.auth_recv(sqe),
            (fctype::PROPERTY_GET | fctype::PROPERTY_SET, true)
                if self.refuse_unauthenticated(&sqe) => {}
            (fctype::PROPERTY_GET, true) if self.is_admin() => self.property_get(sqe),
            (fctype::PROPERTY_SET, true) if self.is_admin() => self.property_set(sqe),
            (fctype::DISCONNECT, true) => {
                self.complete(sqe.cid, Status::SUCCESS, 0);
                self.disconnect_requested = true;
            }
            _ => self.complete(sqe.cid, Status::INVALID_OPCODE, 0),
        }
    }

    /// Queue a CapsuleResp.
    pub(crate) fn complete(&mut self, cid: u16, status: Status, result: u64) {
        let (sqhd, sqid) = self.queue.as_ref().map_or((0, 0), |q| (q.sqhd, q.qid));
        if !status.is_success() {
            tracing::debug!(cid, status = %status, "command failed");
        }
        let cqe = Cqe {
            result,
            sqhd,
            sqid,
            cid,
            status: status.to_field(),
        };
        encode_capsule_resp(&mut self.tx, &cqe, self.digests);
    }

    /// Send `data` to the host for command `sqe` (C2HData), then its
    /// successful completion. Never sends more than the host's buffer
    /// (the SGL length) holds.
    pub(crate) fn send_to_host(&mut self, sqe: &Sqe, data: &[u8], result: u64) {
        let len = data.len().min(sqe.sgl.length as usize);
        if len > 0 {
            let hdr = DataHeader {
                cccid: sqe.cid,
                ttag: 0,
                datao: 0,
                datal: len as u32,
            };
            let success = self.use_success_flag() && result == 0;
            let extra = pdu::flags::LAST_PDU | if success { pdu::flags::SUCCESS } else { 0 };
            pdu::encode_data_pdu(
                &mut self.tx,
                pdu_type::C2H_DATA,
                &hdr,
                extra,
                &data[..len],
                self.digests,
            );
            if success {
                return;
            }
        }
        self.complete(sqe.cid, Status::SUCCESS, result);
    }

    /// The SUCCESS flag may replace the CapsuleResp only when the host
    /// disabled SQ flow control.
    pub(crate) fn use_success_flag(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| q.sqflow_disabled)
    }

    /// Ask the host for a command's data with one R2T covering all of it.
    pub(crate) fn request_data(&mut self, sqe: Sqe, kind: PendingKind) {
        if self.pending.contains_key(&sqe.cid)
            || self.pending.len() >= self.target.opts.queue_depth as usize
        {
            self.complete(sqe.cid, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        // Tags wrap after 65536 transfers; never reuse one still awaiting
        // data (a host may leave a transfer hanging). At most queue_depth
        // are pending, so this ends quickly.
        let mut ttag = self.next_ttag;
        while self.pending_ttags.contains_key(&ttag) {
            ttag = ttag.wrapping_add(1);
        }
        self.next_ttag = ttag.wrapping_add(1);
        let len = sqe.sgl.length;
        encode_r2t(
            &mut self.tx,
            &R2t {
                cccid: sqe.cid,
                ttag,
                r2to: 0,
                r2tl: len,
            },
            self.digests,
        );
        self.pending.insert(
            sqe.cid,
            PendingData {
                sqe,
                len,
                received: 0,
                kind,
                failed: None,
            },
        );
        self.pending_ttags.insert(ttag, sqe.cid);
    }

    fn handle_h2c_data(
        &mut self,
        hdr: DataHeader,
        last: bool,
        data: &[u8],
        digest_ok: bool,
    ) -> Result<(), Close> {
        let cid = match self.check_h2c_data(&hdr) {
            Ok(cid) => cid,
            Err((why, code)) => return Err(self.protocol_error(why, code)),
        };
        let Some(p) = self.pending.get_mut(&cid) else {
            return Err(self.protocol_error(
                format!("H2CData for unknown command {cid}"),
                fes::INVALID_HEADER_FIELD,
            ));
        };
        if !digest_ok && p.failed.is_none() {
            p.failed = Some(Status::TRANSIENT_TRANSPORT_ERROR);
        }
        if p.failed.is_none() {
            if let Err(status) = store_piece(p, hdr.datao, data) {
                p.failed = Some(status);
            }
        }
        p.received += hdr.datal;
        let done = p.received == p.len;
        if last != done {
            return Err(self.protocol_error(
                "H2CData LAST flag disagrees with the data received".into(),
                fes::PDU_SEQUENCE_ERROR,
            ));
        }
        if done {
            self.pending_ttags.remove(&hdr.ttag);
            if let Some(p) = self.pending.remove(&cid) {
                self.finish_pending(p);
            }
        }
        Ok(())
    }

    /// Check an H2CData header against the R2T it answers. Returns the
    /// command ID, or what is wrong and the termination code.
    fn check_h2c_data(&self, hdr: &DataHeader) -> Result<u16, (String, u16)> {
        let Some(&cid) = self.pending_ttags.get(&hdr.ttag) else {
            return Err((
                format!("H2CData for unknown transfer tag {}", hdr.ttag),
                fes::INVALID_HEADER_FIELD,
            ));
        };
        let Some(p) = self.pending.get(&cid) else {
            return Err((
                format!("H2CData for unknown command {cid}"),
                fes::INVALID_HEADER_FIELD,
            ));
        };
        let max = self.target.opts.max_h2c_data;
        if hdr.cccid != cid {
            return Err((
                format!(
                    "H2CData cccid {} does not match transfer tag {}",
                    hdr.cccid, hdr.ttag
                ),
                fes::INVALID_HEADER_FIELD,
            ));
        }
        if hdr.datal > max {
            return Err((
                format!("H2CData of {} bytes exceeds MAXH2CDATA {max}", hdr.datal),
                fes::DATA_LIMIT_EXCEEDED,
            ));
        }
        if hdr.datao != p.received || u64::from(hdr.datao) + u64::from(hdr.datal) > u64::from(p.len)
        {
            return Err((
                format!(
                    "H2CData offset {} length {} outside the expected range (next offset {}, total {})",
                    hdr.datao, hdr.datal, p.received, p.len
                ),
                fes::DATA_OUT_OF_RANGE,
            ));
        }
        Ok(cid)
    }

    fn finish_pending(&mut self, p: PendingData) {
        if let Some(status) = p.failed {
            self.complete(p.sqe.cid, status, 0);
            return;
        }
        match p.kind {
            PendingKind::Write {
                ns,
                offset,
                staged_from: Some(0),
                staging,
            } if self.offload_now(&ns) => {
                let durable = self.write_must_be_durable(&p.sqe);
                self.offload(
                    &p.sqe,
                    ns,
                    super::executor::JobKind::Write {
                        offset,
                        data: staging,
                        durable,
                    },
                );
            }
            PendingKind::Write {
                ns,
                offset,
                staged_from,
                staging,
            } => {
                let status = self.finish_write(&p.sqe, &ns, offset, staged_from, &staging);
                self.complete(p.sqe.cid, status, 0);
            }
            PendingKind::Collect(buf) => self.dispatch(p.sqe, Some(&buf)),
        }
    }

    /// Undo what this connection registered, and give memory back.
    fn cleanup(&mut self) {
        // Unsent reads hold their namespaces' memory: let it go now.
        self.tx_mem = Vec::new();
        if self.peak_buffer > TRIM_AFTER {
            self.rx = RxBuf::empty();
            self.tx = Vec::new();
            release_memory();
        }
        let Some(q) = self.queue.take() else {
            return;
        };
        if self.auth.as_ref().is_some_and(|a| a.counted) {
            q.ctrl.end_auth();
        }
        if q.qid == 0 {
            q.ctrl.teardown("admin queue closed");
            self.target.forget_controller(q.ctrl.cntlid);
        } else if let Some(link) = &self.link {
            q.ctrl.remove_io_queue(q.qid, link);
        }
    }
}

/// Make every allocation of 1 MiB or more its own mapping, for the whole
/// process, so that freeing a large connection buffer returns it to the
/// OS at once.
///
/// glibc otherwise raises its mapping threshold each time such a block is
/// freed (up to 32 MiB), after which large buffers come from per-thread
/// arenas and stay resident when freed: 16 idle connections that had each
/// received one 8 MiB PDU kept 50 MiB even with their buffers shrunk.
/// Setting the threshold explicitly turns that adjustment off.
pub(crate) fn map_large_buffers_separately() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator tuning; it is safe to
        // call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, super::rxbuf::RX_KEEP as libc::c_int);
        }
    });
}

/// Ask the allocator to hand free memory back to the OS.
///
/// Freed buffers of closed connections otherwise stay in glibc's
/// per-thread arenas (and large blocks stop being mapped on their own once
/// the allocator's dynamic threshold rose past them), so RSS stayed high
/// long after the connections that sent large PDUs were gone. Called only
/// when a connection that grew large buffers closes, so it is rare.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and is safe to call at any
    // time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Store one piece of a write's data as it arrives.
fn store_piece(p: &mut PendingData, datao: u32, data: &[u8]) -> Result<(), Status> {
    let PendingKind::Write {
        ns,
        offset,
        staged_from,
        staging,
    } = &mut p.kind
    else {
        if let PendingKind::Collect(buf) = &mut p.kind {
            buf.extend_from_slice(data);
        }
        return Ok(());
    };
    let bs = ns.block_size;
    let aligned = datao.is_multiple_of(bs) && (data.len() as u32).is_multiple_of(bs);
    if staged_from.is_none() && aligned {
        let at = *offset + u64::from(datao);
        return ns
            .backend
            .write_at(data, at)
            .map_err(|e| super::executor::backend_status(&e));
    }
    if staged_from.is_none() {
        *staged_from = Some(datao);
    }
    if staging.is_empty() {
        staging.reserve_exact((p.len - datao) as usize);
    }
    staging.extend_from_slice(data);
    Ok(())
}

#[cfg(any(test, feature = "fuzzing"))]
impl Conn {
    /// Feed bytes as if they had arrived on the socket, in the pieces the
    /// receive buffer has room for, exactly as [`Conn::serve`] reads them.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Close> {
        while !bytes.is_empty() {
            self.make_rx_room();
            let spare = self.rx.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            self.rx.filled(n);
            bytes = &bytes[n..];
            self.process_rx()?;
        }
        Ok(())
    }

    pub(crate) fn close_for_test(mut self) {
        self.cleanup();
    }
}

#[cfg(test)]
impl Conn {
    pub(crate) fn rx_capacity(&self) -> usize {
        self.rx.capacity()
    }

    pub(crate) fn tx_capacity(&self) -> usize {
        self.tx.capacity()
    }

    pub(crate) fn link_established(&self) -> bool {
        self.link.is_some()
    }
}

impl Conn {
    /// Whether to run this command's backend I/O on the I/O threads.
    ///
    /// Only for namespaces that bypass the page cache, and only while the
    /// queue is busy: more commands already received behind this one, or
    /// others still on the I/O threads. A command alone on its queue runs
    /// inline, because handing it to another thread would add a wake-up
    /// to its latency and gain no parallelism.
    pub(crate) fn offload_now(&self, ns: &super::registry::Namespace) -> bool {
        ns.offload && (self.rx_backlog || self.in_flight.load(Ordering::Acquire) > 0)
    }

    /// Hand a command's backend I/O to the I/O threads, which answer the
    /// host themselves.
    pub(crate) fn offload(
        &mut self,
        sqe: &Sqe,
        ns: Arc<super::registry::Namespace>,
        kind: super::executor::JobKind,
    ) {
        let (Some(executor), Some(link), Some(q)) =
            (&self.target.executor, &self.link, &self.queue)
        else {
            self.complete(sqe.cid, Status::INTERNAL_ERROR, 0);
            return;
        };
        let success_flag =
            q.sqflow_disabled && matches!(kind, super::executor::JobKind::Read { .. });
        ns.stats.offloaded.fetch_add(1, Ordering::Relaxed);
        executor.submit(super::executor::Job {
            kind,
            ns,
            reply: super::executor::Reply {
                link: link.clone(),
                cid: sqe.cid,
                sqid: q.qid,
                success_flag,
                in_flight: self.in_flight.clone(),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed;
    use crate::{Target, TargetOptions};
    use ferrofab_nvmeof_wire::spec::{nvm, prop};
    use ferrofab_nvmeof_wire::wire::{IcReq, Sgl};

    const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000b1";
    const NQN: &str = "nqn.2026-11.io.ferrofab:buffers";
    const BIG: u32 = 8 << 20;

    fn target(dir: &std::path::Path) -> Target {
        let target = Target::new(TargetOptions {
            max_h2c_data: BIG,
            mdts_bytes: BIG,
            // The large read must go through the send buffer.
            sendfile_min_bytes: 0,
            ..TargetOptions::default()
        })
        .unwrap();
        testbed::add_subsystem(&target, NQN, HOST);
        testbed::add_file_namespace(&target, NQN, &dir.join("ns1.img"), 32 << 20);
        target
    }

    /// A connection whose peer drains everything it is sent.
    fn conn(target: &Target) -> Conn {
        testbed::drained_conn(target).unwrap()
    }

    fn capsule(sqe: &Sqe, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        pdu::encode_capsule_cmd(&mut out, sqe, data, Digests::default());
        out
    }

    fn setup(c: &mut Conn, qid: u16, cntlid: u16) {
        let mut out = Vec::new();
        pdu::encode_ic_req(
            &mut out,
            &IcReq {
                pfv: 0,
                hpda: 0,
                digests: Digests::default(),
                maxr2t: 0,
            },
        );
        let mut data = vec![0u8; 1024];
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        data[256..256 + NQN.len()].copy_from_slice(NQN.as_bytes());
        data[512..512 + HOST.len()].copy_from_slice(HOST.as_bytes());
        out.extend(capsule(
            &Sqe {
                opcode: admin::FABRICS,
                cid: 1,
                nsid: u32::from(fctype::CONNECT),
                cdw10: u32::from(qid) << 16,
                cdw11: 31,
                cdw12: if qid == 0 { 30_000 } else { 0 },
                sgl: Sgl {
                    address: 0,
                    length: 1024,
                    id: SGL_DATA_BLOCK_OFFSET,
                },
                ..Default::default()
            },
            &data,
        ));
        if qid == 0 {
            out.extend(capsule(
                &Sqe {
                    opcode: admin::FABRICS,
                    cid: 2,
                    nsid: u32::from(fctype::PROPERTY_SET),
                    cdw11: prop::CC,
                    cdw12: (6 << 16) | (4 << 20) | 1,
                    sgl: Sgl {
                        id: SGL_TRANSPORT_DATA_BLOCK,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                &[],
            ));
        }
        c.feed(&out).unwrap();
        c.flush_tx().unwrap();
        assert!(c.queue.is_some(), "queue {qid} connected");
    }

    fn rw(opcode: u8, cid: u16, len: u32) -> Sqe {
        Sqe {
            opcode,
            cid,
            nsid: 1,
            cdw10: 0,
            cdw12: len / 512 - 1,
            sgl: Sgl {
                address: 0,
                length: len,
                id: SGL_TRANSPORT_DATA_BLOCK,
            },
            ..Default::default()
        }
    }

    /// Item 3 of issue 12: buffers grown for one large PDU go back to
    /// their small size once it is handled, so idle connections do not
    /// each pin the largest PDU allowed.
    #[test]
    fn buffers_shrink_back_after_a_large_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(dir.path());
        let mut admin = conn(&target);
        setup(&mut admin, 0, 0xFFFF);
        let cntlid = admin.queue.as_ref().unwrap().ctrl.cntlid;
        let mut io = conn(&target);
        setup(&mut io, 1, cntlid);

        // An 8 MiB write: one R2T (transfer tag 0), one 8 MiB H2CData.
        io.feed(&capsule(&rw(nvm::WRITE, 7, BIG), &[])).unwrap();
        let mut h2c = Vec::new();
        let hdr = DataHeader {
            cccid: 7,
            ttag: 0,
            datao: 0,
            datal: BIG,
        };
        let payload = vec![0x5Au8; BIG as usize];
        pdu::encode_data_pdu(
            &mut h2c,
            pdu::pdu_type::H2C_DATA,
            &hdr,
            pdu::flags::LAST_PDU,
            &payload,
            Digests::default(),
        );
        // In two pieces, so the buffer has to grow to hold the PDU.
        io.feed(&h2c[..h2c.len() / 2]).unwrap();
        assert!(io.rx_capacity() >= BIG as usize, "grew for the PDU");
        io.feed(&h2c[h2c.len() / 2..]).unwrap();
        io.flush_tx().unwrap();
        assert!(io.pending.is_empty(), "write completed");
        assert_eq!(io.rx_capacity(), super::super::rxbuf::RX_MIN);

        // An 8 MiB read: one 8 MiB C2HData in the send buffer.
        io.feed(&capsule(&rw(nvm::READ, 8, BIG), &[])).unwrap();
        io.flush_tx().unwrap();
        assert!(
            io.tx_capacity() <= TX_KEEP,
            "send buffer kept {} bytes",
            io.tx_capacity()
        );
        assert!(io.peak_buffer >= BIG as usize);
        io.close_for_test();
        admin.close_for_test();
    }
}
