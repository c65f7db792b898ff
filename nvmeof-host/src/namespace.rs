//! I/O on one namespace: blocking calls, tickets and pipelines.
//!
//! Three ways to do I/O, from simplest to fastest:
//!
//! * [`BlockIo`] (`read_at`, `write_at`, `flush`): blocking, byte offsets.
//! * [`Namespace::submit`] returns a [`Ticket`] at once; many can be in
//!   flight from one thread; [`Ticket::wait`] collects each.
//! * [`Namespace::submit_then`] (`then.rs`): a callback runs when the
//!   operation completed, on the thread that received the response; no
//!   thread waits (what a server answering many clients wants).
//! * [`Pipeline`]: a fixed-depth window of tagged operations that completes
//!   in any order, the shape a queue-depth-N benchmark or a FUSE request
//!   loop wants.
//!
//! Offsets and lengths are bytes and must be multiples of the block size,
//! except for `BlockIo::read_at`/`write_at`, which handle unaligned ranges
//! (writes by read-modify-write, which is not atomic against concurrent
//! writers of the same block). Operations larger than the controller's
//! MDTS are split into several commands, spread over the I/O queues.
//!
//! All of it survives reconnects: an operation issued while the connection
//! is down waits for the next association (up to ctrl-loss-tmo).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::assoc::NamespaceInfo;
use super::cmd::{self, Cmd, DSM_MAX_RANGES};
use super::controller::{Controller, Shared};
use super::queue::{ReqKind, Request};
use super::{BlockIo, HostError};
use ferrofab_nvmeof_wire::spec::status::Status;

#[path = "then.rs"]
mod then;

/// How often a command is re-sent after a data digest error.
const DIGEST_RETRIES: u32 = 3;

/// Largest NLB of one Read, Write or Write Zeroes (16-bit, 0-based).
const MAX_NLB: u64 = 1 << 16;

/// One operation on a namespace. Offsets and lengths are in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOp {
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    Flush,
    WriteZeroes {
        offset: u64,
        len: u64,
    },
    /// Dataset Management, deallocate (discard/trim).
    Deallocate {
        offset: u64,
        len: u64,
    },
}

/// A handle for I/O on one namespace. Clone it freely (it is an `Arc`);
/// size and block size always reflect the latest scan.
#[derive(Clone)]
pub struct Namespace {
    shared: Arc<Shared>,
    nsid: u32,
}

/// The handle constructor lives beside the handle, so the controller
/// module does not import this one (imports point down: namespace ->
/// controller).
impl Controller {
    /// A handle for I/O on namespace `nsid`. Cheap to clone; stays valid
    /// across reconnects and resizes.
    pub fn namespace(&self, nsid: u32) -> Result<Namespace, HostError> {
        if !self.shared.read_namespaces().contains_key(&nsid) {
            return Err(HostError::InvalidArgument(format!(
                "namespace {nsid} does not exist on {} at {}",
                self.shared.opts.subnqn, self.shared.opts.addr
            )));
        }
        Ok(Namespace::new(self.shared.clone(), nsid))
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("nsid", &self.nsid)
            .field("info", &self.info())
            .finish()
    }
}

impl Namespace {
    pub(crate) fn new(shared: Arc<Shared>, nsid: u32) -> Namespace {
        Namespace { shared, nsid }
    }

    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// The latest scan of this namespace, None if it has disappeared.
    pub fn info(&self) -> Option<NamespaceInfo> {
        self.shared.namespace_info(self.nsid)
    }

    fn geometry(&self) -> Result<(u32, u64), HostError> {
        let info = self.info().ok_or_else(|| {
            HostError::InvalidArgument(format!(
                "namespace {} no longer exists on {}",
                self.nsid, self.shared.opts.subnqn
            ))
        })?;
        Ok((info.block_size, info.blocks))
    }

    /// Check that `[offset, offset+len)` is whole blocks inside the
    /// namespace; return the block size and first LBA.
    fn blocks_of(&self, offset: u64, len: u64) -> Result<(u32, u64), HostError> {
        let (bs, blocks) = self.geometry()?;
        let bs64 = u64::from(bs);
        if !offset.is_multiple_of(bs64) || !len.is_multiple_of(bs64) {
            return Err(HostError::InvalidArgument(format!(
                "offset {offset} and length {len} must be multiples of the {bs}-byte block size of namespace {}",
                self.nsid
            )));
        }
        let end = offset.saturating_add(len);
        if end > blocks * bs64 {
            return Err(HostError::InvalidArgument(format!(
                "range {offset}+{len} is beyond the end of namespace {} ({} bytes)",
                self.nsid,
                blocks * bs64
            )));
        }
        Ok((bs, offset / bs64))
    }

