//! Byte-granular I/O on a block device: what a file needs and a namespace
//! does not offer.
//!
//! Reads of a partial block read the whole block and return the slice.
//! Writes of a partial block read the block, merge and write it back. That
//! read-modify-write must be atomic with respect to every other write that
//! touches the same block — otherwise a write landing between our read and
//! our write-back is silently undone (a torn update neither writer asked
//! for). So every write holds a lock on the blocks it covers for its whole
//! duration; writes to disjoint blocks still run in parallel. Reads take no
//! lock: each block they see is either before or after a write, which is
//! what a block device promises too.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use ferrofab_nvmeof_host::DynBlockIo;

/// Exclusive locks on half-open ranges of block numbers.
///
/// A list scanned under one mutex: the number of concurrent writers is
/// bounded by the FUSE worker threads, so a tree would be slower, not
/// faster.
#[derive(Debug, Default)]
pub struct RangeLock {
    held: Mutex<Vec<(u64, u64)>>,
    released: Condvar,
    /// Threads waiting in [`RangeLock::hold`] (changed under `held`), so
    /// that a release wakes nobody, and makes no system call, when nobody
    /// waits: the usual case, one per write.
    waiting: AtomicUsize,
}

/// Holds a range until dropped.
#[derive(Debug)]
pub struct RangeGuard<'a> {
    lock: &'a RangeLock,
    range: (u64, u64),
}

impl RangeLock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Block until no held range overlaps `[start, end)`, then hold it.
    pub fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        self.hold(start, end);
        RangeGuard {
            lock: self,
            range: (start, end),
        }
    }

    /// [`RangeLock::lock`] without a guard, for a holder that outlives the
    /// caller's stack frame (an asynchronous write, released when its
    /// command completes): the caller must [`RangeLock::release`] the same
    /// range exactly once.
    pub fn hold(&self, start: u64, end: u64) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while held.iter().any(|&(s, e)| s < end && start < e) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        held.push((start, end));
    }

    /// Let go of a range taken with [`RangeLock::hold`].
    pub fn release(&self, start: u64, end: u64) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|&r| r == (start, end)) {
            held.swap_remove(i);
        }
        drop(held);
        // A waiter counts itself under `held` before it sleeps, so one that
        // saw our range still held is counted by now.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.released.notify_all();
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        self.lock.release(self.range.0, self.range.1);
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Read up to `len` bytes at `offset`; short at the end of the device,
/// empty past it (like a regular file at EOF).
pub fn read(dev: &DynBlockIo, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let range = read_into(dev, offset, len, &mut buf)?;
    buf.truncate(range.end);
    buf.drain(..range.start);
    Ok(buf)
}

/// [`read`] into a caller-owned scratch buffer, which grows as needed and
/// is never shrunk or cleared: a FUSE thread keeps one for its life, so a
/// 1 MiB read costs neither an allocation nor zeroing a fresh megabyte
/// (both showed up per request when every read allocated its buffer).
/// Returns where in `scratch` the requested bytes are.
pub fn read_into(
    dev: &DynBlockIo,
    offset: u64,
    len: usize,
    scratch: &mut Vec<u8>,
) -> io::Result<std::ops::Range<usize>> {
    let size = dev.size();
    if offset >= size || len == 0 {
        return Ok(0..0);
    }
    let len = (len as u64).min(size - offset);
    let bs = u64::from(dev.block_size().max(1));
    let start = offset - offset % bs;
    let end = round_up(offset + len, bs).min(size);
    let whole = (end - start) as usize;
    if scratch.len() < whole {
        scratch.resize(whole, 0);
    }
    dev.read_at(&mut scratch[..whole], start)?;
    let head = (offset - start) as usize;
    Ok(head..head + len as usize)
}

