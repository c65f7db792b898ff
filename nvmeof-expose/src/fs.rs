//! The FUSE filesystem: one flat directory, one regular file per volume.
//!
//! Files are opened with `FOPEN_DIRECT_IO`: the kernel page cache is
//! bypassed, so every read reaches the namespace and data written by
//! another host is never served stale from this host's cache (the price is
//! no readahead; with a 4 MiB max_write large sequential I/O is still
//! efficient). `FOPEN_PARALLEL_DIRECT_WRITES` lets the kernel send
//! concurrent writes to the same file, which the per-block range lock in
//! [`super::rmw`] keeps consistent.
//!
//! `FUSE_ASYNC_DIO` is asked for at INIT: without it the kernel runs an
//! asynchronous direct I/O (`io_submit`, io_uring) synchronously inside the
//! submitting call, so `fio --ioengine=libaio --iodepth=32` on the file
//! had one request in flight per job. With it, those requests become FUSE
//! background requests, and `max_background` (set at INIT too) bounds how
//! many the kernel keeps in flight; the mount's in-flight budget
//! ([`super::admit`]) bounds how many this process has submitted at once.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::admit::{Budget, Reserve};
use super::replies::{self, InFlight};
use super::rmw::{self, RangeLock};
use ferrofab_nvmeof_host::{DynBlockIo, Namespace};

/// How long the kernel may cache names and attributes. Size changes and
/// removals are pushed to the kernel explicitly, so this only bounds the
/// damage if such a notification is lost.
pub const TTL: Duration = Duration::from_secs(1);

const ROOT: INodeNo = INodeNo::ROOT;

/// One exposed volume.
pub struct Volume {
    pub name: String,
    pub ino: INodeNo,
    pub dev: Arc<DynBlockIo>,
    /// The same device as an initiator namespace, when it is one: reads of
    /// whole blocks then take the initiator's buffer instead of a copy
    /// and whole-block reads and writes are answered asynchronously (see
    /// [`replies`]).
    pub ns: Option<Namespace>,
    /// Serialises writes per block range (read-modify-write safety).
    pub locks: RangeLock,
    /// Asynchronous writes in flight, which an fsync waits for.
    pub writes: InFlight,
    /// Whether the device refuses writes (read once, when added). Checked
    /// before any write, not only at open: whole-block writes go to `ns`,
    /// which [`super::Volumes::add_namespace_as`] may pair with a
    /// read-only wrapper as `dev`, so the wrapper alone would not stop them.
    pub read_only: bool,
}