    /// Start `op` and return at once (blocking only if every queue slot is
    /// busy). Errors here are argument errors; I/O errors come from
    /// [`Ticket::wait`].
    pub fn submit(&self, op: IoOp) -> Result<Ticket, HostError> {
        self.submit_to(op, None)
    }

    /// [`Namespace::submit`], or with `pinned`, on that one I/O queue and
    /// deferred to its next flush (see `Shared::submit_to`).
    fn submit_to(&self, op: IoOp, pinned: Option<usize>) -> Result<Ticket, HostError> {
        self.submit_into(op, pinned, None)
    }

    /// [`Namespace::submit_to`]; a read of one command lands in `buf`.
    fn submit_into(
        &self,
        op: IoOp,
        pinned: Option<usize>,
        buf: Option<Vec<u8>>,
    ) -> Result<Ticket, HostError> {
        let (cmds, read_len) = self.commands(op)?;
        let mut buf = buf.filter(|_| cmds.len() == 1 && read_len.is_some());
        let parts: Vec<Arc<Request>> = cmds
            .into_iter()
            .map(|c| match buf.take() {
                Some(b) => Request::with_buffer(c, ReqKind::Io, b),
                None => Request::new(c, ReqKind::Io),
            })
            .collect();
        for r in &parts {
            self.shared.submit_to(r, pinned);
        }
        Ok(Ticket {
            parts,
            read_len,
            shared: self.shared.clone(),
        })
    }

    /// Split an operation into commands.
    fn commands(&self, op: IoOp) -> Result<(Vec<Cmd>, Option<usize>), HostError> {
        let nsid = self.nsid;
        match op {
            IoOp::Read { offset, len } => {
                let (bs, slba) = self.blocks_of(offset, len as u64)?;
                let per = self.blocks_per_command(bs);
                let mut cmds = Vec::new();
                let total = len as u64 / u64::from(bs);
                let mut done = 0;
                while done < total {
                    let n = (total - done).min(per);
                    cmds.push(cmd::read(nsid, slba + done, n as u32, bs));
                    done += n;
                }
                Ok((cmds, Some(len)))
            }
            IoOp::Write { offset, data } => {
                let (bs, slba) = self.blocks_of(offset, data.len() as u64)?;
                let per = self.blocks_per_command(bs);
                let total = data.len() as u64 / u64::from(bs);
                if total <= per {
                    return Ok((
                        if total == 0 {
                            Vec::new()
                        } else {
                            vec![cmd::write(nsid, slba, total as u32, data)]
                        },
                        None,
                    ));
                }
                let chunk = (per * u64::from(bs)) as usize;
                let cmds = data
                    .chunks(chunk)
                    .enumerate()
                    .map(|(i, c)| {
                        let lba = slba + (i * chunk / bs as usize) as u64;
                        cmd::write(nsid, lba, (c.len() / bs as usize) as u32, c.to_vec())
                    })
                    .collect();
                Ok((cmds, None))
            }
            IoOp::Flush => Ok((vec![cmd::flush(nsid)], None)),
            IoOp::WriteZeroes { offset, len } => {
                let (bs, slba) = self.blocks_of(offset, len)?;
                let total = len / u64::from(bs);
                let mut cmds = Vec::new();
                let mut done = 0;
                while done < total {
                    let n = (total - done).min(MAX_NLB);
                    cmds.push(cmd::write_zeroes(nsid, slba + done, n as u32));
                    done += n;
                }
                Ok((cmds, None))
            }
            IoOp::Deallocate { offset, len } => {
                let (bs, slba) = self.blocks_of(offset, len)?;
                let total = len / u64::from(bs);
                let mut ranges = Vec::new();
                let mut done = 0;
                while done < total {
                    let n = (total - done).min(u64::from(u32::MAX));
                    ranges.push((slba + done, n as u32));
                    done += n;
                }
                Ok((
                    ranges
                        .chunks(DSM_MAX_RANGES)
                        .map(|r| cmd::deallocate(nsid, r))
                        .collect(),
                    None,
                ))
            }
        }
    }

