//! One ublk queue: a thread that owns the queue's io_uring (every uring_cmd
//! of a queue must come from one task), and a completer thread that waits
//! for the namespace's answers.
//!
//! The queue thread fetches requests (one FETCH_REQ per tag), starts each
//! on the namespace at once with [`Namespace::submit`] (so up to `depth`
//! NVMe commands are in flight per queue), and hands the ticket to the
//! completer. The completer waits for tickets in order, copies read data
//! into the tag's buffer, and queues the result; the first result queued
//! after the queue thread last looked writes an eventfd that the ring
//! watches. The queue thread then commits every queued result with one
//! COMMIT_AND_FETCH_REQ each, all in one `io_uring_enter`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use ferrofab_nvmeof_host::{Namespace, Ticket};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::io::{self as ublk_io, Request, IO_ERROR};
use crate::sys::{self, IoCmd, IoDesc};
use crate::UblkError;

/// user_data of the eventfd read (tags are below 4096).
const EVENTFD_TAG: u64 = u64::MAX;

/// The memory the kernel reads and writes for one queue: each tag's data
/// buffer and the eventfd counter. It is freed only after the device is
/// deleted (the device keeps an `Arc`), when the kernel can no longer touch
/// it, whatever state the queue's ring was left in.
///
/// Buffers travel instead of being copied: a write's buffer, filled by the
/// kernel, is moved into the NVMe command and the tag gets a spare one; a
/// full-size read's data buffer from the initiator becomes the tag's buffer
/// (its address goes to the kernel with the COMMIT, which copies from it).
/// Every buffer has room for `buf_len` bytes, the largest request.
pub struct QueueMem {
    buf_len: usize,
    depth: usize,
    bufs: Mutex<TagBufs>,
    /// Where the ring's eventfd read lands (a leaked Box, freed on drop).
    efd_count: *mut u64,
}

struct TagBufs {
    /// The buffer the kernel has (or will get with the next FETCH/COMMIT)
    /// for each tag; capacity >= buf_len.
    tags: Vec<Vec<u8>>,
    /// Buffers set free by read swaps, reused for writes (at most `depth`).
    spare: Vec<Vec<u8>>,
}

// SAFETY: the buffers are behind a Mutex; the raw counter pointer is only
// handed to the kernel (never dereferenced here) and freed once, on drop.
unsafe impl Send for QueueMem {}
// SAFETY: as for Send.
unsafe impl Sync for QueueMem {}

impl QueueMem {
    pub fn new(depth: usize, buf_len: usize) -> Result<QueueMem, UblkError> {
        depth
            .checked_mul(buf_len)
            .ok_or_else(|| UblkError::Config(format!("{depth} x {buf_len} bytes overflows")))?;
        // Reserved, not touched: pages are faulted in as requests use them.
        let tags = (0..depth).map(|_| Vec::with_capacity(buf_len)).collect();
        Ok(QueueMem {
            buf_len,
            depth,
            bufs: Mutex::new(TagBufs {
                tags,
                spare: Vec::new(),
            }),
            efd_count: Box::into_raw(Box::new(0u64)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TagBufs> {
        self.bufs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Address of tag `tag`'s current buffer, for a FETCH or COMMIT.
    fn buf_addr(&self, tag: u16) -> u64 {
        self.lock().tags[usize::from(tag)].as_mut_ptr() as u64
    }

    /// A write's data: the tag's buffer, which the kernel filled with `len`
    /// bytes before completing the FETCH; the tag gets a spare buffer.
    fn take_written(&self, tag: u16, len: usize) -> Vec<u8> {
        let mut b = self.lock();
        let fresh = b
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buf_len));
        let mut data = std::mem::replace(&mut b.tags[usize::from(tag)], fresh);
        debug_assert!(len <= data.capacity());
        // SAFETY: len <= buf_len <= capacity (checked by `decode`), and the
        // kernel copied the request's `len` bytes into this buffer before
        // it completed the tag's FETCH (the same contract as read(2) into a
        // buffer's spare capacity), so those bytes are initialised.
        unsafe { data.set_len(len) };
        data
    }

    /// A read's data for the kernel: moved in as the tag's buffer when it
    /// has room for any request, else copied into the tag's buffer.
    fn put_read(&self, tag: u16, data: Vec<u8>) {
        let mut b = self.lock();
        let slot = &mut b.tags[usize::from(tag)];
        if data.capacity() >= self.buf_len {
            let old = std::mem::replace(slot, data);
            if b.spare.len() < self.depth {
                b.spare.push(old);
            }
        } else {
            let len = data.len().min(self.buf_len);
            // SAFETY: the tag's buffer has capacity >= buf_len >= len and
            // belongs to this request until its COMMIT (the kernel does not
            // touch it between the FETCH completion and the COMMIT).
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), slot.as_mut_ptr(), len) };
        }
    }
}

