//! Namespaces stored on whole block devices (disks, partitions, LVs, loop
//! devices).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::direct::{self, PositionedFile};
use super::file::check_growth;
use super::store::Store;
use super::{
    check_block_size, sys, whole_blocks, BackendError, BackendErrorKind, BackendInfo, BackendKind,
    BlockBackend, DirectIo, FileOptions, Op,
};

/// How to open a block device backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockDeviceOptions {
    /// `Auto` uses `O_DIRECT`, which every block device supports.
    pub direct_io: DirectIo,
    /// Logical block size to expose (512 or 4096); `None` means the
    /// device's own. It cannot be smaller than the device's, because the
    /// device cannot address less.
    pub block_size: Option<u32>,
}

impl From<&FileOptions> for BlockDeviceOptions {
    fn from(opts: &FileOptions) -> Self {
        Self {
            direct_io: opts.direct_io,
            block_size: Some(opts.block_size),
        }
    }
}

/// A namespace stored on a block device.
///
/// The device is opened with `O_EXCL`, which the kernel turns into an
/// exclusive claim: it fails with `EBUSY` if the device is mounted, part of
/// an MD/DM device or exported by another backend, instead of letting two
/// owners corrupt each other.
#[derive(Debug)]
pub struct BlockDeviceBackend {
    store: Store,
    deallocate_supported: bool,
    /// Cleared once the device turns out unable to zero by unmapping.
    can_unmap_zeroes: AtomicBool,
    resize_lock: Mutex<()>,
}

