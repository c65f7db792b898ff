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
//! the bytes to `sendmsg`) share it, writers hold it alone. So a byte is
//! never written while anyone reads or writes it, and a `&[u8]` over the
//! mapping exists only while its stripes are read-locked
//! ([`ReadLocks`]). Several stripes are always locked in ascending order
//! (of backend address, then stripe), which rules out deadlock. A lock is
//! one uncontended atomic operation in the common case: two connections
//! meet only on the same 2 MiB stripe, and then only for one copy.
//!
//! # Atomicity
//!
//! A read or write is atomic per block, not per command, as NVMe allows
//! (AWUN = 0: one block): a copy takes one stripe's lock at a time, so a
//! command that straddles a 2 MiB stripe boundary can be seen half done
//! by a concurrent reader of both stripes, but blocks never straddle a
//! stripe, so no block is ever seen torn. Only the zero-copy send
//! ([`ReadLocks`]) holds all its stripes at once.

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
/// they may not exceed [`max_memory_bytes`].
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// The label a memory backend goes by in errors, logs and
/// [`BackendInfo::path`] (it has no path).
pub const MEMORY_LABEL: &str = "memory";

/// The most memory namespaces of this process may hold in all, in bytes:
/// what they hold now plus what the machine could still give them. More
/// could not be backed and would end with the OOM killer instead of a
/// clear error at start. See [`memory_limit`] for the sources.
pub fn max_memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let cgroup_max = cgroup_memory_max();
    memory_limit(
        phys_bytes(),
        meminfo.as_deref().and_then(parse_mem_available),
        cgroup_max,
        IN_USE.load(Ordering::Relaxed),
    )
}

/// The limit on all memory namespaces together: the smallest of the
/// machine's physical memory (`phys`), what memory namespaces already hold
/// plus what the kernel says it could still give without swapping
/// (`MemAvailable` of /proc/meminfo: memory already held by namespaces is
/// no longer "available", so it is added back), and the process's cgroup
/// v2 limit (`memory.max`, which counts everything the cgroup holds).
/// A source that could not be read (`None`) does not limit.
pub fn memory_limit(
    phys: u64,
    mem_available: Option<u64>,
    cgroup_max: Option<u64>,
    in_use: u64,
) -> u64 {
    let available = mem_available.map_or(u64::MAX, |a| a.saturating_add(in_use));
    phys.min(available).min(cgroup_max.unwrap_or(u64::MAX))
}

/// The machine's physical memory in bytes (`_SC_PHYS_PAGES`).
fn phys_bytes() -> u64 {
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

/// `MemAvailable` of a /proc/meminfo text, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kib.saturating_mul(1024))
}

/// A cgroup v2 `memory.max` text in bytes; `None` for "max" (no limit).
fn parse_cgroup_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `memory.max` of this process's cgroup (v2: the `0::PATH` line of
/// /proc/self/cgroup), when it is readable and not "max".
fn cgroup_memory_max() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file = Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join("memory.max");
    parse_cgroup_max(&std::fs::read_to_string(file).ok()?)
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
        Self::new_in(size, block_size, true)
    }

    /// As [`MemoryBackend::new`]; `hugetlb` false skips the hugetlb pool
    /// (so tests reach transparent pages on a machine that has a pool).
    fn new_in(size: u64, block_size: u32, hugetlb: bool) -> Result<MemoryBackend, BackendError> {
        let label = Path::new(MEMORY_LABEL);
        check_block_size(label, block_size)?;
        check_memory_size(size, block_size)?;
        reserve(size)?;
        let mapped = map(size, hugetlb);
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
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
        if rc != 0 {
            // The memory is still held, so it stays counted: a later
            // namespace must not be promised it.
            let error = std::io::Error::last_os_error();
            tracing::error!(size = self.size, %error, "unmapping a memory namespace failed");
            return;
        }
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
            "memory size {size} bytes is more than the machine can give memory namespaces \
             ({max} bytes: the least of its memory, MemAvailable and the cgroup's memory.max)"
        ));
    }
    Ok(())
}

/// Counts `size` into [`IN_USE`], refusing it when all memory namespaces
/// together would exceed [`max_memory_bytes`].
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
                     and together they may not exceed {max} bytes (the least of the machine's \
                     memory, MemAvailable and the cgroup's memory.max)"
                ),
            )
        })
}