impl Drop for QueueMem {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw in `new`, freed once here.
        drop(unsafe { Box::from_raw(self.efd_count) });
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// The queue's descriptor area, mapped read-only from `/dev/ublkcN`.
struct DescArea {
    ptr: *const IoDesc,
    len: usize,
    depth: usize,
}

impl DescArea {
    fn map(cdev: RawFd, q_id: u16, depth: usize) -> Result<DescArea, UblkError> {
        let page = page_size();
        let len = sys::queue_cmd_buf_size(depth, page);
        let off = sys::queue_cmd_buf_offset(q_id, page);
        // SAFETY: a fresh shared read-only mapping of the char device at
        // the offset and length the driver expects for this queue; no
        // existing memory is affected, and the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                cdev,
                off as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(UblkError::Io {
                what: format!("mapping the descriptors of queue {q_id}"),
                source: io::Error::last_os_error(),
            });
        }
        Ok(DescArea {
            ptr: ptr.cast(),
            len,
            depth,
        })
    }

    /// The descriptor of `tag`, as the kernel wrote it before completing
    /// the tag's FETCH.
    fn get(&self, tag: u16) -> IoDesc {
        assert!(usize::from(tag) < self.depth, "tag {tag} out of range");
        // SAFETY: tag < depth and the mapping holds depth descriptors;
        // IoDesc is plain integers (any bit pattern is valid) and the
        // mapping is suitably aligned (page-aligned base, 8-byte stride
        // multiple). A volatile read, since the kernel writes this memory.
        unsafe { std::ptr::read_volatile(self.ptr.add(usize::from(tag))) }
    }
}

impl Drop for DescArea {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// The eventfd that wakes the queue thread's ring.
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> Result<Waker, UblkError> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(UblkError::Io {
                what: "creating an eventfd".into(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd })
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64; an error (counter full)
        // only means a wake-up is already pending.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                size_of::<u64>(),
            )
        };
    }
}

/// What the queue thread and its completer share.
pub struct QueueShared {
    pub mem: Arc<QueueMem>,
    pub waker: Waker,
    pub stop: AtomicBool,
    /// Results waiting to be committed: (tag, result).
    done: Mutex<Vec<(u16, i32)>>,
    /// Why the queue ended without being asked to: the device is gone (the
    /// kernel aborts a dead queue's requests and removes the disk), which
    /// the owner polls through [`crate::UblkDevice::failure`].
    failure: Mutex<Option<String>>,
}

impl QueueShared {
    pub fn new(mem: Arc<QueueMem>) -> Result<QueueShared, UblkError> {
        Ok(QueueShared {
            mem,
            waker: Waker::new()?,
            stop: AtomicBool::new(false),
            done: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        })
    }

    /// Queue a result; wake the queue thread if it may be asleep (the list
    /// was empty: it drains the whole list after each wake-up).
    fn complete(&self, tag: u16, result: i32) {
        let was_empty = {
            let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
            let e = d.is_empty();
            d.push((tag, result));
            e
        };
        if was_empty {
            self.waker.wake();
        }
    }

