//! Namespaces kept in the target's own memory: SPDK's Malloc bdev
//! equivalent, for benchmarks, tests and scratch space.
//!
//! The namespace is one anonymous mapping owned by the target, in huge
//! pages where the machine has them (`MAP_HUGETLB` from the reserved pool,
//! else transparent huge pages on a 2 MiB-aligned region). A read is then
//! one copy from the mapping (by the kernel, straight into the socket: see
//! `Conn::flush_tx`), a write one `memcpy` from the receive buffer: no
//! page-cache lookup, no per-page reference and no system call per I/O,
//! which is what a namespace file on tmpfs pays (docs/benchmarks.md, "Issue
//! 20 item 2").
//!
//! **Volatile**: the data is lost when the target stops, and Flush and FUA
//! do nothing. Never use it for data anyone wants back.
//!
//! # Soundness
//!
//! Every connection thread reads and writes the same memory. The mapping is
//! only ever touched through raw pointers, and every access holds the lock
//! of each [`STRIPE`] it covers: readers (including a connection handing
//! the bytes to `writev`) share it, writers hold it alone. So a byte is
//! never written while anyone reads or writes it, and a `&[u8]` over the
//! mapping exists only while its stripes are read-locked
//! ([`ReadLocks`]). Several stripes are always locked in ascending order
//! (of backend address, then stripe), which rules out deadlock. A lock is
//! one uncontended atomic operation in the common case: two connections
//! meet only on the same 2 MiB stripe, and then only for one copy.

use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{
    buf_len, check_block_size, check_io_range, BackendError, BackendErrorKind, BackendInfo,
    BackendKind, BlockBackend, Op,
};

/// Bytes covered by one lock, and the alignment of the mapping: one huge
/// page, so a 128 KiB read takes one lock (two when it straddles).
pub const STRIPE: u64 = 2 * 1024 * 1024;

/// What memory namespaces of this process hold in all, in bytes: together
/// they may not exceed the machine's memory ([`max_memory_bytes`]).
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// `MADV_POPULATE_WRITE` (Linux 5.14): fault every page in, writable, now.
/// Not in the `libc` crate yet.
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// The label a memory backend goes by in errors, logs and
/// [`BackendInfo::path`] (it has no path).
pub const MEMORY_LABEL: &str = "memory";

/// The most memory namespaces may hold in all: the machine's physical
/// memory. More could never be backed, and would end with the OOM killer
/// instead of a clear error at start.
pub fn max_memory_bytes() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    match (u64::try_from(pages), u64::try_from(page)) {
        (Ok(n), Ok(p)) => n.saturating_mul(p),
        _ => 0,
    }
}

/// Which kind of pages the mapping got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// 2 MiB pages from the reserved hugetlb pool (`MAP_HUGETLB`).
    Hugetlb,
    /// Ordinary memory advised to use transparent huge pages.
    Transparent,
}

/// A namespace in one anonymous mapping of the target's memory.
#[derive(Debug)]
pub struct MemoryBackend {
    base: NonNull<u8>,
    /// Exposed size in bytes (a multiple of the block size).
    size: u64,
    /// Mapped length: `size` rounded up to [`STRIPE`].
    map_len: usize,
    block_size: u32,
    pages: PageKind,
    stripes: Box<[RwLock<()>]>,
}

// SAFETY: the mapping is owned by the backend for its whole life and is
// only accessed through the stripe locks (module docs), so sharing the
// pointer between threads is sound.
unsafe impl Send for MemoryBackend {}
// SAFETY: as above: all access through `&self` is synchronised by the
// stripe locks.
unsafe impl Sync for MemoryBackend {}

impl MemoryBackend {
    /// A zeroed namespace of `size` bytes with `block_size`-byte blocks.
    /// Refuses a size of zero, one that is not a whole number of blocks,
    /// and one that would take the memory namespaces of this process past
    /// [`max_memory_bytes`].
    pub fn new(size: u64, block_size: u32) -> Result<MemoryBackend, BackendError> {
        let label = Path::new(MEMORY_LABEL);
        check_block_size(label, block_size)?;
        check_memory_size(size, block_size)?;
        reserve(size)?;
        let mapped = map(size);
        let (base, map_len, pages) = match mapped {
            Ok(m) => m,
            Err(e) => {
                IN_USE.fetch_sub(size, Ordering::Relaxed);
                return Err(e);
            }
        };
        let stripes = (0..map_len as u64 / STRIPE)
            .map(|_| RwLock::new(()))
            .collect();
        tracing::info!(size, block_size, pages = ?pages, "memory namespace mapped");
        Ok(MemoryBackend {
            base,
            size,
            map_len,
            block_size,
            pages,
            stripes,
        })
    }

