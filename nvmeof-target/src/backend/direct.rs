//! Positioned I/O on a file descriptor that may be open with `O_DIRECT`.
//!
//! `O_DIRECT` bypasses the page cache, which a storage target wants: the
//! initiator has its own cache, double caching wastes memory, and write-back
//! from our cache would hide errors until long after the NVMe completion.
//! The price is alignment: buffer address, file offset and length must all
//! be aligned. The backends refuse misaligned offsets and lengths up front
//! (NVMe I/O is always in whole logical blocks), so the only thing left to
//! fix here is the caller's buffer address, which is copied through an
//! aligned bounce buffer when needed.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::fs::File;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use super::{sys, DirectIo};

/// Alignment of bounce buffers, and the buffer address alignment we insist
/// on for direct I/O. 4096 satisfies every device and filesystem in
/// practice (memory alignment requirements are at most the page size).
pub(crate) const DIO_ALIGN: usize = 4096;

/// Largest bounce or zero buffer. Bigger requests are split into chunks of
/// this size, so the per-thread bounce buffer stays small no matter how
/// large the I/O is.
pub(crate) const MAX_CHUNK: usize = 1 << 20;

/// A heap buffer aligned to [`DIO_ALIGN`], zero-initialised.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `AlignedBuf` uniquely owns its allocation, like a `Box<[u8]>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates at least `len` bytes, rounded up to a whole number of
    /// [`DIO_ALIGN`] units (and never zero, which the allocator forbids).
    pub(crate) fn zeroed(len: usize) -> Self {
        let len = len.max(1).next_multiple_of(DIO_ALIGN);
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len, DIO_ALIGN) {
            Ok(layout) => layout,
            // Only reachable for lengths near usize::MAX, which no caller
            // can have a buffer for anyway.
            Err(_) => alloc::handle_alloc_error(Layout::new::<[u8; DIO_ALIGN]>()),
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is a live, initialised allocation of `len` bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` guarantees uniqueness.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

thread_local! {
    /// One reusable bounce buffer per I/O thread, so unaligned requests do
    /// not pay for an allocation each time. It is taken out of the cell
    /// while in use, which keeps this correct even if a callback re-entered.
    static BOUNCE: Cell<Option<AlignedBuf>> = const { Cell::new(None) };
}

/// Runs `f` with an aligned scratch buffer of exactly `len` (≤ [`MAX_CHUNK`])
/// bytes.
fn with_bounce<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = BOUNCE
        .with(Cell::take)
        .filter(|buf| buf.len() >= len)
        .unwrap_or_else(|| AlignedBuf::zeroed(len));
    let result = f(&mut buf[..len]);
    BOUNCE.with(|cell| cell.set(Some(buf)));
    result
}

/// A shared, read-only, aligned buffer of zeroes for writing zeroes where
/// the filesystem cannot do it for us.
fn zeroes() -> &'static [u8] {
    static ZEROES: OnceLock<AlignedBuf> = OnceLock::new();
    ZEROES.get_or_init(|| AlignedBuf::zeroed(MAX_CHUNK))
}

fn is_aligned(ptr: *const u8) -> bool {
    (ptr as usize).is_multiple_of(DIO_ALIGN)
}

/// Byte offset of chunk `index` when a buffer is split into [`MAX_CHUNK`]s.
fn chunk_offset(base: u64, index: usize) -> u64 {
    base + (index as u64) * (MAX_CHUNK as u64)
}

/// Opens with `O_DIRECT` per `mode`. In `Auto` mode an `EINVAL` from the
/// direct open (the kernel's answer for "this filesystem has no direct
/// I/O", e.g. ramfs) means: open buffered instead. Returns whether the
/// file is open for direct I/O.
pub(crate) fn open_maybe_direct(
    mode: DirectIo,
    mut open: impl FnMut(bool) -> io::Result<File>,
) -> io::Result<(File, bool)> {
    match mode {
        DirectIo::Off => Ok((open(false)?, false)),
        DirectIo::On => Ok((open(true)?, true)),
        DirectIo::Auto => match open(true) {
            Ok(file) => Ok((file, true)),
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("O_DIRECT open refused with EINVAL, using buffered I/O");
                Ok((open(false)?, false))
            }
            Err(err) => Err(err),
        },
    }
}

/// True when an error means "this kernel/filesystem cannot do that", as
/// opposed to the operation itself failing.
pub(crate) fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOTTY)
    )
}

/// A file (or block device) used only through positioned I/O, so any
/// number of threads can share it without a lock: there is no file
/// position to race on.
#[derive(Debug)]
pub(crate) struct PositionedFile {
    file: File,
    direct: bool,
    /// Cleared the first time `pwritev2(RWF_DSYNC)` turns out not to be
    /// supported (kernels before 4.7), so we stop trying.
    dsync_writes: AtomicBool,
}

impl PositionedFile {
    pub(crate) fn new(file: File, direct: bool) -> Self {
        Self {
            file,
            direct,
            dsync_writes: AtomicBool::new(true),
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }

    fn needs_bounce(&self, buf: &[u8]) -> bool {
        self.direct && !is_aligned(buf.as_ptr())
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if !self.needs_bounce(buf) {
            return self.file.read_exact_at(buf, offset);
        }
        for (index, chunk) in buf.chunks_mut(MAX_CHUNK).enumerate() {
            with_bounce(chunk.len(), |bounce| {
                self.file
                    .read_exact_at(bounce, chunk_offset(offset, index))?;
                chunk.copy_from_slice(bounce);
                Ok::<_, io::Error>(())
            })?;
        }
        Ok(())
    }

    /// Appends exactly `len` bytes read at `offset` to `out`, leaving `out`
    /// as it was on error. Buffered files are read straight into the spare
    /// capacity (no zeroing pass first); direct I/O into an unaligned
    /// place goes through the bounce buffer as [`Self::read_exact_at`].
    pub(crate) fn read_append(&self, out: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
        out.reserve(len);
        let at = out.len();
        let spare = &mut out.spare_capacity_mut()[..len];
        if self.direct && !is_aligned(spare.as_ptr().cast()) {
            out.resize(at + len, 0);
            let result = self.read_exact_at(&mut out[at..], offset);
            if result.is_err() {
                out.truncate(at);
            }
            return result;
        }
        sys::pread_exact_uninit(&self.file, spare, offset)?;
        // SAFETY: `pread_exact_uninit` succeeded, so the kernel wrote all
        // `len` bytes after the old length, within the reserved capacity.
        unsafe { out.set_len(at + len) };
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_with(buf, offset, |file, data, at| file.write_all_at(data, at))
    }

    /// Writes all of `buf` at `offset` and makes it durable before
    /// returning: `pwritev2(RWF_DSYNC)` where the kernel has it, which
    /// flushes only this write, otherwise a normal write followed by
    /// `fdatasync`.
    pub(crate) fn write_all_at_durable(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.dsync_writes.load(Ordering::Relaxed) {
            match self.write_with(buf, offset, write_all_dsync) {
                Err(err) if is_unsupported(&err) => {
                    tracing::debug!("pwritev2(RWF_DSYNC) unsupported, using write + fdatasync");
                    self.dsync_writes.store(false, Ordering::Relaxed);
                }
                result => return result,
            }
        }
        self.write_all_at(buf, offset)?;
        self.file.sync_data()
    }

    /// Writes `len` zero bytes at `offset`, [`MAX_CHUNK`] at a time.
    pub(crate) fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = zeroes();
        let mut done = 0;
        while done < len {
            let n = usize::try_from(len - done).map_or(zeroes.len(), |rest| rest.min(zeroes.len()));
            self.file.write_all_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// `fdatasync`: makes completed writes durable.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Runs `write` on `buf`, or on aligned copies of it chunk by chunk when
    /// direct I/O needs an aligned buffer.
    fn write_with(
        &self,
        buf: &[u8],
        offset: u64,
        write: impl Fn(&File, &[u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        if !self.needs_bounce(buf) {
            return write(&self.file, buf, offset);
        }
        for (index, chunk) in buf.chunks(MAX_CHUNK).enumerate() {
            with_bounce(chunk.len(), |bounce| {
                bounce.copy_from_slice(chunk);
                write(&self.file, bounce, chunk_offset(offset, index))
            })?;
        }
        Ok(())
    }
}

/// `write_all_at` with every `pwritev2` call carrying `RWF_DSYNC`.
fn write_all_dsync(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match sys::pwrite_dsync(file, buf, offset)? {
            0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned_zeroed_and_rounded_up() {
        for len in [0, 1, 511, 4096, 4097, MAX_CHUNK] {
            let buf = AlignedBuf::zeroed(len);
            assert!(is_aligned(buf.as_ptr()));
            assert!(buf.len() >= len && buf.len().is_multiple_of(DIO_ALIGN));
            assert!(buf.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn bounce_buffer_is_reused_and_sized() {
        let first = with_bounce(8192, |b| {
            assert_eq!(b.len(), 8192);
            b.as_ptr() as usize
        });
        let second = with_bounce(4096, |b| {
            assert_eq!(b.len(), 4096);
            b.as_ptr() as usize
        });
        assert_eq!(first, second, "a smaller request reuses the buffer");
        let nested = with_bounce(512, |outer| {
            with_bounce(512, |inner| inner.as_ptr() != outer.as_ptr())
        });
        assert!(nested, "re-entrant use gets its own buffer");
    }

    #[test]
    fn unaligned_buffers_round_trip_through_bounce() {
        let file = tempfile::tempfile().unwrap();
        let io = PositionedFile::new(file, true);
        // Force the bounce path even though this file is not O_DIRECT.
        let data: Vec<u8> = (0..MAX_CHUNK + 4096).map(|i| (i % 251) as u8).collect();
        let mut backing = vec![0u8; data.len() + 1];
        backing[1..].copy_from_slice(&data);
        io.write_all_at(&backing[1..], 4096).unwrap();
        io.write_all_at_durable(&backing[1..4097], 0).unwrap();
        let mut out = vec![0u8; data.len() + 1];
        io.read_exact_at(&mut out[1..], 4096).unwrap();
        assert_eq!(&out[1..], &data[..]);
        io.read_exact_at(&mut out[1..4097], 0).unwrap();
        assert_eq!(&out[1..4097], &data[..4096]);
    }

    #[test]
    fn write_zeroes_spans_chunks() {
        let file = tempfile::tempfile().unwrap();
        let io = PositionedFile::new(file, false);
        let len = 2 * MAX_CHUNK + 512;
        io.write_all_at(&vec![0xaa; len + 1024], 0).unwrap();
        io.write_zeroes(512, len as u64).unwrap();
        let mut out = vec![0u8; len + 1024];
        io.read_exact_at(&mut out, 0).unwrap();
        assert!(out[..512].iter().all(|&b| b == 0xaa));
        assert!(out[512..512 + len].iter().all(|&b| b == 0));
        assert!(out[512 + len..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn auto_falls_back_to_buffered_on_einval() {
        let mut attempts = Vec::new();
        let (_, direct) = open_maybe_direct(DirectIo::Auto, |direct| {
            attempts.push(direct);
            if direct {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                tempfile::tempfile()
            }
        })
        .unwrap();
        assert!(!direct);
        assert_eq!(attempts, [true, false]);

        let err = open_maybe_direct(DirectIo::On, |_| {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        let err = open_maybe_direct(DirectIo::Auto, |_| {
            Err(io::Error::from_raw_os_error(libc::EACCES))
        })
        .unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EACCES),
            "only EINVAL means no O_DIRECT"
        );
        let (_, direct) = open_maybe_direct(DirectIo::Off, |direct| {
            assert!(!direct);
            tempfile::tempfile()
        })
        .unwrap();
        assert!(!direct);
    }
}
