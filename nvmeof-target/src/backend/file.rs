//! Namespaces stored in regular files (disk images).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::direct::{self, AlignedBuf, PositionedFile, DIO_ALIGN};
use super::store::Store;
use super::{
    check_block_size, sys, whole_blocks, BackendError, BackendErrorKind, BackendInfo, BackendKind,
    BlockBackend, DirectIo, Op,
};

/// How to open (and possibly create) a file backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// Create the file if it does not exist (`size` is then required).
    pub create: bool,
    /// Minimum size in bytes: a new file is created this big, an existing
    /// smaller file is grown to it. Existing files are never shrunk.
    pub size: Option<u64>,
    pub direct_io: DirectIo,
    /// Logical block size, 512 or 4096.
    pub block_size: u32,
    /// Thick provisioning: allocate every block up front with
    /// `fallocate`, so writes can never fail with `ENOSPC` later, and keep
    /// blocks allocated on deallocate. Otherwise the file is sparse (thin).
    pub preallocate: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            create: false,
            size: None,
            direct_io: DirectIo::Auto,
            block_size: 512,
            preallocate: false,
        }
    }
}

/// A namespace stored in a regular file.
#[derive(Debug)]
pub struct FileBackend {
    store: Store,
    thick: bool,
    /// Cleared once the filesystem says it cannot punch holes / zero ranges,
    /// so later calls go straight to the fallback.
    can_punch_hole: AtomicBool,
    can_zero_range: AtomicBool,
    resize_lock: Mutex<()>,
    /// The file lives in memory (tmpfs): its reads may go out with
    /// `sendfile` ([`BlockBackend::sendfile_source`]).
    in_memory: bool,
}

impl FileBackend {
    /// Opens the file at `path`, creating a sparse (or, with
    /// `preallocate`, fully allocated) file of `opts.size` bytes if it is
    /// missing and `opts.create` is set, and growing an existing file that
    /// is smaller than `opts.size`.
    ///
    /// If anything fails after this call created the file, the file is
    /// removed again, so a failed create leaves nothing behind.
    pub fn open(path: impl AsRef<Path>, opts: &FileOptions) -> Result<Self, BackendError> {
        let path = path.as_ref();
        check_block_size(path, opts.block_size)?;
        if let Some(size) = opts.size {
            check_requested_size(path, size, opts.block_size)?;
        }
        let mut created = create_if_missing(path, opts)?;
        let file = open_file(path, opts.direct_io)?;
        lock_exclusively(&file.file, path)?;
        let direct = file.direct;
        let len = ensure_size(&file.file, path, opts.size, opts.preallocate)?;
        let direct = settle_direct_io(&file.file, path, direct, opts, len)?;
        // Unknown (the filesystem would not say) counts as on disk: the
        // copy path is always correct.
        let in_memory = sys::is_memory_backed(&file.file).unwrap_or(false);
        created.keep();

        let size = whole_blocks(len, opts.block_size);
        if size != len {
            tracing::warn!(
                path = %path.display(),
                len,
                block_size = opts.block_size,
                "file length is not a whole number of blocks; the tail is not exposed"
            );
        }
        tracing::debug!(path = %path.display(), size, direct, thick = opts.preallocate, "opened file backend");
        Ok(Self {
            store: Store::new(
                path.to_owned(),
                PositionedFile::new(file.file, direct),
                opts.block_size,
                size,
            ),
            thick: opts.preallocate,
            can_punch_hole: AtomicBool::new(true),
            can_zero_range: AtomicBool::new(true),
            resize_lock: Mutex::new(()),
            in_memory,
        })
    }

    /// The path the backend was opened with.
    pub fn path(&self) -> &Path {
        &self.store.path
    }