    fn take_done(&self) -> Vec<(u16, i32)> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Record why the queue ended on its own (the first reason stays).
    fn set_failure(&self, why: String) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why);
    }

    /// Why the queue ended without a stop request, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ask the queue thread to leave.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

/// A request in flight on the namespace.
struct Pending {
    tag: u16,
    req: Request,
    ticket: Ticket,
}

/// Everything a queue thread needs.
pub struct QueueConfig {
    pub q_id: u16,
    pub depth: u16,
    /// `/dev/ublkcN`, owned by the device, which joins this thread before
    /// closing it.
    pub cdev: RawFd,
    pub ns: Namespace,
    pub shared: Arc<QueueShared>,
}

/// Run one queue until it is told to stop or the kernel aborts every tag.
/// `ready` gets the outcome of the set-up (all FETCH_REQs submitted).
pub fn run(cfg: QueueConfig, ready: Sender<Result<(), UblkError>>) -> Result<(), UblkError> {
    let mut qt = report_setup(ready, cfg.q_id, QueueThread::new(&cfg))?;
    let span = tracing::info_span!("ublk_queue", q = cfg.q_id, depth = cfg.depth);
    let _g = span.enter();
    let (tx, rx) = mpsc::channel::<Pending>();
    let shared = cfg.shared.clone();
    let completer = std::thread::Builder::new()
        .name(format!("ublk-c{}", cfg.q_id))
        .spawn(move || complete_loop(rx, &shared))
        .map_err(|source| UblkError::Io {
            what: "spawning a completer thread".into(),
            source,
        })?;
    let res = qt.serve(&cfg, &tx);
    let res = finish(&cfg.shared, cfg.q_id, res);
    // The completer ends once the tickets it holds are answered; it is not
    // joined (a lost connection could hold it up to ctrl-loss-tmo) and
    // touches only memory it shares through Arcs.
    drop(tx);
    drop(completer);
    res
}

/// Send the set-up's outcome to `ready` and drop the sender at once: a
/// queue that keeps it while serving would keep `bring_up`'s `recv()`
/// waiting after another queue thread panicked during its set-up.
fn report_setup<T>(
    ready: Sender<Result<(), UblkError>>,
    q_id: u16,
    setup: Result<T, UblkError>,
) -> Result<T, UblkError> {
    match setup {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            drop(ready);
            Ok(v)
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = ready.send(Err(e));
            drop(ready);
            Err(UblkError::Queue { q_id, msg })
        }
    }
}

/// The completions present right after the FETCH_REQs were submitted:
/// before START_DEV none can deliver a request, so any failed FETCH means
/// the queue is not ready (and START_DEV would wait for it forever).
fn setup_outcome(q_id: u16, cqes: &[(u64, i32)]) -> Result<(), UblkError> {
    match cqes.iter().find(|&&(ud, res)| ud != EVENTFD_TAG && res < 0) {
        Some(&(tag, res)) => Err(UblkError::Queue {
            q_id,
            msg: format!(
                "FETCH_REQ of tag {tag} failed during set-up: {}",
                io::Error::from_raw_os_error(-res)
            ),
        }),
        None => Ok(()),
    }
}

/// Record how the queue ended. An error, or every tag aborted while no
/// stop was asked for, means the device is gone: once the queue's ring is
/// closed the kernel aborts the queue's requests and removes the device.
/// Say so where the operator looks, and let the owner notice.
fn finish(shared: &QueueShared, q_id: u16, res: Result<(), UblkError>) -> Result<(), UblkError> {
    match &res {
        Err(e) => {
            tracing::error!(error = %e, "ublk queue failed; the kernel aborts its requests and removes the device");
            shared.set_failure(format!("queue {q_id} failed: {e}"));
        }
        Ok(()) if !shared.stop.load(Ordering::SeqCst) => {
            shared.set_failure(format!(
                "the kernel aborted every request of queue {q_id} (the device was stopped)"
            ));
        }
        Ok(()) => {}
    }
    res
}

