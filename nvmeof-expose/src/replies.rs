//! Asynchronous replies: reads and writes of whole blocks of an initiator
//! namespace are answered by the thread that receives their completion.
//!
//! A FUSE thread reads a request, submits its commands with
//! [`Namespace::submit_then`] and goes back to `/dev/fuse` for the next
//! one; the reply object travels with the callback, and the initiator's
//! receiver (or whichever thread is reading that queue's socket) writes
//! the reply when the last command completed. No FUSE thread sleeps per
//! request and none is woken to pass a result on, so a few threads keep
//! many requests in flight: as many as the mount's [`Budget`] lets in
//! (bytes and requests, taken before submitting and given back when the
//! request was answered), and the initiator's queue slots (a submitter
//! blocks while every slot is busy).
//!
//! What stays as it was: a write is answered only after its NVMe Write
//! completed, holding its blocks' range lock until then (so an unaligned
//! write's read-modify-write, which still runs on the FUSE thread under
//! the same lock, never interleaves with it); an fsync first waits for
//! every write that was in flight when it arrived ([`InFlight`]), then
//! sends the Flush and answers after it completed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use fuser::{ReplyData, ReplyWrite};

use super::admit::{Budget, Share};
use super::fs::{errno, Volume, SPLIT_PIECE};
use ferrofab_nvmeof_host::{IoOp, Namespace};

/// The writes of one volume still in flight, so that an fsync can wait
/// for those that arrived before it (NVMe's Flush covers only completed
/// writes). Writes that arrive during the wait are not waited for, so a
/// steady writer cannot starve an fsync.
#[derive(Debug, Default)]
pub struct InFlight {
    state: Mutex<InFlightState>,
    drained: Condvar,
}

#[derive(Debug, Default)]
struct InFlightState {
    next: u64,
    open: BTreeSet<u64>,
    /// fsyncs waiting; completions only signal when there is one.
    waiting: usize,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a write; its id for [`InFlight::end`].
    fn start(&self) -> u64 {
        let mut s = self.lock();
        let id = s.next;
        s.next += 1;
        s.open.insert(id);
        id
    }

    fn end(&self, id: u64) {
        let mut s = self.lock();
        s.open.remove(&id);
        if s.waiting > 0 {
            drop(s);
            self.drained.notify_all();
        }
    }

