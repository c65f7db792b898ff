//! Thin, safe wrappers around the Linux system calls the backends need and
//! `std` does not offer. All `unsafe` in the backend lives here, each call
//! passing only a valid descriptor and pointers to live, correctly sized
//! memory.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

/// Converts a byte offset or length to `off_t`, refusing values the kernel
/// would reject anyway rather than letting them wrap negative.
fn to_off_t(value: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))
}

/// Retries a system call that failed with `EINTR`, which a signal can cause
/// at any time and which says nothing about the operation itself.
fn retry_eintr(mut call: impl FnMut() -> libc::c_long) -> io::Result<libc::c_long> {
    loop {
        let ret = call();
        if ret >= 0 {
            return Ok(ret);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// `pread(2)` until all of `buf` is filled. `buf` may be uninitialised:
/// only the kernel writes to it, and the caller may treat it as
/// initialised once this returns `Ok`. End of file before the end of
/// `buf` is `UnexpectedEof`, like `FileExt::read_exact_at`.
pub(crate) fn pread_exact_uninit(
    file: &File,
    buf: &mut [MaybeUninit<u8>],
    mut offset: u64,
) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let at = to_off_t(offset)?;
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes for the
        // duration of the call; pread never reads from it.
        let n = retry_eintr(|| unsafe {
            libc::pread(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) as libc::c_long
        })?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        done += n as usize;
        offset += n as u64;
    }
    Ok(())
}

/// `fallocate(2)` on `[offset, offset + len)` with the given mode flags.
pub(crate) fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (to_off_t(offset)?, to_off_t(len)?);
    // SAFETY: plain integer arguments on a descriptor we own.
    retry_eintr(|| unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len).into() }).map(drop)
}

/// One `pwritev2(2)` call with `RWF_DSYNC`: the written data is durable when
/// it returns, like an `O_DSYNC` write, without reopening the file.
/// Returns the number of bytes written, which may be short.
pub(crate) fn pwrite_dsync(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    let offset = to_off_t(offset)?;
    let iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` points at `buf`, which outlives the call; the kernel only
    // reads through it.
    let written = retry_eintr(|| unsafe {
        libc::pwritev2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_DSYNC) as libc::c_long
    })?;
    usize::try_from(written).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// Direct I/O alignment requirements as reported by `statx(STATX_DIOALIGN)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DioAlignment {
    /// Required alignment of user buffers in memory.
    pub(crate) memory: u32,
    /// Required alignment of file offsets and lengths; 0 means this file
    /// does not support direct I/O at all.
    pub(crate) offset: u32,
}

/// Asks the kernel (Linux 6.1+) what direct I/O on `file` requires.
/// `Ok(None)` means the kernel or filesystem does not say.
pub(crate) fn dio_alignment(file: &File) -> io::Result<Option<DioAlignment>> {
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: an empty path with AT_EMPTY_PATH targets the descriptor itself;
    // `stx` is a writable statx buffer.
    let ret = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            stx.as_mut_ptr(),
        )
    };
    if ret != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: statx succeeded and filled the structure; it was zeroed before,
    // so fields it did not fill are zero, not uninitialised.
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok(None);
    }
    Ok(Some(DioAlignment {
        memory: stx.stx_dio_mem_align,
        offset: stx.stx_dio_offset_align,
    }))
}

/// Encoding of ioctl request numbers (`_IOC` in `<asm-generic/ioctl.h>`),
/// needed because `libc` does not export the 64-bit block ioctls. A few
/// architectures use a different layout.
mod ioc {
    #[cfg(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))]
    mod layout {
        pub(super) const NONE: u32 = 1;
        pub(super) const READ: u32 = 2;
        pub(super) const DIR_SHIFT: u32 = 29;
    }
    #[cfg(not(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    )))]
    mod layout {
        pub(super) const NONE: u32 = 0;
        pub(super) const READ: u32 = 2;
        pub(super) const DIR_SHIFT: u32 = 30;
    }

    const SIZE_SHIFT: u32 = 16;
    const TYPE_SHIFT: u32 = 8;
    /// The ioctl type byte of the block layer (`0x12`).
    const BLOCK: u32 = 0x12;

    const fn encode(dir: u32, nr: u32, size: usize) -> libc::Ioctl {
        ((dir << layout::DIR_SHIFT) | ((size as u32) << SIZE_SHIFT) | (BLOCK << TYPE_SHIFT) | nr)
            as libc::Ioctl
    }