    fn blocks_per_command(&self, bs: u32) -> u64 {
        ((self.shared.max_transfer() / bs as usize) as u64).clamp(1, MAX_NLB)
    }

    /// Read `buf.len()` bytes at block-aligned `offset` (blocking).
    pub fn read_blocks(&self, offset: u64, buf: &mut [u8]) -> Result<(), HostError> {
        self.submit(IoOp::Read {
            offset,
            len: buf.len(),
        })?
        .wait_into(buf)
    }

    /// Write `data` at block-aligned `offset` (blocking).
    pub fn write_blocks(&self, offset: u64, data: &[u8]) -> Result<(), HostError> {
        self.submit(IoOp::Write {
            offset,
            data: data.to_vec(),
        })?
        .wait()
        .map(|_| ())
    }

    pub fn flush_blocking(&self) -> Result<(), HostError> {
        self.submit(IoOp::Flush)?.wait().map(|_| ())
    }

    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), HostError> {
        self.submit(IoOp::WriteZeroes { offset, len })?
            .wait()
            .map(|_| ())
    }

    pub fn deallocate(&self, offset: u64, len: u64) -> Result<(), HostError> {
        self.submit(IoOp::Deallocate { offset, len })?
            .wait()
            .map(|_| ())
    }

    /// A window of up to `depth` operations in flight.
    pub fn pipeline(&self, depth: usize) -> Pipeline {
        Pipeline {
            ns: self.clone(),
            depth: depth.max(1),
            inflight: Vec::with_capacity(depth),
            queue: self.shared.pick_queue(),
            cached: None,
        }
    }

    /// Block-aligned range covering `[offset, offset+len)`.
    fn covering(&self, offset: u64, len: usize) -> Result<(u64, usize), HostError> {
        let (bs, _) = self.geometry()?;
        let bs = u64::from(bs);
        let start = offset / bs * bs;
        let end = (offset + len as u64).div_ceil(bs) * bs;
        Ok((start, (end - start) as usize))
    }
}

impl BlockIo for Namespace {
    fn size(&self) -> u64 {
        self.info().map_or(0, |i| i.size_bytes())
    }