    /// Which kind of pages the namespace got.
    pub fn page_kind(&self) -> PageKind {
        self.pages
    }

    fn check(&self, op: Op, offset: u64, len: u64) -> Result<(), BackendError> {
        check_io_range(
            op,
            Path::new(MEMORY_LABEL),
            offset,
            len,
            self.size,
            self.block_size,
        )
    }

    /// The stripes `offset..offset + len` covers (`len > 0`, in range).
    fn stripe_range(offset: u64, len: u64) -> std::ops::RangeInclusive<usize> {
        let first = (offset / STRIPE) as usize;
        let last = ((offset + len - 1) / STRIPE) as usize;
        first..=last
    }

    fn read_lock(&self, stripe: usize) -> RwLockReadGuard<'_, ()> {
        self.stripes[stripe]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self, stripe: usize) -> RwLockWriteGuard<'_, ()> {
        self.stripes[stripe]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `f(stripe, offset, len, done)` for each piece of a checked
    /// range that lies in one stripe, in order; `done` counts the bytes of
    /// the range before the piece. Each piece is copied under its own
    /// stripe's lock only, so no copy holds two locks: blocks never
    /// straddle stripes, so every block is still read or written whole,
    /// which is all the atomicity NVMe promises (AWUN = 0: one block).
    fn for_each_piece(offset: u64, len: u64, mut f: impl FnMut(usize, u64, usize, usize)) {
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let piece = (STRIPE - at % STRIPE).min(end - at);
            f(
                (at / STRIPE) as usize,
                at,
                piece as usize,
                (at - offset) as usize,
            );
            at += piece;
        }
    }

    /// Copies `len` bytes at `offset` to `dst`. The range must have been
    /// checked.
    fn copy_out(&self, dst: *mut u8, offset: u64, len: usize) {
        Self::for_each_piece(offset, len as u64, |stripe, at, piece, done| {
            let _lock = self.read_lock(stripe);
            // SAFETY: the piece lies inside the mapping (checked against
            // `size <= map_len`), `dst` is valid for `len` bytes and cannot
            // overlap the private mapping, and no writer touches the
            // stripe while we hold its read lock.
            unsafe { std::ptr::copy_nonoverlapping(self.at(at), dst.add(done), piece) };
        });
    }

    /// The address of byte `offset` (inside the mapping).
    fn at(&self, offset: u64) -> *mut u8 {
        // SAFETY: callers pass offsets checked against `size`, which is
        // at most `map_len`, so the result stays inside (or one past) the
        // mapping.
        unsafe { self.base.as_ptr().add(offset as usize) }
    }

    /// Checks a read of `len` bytes at `offset` for the zero-copy send:
    /// the bytes are then handed out with [`ReadLocks::slice`].
    pub(crate) fn check_read(&self, offset: u64, len: usize) -> Result<(), BackendError> {
        self.check(Op::Read, offset, len as u64)
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        // SAFETY: `base` and `map_len` are the mapping `map` made; nothing
        // borrows from it any more (`&mut self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
        IN_USE.fetch_sub(self.size, Ordering::Relaxed);
    }
}

/// Refuses sizes a memory namespace cannot have, naming the limit.
fn check_memory_size(size: u64, block_size: u32) -> Result<(), BackendError> {
    let refuse = |why: String| {
        Err(BackendError::refused(
            Op::Open,
            Path::new(MEMORY_LABEL),
            BackendErrorKind::InvalidArgument,
            why,
        ))
    };
    if size == 0 {
        return refuse("memory size 0: a memory namespace needs at least one block".into());
    }
    if !size.is_multiple_of(u64::from(block_size)) {
        return refuse(format!(
            "memory size {size} bytes is not a multiple of the block size {block_size}"
        ));
    }
    let max = max_memory_bytes();
    if size > max {
        return refuse(format!(
            "memory size {size} bytes is more than the machine's memory ({max} bytes)"
        ));
    }
    Ok(())
}

/// Counts `size` into [`IN_USE`], refusing it when all memory namespaces
/// together would exceed the machine's memory.
fn reserve(size: u64) -> Result<(), BackendError> {
    let max = max_memory_bytes();
    IN_USE
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(size).filter(|&total| total <= max)
        })
        .map(|_| ())
        .map_err(|used| {
            BackendError::refused(
                Op::Open,
                Path::new(MEMORY_LABEL),
                BackendErrorKind::NoSpace,
                format!(
                    "memory size {size} bytes: memory namespaces already hold {used} bytes, \
                     and together they may not exceed the machine's memory ({max} bytes)"
                ),
            )
        })
}