/// Maps `size` bytes rounded up to [`STRIPE`]: 2 MiB huge pages from the
/// reserved pool (/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)
/// if it has enough, else ordinary pages on a 2 MiB boundary with
/// `MADV_HUGEPAGE`. All pages are faulted in now ([`populate`]), so the
/// memory is really there before the first host connects, no I/O pays a
/// page fault, and a machine that cannot give it refuses the namespace
/// here instead of OOM-killing the target at the first write.
fn map(size: u64, hugetlb: bool) -> Result<(NonNull<u8>, usize, PageKind), BackendError> {
    let map_len = usize::try_from(size.div_ceil(STRIPE) * STRIPE)
        .map_err(|_| refused_map("the size does not fit the address space".into()))?;
    // The page size is named: the default huge page size may be 1 GiB.
    // A private hugetlb mapping reserves its pages at mmap, so a pool too
    // small fails here and MAP_POPULATE cannot fail later.
    let flags = libc::MAP_HUGETLB | libc::MAP_HUGE_2MB | libc::MAP_POPULATE;
    if let Some(base) = hugetlb.then(|| mmap_anon(map_len, flags)).flatten() {
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
    // refers to them; `aligned` is inside it too. A failed trim only
    // leaves the piece mapped (and unused).
    let base = unsafe {
        if head > 0 {
            libc::munmap(raw.as_ptr().cast(), head);
        }
        if tail > 0 {
            libc::munmap((aligned + map_len) as *mut libc::c_void, tail);
        }
        // Best effort: without it the memory works in 4 KiB pages.
        libc::madvise(raw.as_ptr().add(head).cast(), map_len, libc::MADV_HUGEPAGE);
        NonNull::new_unchecked(raw.as_ptr().add(head))
    };
    if let Err(e) = populate(base, map_len) {
        // SAFETY: the mapping was made above and nothing refers to it.
        unsafe { libc::munmap(base.as_ptr().cast(), map_len) };
        return Err(BackendError::refused(
            Op::Open,
            Path::new(MEMORY_LABEL),
            BackendErrorKind::NoSpace,
            format!("memory size {size} bytes: the machine could not give that much memory ({e})"),
        ));
    }
    Ok((base, map_len, PageKind::Transparent))
}

/// Faults every page of the fresh mapping in, writable, with
/// `MADV_POPULATE_WRITE`, which says when the memory is not there
/// (ENOMEM, EFAULT) instead of leaving it to the first write. Linux before
/// 5.14 does not know the advice (EINVAL): each page is then touched, which
/// faults it in the same way but cannot report a shortage.
fn populate(base: NonNull<u8>, len: usize) -> std::io::Result<()> {
    // SAFETY: `base..base + len` is one private anonymous mapping.
    let rc = unsafe { libc::madvise(base.as_ptr().cast(), len, libc::MADV_POPULATE_WRITE) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    touch_pages(base, len);
    Ok(())
}

/// Writes one zero byte per 4 KiB page (the smallest page size), which
/// faults each page in; the mapping is fresh, so it stays all zeroes.
fn touch_pages(base: NonNull<u8>, len: usize) {
    for at in (0..len).step_by(4096) {
        // SAFETY: `at < len`, inside the fresh mapping, which nothing else
        // refers to yet.
        unsafe { base.as_ptr().add(at).write_volatile(0) };
    }
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

    /// Deallocated blocks read back as zeroes ([`MemoryBackend::release`]).
    fn deallocate(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.check(Op::Deallocate, offset, len)?;
        self.release(offset, len);
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

    /// Zeroes a checked range for Deallocate without writing every byte
    /// on the connection thread (a huge range took seconds of `memset`):
    /// each whole 2 MiB stripe of ordinary (transparent huge page) memory
    /// is given back to the kernel with `MADV_DONTNEED`, after which a
    /// private anonymous mapping reads as zeroes, and the memory stays
    /// free until the stripe is written again (that write faults it back
    /// in). Partial stripes at the edges are zeroed with `memset`, and so
    /// is all of a hugetlb mapping: there, `MADV_DONTNEED` needs Linux
    /// 5.18 and returns the page to the shared pool, so a later write could
    /// find the pool empty and die of SIGBUS. Each stripe is released or
    /// zeroed under its write lock, so no reader sees it half done.
    fn release(&self, offset: u64, len: u64) {
        Self::for_each_piece(offset, len, |stripe, at, piece, _| {
            let _lock = self.write_lock(stripe);
            if self.pages == PageKind::Transparent && piece as u64 == STRIPE {
                // SAFETY: a whole stripe inside the private anonymous
                // mapping, and we hold its lock alone: nobody reads it.
                let rc = unsafe { libc::madvise(self.at(at).cast(), piece, libc::MADV_DONTNEED) };
                if rc == 0 {
                    return;
                }
            }
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

    /// How many of the 4 KiB pages of `len` bytes at `offset` of `m` are
    /// in memory.
    fn resident_pages(m: &MemoryBackend, offset: u64, len: usize) -> usize {
        let mut vec = vec![0u8; len / 4096];
        // SAFETY: the range is inside the mapping; `vec` has a byte per page.
        let rc = unsafe { libc::mincore(m.at(offset).cast(), len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|&&v| v & 1 == 1).count()
    }

    #[test]
    fn deallocate_releases_whole_stripes_and_reads_back_zeroes() {
        for hugetlb in [false, true] {
            let m = MemoryBackend::new_in(8 * MIB, 512, hugetlb).unwrap();
            m.write_at(&vec![0xAB; 8 * MIB as usize], 0).unwrap();
            // 2 MiB - 512 .. 6 MiB + 512: two whole stripes and two edges.
            let (from, len) = (2 * MIB - 512, 4 * MIB + 1024);
            m.deallocate(from, len).unwrap();
            if m.page_kind() == PageKind::Transparent {
                // The whole stripes went back to the kernel.
                assert_eq!(resident_pages(&m, 2 * MIB, 4 * MIB as usize), 0);
            }
            let mut all = vec![1u8; 8 * MIB as usize];
            m.read_at(&mut all, 0).unwrap();
            for (i, &b) in all.iter().enumerate() {
                let gone = (from..from + len).contains(&(i as u64));
                assert_eq!(b, if gone { 0 } else { 0xAB }, "byte {i}");
            }
            // A released stripe takes writes again.
            m.write_at(&[7; 512], 3 * MIB).unwrap();
            let mut one = [0u8; 512];
            m.read_at(&mut one, 3 * MIB).unwrap();
            assert_eq!(one, [7; 512]);
        }
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
        assert!(err.contains("more than the machine can give"), "{err}");
        let err = MemoryBackend::new(MIB, 1000).unwrap_err().to_string();
        assert!(err.contains("block size 1000"), "{err}");
    }

    #[test]
    fn all_memory_namespaces_together_stay_within_the_machine() {
        // Each alone fits; the total is checked too. Nothing is mapped
        // for the refused one (the reservation comes first). While `a`
        // holds memory, all of RAM more can never be given.
        let a = MemoryBackend::new(MIB, 4096).unwrap();
        let err = reserve(phys_bytes()).unwrap_err().to_string();
        assert!(err.contains("may not exceed"), "{err}");
        assert!(err.contains("MemAvailable"), "{err}");
        drop(a);
    }

    #[test]
    fn a_failed_populate_is_reported_not_ignored() {
        // A read-only mapping cannot be faulted in writable: the kernel
        // refuses it and `populate` must return that error. (A kernel
        // without the advice answers EINVAL, and touching a read-only page
        // would crash: then only the writable case runs.)
        let len = 2 * MIB as usize;
        // SAFETY: a fresh anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = NonNull::new(p.cast::<u8>()).unwrap();
        // SAFETY: the mapping above.
        let rc = unsafe { libc::madvise(p, len, libc::MADV_POPULATE_WRITE) };
        let known = rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL);
        if known {
            assert!(populate(base, len).is_err());
        }
        // SAFETY: the mapping above, no longer used.
        unsafe { libc::munmap(p, len) };
        // A writable mapping populates.
        let m = MemoryBackend::new(4 * MIB, 4096).unwrap();
        assert!(populate(m.base, m.map_len).is_ok());
    }

    #[test]
    fn the_limit_is_the_least_of_ram_available_memory_and_the_cgroup() {
        const GIB: u64 = 1024 * MIB;
        // Nothing else known: all of RAM.
        assert_eq!(memory_limit(16 * GIB, None, None, 0), 16 * GIB);
        // What is available, plus what namespaces already hold (no longer
        // counted as available).
        assert_eq!(memory_limit(16 * GIB, Some(3 * GIB), None, 0), 3 * GIB);
        assert_eq!(
            memory_limit(16 * GIB, Some(3 * GIB), None, 2 * GIB),
            5 * GIB
        );
        // The cgroup's limit when it is lower.
        assert_eq!(memory_limit(16 * GIB, Some(8 * GIB), Some(GIB), 0), GIB);
        // Never more than RAM.
        assert_eq!(memory_limit(GIB, Some(8 * GIB), Some(4 * GIB), GIB), GIB);
        let meminfo = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(2 * MIB));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_cgroup_max("max\n"), None);
        assert_eq!(parse_cgroup_max("1073741824\n"), Some(GIB));
        // The live value obeys the same bounds.
        assert!(max_memory_bytes() <= phys_bytes());
    }

    /// Every 4 KiB block of `buf` holds one byte value.
    fn blocks_whole(buf: &[u8]) -> bool {
        buf.chunks(4096).all(|b| b.iter().all(|&x| x == b[0]))
    }

    #[test]
    fn concurrent_readers_and_writers_see_whole_blocks() {
        // Writers fill 8 KiB across a stripe boundary with one byte value;
        // readers (through the copy path and through read locks) must
        // never see a mix inside one 4 KiB block: that is the guarantee
        // (module docs). The two blocks may come from different writes.
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
            assert!(blocks_whole(&buf), "torn block");
            let locks = ReadLocks::new([(&*m, offset, 8192usize)].into_iter());
            let s = locks.slice(&m, offset, 8192).unwrap();
            // Under the locks of both stripes too: each block whole (a
            // writer locks one stripe per piece, so the pair may differ).
            assert!(blocks_whole(s), "torn block under locks");
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