    /// Runs an `fallocate` mode the filesystem may not support. Returns
    /// `Ok(false)` (and remembers it) when it is unsupported, so the caller
    /// can fall back.
    fn try_fallocate(
        &self,
        supported: &AtomicBool,
        mode: libc::c_int,
        offset: u64,
        len: u64,
    ) -> io::Result<bool> {
        if !supported.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match sys::fallocate(self.store.io.file(), mode, offset, len) {
            Ok(()) => Ok(true),
            Err(err) if direct::is_unsupported(&err) => {
                tracing::debug!(path = %self.store.path.display(), mode, "fallocate mode unsupported, falling back");
                supported.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        self.try_fallocate(&self.can_punch_hole, mode, offset, len)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<bool> {
        let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        self.try_fallocate(&self.can_zero_range, mode, offset, len)
    }

    /// Zeroes a range without giving its blocks back: `ZERO_RANGE` if the
    /// filesystem has it, else plain zero writes.
    fn zero_keeping_allocation(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.zero_range(offset, len)? {
            return Ok(());
        }
        self.store.io.write_zeroes(offset, len)
    }

    fn grow_file(&self, old_size: u64, new_size: u64) -> io::Result<()> {
        let file = self.store.io.file();
        let file_len = file.metadata()?.len();
        if new_size > file_len {
            file.set_len(new_size)?;
        }
        if self.thick {
            if let Err(err) = sys::fallocate(file, 0, old_size, new_size - old_size) {
                // Nobody can have written past the old size yet (it is not
                // published), so undoing the extension loses nothing.
                if new_size > file_len {
                    let _ = file.set_len(file_len);
                }
                return Err(err);
            }
        }
        Ok(())
    }
}

impl BlockBackend for FileBackend {
    fn size(&self) -> u64 {
        self.store.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.store.read_at(buf, offset)
    }

    fn read_append(&self, out: &mut Vec<u8>, len: usize, offset: u64) -> Result<(), BackendError> {
        self.store.read_append(out, len, offset)
    }

    /// Only for a file in memory: `sendfile` reads the pages while the
    /// connection's send lock is held, so on a disk a page not yet cached
    /// would stall every other sender on the connection behind the disk,
    /// and a read error there would come after the data header had gone
    /// out. In memory neither happens; on disk the copy path reads first.
    fn sendfile_source(
        &self,
        offset: u64,
        len: usize,
    ) -> Result<Option<std::os::fd::BorrowedFd<'_>>, BackendError> {
        if !self.in_memory {
            return Ok(None);
        }
        self.store.sendfile_source(offset, len)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.store.write_at(buf, offset)
    }

    fn write_at_durable(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.store.write_at_durable(buf, offset)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.store.flush()
    }

    /// With `deallocate` on a thin file the range is hole-punched, giving
    /// the space back as the host allowed. Otherwise, and on thick files
    /// (whose promise is that space stays reserved), the range is zeroed
    /// in place with `FALLOC_FL_ZERO_RANGE`, or by writing zeroes where the
    /// filesystem has no such call.
    fn write_zeroes(&self, offset: u64, len: u64, deallocate: bool) -> Result<(), BackendError> {
        self.store.check(Op::WriteZeroes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let zero = || {
            if deallocate && !self.thick && self.punch_hole(offset, len)? {
                return Ok(());
            }
            self.zero_keeping_allocation(offset, len)
        };
        zero().map_err(self.store.io_error(Op::WriteZeroes, offset, len))
    }

    /// Punches a hole on thin files. Thick files, and filesystems that
    /// cannot punch holes, get the range zeroed instead, so deallocated
    /// blocks always read back as zeroes.
    fn deallocate(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.store.check(Op::Deallocate, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let deallocate = || {
            if !self.thick && self.punch_hole(offset, len)? {
                return Ok(());
            }
            self.zero_keeping_allocation(offset, len)
        };
        deallocate().map_err(self.store.io_error(Op::Deallocate, offset, len))
    }

    fn resize(&self, new_size: u64) -> Result<(), BackendError> {
        let _serialised = self
            .resize_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old_size = self.size();
        check_growth(&self.store.path, old_size, new_size, self.store.block_size)?;
        if new_size == old_size {
            return Ok(());
        }
        self.grow_file(old_size, new_size)
            .map_err(|err| BackendError::io(Op::Resize, &self.store.path, None, err))?;
        self.store.size.store(new_size, Ordering::Release);
        tracing::info!(path = %self.store.path.display(), old_size, new_size, "grew file backend");
        Ok(())
    }

    fn info(&self) -> BackendInfo {
        let allocated_bytes = self
            .store
            .io
            .file()
            .metadata()
            .ok()
            .map(|m| m.blocks() * 512);
        BackendInfo {
            kind: BackendKind::File,
            path: self.store.path.clone(),
            size: self.size(),
            direct_io: self.store.io.is_direct(),
            logical_block_size: self.store.block_size,
            allocated_bytes,
            deallocate_reads_zero: true,
            deallocate_supported: true,
        }
    }

    fn logical_block_size(&self) -> u32 {
        self.store.block_size
    }
}

/// Refuses shrinking (which would destroy the data in the cut-off blocks)
/// and sizes that are not whole blocks. Shared with the block device
/// backend.
pub(super) fn check_growth(
    path: &Path,
    old_size: u64,
    new_size: u64,
    block_size: u32,
) -> Result<(), BackendError> {
    if new_size < old_size {
        return Err(BackendError::refused(
            Op::Resize,
            path,
            BackendErrorKind::InvalidArgument,
            format!(
                "refusing to shrink from {old_size} to {new_size} bytes; shrinking destroys data"
            ),
        ));
    }
    if !new_size.is_multiple_of(u64::from(block_size)) {
        return Err(BackendError::refused(
            Op::Resize,
            path,
            BackendErrorKind::InvalidArgument,
            format!("new size {new_size} is not a multiple of the {block_size}-byte block size"),
        ));
    }
    Ok(())
}

fn check_requested_size(path: &Path, size: u64, block_size: u32) -> Result<(), BackendError> {
    if size.is_multiple_of(u64::from(block_size)) {
        return Ok(());
    }
    Err(BackendError::refused(
        Op::Open,
        path,
        BackendErrorKind::InvalidArgument,
        format!("size {size} is not a multiple of the {block_size}-byte block size"),
    ))
}

/// Removes a file this open call created, unless [`Self::keep`] is called:
/// a failed open must not leave a half-made image behind that a retry
/// would then pick up as "existing".
struct CreatedFile<'a> {
    path: Option<&'a Path>,
}

impl CreatedFile<'_> {
    fn keep(&mut self) {
        self.path = None;
    }
}

impl Drop for CreatedFile<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.path {
            if let Err(err) = fs::remove_file(path) {
                tracing::warn!(path = %path.display(), %err, "could not remove file after failed open");
            }
        }
    }
}

