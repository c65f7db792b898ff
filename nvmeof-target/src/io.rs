//! NVM command set: Read, Write, Flush, Write Zeroes and Dataset
//! Management, executed against the namespace's backend.
//!
//! Every command is bounds-checked against the namespace size before the
//! backend sees it, so no request can touch data outside its namespace.

use std::sync::Arc;
use std::time::Instant;

use ferrofab_nvmeof_wire::spec::nvm;
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::wire::pdu::{self, begin_data_pdu, finish_data_pdu, pdu_type};
use ferrofab_nvmeof_wire::wire::{DataHeader, Sqe};

use super::backend::BackendError;
use super::conn::{Conn, PendingKind};
use super::executor::{backend_status, JobKind};
use super::registry::Namespace;

/// The broadcast NSID: Flush applies to every namespace.
const NSID_ALL: u32 = 0xFFFF_FFFF;
/// Size of one Dataset Management range.
const DSM_RANGE_LEN: usize = 16;

impl Conn {
    pub(crate) fn io_command(&mut self, sqe: Sqe, data: Option<&[u8]>) {
        if let Err(status) = check_io_transfer(&sqe, data) {
            self.target.count_length_refusal();
            return self.complete(sqe.cid, status, 0);
        }
        if sqe.opcode == nvm::FLUSH {
            self.flush(&sqe);
            return;
        }
        let Some(ns) = self.namespace(sqe.nsid) else {
            self.complete(sqe.cid, Status::INVALID_NAMESPACE, 0);
            return;
        };
        if is_write_class(sqe.opcode) && self.write_protected() {
            self.target.count_write_protected();
            return self.complete(sqe.cid, Status::NAMESPACE_WRITE_PROTECTED, 0);
        }
        match sqe.opcode {
            nvm::READ => self.read(&sqe, &ns),
            nvm::WRITE => self.write(sqe, ns, data),
            nvm::WRITE_ZEROES => self.write_zeroes(&sqe, &ns),
            nvm::DATASET_MANAGEMENT => self.dataset_management(sqe, ns, data),
            _ => self.complete(sqe.cid, Status::INVALID_OPCODE, 0),
        }
    }

    /// Whether this queue's host may only read.
    fn write_protected(&self) -> bool {
        self.queue
            .as_ref()
            .is_some_and(|q| q.ctrl.write_protected())
    }

    fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.queue.as_ref()?.ctrl.subsystem()?.namespace(nsid)
    }

    /// Check an LBA range and return its byte offset and length.
    fn lba_range(&self, sqe: &Sqe, ns: &Namespace) -> Result<(u64, usize), Status> {
        let slba = sqe.slba();
        let nlb = u64::from(sqe.nlb());
        let end = slba.checked_add(nlb).ok_or(Status::LBA_OUT_OF_RANGE)?;
        if end > ns.nblocks() {
            return Err(Status::LBA_OUT_OF_RANGE);
        }
        let shift = ns.block_shift();
        Ok((slba << shift, (nlb << shift) as usize))
    }

    /// Check a data transfer: within MDTS and matching the SGL length.
    fn transfer_len(&self, sqe: &Sqe, ns: &Namespace) -> Result<(u64, usize), Status> {
        let (offset, len) = self.lba_range(sqe, ns)?;
        if len > self.target.opts.mdts_bytes as usize {
            self.target.count_length_refusal();
            return Err(Status::INVALID_FIELD);
        }
        if sqe.sgl.length as usize != len {
            self.target.count_length_refusal();
            return Err(Status::DATA_SGL_LENGTH_INVALID);
        }
        Ok((offset, len))
    }

    /// Read straight from the backend into the send buffer, behind a
    /// C2HData header: one copy from storage to the socket, with no
    /// zeroing pass before it (`read_append`). Large reads from a file in
    /// memory go out with `sendfile`, reads from a memory namespace
    /// straight from its mapping at the flush (`memory_read`).
    fn read(&mut self, sqe: &Sqe, ns: &Arc<Namespace>) {
        let (offset, len) = match self.transfer_len(sqe, ns) {
            Ok(r) => r,
            Err(status) => return self.complete(sqe.cid, status, 0),
        };
        if self.offload_now(ns) {
            return self.offload(sqe, ns.clone(), JobKind::Read { offset, len });
        }
        let started = Instant::now();
        let success = self.use_success_flag();
        let hdr = DataHeader {
            cccid: sqe.cid,
            ttag: 0,
            datao: 0,
            datal: len as u32,
        };
        let rollback = self.tx.len();
        let extra = pdu::flags::LAST_PDU | if success { pdu::flags::SUCCESS } else { 0 };
        let at = begin_data_pdu(&mut self.tx, pdu_type::C2H_DATA, &hdr, extra, self.digests);
        let result = match self
            .sendfile_read(ns, offset, len)
            .or_else(|| self.memory_read(ns, offset, len))
        {
            Some(result) => result,
            None => ns
                .backend
                .read_append(&mut self.tx, len, offset)
                .map(|()| finish_data_pdu(&mut self.tx, at, self.digests)),
        };
        if let Err(e) = result {
            self.tx.truncate(rollback);
            ns.stats
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(nsid = ns.nsid, offset, len, error = %e, "read failed");
            let status = if e.is_out_of_range() {
                Status::LBA_OUT_OF_RANGE
            } else {
                Status::UNRECOVERED_READ_ERROR
            };
            return self.complete(sqe.cid, status, 0);
        }
        ns.stats.record_read(len, started.elapsed());
        if !success {
            self.complete(sqe.cid, Status::SUCCESS, 0);
        }
    }

    /// Send a read's data straight from the page cache with `sendfile(2)`,
    /// after everything queued so far (the C2HData header last), when the
    /// read is large (`sendfile_min_bytes`), the connection has no data
    /// digest (which would need the bytes in hand) and the backend offers
    /// it (a file in memory: `BlockBackend::sendfile_source`). `None` when that does not apply: the
    /// caller copies the data into the send buffer instead.
    ///
    /// A backend error comes back before anything is sent. A failure to
    /// send, once the header may be out, leaves the stream out of step, so
    /// the connection is ended (the host reconnects and retries).
    fn sendfile_read(
        &mut self,
        ns: &Namespace,
        offset: u64,
        len: usize,
    ) -> Option<Result<(), BackendError>> {
        let min = self.target.opts.sendfile_min_bytes as usize;
        // Reads queued from memory go out at the flush, in order, so a
        // later read cannot be sent ahead of them.
        if min == 0 || len < min || self.digests.data || !self.tx_mem.is_empty() {
            return None;
        }
        let link = self.link.clone()?;
        let fd = match ns.backend.sendfile_source(offset, len) {
            Ok(fd) => fd?,
            Err(e) => return Some(Err(e)),
        };
        match link.send_with_file(&self.tx, fd, offset, len) {
            Ok(()) => {
                ns.stats
                    .sent_from_file
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(nsid = ns.nsid, offset, len, error = %e, "sending read data failed; ending the connection");
                ns.stats
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                link.kill();
            }
        }
        self.tx.clear();
        Some(Ok(()))
    }

    /// Queue a read from a memory namespace: its data stays in the
    /// mapping and goes out in the flush's `sendmsg`, right after the
    /// C2HData header just queued (`gather.rs`), so the target itself
    /// copies nothing. `None` when that does not apply (not a memory
    /// namespace, or a data digest, which needs the bytes in hand): the
    /// caller copies the data into the send buffer instead.
    fn memory_read(
        &mut self,
        ns: &Arc<Namespace>,
        offset: u64,
        len: usize,
    ) -> Option<Result<(), BackendError>> {
        if self.digests.data || self.link.is_none() {
            return None;
        }
        let mem = ns.backend.memory()?;
        if let Err(e) = mem.check_read(offset, len) {
            return Some(Err(e));
        }
        // Counted in `sent_from_memory` once sent (`gather.rs`).
        self.tx_mem.push(crate::gather::MemSend {
            at: self.tx.len(),
            ns: ns.clone(),
            offset,
            len,
        });
        self.tx_mem_bytes += len;
        Some(Ok(()))
    }

    fn write(&mut self, sqe: Sqe, ns: Arc<Namespace>, data: Option<&[u8]>) {
        if ns.read_only {
            return self.complete(sqe.cid, Status::NAMESPACE_WRITE_PROTECTED, 0);
        }
        let (offset, len) = match self.transfer_len(&sqe, &ns) {
            Ok(r) => r,
            Err(status) => return self.complete(sqe.cid, status, 0),
        };
        match data {
            Some(data) if self.offload_now(&ns) => {
                let durable = self.write_must_be_durable(&sqe);
                let kind = JobKind::Write {
                    offset,
                    data: data.to_vec(),
                    durable,
                };
                self.offload(&sqe, ns, kind);
            }
            Some(data) => {
                let started = Instant::now();
                let durable = self.write_must_be_durable(&sqe);
                let result = if durable {
                    ns.backend.write_at_durable(data, offset)
                } else {
                    ns.backend.write_at(data, offset)
                };
                let status =
                    self.account_write(&ns, result.map_err(|e| backend_status(&e)), len, started);
                self.complete(sqe.cid, status, 0);
            }
            None => {
                // Offloaded writes are collected whole, then written by an
                // I/O thread in one call.
                let staged_from = ns.offload.then_some(0);
                self.request_data(
                    sqe,
                    PendingKind::Write {
                        ns,
                        offset,
                        staged_from,
                        staging: Vec::new(),
                    },
                )
            }
        }
    }

    /// FUA, or a host that turned the volatile write cache off, needs the
    /// write durable before it completes.
    pub(crate) fn write_must_be_durable(&self, sqe: &Sqe) -> bool {
        sqe.fua()
            || self
                .queue
                .as_ref()
                .is_some_and(|q| !q.ctrl.state().volatile_write_cache)
    }

    fn account_write(
        &self,
        ns: &Namespace,
        result: Result<(), Status>,
        len: usize,
        started: Instant,
    ) -> Status {
        match result {
            Ok(()) => {
                ns.stats.record_write(len, started.elapsed());
                Status::SUCCESS
            }
            Err(status) => {
                ns.stats
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(nsid = ns.nsid, len, status = %status, "write failed");
                status
            }
        }
    }

    /// Complete a write whose data came through R2T: write any staged
    /// tail, then make it durable if asked.
    pub(crate) fn finish_write(
        &mut self,
        sqe: &Sqe,
        ns: &Namespace,
        offset: u64,
        staged_from: Option<u32>,
        staging: &[u8],
    ) -> Status {
        let started = Instant::now();
        let mut result = Ok(());
        if let Some(from) = staged_from {
            result = ns.backend.write_at(staging, offset + u64::from(from));
        }
        if result.is_ok() && self.write_must_be_durable(sqe) {
            result = ns.backend.flush();
        }
        let len = sqe.sgl.length as usize;
        self.account_write(ns, result.map_err(|e| backend_status(&e)), len, started)
    }

    fn flush(&mut self, sqe: &Sqe) {
        let namespaces = if sqe.nsid == NSID_ALL {
            self.queue
                .as_ref()
                .and_then(|q| q.ctrl.subsystem())
                .map(|s| s.namespaces())
                .unwrap_or_default()
        } else {
            match self.namespace(sqe.nsid) {
                Some(ns) if self.offload_now(&ns) => return self.offload(sqe, ns, JobKind::Flush),
                Some(ns) => vec![ns],
                None => return self.complete(sqe.cid, Status::INVALID_NAMESPACE, 0),
            }
        };
        for ns in namespaces {
            ns.stats
                .flushes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = ns.backend.flush() {
                tracing::error!(nsid = ns.nsid, error = %e, "flush failed");
                return self.complete(sqe.cid, Status::WRITE_FAULT, 0);
            }
        }
        self.complete(sqe.cid, Status::SUCCESS, 0);
    }

    fn write_zeroes(&mut self, sqe: &Sqe, ns: &Namespace) {
        if ns.read_only {
            return self.complete(sqe.cid, Status::NAMESPACE_WRITE_PROTECTED, 0);
        }
        let (offset, len) = match self.lba_range(sqe, ns) {
            Ok(r) => r,
            Err(status) => return self.complete(sqe.cid, status, 0),
        };
        let deallocate = sqe.cdw12 & (1 << 25) != 0;
        let mut result = ns.backend.write_zeroes(offset, len as u64, deallocate);
        if result.is_ok() && sqe.fua() {
            result = ns.backend.flush();
        }
        let status = result.map_or_else(|e| backend_status(&e), |()| Status::SUCCESS);
        self.complete(sqe.cid, status, 0);
    }

    /// NR (0-based, 8 bits) allows at most 256 ranges, 4 KiB; the SGL must
    /// be exactly that long, whether the ranges come in the capsule or
    /// through R2T, so nothing is sized by the SGL alone.
    fn dataset_management(&mut self, sqe: Sqe, ns: Arc<Namespace>, data: Option<&[u8]>) {
        let nr = (sqe.cdw10 & 0xFF) as usize + 1;
        let deallocate = sqe.cdw11 & (1 << 2) != 0;
        let expected = nr * DSM_RANGE_LEN;
        if sqe.sgl.length as usize != expected {
            self.target.count_length_refusal();
            return self.complete(sqe.cid, Status::DATA_SGL_LENGTH_INVALID, 0);
        }
        let Some(data) = data else {
            return self.request_data(sqe, PendingKind::Collect(Vec::with_capacity(expected)));
        };
        if data.len() < expected {
            return self.complete(sqe.cid, Status::DATA_SGL_LENGTH_INVALID, 0);
        }
        if !deallocate {
            // Only the deallocate attribute does anything; the hints are
            // advisory and may be ignored.
            return self.complete(sqe.cid, Status::SUCCESS, 0);
        }
        if ns.read_only {
            return self.complete(sqe.cid, Status::NAMESPACE_WRITE_PROTECTED, 0);
        }
        let status = deallocate_ranges(&ns, &data[..expected]);
        self.complete(sqe.cid, status, 0);
    }
}