struct QueueThread {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    descs: DescArea,
    /// Tags the kernel has aborted (not fetched again).
    gone: usize,
    /// Completions already posted during set-up, served first.
    early: Vec<(u64, i32)>,
}

impl QueueThread {
    fn new(cfg: &QueueConfig) -> Result<QueueThread, UblkError> {
        let depth = usize::from(cfg.depth);
        let descs = DescArea::map(cfg.cdev, cfg.q_id, depth)?;
        // Room for one command per tag plus the eventfd read.
        let entries = (depth + 1).next_power_of_two() as u32;
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .build(entries)
            .map_err(|source| UblkError::Io {
                what: format!("creating the io_uring of queue {}", cfg.q_id),
                source,
            })?;
        let mut qt = QueueThread {
            ring,
            descs,
            gone: 0,
            early: Vec::new(),
        };
        for tag in 0..cfg.depth {
            qt.push_io_cmd(cfg, sys::UBLK_U_IO_FETCH_REQ, tag, 0)?;
        }
        qt.arm_waker(cfg)?;
        qt.ring.submit().map_err(|source| UblkError::Io {
            what: format!("submitting the FETCH_REQs of queue {}", cfg.q_id),
            source,
        })?;
        // A FETCH the kernel refused is answered during the submit: with
        // it missing, START_DEV would wait forever for every tag.
        qt.early = qt
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        setup_outcome(cfg.q_id, &qt.early)?;
        Ok(qt)
    }