/// Name ↔ inode bookkeeping, shared between the filesystem threads and
/// the [`super::Exposer`] that adds and removes volumes.
#[derive(Default)]
pub struct Registry {
    by_name: BTreeMap<String, INodeNo>,
    by_ino: HashMap<u64, Arc<Volume>>,
    next_ino: u64,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            next_ino: 2,
            ..Default::default()
        }
    }

    /// Add a volume under a fresh inode number. Inode numbers are never
    /// reused, so a kernel still holding a removed volume's inode can never
    /// reach a different volume through it.
    pub fn insert(&mut self, name: &str, dev: Arc<DynBlockIo>) -> Option<INodeNo> {
        self.insert_with(name, dev, None)
    }

    /// [`Registry::insert`], remembering the namespace behind `dev`.
    pub fn insert_with(
        &mut self,
        name: &str,
        dev: Arc<DynBlockIo>,
        ns: Option<Namespace>,
    ) -> Option<INodeNo> {
        if self.by_name.contains_key(name) {
            return None;
        }
        let ino = INodeNo(self.next_ino);
        self.next_ino += 1;
        let vol = Arc::new(Volume {
            name: name.to_string(),
            ino,
            read_only: dev.read_only(),
            dev,
            ns,
            locks: RangeLock::new(),
            writes: InFlight::default(),
        });
        self.by_name.insert(name.to_string(), ino);
        self.by_ino.insert(ino.0, vol);
        Some(ino)
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Volume>> {
        let ino = self.by_name.remove(name)?;
        self.by_ino.remove(&ino.0)
    }

    pub fn get(&self, ino: INodeNo) -> Option<Arc<Volume>> {
        self.by_ino.get(&ino.0).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Volume>> {
        self.by_name.get(name).and_then(|ino| self.get(*ino))
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    fn list(&self) -> Vec<(String, INodeNo)> {
        self.by_name.iter().map(|(n, i)| (n.clone(), *i)).collect()
    }
}

/// What a mount's filesystem is bounded by (from [`super::ExposeOptions`]).
pub struct Limits {
    pub max_write: u32,
    pub max_background: u16,
    /// FUSE threads; all but one may block ([`Reserve`]).
    pub threads: usize,
    pub budget: Arc<Budget>,
}

/// The `fuser::Filesystem` implementation.
pub struct VolumeFs {
    registry: Arc<RwLock<Registry>>,
    /// Open file handles. A handle keeps its volume alive after removal,
    /// like an unlinked file, so in-flight users fail on the device rather
    /// than on a dangling handle.
    handles: Mutex<HashMap<u64, Arc<Volume>>>,
    /// How many handles are open, shared with the [`super::Exposer`] so
    /// that an unmount can wait for releases still in flight.
    open_files: Arc<AtomicUsize>,
    next_fh: AtomicU64,
    /// Bytes and requests in flight to initiator namespaces.
    budget: Arc<Budget>,
    /// Threads that may block; one is kept for requests that never do.
    reserve: Reserve,
    max_write: u32,
    max_background: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

impl VolumeFs {
    pub fn new(
        registry: Arc<RwLock<Registry>>,
        limits: Limits,
        open_files: Arc<AtomicUsize>,
    ) -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Self {
            registry,
            handles: Mutex::new(HashMap::new()),
            open_files,
            next_fh: AtomicU64::new(1),
            budget: limits.budget,
            reserve: Reserve::new(limits.threads),
            max_write: limits.max_write,
            max_background: limits.max_background,
            uid,
            gid,
            mtime: SystemTime::now(),
        }
    }

    fn reg(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, fh: FileHandle, ino: INodeNo) -> Option<Arc<Volume>> {
        let h = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        h.get(&fh.0).cloned().or_else(|| self.reg().get(ino))
    }

    fn attr(&self, ino: INodeNo, kind: FileType, size: u64, blksize: u32) -> FileAttr {
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm: if kind == FileType::Directory {
                0o755
            } else {
                0o600
            },
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize,
            flags: 0,
        }
    }

    fn root_attr(&self) -> FileAttr {
        self.attr(ROOT, FileType::Directory, 0, 4096)
    }

    fn vol_attr(&self, v: &Volume) -> FileAttr {
        let bs = v.dev.block_size().max(512);
        let mut a = self.attr(v.ino, FileType::RegularFile, v.dev.size(), bs);
        if v.read_only {
            a.perm = 0o400;
        }
        a
    }

    fn attr_of(&self, ino: INodeNo) -> Option<FileAttr> {
        if ino == ROOT {
            return Some(self.root_attr());
        }
        self.reg().get(ino).map(|v| self.vol_attr(&v))
    }
}

pub(crate) fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Largest read served from a FUSE thread's reusable buffer. The kernel
/// never asks for more than max_pages (derived from max_write) in one
/// request; anything larger (a kernel that ignores it) gets a buffer of
/// its own for that request, so a thread never keeps more than this.
pub const READ_SCRATCH_MAX: usize = 16 << 20;

thread_local! {
    /// Each FUSE worker thread's read buffer (see [`rmw::read_into`]).
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Size of the pieces a large request of whole blocks is cut into, all
/// sent to the initiator at once (a named constant, not a setting: it
/// only trades a few more commands for overlap).
///
/// At queue depth 1 (`pwrite`/`pread` of 1 MiB, an acquisition program)
/// one 1 MiB command serialises the whole round trip: the holder copies
/// and sends the megabyte, then the target stores it, then answers. As
/// four 256 KiB commands in flight together, the target stores the first
/// piece while the holder still copies and sends the next ones (a read:
/// the target reads the next piece while the holder receives one), so
/// the two sides work at the same time, as the kernel's block layer does
/// when it splits a large I/O at a device's request size. The request is
/// answered only when every piece completed, and any failed piece fails
/// it: durability is that of one command (fsync still flushes).
pub const SPLIT_PIECE: usize = 256 << 10;

/// Whether `[offset, offset+len)` is whole blocks inside the namespace,
/// and its block size.
fn whole_blocks(ns: &Namespace, offset: u64, len: usize) -> Option<u64> {
    let info = ns.info()?;
    let bs = u64::from(info.block_size);
    (len > 0
        && bs > 0
        && offset.is_multiple_of(bs)
        && (len as u64).is_multiple_of(bs)
        && offset.saturating_add(len as u64) <= info.size_bytes())
    .then_some(bs)
}

/// The namespace behind `vol` and its block size, when `[offset,
/// offset+len)` is whole blocks of it: such requests are answered
/// asynchronously ([`replies`]); the rest take the byte-granular path.
fn whole_blocks_of(vol: &Volume, offset: u64, len: usize) -> Option<(&Namespace, u64)> {
    let ns = vol.ns.as_ref()?;
    whole_blocks(ns, offset, len).map(|bs| (ns, bs))
}

/// Whether a request of whole blocks of `bs` bytes is cut into
/// [`SPLIT_PIECE`]s: two pieces at least, and pieces of whole blocks.
fn splits(bs: u64, len: usize) -> bool {
    len >= 2 * SPLIT_PIECE && (SPLIT_PIECE as u64).is_multiple_of(bs)
}

/// EROFS for a read-only volume. Every request that changes data asks
/// this first: a handle is not proof of write access (`handle` falls
/// back to the inode for a handle it does not know), and whole-block
/// writes skip the device's own refusal (see [`Volume::read_only`]).
fn writable(vol: &Volume) -> Result<(), Errno> {
    if vol.read_only {
        Err(Errno::EROFS)
    } else {
        Ok(())
    }
}

/// Read into this thread's scratch buffer and hand the bytes to `f`.
fn with_read<R>(
    dev: &DynBlockIo,
    offset: u64,
    len: usize,
    f: impl FnOnce(std::io::Result<&[u8]>) -> R,
) -> R {
    if len > READ_SCRATCH_MAX {
        let mut own = Vec::new();
        let r = rmw::read_into(dev, offset, len, &mut own);
        return f(r.map(|range| &own[range]));
    }
    READ_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let r = rmw::read_into(dev, offset, len, &mut buf);
            f(r.map(|range| &buf[range]))
        }
        // Not reentrant in practice; a fresh buffer keeps it correct.
        Err(_) => {
            let mut own = Vec::new();
            let r = rmw::read_into(dev, offset, len, &mut own);
            f(r.map(|range| &own[range]))
        }
    })
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(self.max_write) {
            tracing::warn!(wanted = self.max_write, max, "kernel limits max_write");
            let _ = config.set_max_write(max);
        }
        if let Err(unsupported) = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO) {
            tracing::warn!(
                ?unsupported,
                "kernel lacks asynchronous direct I/O; libaio and io_uring on the files run one request at a time"
            );
        }
        if let Err(min) = config.set_max_background(self.max_background) {
            let _ = config.set_max_background(min);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let vol = (parent == ROOT)
            .then(|| name.to_str().and_then(|n| self.reg().by_name(n)))
            .flatten();
        match vol {
            Some(v) => reply.entry(&TTL, &self.vol_attr(&v), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// Attribute changes are accepted and ignored, including truncation:
    /// a volume's size is the namespace's, exactly as `O_TRUNC` on a block
    /// device is ignored. This keeps tools like `dd of=FILE` working.
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.attr_of(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(vol) = self.reg().get(ino) else {
            reply.error(if ino == ROOT {
                Errno::EISDIR
            } else {
                Errno::ENOENT
            });
            return;
        };
        // A read-only attachment: even root (who ignores the mode bits)
        // gets EROFS at open, not a surprise at the first write.
        if vol.read_only && flags.acc_mode() != fuser::OpenAccMode::O_RDONLY {
            reply.error(Errno::EROFS);
            return;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, vol);
        self.open_files.fetch_add(1, Ordering::SeqCst);
        let flags = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
        reply.opened(FileHandle(fh), flags);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(vol) = self.handle(fh, ino) else {
            reply.error(Errno::EBADF);
            return;
        };
        let budget = &self.budget;
        let turn = self.reserve.turn_or_queue((vol, reply), |(vol, reply)| {
            let budget = Arc::clone(budget);
            Box::new(move || read_now(&vol, &budget, offset, size, reply))
        });
        if let Some((_turn, (vol, reply))) = turn {
            read_now(&vol, budget, offset, size, reply);
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(vol) = self.handle(fh, ino) else {
            reply.error(Errno::EBADF);
            return;
        };
        if let Err(e) = writable(&vol) {
            reply.error(e);
            return;
        }
        if u32::try_from(data.len()).is_err() {
            reply.error(Errno::EINVAL);
            return;
        }
        let budget = &self.budget;
        let turn = self.reserve.turn_or_queue((vol, reply), |(vol, reply)| {
            // Queued: the request buffer is reused once this returns.
            let data = data.to_vec();
            let budget = Arc::clone(budget);
            Box::new(move || write_now(&vol, &budget, offset, &data, reply))
        });
        if let Some((_turn, (vol, reply))) = turn {
            write_now(&vol, budget, offset, data, reply);
        }
    }

    /// Called on every close() of every copy of a descriptor, including the
    /// copies a forked child closes at exec. It does not flush: writes have
    /// already reached the target when write() returned, and waiting here
    /// for a Flush would make any close — even a child's — hang for the
    /// whole reconnect window while a storage node is down. Durability
    /// comes from fsync(), exactly as with a local disk's volatile cache.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// The reply is sent only after the namespace's Flush completed, so
    /// fsync() never returns before the data is durable.
    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.flush_volume(ino, fh, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let removed = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        if removed.is_some() {
            self.open_files.fetch_sub(1, Ordering::SeqCst);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == ROOT {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOTDIR);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let mut entries = vec![
            (".".to_string(), ROOT, FileType::Directory),
            ("..".to_string(), ROOT, FileType::Directory),
        ];
        entries.extend(
            self.reg()
                .list()
                .into_iter()
                .map(|(n, i)| (n, i, FileType::RegularFile)),
        );
        // Offsets are positions in this listing; a volume added between two
        // readdir calls may be skipped or repeated, as POSIX allows.
        for (i, (name, ino, kind)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    /// Volumes have no extended attributes. ENOSYS (what fuser's default
    /// answers too, but with a warning each time) makes the kernel stop
    /// asking, so `ls -l` and SELinux-aware tools cost one request per
    /// mount and no log noise.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let reg = self.reg();
        let bytes: u64 = reg.by_ino.values().map(|v| v.dev.size()).sum();
        let files = reg.by_ino.len() as u64;
        reply.statfs(bytes / 4096, 0, 0, files, 0, 4096, 255, 4096);
    }
}

impl VolumeFs {
    fn flush_volume(&self, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
        let Some(vol) = self.handle(fh, ino) else {
            reply.error(Errno::EBADF);
            return;
        };
        let turn = self.reserve.turn_or_queue((vol, reply), |(vol, reply)| {
            Box::new(move || flush_now(&vol, reply))
        });
        if let Some((_turn, (vol, reply))) = turn {
            flush_now(&vol, reply);
        }
    }
}

/// A read, on a thread that may block: whole blocks of an initiator
/// namespace asynchronously ([`replies::read`]), the rest byte-granular.
fn read_now(vol: &Arc<Volume>, budget: &Arc<Budget>, offset: u64, size: u32, reply: ReplyData) {
    let len = size as usize;
    if let Some((ns, bs)) = whole_blocks_of(vol, offset, len) {
        replies::read(vol, ns, budget, offset, len, splits(bs, len), reply);
        return;
    }
    with_read(&*vol.dev, offset, len, |r| match r {
        Ok(data) => reply.data(data),
        Err(e) => {
            tracing::warn!(volume = %vol.name, offset, size, error = %e, "read failed");
            reply.error(errno(&e));
        }
    });
}

/// A write (of at most `u32::MAX` bytes), on a thread that may block.
fn write_now(vol: &Arc<Volume>, budget: &Arc<Budget>, offset: u64, data: &[u8], reply: ReplyWrite) {
    let len = data.len() as u32;
    if let Some((ns, bs)) = whole_blocks_of(vol, offset, data.len()) {
        let split = splits(bs, data.len());
        replies::write(vol, ns, budget, bs, offset, data, split, reply);
        return;
    }
    match rmw::write(&*vol.dev, &vol.locks, offset, data) {
        Ok(()) => reply.written(len),
        Err(e) => {
            tracing::warn!(volume = %vol.name, offset, len, error = %e, "write failed");
            reply.error(errno(&e));
        }
    }
}

/// An fsync, on a thread that may block.
fn flush_now(vol: &Volume, reply: ReplyEmpty) {
    // NVMe's Flush covers completed writes only: wait for the
    // asynchronous ones that arrived before this fsync.
    vol.writes.wait_for_earlier();
    match vol.dev.flush() {
        Ok(()) => reply.ok(),
        Err(e) => {
            tracing::warn!(volume = %vol.name, error = %e, "flush failed");
            reply.error(errno(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::ReadOnlyDev;
    use ferrofab_nvmeof_bench::io::MemBlockIo;

    #[test]
    fn registry_never_reuses_inodes() {
        let mut r = Registry::new();
        let dev: Arc<DynBlockIo> = Arc::new(MemBlockIo::new(4096, 512));
        let a = r.insert("a", Arc::clone(&dev)).expect("insert a");
        assert!(r.insert("a", Arc::clone(&dev)).is_none(), "duplicate name");
        assert!(r.remove("a").is_some());
        let a2 = r.insert("a", dev).expect("re-insert a");
        assert_ne!(a, a2);
        assert!(r.get(a).is_none());
        assert_eq!(r.by_name("a").map(|v| v.ino), Some(a2));
        assert_eq!(r.list().len(), 1);
    }

    /// Whatever handle a write comes through, a read-only volume answers
    /// EROFS before any path (the asynchronous one included) is chosen.
    #[test]
    fn a_read_only_volume_refuses_writes() {
        let mut r = Registry::new();
        let ro: Arc<DynBlockIo> = Arc::new(ReadOnlyDev(MemBlockIo::new(4096, 512)));
        let rw: Arc<DynBlockIo> = Arc::new(MemBlockIo::new(4096, 512));
        let a = r.insert("ro", ro).expect("insert ro");
        let b = r.insert("rw", rw).expect("insert rw");
        let ro = r.get(a).expect("ro");
        assert!(ro.read_only);
        assert_eq!(writable(&ro), Err(Errno::EROFS));
        assert_eq!(writable(&r.get(b).expect("rw")), Ok(()));
    }
}