    /// Wait until every write registered before this call has ended.
    pub fn wait_for_earlier(&self) {
        let mut s = self.lock();
        let before = s.next;
        s.waiting += 1;
        while s.open.first().is_some_and(|&id| id < before) {
            s = self.drained.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.waiting -= 1;
    }

    /// How many writes are in flight (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A write in flight: its [`InFlight`] entry, its share of the budget and
/// its blocks' range lock, all let go when dropped (after the last
/// command completed, or when the write could not be submitted).
struct WriteHold {
    vol: Arc<Volume>,
    blocks: (u64, u64),
    id: u64,
    _share: Share,
}

impl WriteHold {
    /// Register the write, take its share of `budget`, then the range
    /// lock on `[offset, offset+len)` (waiting for overlapping writes, as
    /// [`super::rmw::write`] does). Registered first, so that an fsync
    /// arriving while the write waits (for the budget or the lock) waits
    /// for it too.
    fn take(
        vol: &Arc<Volume>,
        budget: &Arc<Budget>,
        bs: u64,
        offset: u64,
        len: usize,
    ) -> WriteHold {
        let id = vol.writes.start();
        let share = budget.take(len);
        let blocks = (offset / bs, (offset + len as u64).div_ceil(bs));
        vol.locks.hold(blocks.0, blocks.1);
        WriteHold {
            vol: Arc::clone(vol),
            blocks,
            id,
            _share: share,
        }
    }
}

impl Drop for WriteHold {
    fn drop(&mut self) {
        self.vol.locks.release(self.blocks.0, self.blocks.1);
        self.vol.writes.end(self.id);
    }
}

/// Several operations of one request in flight together; the last to
/// complete calls `done` with every operation's data in order, or the
/// first error.
struct Gather<D> {
    left: AtomicUsize,
    parts: Mutex<Vec<Vec<u8>>>,
    err: Mutex<Option<std::io::Error>>,
    done: Mutex<Option<D>>,
}

impl<D> Gather<D>
where
    D: FnOnce(std::io::Result<Vec<Vec<u8>>>) + Send + 'static,
{
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One share of the count is done; the last calls `done`.
    fn arrive(&self, n: usize) {
        if self.left.fetch_sub(n, Ordering::AcqRel) != n {
            return;
        }
        let Some(done) = Self::lock(&self.done).take() else {
            return;
        };
        // Into locals first: `done` writes the FUSE reply, which must not
        // happen under these locks.
        let err = Self::lock(&self.err).take();
        let parts = std::mem::take(&mut *Self::lock(&self.parts));
        match err {
            Some(e) => done(Err(e)),
            None => done(Ok(parts)),
        }
    }

    fn fail(&self, e: std::io::Error) {
        Self::lock(&self.err).get_or_insert(e);
    }
}

/// Submit every op, all at once; `done` gets their data in order when
/// all completed, or the first error (after every submitted op
/// completed, so nothing is still in flight when the request is
/// answered).
fn submit_all<D>(ns: &Namespace, ops: Vec<IoOp>, done: D)
where
    D: FnOnce(std::io::Result<Vec<Vec<u8>>>) + Send + 'static,
{
    let n = ops.len();
    let g = Arc::new(Gather {
        // One share per op, one for this submitter, so `done` cannot run
        // before every op was handed out.
        left: AtomicUsize::new(n + 1),
        parts: Mutex::new(vec![Vec::new(); n]),
        err: Mutex::new(None),
        done: Mutex::new(Some(done)),
    });
    let mut handed = 0;
    for (i, op) in ops.into_iter().enumerate() {
        let mine = Arc::clone(&g);
        let sent = ns.submit_then(op, move |r| {
            match r {
                Ok(d) => {
                    if let Some(slot) = Gather::<D>::lock(&mine.parts).get_mut(i) {
                        *slot = d;
                    }
                }
                Err(e) => mine.fail(e.into()),
            }
            mine.arrive(1);
        });
        if let Err(e) = sent {
            g.fail(e.into());
            break;
        }
        handed += 1;
    }
    // The ops never submitted, and this submitter's own share.
    g.arrive(n - handed + 1);
}

/// The ops of a request of `len` bytes at `offset`: one, or
/// [`SPLIT_PIECE`]s when `split` (see `fs::splits`).
fn pieces(
    offset: u64,
    len: usize,
    split: bool,
    op: impl Fn(u64, std::ops::Range<usize>) -> IoOp,
) -> Vec<IoOp> {
    let step = if split { SPLIT_PIECE } else { len.max(1) };
    (0..len)
        .step_by(step)
        .map(|at| op(offset + at as u64, at..(at + step).min(len)))
        .collect()
}

/// Read whole blocks of `ns` and answer from the completing thread. The
/// request's share of `budget` is taken first (waiting while it is spent).
pub fn read(
    vol: &Arc<Volume>,
    ns: &Namespace,
    budget: &Arc<Budget>,
    offset: u64,
    len: usize,
    split: bool,
    reply: ReplyData,
) {
    let share = budget.take(len);
    let ops = pieces(offset, len, split, |offset, r| IoOp::Read {
        offset,
        len: r.len(),
    });
    let name = vol.name.clone();
    submit_all(ns, ops, move |r| {
        // Given back before answering: the reader may send the next
        // request at once.
        drop(share);
        match r {
            Ok(mut parts) if parts.len() == 1 => reply.data(&parts.swap_remove(0)),
            Ok(parts) => reply.data(&parts.concat()),
            Err(e) => {
                tracing::warn!(volume = %name, offset, len, error = %e, "read failed");
                reply.error(errno(&e));
            }
        }
    });
}

/// Write whole blocks of `ns` (of `bs` bytes) and answer from the
/// completing thread, after the last command completed. The caller's
/// bytes are copied once, into the commands' buffers: the initiator
/// sends a large write's data when the target asks for it (R2T), after
/// this FUSE thread has moved on and its request buffer holds the next
/// request. Waits first for the budget and the range lock
/// (`WriteHold::take`).
#[allow(clippy::too_many_arguments)]
pub fn write(
    vol: &Arc<Volume>,
    ns: &Namespace,
    budget: &Arc<Budget>,
    bs: u64,
    offset: u64,
    data: &[u8],
    split: bool,
    reply: ReplyWrite,
) {
    let len = data.len();
    let hold = WriteHold::take(vol, budget, bs, offset, len);
    let ops = pieces(offset, len, split, |offset, r| IoOp::Write {
        offset,
        data: data[r].to_vec(),
    });
    submit_all(ns, ops, move |r| {
        let name = hold.vol.name.clone();
        // Let go of the range and the fsync barrier before answering: the
        // caller may issue the next write (or the fsync) at once.
        drop(hold);
        match r {
            Ok(_) => reply.written(len as u32),
            Err(e) => {
                tracing::warn!(volume = %name, offset, len, error = %e, "write failed");
                reply.error(errno(&e));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fsync_waits_only_for_earlier_writes() {
        let f = Arc::new(InFlight::default());
        let a = f.start();
        let waiter = {
            let f = Arc::clone(&f);
            std::thread::spawn(move || f.wait_for_earlier())
        };
        std::thread::sleep(Duration::from_millis(30));
        let later = f.start();
        assert!(!waiter.is_finished(), "returned with a write in flight");
        f.end(a);
        waiter.join().expect("join");
        assert_eq!(f.len(), 1, "the later write is still open");
        f.end(later);
        assert!(f.is_empty());
    }

    /// A write waiting for its range lock is already registered, so an
    /// fsync arriving meanwhile waits for it as well.
    #[test]
    fn a_write_waiting_for_its_range_lock_holds_an_fsync_back() {
        use ferrofab_nvmeof_bench::io::MemBlockIo;
        let mut reg = super::super::fs::Registry::new();
        let ino = reg
            .insert("v", Arc::new(MemBlockIo::new(4096, 512)))
            .expect("insert");
        let vol = reg.get(ino).expect("volume");
        let budget = Budget::new(1 << 20, 8);
        // An earlier write's range.
        vol.locks.hold(0, 1);
        let writer = {
            let (vol, budget) = (Arc::clone(&vol), Arc::clone(&budget));
            std::thread::spawn(move || drop(WriteHold::take(&vol, &budget, 512, 0, 512)))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while vol.writes.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(vol.writes.len(), 1, "not registered while waiting");
        let fsync = {
            let vol = Arc::clone(&vol);
            std::thread::spawn(move || vol.writes.wait_for_earlier())
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!writer.is_finished(), "took a range that was held");
        assert!(!fsync.is_finished(), "fsync did not wait for the write");
        vol.locks.release(0, 1);
        writer.join().expect("writer");
        fsync.join().expect("fsync");
        assert!(vol.writes.is_empty());
        assert_eq!(budget.spent().requests, 0);
    }

    #[test]
    fn pieces_cover_the_request_in_order() {
        let len = 2 * SPLIT_PIECE + 4096;
        let ops = pieces(8192, len, true, |offset, r| IoOp::Read {
            offset,
            len: r.len(),
        });
        let got: Vec<(u64, usize)> = ops
            .iter()
            .map(|op| match op {
                IoOp::Read { offset, len } => (*offset, *len),
                _ => unreachable!(),
            })
            .collect();
        let p = SPLIT_PIECE as u64;
        assert_eq!(
            got,
            vec![
                (8192, SPLIT_PIECE),
                (8192 + p, SPLIT_PIECE),
                (8192 + 2 * p, 4096)
            ]
        );
        assert_eq!(
            pieces(0, 4096, false, |o, r| IoOp::Read {
                offset: o,
                len: r.len()
            })
            .len(),
            1
        );
    }
}