/// Maps `size` bytes rounded up to [`STRIPE`]: huge pages from the pool if
/// it has enough, else ordinary pages on a 2 MiB boundary with
/// `MADV_HUGEPAGE`. All pages are faulted in now, so the memory is really
/// there before the first host connects and no I/O pays a page fault.
fn map(size: u64) -> Result<(NonNull<u8>, usize, PageKind), BackendError> {
    let map_len = usize::try_from(size.div_ceil(STRIPE) * STRIPE)
        .map_err(|_| refused_map("the size does not fit the address space".into()))?;
    if let Some(base) = mmap_anon(map_len, libc::MAP_HUGETLB | libc::MAP_POPULATE) {
        return Ok((base, map_len, PageKind::Hugetlb));
    }
    // Over-allocate by one stripe, then cut the mapping to a 2 MiB
    // boundary so transparent huge pages can back all of it.
    let extra = STRIPE as usize;
    let Some(raw) = mmap_anon(map_len + extra, 0) else {
        return Err(BackendError::io(
            Op::Open,
            Path::new(MEMORY_LABEL),
            None,
            std::io::Error::last_os_error(),
        ));
    };
    let start = raw.as_ptr() as usize;
    let aligned = start.next_multiple_of(extra);
    let head = aligned - start;
    let tail = extra - head;
    // SAFETY: both pieces lie inside the mapping just made and nothing
    // refers to them; `aligned` is inside it too.
    let base = unsafe {
        if head > 0 {
            libc::munmap(raw.as_ptr().cast(), head);
        }
        if tail > 0 {
            libc::munmap((aligned + map_len) as *mut libc::c_void, tail);
        }
        let base = raw.as_ptr().add(head);
        // Both advices are best effort: without them the memory works,
        // in 4 KiB pages or faulted in on first use.
        libc::madvise(base.cast(), map_len, libc::MADV_HUGEPAGE);
        libc::madvise(base.cast(), map_len, MADV_POPULATE_WRITE);
        NonNull::new_unchecked(base)
    };
    Ok((base, map_len, PageKind::Transparent))
}

fn refused_map(why: String) -> BackendError {
    BackendError::refused(
        Op::Open,
        Path::new(MEMORY_LABEL),
        BackendErrorKind::InvalidArgument,
        why,
    )
}

/// A private anonymous read-write mapping of `len` bytes, or `None`.
fn mmap_anon(len: usize, flags: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: a fresh anonymous mapping aliases nothing; the result is
    // checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast())
}

impl BlockBackend for MemoryBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.check(Op::Read, offset, buf_len(buf))?;
        self.copy_out(buf.as_mut_ptr(), offset, buf.len());
        Ok(())
    }

    fn read_append(&self, out: &mut Vec<u8>, len: usize, offset: u64) -> Result<(), BackendError> {
        self.check(Op::Read, offset, len as u64)?;
        out.reserve(len);
        let at = out.len();
        // SAFETY: `reserve` made room for `len` bytes after `at`.
        let dst = unsafe { out.as_mut_ptr().add(at) };
        self.copy_out(dst, offset, len);
        // SAFETY: the `len` bytes after `at` were just written.
        unsafe { out.set_len(at + len) };
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.check(Op::Write, offset, buf_len(buf))?;
        if buf.is_empty() {
            return Ok(());
        }
        Self::for_each_piece(offset, buf_len(buf), |stripe, at, piece, done| {
            let _lock = self.write_lock(stripe);
            // SAFETY: the piece is inside the mapping (checked range),
            // `buf` cannot overlap it (a `&[u8]` over the mapping exists
            // only under read locks, which exclude us), and we hold the
            // stripe's lock alone.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr().add(done), self.at(at), piece) };
        });
        Ok(())
    }

    /// As durable as memory gets: the namespace is volatile by design.
    fn write_at_durable(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.write_at(buf, offset)
    }

    /// Nothing to do: there is no medium behind the memory.
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _deallocate: bool) -> Result<(), BackendError> {
        self.check(Op::WriteZeroes, offset, len)?;
        self.zero(offset, len);
        Ok(())
    }

    /// Zeroes the range, so deallocated blocks read back as zeroes.
    fn deallocate(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.check(Op::Deallocate, offset, len)?;
        self.zero(offset, len);
        Ok(())
    }

    fn resize(&self, new_size: u64) -> Result<(), BackendError> {
        if new_size == self.size {
            return Ok(());
        }
        Err(BackendError::refused(
            Op::Resize,
            Path::new(MEMORY_LABEL),
            BackendErrorKind::Unsupported,
            "a memory namespace keeps the size it was created with",
        ))
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Memory,
            path: PathBuf::from(MEMORY_LABEL),
            size: self.size,
            direct_io: false,
            logical_block_size: self.block_size,
            allocated_bytes: Some(self.size),
            deallocate_reads_zero: true,
            deallocate_supported: true,
        }
    }

    fn logical_block_size(&self) -> u32 {
        self.block_size
    }

    fn memory(&self) -> Option<&MemoryBackend> {
        Some(self)
    }
}