    fn push(&mut self, sqe: &squeue::Entry128) -> Result<(), UblkError> {
        // SAFETY: every address an entry carries is memory that outlives
        // the ring's use of it: tag buffers and the eventfd counter live in
        // `QueueMem`, freed only after the device is deleted, and a tag's
        // buffer is only replaced while the kernel does not hold it.
        let pushed = unsafe { self.ring.submission().push(sqe) };
        if pushed.is_err() {
            // Cannot happen (one entry per tag plus one, sized for that);
            // submit to make room rather than lose a command.
            self.ring.submit().map_err(|source| UblkError::Io {
                what: "submitting to a full ring".into(),
                source,
            })?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(sqe) }.map_err(|_| UblkError::Io {
                what: "queue ring full".into(),
                source: io::Error::other("submission queue full"),
            })?;
        }
        Ok(())
    }

    fn push_io_cmd(
        &mut self,
        cfg: &QueueConfig,
        op: u32,
        tag: u16,
        result: i32,
    ) -> Result<(), UblkError> {
        let cmd = IoCmd {
            q_id: cfg.q_id,
            tag,
            result,
            addr: cfg.shared.mem.buf_addr(tag),
        };
        let sqe = opcode::UringCmd80::new(types::Fd(cfg.cdev), op)
            .cmd(sys::cmd_bytes(&cmd))
            .build()
            .user_data(u64::from(tag));
        self.push(&sqe)
    }

    fn arm_waker(&mut self, cfg: &QueueConfig) -> Result<(), UblkError> {
        let sqe = opcode::Read::new(
            types::Fd(cfg.shared.waker.fd.as_raw_fd()),
            cfg.shared.mem.efd_count.cast::<u8>(),
            size_of::<u64>() as u32,
        )
        .build()
        .user_data(EVENTFD_TAG);
        self.push(&squeue::Entry128::from(sqe))
    }

    fn serve(&mut self, cfg: &QueueConfig, tx: &Sender<Pending>) -> Result<(), UblkError> {
        let depth = usize::from(cfg.depth);
        let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(depth + 1);
        cqes.append(&mut self.early);
        loop {
            if cqes.is_empty() {
                match self.ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(UblkError::Io {
                            what: format!("waiting on the ring of queue {}", cfg.q_id),
                            source,
                        })
                    }
                }
                cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            }
            let mut woken = false;
            for &(ud, res) in &cqes {
                if ud == EVENTFD_TAG {
                    woken = true;
                } else if let Ok(tag) = u16::try_from(ud) {
                    self.fetched(cfg, tx, tag, res)?;
                }
            }
            if woken {
                for (tag, result) in cfg.shared.take_done() {
                    self.push_io_cmd(cfg, sys::UBLK_U_IO_COMMIT_AND_FETCH_REQ, tag, result)?;
                }
                if cfg.shared.stop.load(Ordering::SeqCst) {
                    // Commit what is queued, then leave; closing the ring
                    // cancels the remaining fetches.
                    let _ = self.ring.submit();
                    tracing::debug!("queue stopped");
                    return Ok(());
                }
                self.arm_waker(cfg)?;
            }
            cqes.clear();
            if self.gone >= depth {
                tracing::debug!("every tag aborted by the kernel; queue done");
                return Ok(());
            }
        }
    }

    /// A FETCH (or COMMIT_AND_FETCH) completed: a new request for `tag`,
    /// or the kernel giving the tag up.
    fn fetched(
        &mut self,
        cfg: &QueueConfig,
        tx: &Sender<Pending>,
        tag: u16,
        res: i32,
    ) -> Result<(), UblkError> {
        if res != sys::UBLK_IO_RES_OK {
            if res != sys::UBLK_IO_RES_ABORT {
                tracing::warn!(tag, errno = -res, "ublk I/O command failed");
            }
            self.gone += 1;
            return Ok(());
        }
        if usize::from(tag) >= usize::from(cfg.depth) {
            tracing::warn!(tag, "completion for a tag beyond the queue depth");
            return Ok(());
        }
        let desc = self.descs.get(tag);
        let mem = &cfg.shared.mem;
        let req = match ublk_io::decode(&desc, mem.buf_len) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(tag, error = %e, "request refused");
                return self.push_io_cmd(cfg, sys::UBLK_U_IO_COMMIT_AND_FETCH_REQ, tag, e.errno());
            }
        };
        let written = match req {
            Request::Write { len, .. } => mem.take_written(tag, len),
            _ => Vec::new(),
        };
        match cfg.ns.submit(req.to_op(written)) {
            Ok(ticket) => {
                if let Err(mpsc::SendError(p)) = tx.send(Pending { tag, req, ticket }) {
                    // The completer is gone (it never leaves first).
                    drop(p);
                    return self.push_io_cmd(
                        cfg,
                        sys::UBLK_U_IO_COMMIT_AND_FETCH_REQ,
                        tag,
                        IO_ERROR,
                    );
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(tag, error = %e, "namespace refused a request");
                let errno = ublk_io::failure_errno(&req, &e);
                self.push_io_cmd(cfg, sys::UBLK_U_IO_COMMIT_AND_FETCH_REQ, tag, errno)
            }
        }
    }
}