impl BlockDeviceBackend {
    /// Opens the block device at `path`. Fails with
    /// [`BackendErrorKind::InvalidArgument`] if `path` is not a block device.
    pub fn open(path: impl AsRef<Path>, opts: &BlockDeviceOptions) -> Result<Self, BackendError> {
        let path = path.as_ref();
        let open_error = |err| BackendError::io(Op::Open, path, None, err);
        let meta = fs::metadata(path).map_err(open_error)?;
        if !meta.file_type().is_block_device() {
            return Err(BackendError::refused(
                Op::Open,
                path,
                BackendErrorKind::InvalidArgument,
                "not a block device",
            ));
        }
        let open = |direct: bool| {
            let direct_flag = if direct { libc::O_DIRECT } else { 0 };
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_EXCL | direct_flag)
                .open(path)
        };
        let (file, direct) = direct::open_maybe_direct(opts.direct_io, open).map_err(open_error)?;
        let device_block_size = sys::logical_block_size(&file).map_err(open_error)?;
        let block_size = choose_block_size(path, opts.block_size, device_block_size)?;
        let device_size = sys::block_device_size(&file).map_err(open_error)?;
        let size = whole_blocks(device_size, block_size);
        let deallocate_supported = discard_supported(meta.rdev());
        tracing::debug!(
            path = %path.display(),
            size,
            block_size,
            device_block_size,
            direct,
            deallocate_supported,
            "opened block device backend"
        );
        Ok(Self {
            store: Store::new(
                path.to_owned(),
                PositionedFile::new(file, direct),
                block_size,
                size,
            ),
            deallocate_supported,
            can_unmap_zeroes: AtomicBool::new(true),
            resize_lock: Mutex::new(()),
        })
    }

    /// The path the backend was opened with.
    pub fn path(&self) -> &Path {
        &self.store.path
    }

    /// Fails unless the backend is at least `min_size` bytes, so a
    /// configured namespace size is never silently larger than its device.
    pub fn require_size(&self, op: Op, min_size: u64) -> Result<(), BackendError> {
        let size = self.size();
        if size >= min_size {
            return Ok(());
        }
        Err(BackendError::refused(
            op,
            &self.store.path,
            BackendErrorKind::InvalidArgument,
            format!("the device has {size} bytes, fewer than the {min_size} required"),
        ))
    }

    /// `fallocate(PUNCH_HOLE)` on a block device asks the block layer for
    /// zeroes it may produce by unmapping (`BLKDEV_ZERO_NOFALLBACK`); the
    /// kernel guarantees the range then reads as zeroes, unlike a discard.
    /// Returns `Ok(false)` when the device cannot do that.
    fn unmap_zeroes(&self, offset: u64, len: u64) -> io::Result<bool> {
        if !self.can_unmap_zeroes.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        match sys::fallocate(self.store.io.file(), mode, offset, len) {
            Ok(()) => Ok(true),
            Err(err) if direct::is_unsupported(&err) => {
                self.can_unmap_zeroes.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }
}

impl BlockBackend for BlockDeviceBackend {
    fn size(&self) -> u64 {
        self.store.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.store.read_at(buf, offset)
    }

    fn read_append(&self, out: &mut Vec<u8>, len: usize, offset: u64) -> Result<(), BackendError> {
        self.store.read_append(out, len, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.store.write_at(buf, offset)
    }

    /// `pwritev2(RWF_DSYNC)`, which the block layer turns into a FUA write
    /// (or write + cache flush) on devices with a volatile cache.
    fn write_at_durable(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.store.write_at_durable(buf, offset)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.store.flush()
    }

    /// `BLKZEROOUT`, which never unmaps. With `deallocate`, first tries
    /// `fallocate(PUNCH_HOLE)`, which zeroes by unmapping where the device
    /// can (faster, and gives thin-provisioned storage its space back)
    /// while the kernel still guarantees the range reads as zeroes.
    fn write_zeroes(&self, offset: u64, len: u64, deallocate: bool) -> Result<(), BackendError> {
        self.store.check(Op::WriteZeroes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let zero = || {
            if deallocate && self.unmap_zeroes(offset, len)? {
                return Ok(());
            }
            sys::zero_out(self.store.io.file(), offset, len)
        };
        zero().map_err(self.store.io_error(Op::WriteZeroes, offset, len))
    }

    /// `BLKDISCARD`. Fails with [`BackendErrorKind::Unsupported`] on
    /// devices without discard. What discarded blocks read back as is up to
    /// the device, hence `deallocate_reads_zero: false` in [`Self::info`].
    fn deallocate(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.store.check(Op::Deallocate, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        sys::discard(self.store.io.file(), offset, len).map_err(self.store.io_error(
            Op::Deallocate,
            offset,
            len,
        ))
    }

    /// Re-reads the device size (after the LV or disk was grown) and
    /// exposes `new_size` bytes of it.
    fn resize(&self, new_size: u64) -> Result<(), BackendError> {
        let _serialised = self
            .resize_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old_size = self.size();
        check_growth(&self.store.path, old_size, new_size, self.store.block_size)?;
        let device_size = sys::block_device_size(self.store.io.file())
            .map_err(|err| BackendError::io(Op::Resize, &self.store.path, None, err))?;
        if whole_blocks(device_size, self.store.block_size) < new_size {
            return Err(BackendError::refused(
                Op::Resize,
                &self.store.path,
                BackendErrorKind::InvalidArgument,
                format!("the device has {device_size} bytes, fewer than the {new_size} asked for; grow the device first"),
            ));
        }
        self.store.size.store(new_size, Ordering::Release);
        if new_size != old_size {
            tracing::info!(path = %self.store.path.display(), old_size, new_size, "grew block device backend");
        }
        Ok(())
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::BlockDevice,
            path: self.store.path.clone(),
            size: self.size(),
            direct_io: self.store.io.is_direct(),
            logical_block_size: self.store.block_size,
            allocated_bytes: None,
            deallocate_reads_zero: false,
            deallocate_supported: self.deallocate_supported,
        }
    }

    fn logical_block_size(&self) -> u32 {
        self.store.block_size
    }
}

/// Picks the exposed block size: the requested one if the device can
/// address it, else the device's own.
fn choose_block_size(
    path: &Path,
    requested: Option<u32>,
    device_block_size: u32,
) -> Result<u32, BackendError> {
    let block_size = requested.unwrap_or(device_block_size);
    check_block_size(path, block_size)?;
    if device_block_size == 0 || !block_size.is_multiple_of(device_block_size) {
        return Err(BackendError::refused(
            Op::Open,
            path,
            BackendErrorKind::InvalidArgument,
            format!(
                "block size {block_size} is not a multiple of the device's logical block size {device_block_size}"
            ),
        ));
    }
    Ok(block_size)
}

/// Whether the device can discard, from sysfs (`discard_max_bytes` is 0
/// when it cannot). Partitions have no `queue` directory of their own, so
/// their parent disk's is used. Unknown counts as no.
fn discard_supported(rdev: u64) -> bool {
    let dev = format!("/sys/dev/block/{}:{}", libc::major(rdev), libc::minor(rdev));
    [
        format!("{dev}/queue/discard_max_bytes"),
        format!("{dev}/../queue/discard_max_bytes"),
    ]
    .iter()
    .find_map(|path| fs::read_to_string(path).ok())
    .and_then(|text| text.trim().parse::<u64>().ok())
    .is_some_and(|max| max > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_must_be_addressable_by_the_device() {
        let path = Path::new("/dev/x");
        assert_eq!(choose_block_size(path, None, 512).unwrap(), 512);
        assert_eq!(choose_block_size(path, None, 4096).unwrap(), 4096);
        assert_eq!(choose_block_size(path, Some(4096), 512).unwrap(), 4096);
        let err = choose_block_size(path, Some(512), 4096).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidArgument);
        assert!(err.to_string().contains("4096"), "{err}");
        assert!(choose_block_size(path, None, 2048).is_err());
    }

    #[test]
    fn regular_files_are_not_block_devices() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err =
            BlockDeviceBackend::open(file.path(), &BlockDeviceOptions::default()).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidArgument);
        assert!(err.to_string().contains("not a block device"), "{err}");
        let err =
            BlockDeviceBackend::open("/dev/null", &BlockDeviceOptions::default()).unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidArgument);
    }
}