/// Write all of `data` at `offset`, merging partial blocks. Fails with
/// ENOSPC past the end: a namespace cannot grow by being written to.
pub fn write(dev: &DynBlockIo, locks: &RangeLock, offset: u64, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let size = dev.size();
    let end = offset
        .checked_add(data.len() as u64)
        .filter(|&e| e <= size)
        .ok_or_else(enospc)?;
    let bs = u64::from(dev.block_size().max(1));
    let start = offset - offset % bs;
    let aligned_end = round_up(end, bs);
    let _guard = locks.lock(start / bs, aligned_end / bs);
    if start == offset && aligned_end == end {
        return dev.write_at(data, offset);
    }
    let mut buf = vec![0u8; (aligned_end - start) as usize];
    let head_partial = start != offset;
    let tail_block = aligned_end - bs;
    if head_partial {
        dev.read_at(&mut buf[..bs as usize], start)?;
    }
    if aligned_end != end && (tail_block != start || !head_partial) {
        let at = (tail_block - start) as usize;
        dev.read_at(&mut buf[at..], tail_block)?;
    }
    let at = (offset - start) as usize;
    buf[at..at + data.len()].copy_from_slice(data);
    dev.write_at(&buf, start)
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_nvmeof_bench::io::MemBlockIo;
    use std::sync::Arc;
    use std::time::Duration;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn unaligned_writes_match_a_byte_model() {
        let dev = MemBlockIo::new(16 * 512, 512);
        let locks = RangeLock::new();
        let mut model = vec![0u8; 16 * 512];
        let cases: [(u64, usize); 8] = [
            (0, 512),
            (1, 10),
            (500, 30),
            (511, 1),
            (700, 2000),
            (1024, 1536),
            (3000, 512),
            (8191, 1),
        ];
        for (i, (off, len)) in cases.into_iter().enumerate() {
            let d = pattern(len, i as u8 + 1);
            write(&dev, &locks, off, &d).expect("write");
            model[off as usize..off as usize + len].copy_from_slice(&d);
            let all = read(&dev, 0, model.len()).expect("read all");
            assert_eq!(all, model, "after case {i}");
            assert_eq!(read(&dev, off, len).expect("read back"), d);
        }
        assert_eq!(read(&dev, 3, 7).expect("small"), model[3..10]);
    }

    #[test]
    fn read_into_a_dirty_oversized_scratch_returns_only_the_asked_bytes() {
        let dev = MemBlockIo::new(8 * 512, 512);
        let locks = RangeLock::new();
        let model = pattern(8 * 512, 7);
        write(&dev, &locks, 0, &model).expect("fill");
        // A buffer left over from a larger, earlier read.
        let mut scratch = vec![0xEEu8; 16 * 512];
        for (off, len) in [
            (0u64, 4096usize),
            (3, 10),
            (511, 2),
            (1000, 3000),
            (4000, 500),
        ] {
            let r = read_into(&dev, off, len, &mut scratch).expect("read_into");
            let want_len = len.min(4096 - off as usize);
            assert_eq!(r.len(), want_len, "length at {off}+{len}");
            assert_eq!(
                &scratch[r],
                &model[off as usize..off as usize + want_len],
                "bytes at {off}+{len}"
            );
        }
        assert_eq!(scratch.len(), 16 * 512, "scratch never shrinks");
    }

    #[test]
    fn reads_are_short_at_the_end_and_writes_fail_past_it() {
        let dev = MemBlockIo::new(4 * 512, 512);
        let locks = RangeLock::new();
        assert_eq!(read(&dev, 2000, 100).expect("tail").len(), 48);
        assert!(read(&dev, 2048, 100).expect("eof").is_empty());
        let e = write(&dev, &locks, 2040, &[1u8; 16]).expect_err("past end");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn range_lock_excludes_overlaps_only() {
        let l = RangeLock::new();
        let a = l.lock(0, 2);
        let b = l.lock(2, 4); // disjoint from `a`: must not block
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::scope(|s| {
            let f = Arc::clone(&flag);
            let l = &l;
            let t = s.spawn(move || {
                let _c = l.lock(1, 3);
                f.load(std::sync::atomic::Ordering::SeqCst)
            });
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            // [1, 3) overlaps both held ranges; release them.
            drop(a);
            drop(b);
            assert!(
                t.join().expect("join"),
                "overlapping lock was granted early"
            );
        });
    }

    #[test]
    fn concurrent_partial_writes_to_one_block_do_not_tear() {
        // Many threads each own distinct bytes of the same blocks; without
        // the range lock, read-modify-write would lose some of them.
        let dev = Arc::new(MemBlockIo::new(4 * 512, 512));
        let locks = Arc::new(RangeLock::new());
        let threads = 8u64;
        std::thread::scope(|s| {
            for t in 0..threads {
                let (dev, locks) = (Arc::clone(&dev), Arc::clone(&locks));
                s.spawn(move || {
                    for round in 0..256u64 {
                        let off = round * threads + t;
                        write(&*dev, &locks, off, &[t as u8 + 1]).expect("write");
                    }
                });
            }
        });
        let all = read(&*dev, 0, 2048).expect("read");
        for (i, &b) in all.iter().enumerate() {
            assert_eq!(u64::from(b), (i as u64 % threads) + 1, "byte {i} lost");
        }
    }
}