/// Creates the file (empty, mode 0600: it holds someone's data) when it is
/// missing and creation is allowed. Creating it separately from the real
/// open keeps "did we create it" exact (`O_EXCL`) and keeps creation out of
/// the `O_DIRECT` fallback logic.
fn create_if_missing<'a>(
    path: &'a Path,
    opts: &FileOptions,
) -> Result<CreatedFile<'a>, BackendError> {
    let not_created = CreatedFile { path: None };
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => return Ok(not_created),
        Ok(_) => {
            return Err(BackendError::refused(
                Op::Open,
                path,
                BackendErrorKind::InvalidArgument,
                "not a regular file",
            ))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound && opts.create => {}
        Err(err) => return Err(BackendError::io(Op::Open, path, None, err)),
    }
    if opts.size.is_none() {
        return Err(BackendError::refused(
            Op::Open,
            path,
            BackendErrorKind::InvalidArgument,
            "a size is required to create a file backend",
        ));
    }
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(CreatedFile { path: Some(path) }),
        // Someone else created it in the meantime: use theirs, never delete it.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(not_created),
        Err(err) => Err(BackendError::io(Op::Open, path, None, err)),
    }
}

struct OpenedFile {
    file: File,
    direct: bool,
}

/// Opens an existing file read-write, with `O_DIRECT` if asked.
fn open_file(path: &Path, mode: DirectIo) -> Result<OpenedFile, BackendError> {
    let open = |direct: bool| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(path)
    };
    match direct::open_maybe_direct(mode, open) {
        Ok((file, direct)) => Ok(OpenedFile { file, direct }),
        Err(err) if mode == DirectIo::On && err.raw_os_error() == Some(libc::EINVAL) => Err(
            direct_io_unsupported(path, "the filesystem does not support O_DIRECT")
                .with_source(err),
        ),
        Err(err) => Err(BackendError::io(Op::Open, path, None, err)),
    }
}