    /// `_IOR(0x12, 114, size_t)`: device size in bytes.
    pub(super) const BLKGETSIZE64: libc::Ioctl =
        encode(layout::READ, 114, std::mem::size_of::<usize>());
    /// `_IO(0x12, 119)`: discard a `[start, len]` byte range.
    pub(super) const BLKDISCARD: libc::Ioctl = encode(layout::NONE, 119, 0);
    /// `_IO(0x12, 127)`: write zeroes to a `[start, len]` byte range.
    pub(super) const BLKZEROOUT: libc::Ioctl = encode(layout::NONE, 127, 0);
    /// `_IO(0x12, 104)`, only used to check the encoder against `libc`.
    #[cfg(test)]
    pub(super) const BLKSSZGET: libc::Ioctl = encode(layout::NONE, 104, 0);
}

/// Size of a block device in bytes (`BLKGETSIZE64`).
pub(crate) fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), ioc::BLKGETSIZE64, &mut size as *mut u64) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Logical block size of a block device (`BLKSSZGET`): the smallest unit it
/// can address, and the alignment `O_DIRECT` needs.
pub(crate) fn logical_block_size(file: &File) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    let ret = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::BLKSSZGET,
            &mut size as *mut libc::c_int,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Issues a range ioctl (`BLKDISCARD`, `BLKZEROOUT`) that takes a pointer to
/// `[start, len]` in bytes.
fn range_ioctl(file: &File, request: libc::Ioctl, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: the kernel reads two u64 values through the pointer.
    retry_eintr(|| unsafe { libc::ioctl(file.as_raw_fd(), request, range.as_ptr()).into() })
        .map(drop)
}

/// Discards (trims/unmaps) a byte range of a block device.
pub(crate) fn discard(file: &File, offset: u64, len: u64) -> io::Result<()> {
    range_ioctl(file, ioc::BLKDISCARD, offset, len)
}

/// Writes zeroes to a byte range of a block device, offloaded to the device
/// (WRITE ZEROES / WRITE SAME) when it can, without unmapping.
pub(crate) fn zero_out(file: &File, offset: u64, len: u64) -> io::Result<()> {
    range_ioctl(file, ioc::BLKZEROOUT, offset, len)
}

/// Takes an exclusive advisory lock (`flock`) without waiting. Returns
/// `Ok(false)` if another open file already holds it. The lock lives as long
/// as the open file, so it cannot outlive a crashed process.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: plain integer arguments on a descriptor we own.
    match retry_eintr(|| unsafe {
        libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).into()
    }) {
        Ok(_) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether `file` lives on tmpfs, whose pages are the storage itself:
/// `O_DIRECT` there bypasses nothing. tmpfs accepts the flag since Linux
/// 6.6 but still copies through the same page cache, with no alignment
/// rules and no `STATX_DIOALIGN` answer. (ramfs refuses the flag, so the
/// open already falls back to buffered I/O there.)
pub(crate) fn is_memory_backed(file: &File) -> io::Result<bool> {
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `st` is a writable statfs buffer and the descriptor is ours.
    if unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded and filled the structure.
    let magic = unsafe { st.assume_init() }.f_type;
    Ok(magic == libc::TMPFS_MAGIC)
}

/// Clears `O_DIRECT` on an open descriptor, so a file opened for direct
/// I/O can be switched to buffered I/O without reopening it by path (which
/// could race with the file being replaced).
pub(crate) fn clear_o_direct(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_encoding_matches_libc_and_the_kernel_headers() {
        assert_eq!(ioc::BLKSSZGET, libc::BLKSSZGET);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(ioc::BLKGETSIZE64, 0x8008_1272);
            assert_eq!(ioc::BLKDISCARD, 0x1277);
            assert_eq!(ioc::BLKZEROOUT, 0x127f);
        }
    }

    #[test]
    fn huge_offsets_are_refused_not_wrapped() {
        let err = to_off_t(u64::MAX).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFBIG));
    }

    #[test]
    fn block_ioctls_on_a_regular_file_fail_cleanly() {
        let file = tempfile::tempfile().unwrap();
        assert!(block_device_size(&file).is_err());
        assert!(logical_block_size(&file).is_err());
    }
}