/// Lengths every I/O command must agree with before its handler runs:
/// Flush and Write Zeroes move no data, so their SGL is empty; Read moves
/// none from the host, so it has no in-capsule data. (Read and Write check
/// NLB against MDTS and the SGL in `transfer_len`, Dataset Management its
/// ranges in `dataset_management`.)
/// Commands that change a namespace's data: refused to a read-only host.
/// Dataset Management is refused whole, deallocate or not (its other
/// attributes are only hints, and a read-only host has no use for them).
fn is_write_class(opcode: u8) -> bool {
    matches!(
        opcode,
        nvm::WRITE | nvm::WRITE_ZEROES | nvm::DATASET_MANAGEMENT
    )
}

fn check_io_transfer(sqe: &Sqe, data: Option<&[u8]>) -> Result<(), Status> {
    match sqe.opcode {
        nvm::FLUSH | nvm::WRITE_ZEROES if sqe.sgl.length != 0 => {
            Err(Status::DATA_SGL_LENGTH_INVALID)
        }
        nvm::READ if data.is_some_and(|d| !d.is_empty()) => Err(Status::INVALID_FIELD),
        _ => Ok(()),
    }
}

/// Deallocate every range, after checking all of them: one bad range fails
/// the command before anything is changed.
fn deallocate_ranges(ns: &Namespace, ranges: &[u8]) -> Status {
    let nblocks = ns.nblocks();
    let shift = ns.block_shift();
    let mut todo = Vec::new();
    for r in ranges.chunks_exact(DSM_RANGE_LEN) {
        let nlb = u64::from(ferrofab_nvmeof_wire::wire::get_u32(r, 4));
        let slba = ferrofab_nvmeof_wire::wire::get_u64(r, 8);
        if nlb == 0 {
            continue;
        }
        match slba.checked_add(nlb) {
            Some(end) if end <= nblocks => todo.push((slba << shift, nlb << shift)),
            _ => return Status::LBA_OUT_OF_RANGE,
        }
    }
    for (offset, len) in todo {
        if let Err(e) = ns.backend.deallocate(offset, len) {
            tracing::warn!(nsid = ns.nsid, offset, len, error = %e, "deallocate failed");
            return backend_status(&e);
        }
    }
    Status::SUCCESS
}
