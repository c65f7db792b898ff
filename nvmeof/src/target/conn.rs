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

use crate::spec::status::Status;
use crate::spec::{admin, fctype};
use crate::wire::command::{SGL_DATA_BLOCK_OFFSET, SGL_TRANSPORT_DATA_BLOCK};
use crate::wire::pdu::{
    self, encode_capsule_resp, encode_ic_resp, encode_r2t, encode_term_req, fes, pdu_type,
};
use crate::wire::{
    Cqe, DataHeader, DecodeStatus, Decoded, Digests, IcReq, IcResp, Pdu, PduError, R2t, Sqe,
};

use super::controller::Controller;
use super::socket::{read_some, ConnLink};
use super::TargetInner;

/// Flush the send buffer once it holds this much, even mid-batch, so a
/// burst of large reads does not pile up in memory.
const TX_FLUSH_THRESHOLD: usize = 256 * 1024;
/// Smallest receive buffer; it grows up to the largest PDU allowed.
const RX_MIN: usize = 64 * 1024;

/// Why a connection ends.
#[derive(Debug)]
pub(crate) enum Close {
    /// The peer broke the protocol; a termination request was queued.
    Protocol(String),
    /// The host asked (Disconnect) or the peer hung up.
    Orderly(&'static str),
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
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    pub(crate) tx: Vec<u8>,
    pub(crate) pending: HashMap<u16, PendingData>,
    /// Transfer tag → command ID of the outstanding R2Ts.
    pending_ttags: HashMap<u16, u16>,
    next_ttag: u16,
    disconnect_requested: bool,
    /// Commands of this connection being run by the I/O threads.
    pub(crate) in_flight: Arc<std::sync::atomic::AtomicUsize>,
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
            rx: vec![0; RX_MIN],
            rx_start: 0,
            rx_end: 0,
            tx: Vec::with_capacity(64 * 1024),
            pending: HashMap::new(),
            pending_ttags: HashMap::new(),
            next_ttag: 0,
            disconnect_requested: false,
            in_flight: Arc::default(),
        }
    }

    /// Serve the connection until it closes.
    pub(crate) fn run(mut self) {
        let span = tracing::debug_span!("conn", peer = %self.peer);
        let _enter = span.enter();
        // A bug must cost one connection, never the whole target.
        let reason = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve())) {
            Ok(r) => r,
            Err(_) => Ok(Close::Protocol(
                "internal error while serving the connection".into(),
            )),
        };
        match &reason {
            Ok(Close::Protocol(why)) => tracing::warn!(reason = %why, "connection terminated"),
            Ok(Close::Orderly(why)) => tracing::debug!(reason = why, "connection closed"),
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
            let n = read_some(&mut self.stream, &mut self.rx[self.rx_end..], mode)?;
            if n == 0 {
                return Ok(Close::Orderly("peer closed the connection"));
            }
            self.rx_end += n;
            let outcome = self.process_rx();
            self.flush_tx()?;
            if let Err(close) = outcome {
                return Ok(close);
            }
        }
    }

    /// Handle every complete PDU in the receive buffer.
    pub(crate) fn process_rx(&mut self) -> Result<(), Close> {
        // The buffer is moved out while PDUs borrowed from it are handled.
        let rx = std::mem::take(&mut self.rx);
        let result = self.process_buffer(&rx);
        self.rx = rx;
        let need = result?;
        self.ensure_rx_capacity(need);
        Ok(())
    }

    /// Returns how many bytes the next, incomplete PDU needs in all.
    fn process_buffer(&mut self, rx: &[u8]) -> Result<usize, Close> {
        loop {
            let buf = &rx[self.rx_start..self.rx_end];
            match pdu::decode(buf, self.digests, self.max_plen()) {
                Ok(DecodeStatus::Need(n)) => return Ok(n),
                Ok(DecodeStatus::Complete(d)) => {
                    self.rx_start += d.len;
                    self.handle_pdu(d)?;
                    if self.tx.len() >= TX_FLUSH_THRESHOLD {
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
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        } else if self.rx_end == self.rx.len() && self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        if self.rx_end == self.rx.len() {
            let grown = (self.rx.len() * 2).min(self.max_plen().max(RX_MIN) * 2);
            if grown > self.rx.len() {
                self.rx.resize(grown, 0);
            }
        }
    }

    /// Make sure a PDU of `need` bytes fits from `rx_start` on.
    fn ensure_rx_capacity(&mut self, need: usize) {
        if self.rx_start + need <= self.rx.len() {
            return;
        }
        self.rx.copy_within(self.rx_start..self.rx_end, 0);
        self.rx_end -= self.rx_start;
        self.rx_start = 0;
        if need > self.rx.len() {
            self.rx.resize(need.next_power_of_two(), 0);
        }
    }

    pub(crate) fn flush_tx(&mut self) -> io::Result<()> {
        if self.tx.is_empty() {
            return Ok(());
        }
        let result = match &self.link {
            Some(link) => link.send(&self.tx),
            // Before ICReq completes there is no shared link yet.
            None => super::socket::write_all(&mut self.stream, &self.tx),
        };
        self.tx.clear();
        if self.tx.capacity() > 4 * TX_FLUSH_THRESHOLD {
            self.tx.shrink_to(TX_FLUSH_THRESHOLD);
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

    /// Undo what this connection registered.
    fn cleanup(&mut self) {
        let Some(q) = self.queue.take() else {
            return;
        };
        if q.qid == 0 {
            q.ctrl.teardown("admin queue closed");
            self.target.forget_controller(q.ctrl.cntlid);
        } else if let Some(link) = &self.link {
            q.ctrl.remove_io_queue(q.qid, link);
        }
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
            .map_err(|e| super::io::backend_status(&e));
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
            let room = self.rx.len() - self.rx_end;
            let n = room.min(bytes.len());
            self.rx[self.rx_end..self.rx_end + n].copy_from_slice(&bytes[..n]);
            self.rx_end += n;
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
        self.rx.len()
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
        ns.offload && (self.rx_end > self.rx_start || self.in_flight.load(Ordering::Acquire) > 0)
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