/// Claims the file for this backend with an exclusive `flock`, the file
/// counterpart of `O_EXCL` on block devices: two namespaces (or two
/// target processes) writing one image would corrupt it. Checked before
/// the file is grown, so a refused open changes nothing.
fn lock_exclusively(file: &File, path: &Path) -> Result<(), BackendError> {
    match sys::try_lock_exclusive(file) {
        Ok(true) => Ok(()),
        Ok(false) => Err(BackendError::refused(
            Op::Open,
            path,
            BackendErrorKind::Busy,
            "already in use by another backend (the file is locked)",
        )),
        Err(err) => Err(BackendError::io(Op::Open, path, None, err)),
    }
}

fn direct_io_unsupported(path: &Path, reason: &str) -> BackendError {
    BackendError::refused(Op::Open, path, BackendErrorKind::Unsupported, reason)
}

/// Grows the file to the requested size (never shrinks it) and, for thick
/// provisioning, allocates all of it. Returns the file length.
fn ensure_size(
    file: &File,
    path: &Path,
    requested: Option<u64>,
    preallocate: bool,
) -> Result<u64, BackendError> {
    let open_error = |err| BackendError::io(Op::Open, path, None, err);
    let len = file.metadata().map_err(open_error)?.len();
    let target = requested.map_or(len, |size| size.max(len));
    if target > len {
        file.set_len(target).map_err(open_error)?;
    }
    if preallocate && target > 0 {
        sys::fallocate(file, 0, 0, target).map_err(|err| {
            if direct::is_unsupported(&err) {
                BackendError::refused(
                    Op::Open,
                    path,
                    BackendErrorKind::Unsupported,
                    "the filesystem cannot preallocate (needed for thick provisioning)",
                )
                .with_source(err)
            } else {
                open_error(err)
            }
        })?;
    }
    Ok(target)
}

/// Checks that direct I/O on this file works with our block size, turning
/// `O_DIRECT` off again (in `Auto` mode) when it does not: a filesystem on a
/// 4096-byte-sector disk cannot do 512-byte direct I/O, and some
/// filesystems accept `O_DIRECT` at open but fail every request.
///
/// `Auto` also turns it off on memory filesystems (tmpfs): the flag there
/// bypasses no cache, yet a namespace marked direct has its I/O handed to
/// the I/O threads as if it waited on a device. On a namespace on
/// `/dev/shm` that hand-off (a thread wake-up, a buffer allocation and one
/// send per command instead of one per batch) cost more than half of the
/// 128 KiB read throughput (docs/benchmarks.md, "Target against SPDK").
fn settle_direct_io(
    file: &File,
    path: &Path,
    direct: bool,
    opts: &FileOptions,
    len: u64,
) -> Result<bool, BackendError> {
    if !direct {
        return Ok(false);
    }
    let open_error = |err| BackendError::io(Op::Open, path, None, err);
    if opts.direct_io == DirectIo::Auto && sys::is_memory_backed(file).map_err(open_error)? {
        tracing::info!(path = %path.display(), "file is in memory (tmpfs), O_DIRECT would bypass nothing: using buffered I/O");
        sys::clear_o_direct(file).map_err(open_error)?;
        return Ok(false);
    }
    if direct_io_fits(file, opts.block_size, len).map_err(open_error)? {
        return Ok(true);
    }
    if opts.direct_io == DirectIo::On {
        return Err(direct_io_unsupported(
            path,
            &format!("O_DIRECT here cannot do {}-byte block I/O", opts.block_size),
        ));
    }
    tracing::info!(path = %path.display(), block_size = opts.block_size, "direct I/O unusable, using buffered I/O");
    sys::clear_o_direct(file).map_err(open_error)?;
    Ok(false)
}