/// Wait for each ticket in turn, put read data in place and queue the
/// result for the queue thread.
fn complete_loop(rx: Receiver<Pending>, shared: &QueueShared) {
    for p in rx {
        let result = match (&p.req, p.ticket.wait()) {
            (Request::Read { len, .. }, Ok(data)) if data.len() == *len => {
                shared.mem.put_read(p.tag, data);
                p.req.success_result()
            }
            (Request::Read { len, .. }, Ok(data)) => {
                tracing::warn!(
                    tag = p.tag,
                    want = len,
                    got = data.len(),
                    "short read from the namespace"
                );
                IO_ERROR
            }
            (_, Ok(_)) => p.req.success_result(),
            (_, Err(e)) => {
                let errno = ublk_io::failure_errno(&p.req, &e);
                tracing::warn!(tag = p.tag, error = %e, errno = -errno, "I/O failed");
                errno
            }
        };
        shared.complete(p.tag, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_travel_instead_of_being_copied() {
        let m = QueueMem::new(2, 8192).unwrap();
        let a0 = m.buf_addr(0);
        // A write hands the tag's own buffer to the NVMe command.
        let w = m.take_written(0, 4096);
        assert_eq!(w.as_ptr() as u64, a0);
        assert_eq!(w.len(), 4096);
        assert_ne!(m.buf_addr(0), a0);
        // A full-size read buffer becomes the tag's buffer...
        let r = vec![7u8; 8192];
        let ra = r.as_ptr() as u64;
        m.put_read(1, r);
        assert_eq!(m.buf_addr(1), ra);
        // ...and the one it replaced is the next write's spare.
        let _ = m.take_written(1, 512);
        assert_eq!(m.lock().spare.len(), 0);
        // A short read is copied into the tag's buffer.
        let before = m.buf_addr(0);
        m.put_read(0, vec![9u8; 512]);
        assert_eq!(m.buf_addr(0), before);
        let b = m.lock();
        assert!(b.tags.iter().all(|t| t.capacity() >= 8192));
    }

    #[test]
    fn a_queue_that_ends_on_its_own_marks_the_device_dead() {
        let mk = || QueueShared::new(Arc::new(QueueMem::new(1, 4096).unwrap())).unwrap();
        // Asked to stop: not a failure.
        let s = mk();
        s.request_stop();
        assert!(finish(&s, 0, Ok(())).is_ok());
        assert_eq!(s.failure(), None);
        // Every tag aborted with no stop asked for: the device is gone.
        let s = mk();
        assert!(finish(&s, 1, Ok(())).is_ok());
        assert!(s.failure().unwrap().contains("queue 1"));
        // An error is kept (the first one) and returned.
        let s = mk();
        let e = UblkError::Queue {
            q_id: 2,
            msg: "ring broke".into(),
        };
        assert!(finish(&s, 2, Err(e)).is_err());
        let _ = finish(&s, 2, Ok(()));
        assert!(s.failure().unwrap().contains("ring broke"));
    }

    #[test]
    fn a_fetch_refused_during_set_up_is_an_error_not_ready() {
        assert!(setup_outcome(0, &[]).is_ok());
        // An eventfd read that completed is no fetch failure.
        assert!(setup_outcome(0, &[(EVENTFD_TAG, 8)]).is_ok());
        let e = setup_outcome(1, &[(EVENTFD_TAG, 8), (5, -libc::EINVAL)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue 1") && e.contains("tag 5"), "{e}");
    }

    #[test]
    fn a_ready_queue_does_not_hide_a_panicked_one() {
        use std::time::Duration;
        let (tx, rx) = mpsc::channel();
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        // Queue 0 is ready and keeps serving (blocked until the end).
        let t0 = tx.clone();
        let serving = std::thread::spawn(move || {
            let r = report_setup(t0, 0, Ok(()));
            let _ = hold_rx.recv();
            r
        });
        // Queue 1 panics during its set-up, holding its sender.
        let t1 = tx.clone();
        let panicked = std::thread::spawn(move || {
            let _keep = t1;
            panic!("set-up panicked");
        });
        drop(tx);
        assert!(matches!(rx.recv(), Ok(Ok(()))));
        assert!(panicked.join().is_err());
        // The second recv sees every sender gone, not a wait forever.
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(10)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
        drop(hold_tx);
        assert!(serving.join().unwrap().is_ok());
        let (tx, rx) = mpsc::channel();
        let e = report_setup::<()>(tx, 2, Err(UblkError::Config("no ring".into()))).unwrap_err();
        assert!(e.to_string().contains("no ring"));
        assert!(matches!(rx.recv(), Ok(Err(_))));
    }

    #[test]
    fn results_wake_the_queue_once_per_batch() {
        let shared = QueueShared::new(Arc::new(QueueMem::new(2, 4096).unwrap())).unwrap();
        shared.complete(0, 4096);
        shared.complete(1, -5);
        // One wake-up for both: the eventfd counter reads 1.
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64.
        let n = unsafe { libc::read(shared.waker.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        assert_eq!(n, 8);
        assert_eq!(v, 1);
        assert_eq!(shared.take_done(), vec![(0, 4096), (1, -5)]);
        assert!(shared.take_done().is_empty());
    }
}