    fn block_size(&self) -> u32 {
        self.info().map_or(0, |i| i.block_size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (start, len) = self.covering(offset, buf.len())?;
        if start == offset && len == buf.len() {
            return Ok(self.read_blocks(offset, buf)?);
        }
        let data = self.submit(IoOp::Read { offset: start, len })?.wait()?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&data[at..at + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (start, len) = self.covering(offset, buf.len())?;
        if start == offset && len == buf.len() {
            return Ok(self.write_blocks(offset, buf)?);
        }
        let mut data = self.submit(IoOp::Read { offset: start, len })?.wait()?;
        let at = (offset - start) as usize;
        data[at..at + buf.len()].copy_from_slice(buf);
        self.submit(IoOp::Write {
            offset: start,
            data,
        })?
        .wait()?;
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(self.flush_blocking()?)
    }
}

/// An operation in flight. Dropping it does not cancel the operation (NVMe
/// has no cheap cancel); the result is just discarded.
pub struct Ticket {
    parts: Vec<Arc<Request>>,
    read_len: Option<usize>,
    shared: Arc<Shared>,
}

impl Ticket {
    /// Whether every command of the operation has completed.
    pub fn is_done(&self) -> bool {
        self.parts.iter().all(|r| r.is_done())
    }

    /// The queue of a command still outstanding.
    fn pending_queue(&self) -> Option<Arc<super::queue::Queue>> {
        self.parts.iter().find(|r| !r.is_done())?.queue()
    }

    /// Wait for one command; a data digest error (data damaged in
    /// transit) is retried a few times before it is reported.
    fn check(&self, r: &Arc<Request>) -> Result<(), HostError> {
        let mut retries = 0;
        let cqe = loop {
            match r.wait(self.shared.spin_policy(), None) {
                Err(e @ HostError::DataDigest { .. }) if retries < DIGEST_RETRIES => {
                    tracing::warn!(error = %e, cmd = r.name, "retrying after a data digest error");
                    retries += 1;
                    r.reset_for_retry();
                    self.shared.submit(r);
                }
                other => break other?,
            }
        };
        if cqe.is_success() {
            Ok(())
        } else {
            Err(HostError::Command {
                cmd: r.name.to_string(),
                subnqn: self.shared.opts.subnqn.clone(),
                addr: self.shared.opts.addr.clone(),
                status: Status::from_field(cqe.status),
            })
        }
    }

    /// Wait for the operation. Returns the data of a read (empty for other
    /// operations). Busy-polls as the controller's `poll_spin` and
    /// `poll_adaptive` say, then sleeps.
    pub fn wait(self) -> Result<Vec<u8>, HostError> {
        self.finish(false)
    }

    /// [`Ticket::wait`]; with `give_back`, a successful write returns its
    /// data, so that a caller streaming writes can reuse the buffer instead
    /// of allocating and filling a new one per write (moved when the write
    /// was one command, the usual case; put together again when it was
    /// split).
    fn finish(mut self, give_back: bool) -> Result<Vec<u8>, HostError> {
        // One part (the usual case) hands over its buffer as is.
        let mut out = if self.parts.len() > 1 {
            Vec::with_capacity(self.read_len.unwrap_or(0))
        } else {
            Vec::new()
        };
        let mut first_err = None;
        for r in &self.parts {
            match self.check(r) {
                Ok(()) if self.read_len.is_some() => {
                    if out.is_empty() {
                        out = r.take_data();
                    } else {
                        out.extend_from_slice(&r.take_data());
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None if give_back && self.read_len.is_none() => {
                let mut parts = std::mem::take(&mut self.parts).into_iter();
                let mut data = parts.next().map(written_data).unwrap_or_default();
                for r in parts {
                    data.extend_from_slice(&r.data_out);
                }
                Ok(data)
            }
            None => Ok(out),
        }
    }

    /// Wait for a read and copy its data into `buf` (which must be the
    /// read's length).
    pub fn wait_into(self, buf: &mut [u8]) -> Result<(), HostError> {
        if self.read_len != Some(buf.len()) {
            return Err(HostError::InvalidArgument(format!(
                "buffer of {} bytes for a read of {:?}",
                buf.len(),
                self.read_len
            )));
        }
        let mut at = 0;
        let mut first_err = None;
        for r in &self.parts {
            match self.check(r) {
                Ok(()) => {
                    let d = r.take_data();
                    buf[at..at + d.len()].copy_from_slice(&d);
                    at += d.len();
                }
                Err(e) => {
                    at += r.data_in_len;
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The data a completed command wrote, moved out of the request when the
/// queue has let go of it (it has, but for a thread that completed it and
/// has not yet returned), else copied.
fn written_data(r: Arc<Request>) -> Vec<u8> {
    match Arc::try_unwrap(r) {
        Ok(req) => req.data_out,
        Err(r) => r.data_out.clone(),
    }
}

/// A completed pipeline operation.
#[derive(Debug)]
pub struct Completed {
    pub tag: u64,
    /// Read data; for a write, the written data handed back so the caller
    /// can reuse the buffer (no copy unless the write was split into
    /// several commands); empty for other operations.
    pub result: Result<Vec<u8>, HostError>,
}

/// Up to `depth` tagged operations in flight, completed in any order. Use
/// it from one thread:
///
/// ```ignore
/// let mut p = ns.pipeline(32);
/// for i in 0..n {
///     if p.is_full() { handle(p.wait_any().unwrap()); }
///     p.submit(i, IoOp::Read { offset: i * 4096, len: 4096 })?;
/// }
/// while let Some(c) = p.wait_any() { handle(c); }
/// ```
///
/// A pipeline keeps to one I/O queue (pipelines are spread over the
/// queues) and batches: [`Pipeline::submit`] only encodes the command into
/// the queue's submission buffer, and [`Pipeline::wait_any`] sends all of
/// them with one system call, then reads completions from the socket on
/// the calling thread (see the `queue` module: leader/follower). So a full
/// window costs one `writev` and, per batch of arrived responses, one
/// `poll` and one `recvfrom`, with no thread hand-off.
pub struct Pipeline {
    ns: Namespace,
    depth: usize,
    inflight: Vec<(u64, Ticket)>,
    /// The I/O queue (index, modulo their number) this pipeline uses.
    queue: usize,
    /// That queue, kept while it lives: finding it through the controller
    /// takes its lock and two reference counts, once per completion.
    cached: Option<Arc<super::queue::Queue>>,
}

impl Pipeline {
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub fn is_full(&self) -> bool {
        self.inflight.len() >= self.depth
    }

    /// Start an operation tagged `tag`: it goes out with the next
    /// [`Pipeline::wait_any`] or [`Pipeline::try_complete`] (or at once if
    /// the queue's submission buffer is full). Fails if the window is full
    /// (call [`Pipeline::wait_any`] first) or the operation is invalid.
    pub fn submit(&mut self, tag: u64, op: IoOp) -> Result<(), HostError> {
        if self.is_full() {
            return Err(HostError::InvalidArgument(format!(
                "pipeline full ({} operations in flight)",
                self.depth
            )));
        }
        let t = self.ns.submit_to(op, Some(self.queue))?;
        self.inflight.push((tag, t));
        Ok(())
    }

    /// [`Pipeline::submit`] of a read of `buf.len()` bytes at `offset`
    /// whose data lands in `buf`: a caller streaming reads hands its
    /// buffers round instead of the pipeline allocating one per read. The
    /// data comes back in [`Completed::result`] (in `buf` itself unless the
    /// read was split into several commands).
    ///
    /// `buf` is consumed and *not* handed back when: this returns an error
    /// (window full, range not block-aligned or beyond the namespace); the
    /// read is longer than one command (MDTS) and so split, where `buf` is
    /// dropped at once and the joined data is a new allocation; or the read
    /// completes with an error. A caller recycling buffers allocates a new
    /// one in those cases (check [`Pipeline::is_full`] first to avoid the
    /// first).
    pub fn submit_read(&mut self, tag: u64, offset: u64, buf: Vec<u8>) -> Result<(), HostError> {
        if self.is_full() {
            return Err(HostError::InvalidArgument(format!(
                "pipeline full ({} operations in flight)",
                self.depth
            )));
        }
        let len = buf.len();
        let t = self
            .ns
            .submit_into(IoOp::Read { offset, len }, Some(self.queue), Some(buf))?;
        self.inflight.push((tag, t));
        Ok(())
    }

    /// Send what [`Pipeline::submit`] left in the submission buffer.
    pub fn flush(&self) {
        if let Some(q) = self.ns.shared.io_queue(self.queue) {
            q.flush();
        }
    }

    /// A completed operation if there is one, without waiting (but after
    /// sending what was submitted).
    pub fn try_complete(&mut self) -> Option<Completed> {
        self.send_deferred();
        self.take_done()
    }

    /// [`Pipeline::flush`] through the cached queue (found again once it
    /// has died, e.g. after a reconnect).
    fn send_deferred(&mut self) {
        if self.cached.as_ref().is_none_or(|q| q.is_dead()) {
            self.cached = self.ns.shared.io_queue(self.queue);
        }
        if let Some(q) = &self.cached {
            q.flush();
        }
    }

    fn take_done(&mut self) -> Option<Completed> {
        let i = self.inflight.iter().position(|(_, t)| t.is_done())?;
        let (tag, t) = self.inflight.swap_remove(i);
        Some(Completed {
            tag,
            result: t.finish(true),
        })
    }

    /// Wait for any operation to complete; None if nothing is in flight.
    /// Busy-polls as the controller's `poll_spin` and `poll_adaptive` say,
    /// then sleeps in `poll(2)` on the socket.
    pub fn wait_any(&mut self) -> Option<Completed> {
        if self.inflight.is_empty() {
            return None;
        }
        self.send_deferred();
        let spin = self.ns.shared.spin_policy();
        loop {
            if let Some(c) = self.take_done() {
                return Some(c);
            }
            // Normally the pipeline's own queue; after a reconnect an
            // operation may sit on another one, or on none yet.
            let q = self
                .inflight
                .iter()
                .find_map(|(_, t)| t.pending_queue())
                .filter(|q| !q.is_dead());
            match q {
                Some(q) => {
                    let inflight = &self.inflight;
                    let any_done = || inflight.iter().any(|(_, t)| t.is_done());
                    // Bounded, so operations on another queue are seen.
                    let deadline = Instant::now() + Duration::from_millis(10);
                    q.wait_until(&any_done, spin, Some(deadline));
                }
                // Every request registered this thread as its waiter when
                // it was created, so a completion or re-send unparks us.
                None => thread::park_timeout(Duration::from_millis(1)),
            }
        }
    }
}

impl Drop for Pipeline {
    /// Operations still in flight are completed without anyone waiting:
    /// make sure they were sent.
    fn drop(&mut self) {
        self.flush();
    }
}