/// Whether direct I/O works for `block_size`-aligned requests. Asks the
/// kernel (`STATX_DIOALIGN`) when it can tell, otherwise tries reading the
/// first block.
fn direct_io_fits(file: &File, block_size: u32, len: u64) -> io::Result<bool> {
    if let Some(align) = sys::dio_alignment(file)? {
        return Ok(align.offset != 0
            && block_size.is_multiple_of(align.offset)
            && align.memory as usize <= DIO_ALIGN);
    }
    if len < u64::from(block_size) {
        return Ok(true);
    }
    let mut probe = AlignedBuf::zeroed(block_size as usize);
    match std::os::unix::fs::FileExt::read_at(file, &mut probe[..block_size as usize], 0) {
        Ok(_) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    const MIB: u64 = 1 << 20;

    fn create(dir: &Path, size: u64) -> FileBackend {
        let opts = FileOptions {
            create: true,
            size: Some(size),
            ..FileOptions::default()
        };
        FileBackend::open(dir.join("ns.img"), &opts).unwrap()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn read(backend: &FileBackend, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        backend.read_at(&mut buf, offset).unwrap();
        buf
    }

    fn allocated(backend: &FileBackend) -> u64 {
        backend.info().allocated_bytes.unwrap()
    }

    #[test]
    fn creates_a_sparse_file_of_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), 64 * MIB);
        assert_eq!(backend.size(), 64 * MIB);
        let meta = fs::metadata(dir.path().join("ns.img")).unwrap();
        assert_eq!(meta.len(), 64 * MIB);
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(allocated(&backend) < MIB, "a new file must be sparse");
        assert!(read(&backend, 0, 4096).iter().all(|&b| b == 0));
        let info = backend.info();
        assert_eq!(info.kind, BackendKind::File);
        assert_eq!(info.logical_block_size, 512);
        assert!(info.deallocate_reads_zero);
    }

    #[test]
    fn missing_file_without_create_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileBackend::open(dir.path().join("nope"), &FileOptions::default()).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::NotFound);
        assert_eq!(err.op(), Op::Open);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn creating_requires_a_whole_block_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.img");
        let no_size = FileOptions {
            create: true,
            ..FileOptions::default()
        };
        let err = FileBackend::open(&path, &no_size).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidArgument);
        let odd = FileOptions {
            size: Some(1000),
            ..no_size.clone()
        };
        assert_eq!(
            FileBackend::open(&path, &odd).unwrap_err().kind(),
            BackendErrorKind::InvalidArgument
        );
        let bad_block = FileOptions {
            size: Some(MIB),
            block_size: 1024,
            ..no_size
        };
        assert_eq!(
            FileBackend::open(&path, &bad_block).unwrap_err().kind(),
            BackendErrorKind::InvalidArgument
        );
        assert!(!path.exists(), "refused opens must not create the file");
    }

    #[test]
    fn existing_file_is_grown_but_never_shrunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.img");
        fs::write(&path, pattern(8192, 1)).unwrap();
        let grow = FileOptions {
            size: Some(MIB),
            ..FileOptions::default()
        };
        let backend = FileBackend::open(&path, &grow).unwrap();
        assert_eq!(backend.size(), MIB);
        assert_eq!(read(&backend, 0, 8192), pattern(8192, 1));
        drop(backend);
        let smaller = FileOptions {
            size: Some(4096),
            ..FileOptions::default()
        };
        let backend = FileBackend::open(&path, &smaller).unwrap();
        assert_eq!(backend.size(), MIB);
    }

    #[test]
    fn a_file_can_back_only_one_backend_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), MIB);
        let grow = FileOptions {
            size: Some(2 * MIB),
            ..FileOptions::default()
        };
        let err = FileBackend::open(backend.path(), &grow).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Busy);
        assert!(err.to_string().contains("in use"), "{err}");
        assert_eq!(
            fs::metadata(backend.path()).unwrap().len(),
            MIB,
            "a refused open changes nothing"
        );
        let path = backend.path().to_owned();
        drop(backend);
        assert_eq!(FileBackend::open(&path, &grow).unwrap().size(), 2 * MIB);
    }

    #[test]
    fn a_ragged_tail_is_not_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.img");
        fs::write(&path, vec![7u8; 4096 + 100]).unwrap();
        let backend = FileBackend::open(&path, &FileOptions::default()).unwrap();
        assert_eq!(backend.size(), 4096);
    }

    #[test]
    fn read_write_round_trip_with_unaligned_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), 4 * MIB);
        let data = pattern(3 * 4096, 9);
        backend.write_at(&data, 8192).unwrap();
        assert_eq!(read(&backend, 8192, data.len()), data);

        // A buffer that starts one byte into an allocation is never 4096-aligned.
        let mut storage = vec![0u8; 2 * 4096 + 1];
        storage[1..].copy_from_slice(&pattern(2 * 4096, 3));
        backend.write_at(&storage[1..], 512).unwrap();
        let mut out = vec![0u8; 2 * 4096 + 1];
        backend.read_at(&mut out[1..], 512).unwrap();
        assert_eq!(&out[1..], &storage[1..]);
    }

    /// `read_append` fills the spare capacity behind what the buffer
    /// already holds (a PDU header in the target), through the bounce
    /// buffer when direct I/O meets an unaligned place, and leaves the
    /// buffer as it was when the read fails.
    #[test]
    fn read_append_keeps_the_prefix_and_undoes_failures() {
        let dir = tempfile::tempdir().unwrap();
        for (name, direct_io) in [("buffered", DirectIo::Off), ("auto", DirectIo::Auto)] {
            let opts = FileOptions {
                create: true,
                size: Some(MIB),
                direct_io,
                ..FileOptions::default()
            };
            let backend = FileBackend::open(dir.path().join(name), &opts).unwrap();
            let data = pattern(3 * 4096, 5);
            backend.write_at(&data, 4096).unwrap();
            let mut out = b"header-".to_vec();
            backend.read_append(&mut out, data.len(), 4096).unwrap();
            assert_eq!(&out[..7], b"header-", "{name}");
            assert_eq!(&out[7..], &data[..], "{name}");
            let err = backend.read_append(&mut out, 4096, MIB).unwrap_err();
            assert!(err.is_out_of_range(), "{name}: {err}");
            assert_eq!(
                out.len(),
                7 + data.len(),
                "{name}: a failed read appends nothing"
            );
        }
    }

    #[test]
    fn out_of_range_io_is_refused_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), MIB);
        let block = vec![0xffu8; 4096];
        let err = backend.write_at(&block, MIB - 512).unwrap_err();
        assert!(err.is_out_of_range());
        assert_eq!(
            (err.op(), err.offset(), err.length()),
            (Op::Write, Some(MIB - 512), Some(4096))
        );
        assert!(backend
            .write_at_durable(&block, MIB)
            .unwrap_err()
            .is_out_of_range());
        let mut buf = vec![0u8; 512];
        assert!(backend
            .read_at(&mut buf, MIB)
            .unwrap_err()
            .is_out_of_range());
        assert!(backend
            .read_at(&mut buf, u64::MAX - 100)
            .unwrap_err()
            .is_out_of_range());
        assert!(backend
            .write_zeroes(0, MIB + 512, false)
            .unwrap_err()
            .is_out_of_range());
        assert!(backend.deallocate(MIB, 512).unwrap_err().is_out_of_range());
        let meta = fs::metadata(dir.path().join("ns.img")).unwrap();
        assert_eq!(meta.len(), MIB, "the file must not grow");
        assert!(read(&backend, MIB - 512, 512).iter().all(|&b| b == 0));
        // Exactly up to the end is fine.
        backend.write_at(&block[..512], MIB - 512).unwrap();
    }

    #[test]
    fn misaligned_io_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), MIB);
        let err = backend.write_at(&[1u8; 512], 100).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Misaligned);
        let err = backend.write_at(&[1u8; 100], 0).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Misaligned);
        assert_eq!(
            backend.deallocate(512, 100).unwrap_err().kind(),
            BackendErrorKind::Misaligned
        );
    }

    #[test]
    fn durable_write_and_flush() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), MIB);
        let data = pattern(8192, 5);
        backend.write_at_durable(&data, 4096).unwrap();
        backend.flush().unwrap();
        assert_eq!(read(&backend, 4096, 8192), data);
        let on_disk = fs::read(dir.path().join("ns.img")).unwrap();
        assert_eq!(&on_disk[4096..4096 + 8192], &data[..]);
    }

    #[test]
    fn deallocate_punches_a_hole_that_reads_zero() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), 8 * MIB);
        backend
            .write_at(&vec![0xabu8; 4 * MIB as usize], 0)
            .unwrap();
        backend.flush().unwrap();
        let before = allocated(&backend);
        assert!(before >= 4 * MIB);
        backend.deallocate(MIB, 2 * MIB).unwrap();
        let after = allocated(&backend);
        assert!(
            after <= before - 2 * MIB,
            "st_blocks must shrink: {before} -> {after}"
        );
        assert!(read(&backend, MIB, 2 * MIB as usize)
            .iter()
            .all(|&b| b == 0));
        assert!(read(&backend, 0, MIB as usize).iter().all(|&b| b == 0xab));
        assert!(read(&backend, 3 * MIB, MIB as usize)
            .iter()
            .all(|&b| b == 0xab));
        assert_eq!(backend.size(), 8 * MIB, "KEEP_SIZE");
    }

    #[test]
    fn write_zeroes_with_and_without_deallocate() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), 8 * MIB);
        backend
            .write_at(&vec![0x5au8; 4 * MIB as usize], 0)
            .unwrap();
        backend.write_zeroes(4096, 8192, false).unwrap();
        assert!(read(&backend, 4096, 8192).iter().all(|&b| b == 0));
        assert!(read(&backend, 0, 4096).iter().all(|&b| b == 0x5a));
        assert!(read(&backend, 12288, 4096).iter().all(|&b| b == 0x5a));

        let before = allocated(&backend);
        backend.write_zeroes(2 * MIB, MIB, false).unwrap();
        assert!(
            allocated(&backend) + MIB / 2 > before,
            "zero range keeps the allocation"
        );
        backend.write_zeroes(MIB, MIB, true).unwrap();
        assert!(
            allocated(&backend) + MIB / 2 <= before,
            "deallocate may unmap"
        );
        assert!(read(&backend, MIB, 2 * MIB as usize)
            .iter()
            .all(|&b| b == 0));
        assert!(read(&backend, 3 * MIB, MIB as usize)
            .iter()
            .all(|&b| b == 0x5a));
        backend.write_zeroes(0, 0, true).unwrap();
    }

    #[test]
    fn thick_files_are_fully_allocated_and_stay_so() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FileOptions {
            create: true,
            size: Some(4 * MIB),
            preallocate: true,
            ..FileOptions::default()
        };
        let backend = FileBackend::open(dir.path().join("thick.img"), &opts).unwrap();
        assert!(allocated(&backend) >= 4 * MIB);
        backend.write_at(&vec![1u8; MIB as usize], 0).unwrap();
        backend.deallocate(0, MIB).unwrap();
        assert!(allocated(&backend) >= 4 * MIB, "thick space stays reserved");
        assert!(read(&backend, 0, MIB as usize).iter().all(|&b| b == 0));
        backend.resize(6 * MIB).unwrap();
        assert!(allocated(&backend) >= 6 * MIB);
    }

    #[test]
    fn resize_grows_and_refuses_to_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let backend = create(dir.path(), MIB);
        backend.write_at(&[9u8; 512], MIB - 512).unwrap();
        backend.resize(2 * MIB).unwrap();
        assert_eq!(backend.size(), 2 * MIB);
        assert_eq!(fs::metadata(backend.path()).unwrap().len(), 2 * MIB);
        backend.write_at(&[8u8; 512], 2 * MIB - 512).unwrap();
        assert_eq!(read(&backend, MIB - 512, 512), vec![9u8; 512]);
        backend.resize(2 * MIB).unwrap();

        let err = backend.resize(MIB).unwrap_err();
        assert_eq!(
            (err.op(), err.kind()),
            (Op::Resize, BackendErrorKind::InvalidArgument)
        );
        assert!(err.to_string().contains("shrink"), "{err}");
        assert_eq!(
            backend.resize(2 * MIB + 100).unwrap_err().kind(),
            BackendErrorKind::InvalidArgument
        );
        assert_eq!(backend.size(), 2 * MIB);
        assert_eq!(fs::metadata(backend.path()).unwrap().len(), 2 * MIB);
    }

    #[test]
    fn block_size_4096_enforces_4096_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FileOptions {
            create: true,
            size: Some(MIB),
            block_size: 4096,
            ..FileOptions::default()
        };
        let backend = FileBackend::open(dir.path().join("4k.img"), &opts).unwrap();
        assert_eq!(backend.logical_block_size(), 4096);
        assert_eq!(
            backend.write_at(&[0u8; 512], 0).unwrap_err().kind(),
            BackendErrorKind::Misaligned
        );
        backend.write_at(&[3u8; 4096], 4096).unwrap();
    }

    #[test]
    fn direct_io_on_the_disk_filesystem_when_supported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.img");
        let backend = create(dir.path(), MIB);
        let kernel_says = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .is_ok();
        assert_eq!(
            backend.info().direct_io,
            kernel_says && direct_io_fits(backend.store.io.file(), 512, MIB).unwrap()
        );
        let forced = FileOptions {
            direct_io: DirectIo::Off,
            ..FileOptions::default()
        };
        drop(backend);
        assert!(!FileBackend::open(&path, &forced).unwrap().info().direct_io);
    }

    #[test]
    fn concurrent_threads_share_one_backend() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(create(dir.path(), 8 * MIB));
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let backend = Arc::clone(&backend);
                std::thread::spawn(move || {
                    let region = u64::from(t) * MIB;
                    for i in 0..64u64 {
                        let data = pattern(4096, t.wrapping_add(i as u8));
                        let offset = region + i * 8192;
                        if i % 8 == 0 {
                            backend.write_at_durable(&data, offset).unwrap();
                        } else {
                            backend.write_at(&data, offset).unwrap();
                        }
                        let mut back = vec![0u8; 4096];
                        backend.read_at(&mut back, offset).unwrap();
                        assert_eq!(back, data);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        backend.flush().unwrap();
        for t in 0..8u8 {
            let offset = u64::from(t) * MIB + 63 * 8192;
            assert_eq!(
                read(&backend, offset, 4096),
                pattern(4096, t.wrapping_add(63))
            );
        }
    }
}
