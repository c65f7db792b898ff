//! Block backends: the regular files and block devices that NVMe namespaces
//! are stored on, and the target's own memory (`memory.rs`, volatile).
//!
//! Every backend is used through positioned I/O only (`pread`/`pwrite`
//! style, never `seek`), so one `Arc<dyn BlockBackend>` can be shared by all
//! the I/O queues of all controllers attached to a namespace without a
//! lock.
//!
//! # Alignment policy
//!
//! Offsets and lengths of every data operation must be multiples of the
//! backend's logical block size (512 or 4096), and misaligned requests are
//! refused with [`BackendErrorKind::Misaligned`]. NVMe I/O is always
//! addressed in whole logical blocks, so this costs the NVMe layer nothing,
//! and it means `O_DIRECT` never needs a read-modify-write cycle, which
//! would be slow and, with concurrent writers to the same block, unsafe.
//! Buffer *addresses* need no alignment: direct-I/O backends copy through a
//! 4096-aligned, per-thread bounce buffer when the caller's buffer is not
//! aligned (see `direct.rs`).
//!
//! Bounds are checked before any alignment or I/O: a request that reaches
//! past [`BlockBackend::size`] fails with [`BackendErrorKind::OutOfRange`]
//! and never touches the file.

mod blockdev;
mod direct;
mod error;
mod file;
mod memory;
mod store;
mod sys;

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blockdev::{BlockDeviceBackend, BlockDeviceOptions};
pub use error::{BackendError, BackendErrorKind, Op};
pub use file::{FileBackend, FileOptions};
pub(crate) use memory::ReadLocks;
pub use memory::{max_memory_bytes, MemoryBackend, PageKind, MEMORY_LABEL};

/// Storage for one NVMe namespace.
pub trait BlockBackend: Send + Sync + std::fmt::Debug {
    /// Current size in bytes (cached; cheap, called on every I/O for bounds checks).
    fn size(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError>;
    /// Appends exactly `len` bytes read at `offset` to `out` (a send
    /// buffer, behind a data PDU header); on error `out` is left as it
    /// was. The default zeroes the space first and calls
    /// [`Self::read_at`]; the file and block-device backends read straight
    /// into the spare capacity, which saves a pass over every byte of a
    /// large read (a quarter of the target's memory traffic for 128 KiB
    /// reads from the page cache).
    fn read_append(&self, out: &mut Vec<u8>, len: usize, offset: u64) -> Result<(), BackendError> {
        let at = out.len();
        out.resize(at + len, 0);
        let result = self.read_at(&mut out[at..], offset);
        if result.is_err() {
            out.truncate(at);
        }
        result
    }
    /// The open file to send `len` bytes at `offset` from with
    /// `sendfile(2)`, after the same range check as a read; `None` when the
    /// data must be read into memory instead. `sendfile` hands page-cache
    /// pages to the socket, which saves the copy into the send buffer (a
    /// fifth of the target's CPU for 128 KiB reads). Only a backend whose
    /// pages are in memory may offer it: `sendfile` runs under the
    /// connection's send lock and fails only after the data header is out,
    /// so a disk read (slow, or failing) must happen before, on the copy
    /// path. Direct I/O bypasses the page cache altogether.
    fn sendfile_source(
        &self,
        offset: u64,
        len: usize,
    ) -> Result<Option<std::os::fd::BorrowedFd<'_>>, BackendError> {
        let _ = (offset, len);
        Ok(None)
    }
    /// Writes all of `buf` at `offset`. Not durable until [`Self::flush`],
    /// like a write to a drive with a volatile write cache.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError>;
    /// Write and make durable before returning (NVMe FUA). File backend: pwritev2 with RWF_DSYNC, falling back to write_at + flush.
    fn write_at_durable(&self, buf: &[u8], offset: u64) -> Result<(), BackendError>;
    /// Make all completed writes durable (fdatasync). NVMe Flush and controller shutdown call this.
    fn flush(&self) -> Result<(), BackendError>;
    /// Zero a range; when `deallocate` is true the range may be unmapped (hole punched) instead.
    fn write_zeroes(&self, offset: u64, len: u64, deallocate: bool) -> Result<(), BackendError>;
    /// Deallocate (discard/trim): file = fallocate(PUNCH_HOLE|KEEP_SIZE), blockdev = BLKDISCARD. Reads afterwards return zeroes (for files; for block devices only if the device guarantees it — report that via info()).
    fn deallocate(&self, offset: u64, len: u64) -> Result<(), BackendError>;
    /// Grow to `new_size` bytes (files: ftruncate up, never down; block devices: re-read the device size and fail if it is smaller than asked). Shrinking is refused with an error.
    fn resize(&self, new_size: u64) -> Result<(), BackendError>;
    /// Describes the backend for Identify Namespace, the API and logs. May
    /// make a system call (`fstat`), so keep it off the I/O path.
    fn info(&self) -> BackendInfo;
    /// The logical block size in bytes: the unit of addressing and the
    /// alignment every offset and length must have. Implementations
    /// override this with a cached value; the default goes through
    /// [`Self::info`].
    fn logical_block_size(&self) -> u32 {
        self.info().logical_block_size
    }
    /// The backend as a [`MemoryBackend`], whose reads the connection
    /// sends straight from its mapping (batched in one `writev`) instead
    /// of copying them into the send buffer first; `None` for the others.
    fn memory(&self) -> Option<&MemoryBackend> {
        None
    }
}