impl MemoryBackend {
    /// Zeroes a checked range, one stripe at a time.
    fn zero(&self, offset: u64, len: u64) {
        Self::for_each_piece(offset, len, |stripe, at, piece, _| {
            let _lock = self.write_lock(stripe);
            // SAFETY: inside the mapping (checked range), and we hold the
            // stripe's lock alone.
            unsafe { std::ptr::write_bytes(self.at(at), 0, piece) };
        });
    }
}

/// Read locks on the stripes of several ranges of one or more memory
/// backends, taken in one global order (backend address, then stripe) so
/// that no two threads can deadlock. While it lives, the bytes of those
/// ranges can be handed out as `&[u8]`: no writer can touch them.
pub(crate) struct ReadLocks<'a> {
    _guards: Vec<RwLockReadGuard<'a, ()>>,
    /// (backend address, stripe) of every lock held, sorted: `slice`
    /// hands out only bytes under them.
    locked: Vec<(usize, usize)>,
}

impl<'a> ReadLocks<'a> {
    /// Locks every stripe the `(backend, offset, len)` ranges cover, each
    /// once. Ranges beyond a backend's size are skipped (and `slice`
    /// refuses them).
    pub(crate) fn new(ranges: impl Iterator<Item = (&'a MemoryBackend, u64, usize)>) -> Self {
        let mut wanted: Vec<(usize, usize, &'a MemoryBackend)> = Vec::new();
        for (mem, offset, len) in ranges {
            if len == 0 || offset.saturating_add(len as u64) > mem.size {
                continue;
            }
            let key = mem as *const MemoryBackend as usize;
            for stripe in MemoryBackend::stripe_range(offset, len as u64) {
                wanted.push((key, stripe, mem));
            }
        }
        wanted.sort_unstable_by_key(|&(key, stripe, _)| (key, stripe));
        wanted.dedup_by_key(|&mut (key, stripe, _)| (key, stripe));
        let locked = wanted
            .iter()
            .map(|&(key, stripe, _)| (key, stripe))
            .collect();
        let guards = wanted
            .into_iter()
            .map(|(_, stripe, mem)| mem.read_lock(stripe))
            .collect();
        ReadLocks {
            _guards: guards,
            locked,
        }
    }

    /// The `len` bytes at `offset` of `mem`, if that range is inside it
    /// and all its stripes are among the ones locked here; `None` otherwise.
    pub(crate) fn slice<'s>(
        &'s self,
        mem: &'a MemoryBackend,
        offset: u64,
        len: usize,
    ) -> Option<&'s [u8]> {
        if len == 0 {
            return Some(&[]);
        }
        if offset.saturating_add(len as u64) > mem.size {
            return None;
        }
        let key = mem as *const MemoryBackend as usize;
        let all_locked = MemoryBackend::stripe_range(offset, len as u64)
            .all(|stripe| self.locked.binary_search(&(key, stripe)).is_ok());
        if !all_locked {
            return None;
        }
        // SAFETY: the range is inside the mapping (checked just above
        // against `size <= map_len`), and every stripe it covers is
        // read-locked for as long as `self` lives, which bounds the
        // returned lifetime: no one writes these bytes while the slice
        // exists.
        Some(unsafe { std::slice::from_raw_parts(mem.at(offset), len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn reads_back_what_was_written_and_starts_zeroed() {
        let m = MemoryBackend::new(4 * MIB, 4096).unwrap();
        assert_eq!(m.size(), 4 * MIB);
        let mut buf = vec![1u8; 8192];
        m.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        // Straddles the 2 MiB stripe boundary.
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        m.write_at(&data, 2 * MIB - 4096).unwrap();
        m.read_at(&mut buf, 2 * MIB - 4096).unwrap();
        assert_eq!(buf, data);
        let mut out = vec![7u8; 3];
        m.read_append(&mut out, 8192, 2 * MIB - 4096).unwrap();
        assert_eq!(&out[..3], &[7, 7, 7]);
        assert_eq!(&out[3..], &data[..]);
    }

    #[test]
    fn zeroes_deallocates_and_flushes() {
        let m = MemoryBackend::new(4 * MIB, 512).unwrap();
        m.write_at(&vec![0xAB; 3 * MIB as usize], 512).unwrap();
        m.write_zeroes(1024, 2 * MIB, false).unwrap();
        m.deallocate(3 * MIB, 512).unwrap();
        m.flush().unwrap();
        let mut all = vec![0u8; 4 * MIB as usize];
        m.read_at(&mut all, 0).unwrap();
        // Written: 512..3 MiB + 512; zeroed: 1024..2 MiB + 1024 and
        // 3 MiB..3 MiB + 512. What is left of the write:
        let kept = |i: u64| (512..1024).contains(&i) || (2 * MIB + 1024..3 * MIB).contains(&i);
        for (i, &b) in all.iter().enumerate() {
            let want = if kept(i as u64) { 0xAB } else { 0 };
            assert_eq!(b, want, "byte {i}");
        }
        assert!(m.info().deallocate_reads_zero);
        assert_eq!(m.info().kind, BackendKind::Memory);
    }

    #[test]
    fn refuses_out_of_range_misaligned_and_resize() {
        let m = MemoryBackend::new(MIB, 4096).unwrap();
        let mut buf = vec![0u8; 4096];
        let err = m.read_at(&mut buf, MIB).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::OutOfRange);
        let err = m.write_at(&buf[..512], 0).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Misaligned);
        let err = m.write_zeroes(MIB - 4096, 8192, true).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::OutOfRange);
        let err = m.resize(2 * MIB).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Unsupported);
        m.resize(MIB).unwrap();
    }