/// What a backend is stored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    File,
    BlockDevice,
    /// The target's own memory ([`MemoryBackend`]): volatile.
    Memory,
}

/// A description of a backend, as reported by [`BlockBackend::info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub kind: BackendKind,
    pub path: PathBuf,
    /// Current size in bytes.
    pub size: u64,
    /// Whether I/O bypasses the page cache (`O_DIRECT`).
    pub direct_io: bool,
    /// The unit of addressing: 512 or 4096.
    pub logical_block_size: u32,
    /// Bytes actually allocated on disk (`st_blocks * 512`) for files, so
    /// thin provisioning can be reported; `None` when unknown.
    pub allocated_bytes: Option<u64>,
    /// Whether deallocated ranges are guaranteed to read back as zeroes.
    /// NVMe advertises this (DLFEAT) so hosts can use deallocate as a fast
    /// way to zero; promising it wrongly would corrupt their data.
    pub deallocate_reads_zero: bool,
    /// Whether [`BlockBackend::deallocate`] can do anything. False for block
    /// devices without discard support, so the NVMe layer need not
    /// advertise Dataset Management.
    pub deallocate_supported: bool,
}

/// Whether to bypass the page cache with `O_DIRECT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DirectIo {
    /// Use `O_DIRECT` where the filesystem supports it for the chosen block
    /// size, buffered I/O otherwise (e.g. on ramfs, or on filesystems that
    /// need more alignment than the block size).
    #[default]
    Auto,
    /// Require `O_DIRECT`; opening fails if it is not supported.
    On,
    /// Always use the page cache.
    Off,
}

/// Opens the backend stored at `path`, choosing the implementation from the
/// file type: a block device gives a [`BlockDeviceBackend`], a regular file
/// or a missing path (created if `opts.create`) a [`FileBackend`].
///
/// For block devices, `opts.direct_io` and `opts.block_size` apply,
/// `opts.size` is the minimum device size required, and `create` and
/// `preallocate` are ignored because a device cannot be created or thinned.
pub fn open_backend(
    path: impl AsRef<Path>,
    opts: &FileOptions,
) -> Result<Arc<dyn BlockBackend>, BackendError> {
    let path = path.as_ref();
    match fs::metadata(path) {
        Ok(meta) if meta.file_type().is_block_device() => {
            let backend = BlockDeviceBackend::open(path, &BlockDeviceOptions::from(opts))?;
            if let Some(min_size) = opts.size {
                backend.require_size(Op::Open, min_size)?;
            }
            Ok(Arc::new(backend))
        }
        Ok(meta) if meta.is_file() => Ok(Arc::new(FileBackend::open(path, opts)?)),
        Ok(_) => Err(BackendError::refused(
            Op::Open,
            path,
            BackendErrorKind::InvalidArgument,
            "neither a regular file nor a block device",
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Ok(Arc::new(FileBackend::open(path, opts)?))
        }
        Err(err) => Err(BackendError::io(Op::Open, path, None, err)),
    }
}

/// Block sizes a namespace may have. NVMe allows others, but hosts and
/// filesystems only handle these two well.
const SUPPORTED_BLOCK_SIZES: [u32; 2] = [512, 4096];

fn check_block_size(path: &Path, block_size: u32) -> Result<(), BackendError> {
    if SUPPORTED_BLOCK_SIZES.contains(&block_size) {
        return Ok(());
    }
    Err(BackendError::refused(
        Op::Open,
        path,
        BackendErrorKind::InvalidArgument,
        format!("unsupported block size {block_size} (use 512 or 4096)"),
    ))
}

/// Refuses a request that reaches past `size` or is not block aligned. See
/// the module docs for why both are errors rather than being fixed up.
fn check_io_range(
    op: Op,
    path: &Path,
    offset: u64,
    len: u64,
    size: u64,
    block_size: u32,
) -> Result<(), BackendError> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(BackendError::out_of_range(op, path, offset, len, size));
    }
    let block = u64::from(block_size);
    if !offset.is_multiple_of(block) || !len.is_multiple_of(block) {
        return Err(BackendError::misaligned(op, path, offset, len, block_size));
    }
    Ok(())
}

/// Rounds `len` down to whole blocks. A backing file or device whose size
/// is not a multiple of the block size exposes only the whole blocks,
/// since the tail can be neither addressed by an LBA nor read with
/// `O_DIRECT`.
fn whole_blocks(len: u64, block_size: u32) -> u64 {
    len - len % u64::from(block_size)
}

/// Buffer lengths as `u64` for range checks. `usize` is at most 64 bits on
/// every platform Rust supports, so this cannot truncate.
fn buf_len(buf: &[u8]) -> u64 {
    buf.len() as u64
}

#[cfg(test)]
mod tests;