    #[test]
    fn refuses_bad_sizes_with_clear_messages() {
        let err = MemoryBackend::new(0, 512).unwrap_err().to_string();
        assert!(err.contains("memory size 0"), "{err}");
        let err = MemoryBackend::new(MIB + 512, 4096).unwrap_err().to_string();
        assert!(
            err.contains("not a multiple of the block size 4096"),
            "{err}"
        );
        let too_big = max_memory_bytes() + 4096;
        let err = MemoryBackend::new(too_big, 4096).unwrap_err().to_string();
        assert!(err.contains("more than the machine's memory"), "{err}");
        let err = MemoryBackend::new(MIB, 1000).unwrap_err().to_string();
        assert!(err.contains("block size 1000"), "{err}");
    }

    #[test]
    fn all_memory_namespaces_together_stay_within_the_machine() {
        // Each alone fits; the total is checked too. Nothing is mapped
        // for the refused one (the reservation comes first).
        let max = max_memory_bytes();
        let a = MemoryBackend::new(MIB, 4096).unwrap();
        let err = reserve(max).unwrap_err().to_string();
        assert!(err.contains("may not exceed the machine's memory"), "{err}");
        drop(a);
    }

    #[test]
    fn concurrent_readers_and_writers_see_whole_writes() {
        // Writers fill a 4 KiB block with one byte value; readers (through
        // the copy path and through read locks) must never see a mix.
        let m = std::sync::Arc::new(MemoryBackend::new(4 * MIB, 4096).unwrap());
        let offset = 2 * MIB - 2048 - 2048; // a block just below a stripe boundary
        let writers: Vec<_> = (1..=2u8)
            .map(|v| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        m.write_at(&[v; 8192], offset).unwrap();
                    }
                })
            })
            .collect();
        let mut buf = vec![0u8; 8192];
        for _ in 0..2000 {
            m.read_at(&mut buf, offset).unwrap();
            assert!(buf.iter().all(|&b| b == buf[0]), "torn read");
            let locks = ReadLocks::new([(&*m, offset, 8192usize)].into_iter());
            let s = locks.slice(&m, offset, 8192).unwrap();
            assert!(s.iter().all(|&b| b == s[0]), "torn read under locks");
            // Nothing past the end.
            assert!(locks.slice(&m, 4 * MIB - 4096, 8192).is_none());
        }
        for w in writers {
            w.join().unwrap();
        }
        // Nothing outside the locked stripes.
        let one = ReadLocks::new([(&*m, 0, 4096usize)].into_iter());
        assert!(one.slice(&m, 0, 4096).is_some());
        assert!(one.slice(&m, 2 * MIB, 4096).is_none());
    }
}
