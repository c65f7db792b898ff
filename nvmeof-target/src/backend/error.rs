//! The error type shared by all block backends.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The backend operation that failed, so log lines and NVMe error log pages
/// can say what was being attempted, not just which errno came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Open,
    Read,
    Write,
    DurableWrite,
    Flush,
    WriteZeroes,
    Deallocate,
    Resize,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Read => "read",
            Self::Write => "write",
            Self::DurableWrite => "durable write",
            Self::Flush => "flush",
            Self::WriteZeroes => "write zeroes",
            Self::Deallocate => "deallocate",
            Self::Resize => "resize",
        })
    }
}

/// Coarse classification of a [`BackendError`], chosen so the NVMe layer can
/// pick a completion status without looking at errno values itself.
///
/// Suggested mapping: `OutOfRange` → LBA Out of Range; `Misaligned` and
/// `InvalidArgument` → Invalid Field in Command; `NoSpace` → Capacity
/// Exceeded; `ReadOnly` → Namespace Is Write Protected; `Unsupported` →
/// Invalid Field (or simply not advertising the command); `Media` →
/// Unrecovered Read Error / Write Fault; everything else → Internal Error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// `offset + len` is beyond the backend's size. Nothing was touched.
    OutOfRange,
    /// `offset` or `len` is not a multiple of the logical block size.
    Misaligned,
    /// The filesystem or quota is full (`ENOSPC`, `EDQUOT`, `EFBIG`).
    NoSpace,
    /// The file or device is read-only (`EROFS`).
    ReadOnly,
    /// Permission denied (`EACCES`, `EPERM`).
    PermissionDenied,
    /// The filesystem or device cannot do this (`EOPNOTSUPP`, `ENOTTY`, no
    /// `O_DIRECT`, no discard).
    Unsupported,
    /// The request or the options were invalid: shrinking, a path that is
    /// not a block device, an unsupported block size, `EINVAL`.
    InvalidArgument,
    /// The path does not exist.
    NotFound,
    /// Another backend (or, for block devices, a mount or device mapper)
    /// is already using the file or device.
    Busy,
    /// The device reported an I/O error (`EIO`).
    Media,
    /// Anything else.
    Other,
}

impl BackendErrorKind {
    fn from_io(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => Self::NoSpace,
            Some(libc::EROFS) => Self::ReadOnly,
            Some(libc::EACCES | libc::EPERM) => Self::PermissionDenied,
            Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::ENOSYS) => Self::Unsupported,
            Some(libc::EINVAL) => Self::InvalidArgument,
            Some(libc::ENOENT) => Self::NotFound,
            Some(libc::EBUSY) => Self::Busy,
            Some(libc::EIO) => Self::Media,
            _ if err.kind() == io::ErrorKind::NotFound => Self::NotFound,
            _ => Self::Other,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::OutOfRange => "out of range",
            Self::Misaligned => "misaligned",
            Self::NoSpace => "no space left",
            Self::ReadOnly => "read-only",
            Self::PermissionDenied => "permission denied",
            Self::Unsupported => "not supported",
            Self::InvalidArgument => "invalid argument",
            Self::NotFound => "not found",
            Self::Busy => "in use",
            Self::Media => "media error",
            Self::Other => "I/O error",
        }
    }
}

/// The byte range an I/O operation addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    offset: u64,
    len: u64,
}

#[derive(Debug)]
enum Cause {
    OutOfRange {
        size: u64,
    },
    Misaligned {
        block_size: u32,
    },
    /// A refusal decided by us; the message says why.
    Refused {
        kind: BackendErrorKind,
        reason: String,
    },
    /// The operating system said no; the errno is in the source.
    Io(BackendErrorKind),
}

/// An error from a block backend.
///
/// It always records the operation and the path, and the byte range for
/// I/O operations, because a bare `Input/output error` from a storage
/// daemon with hundreds of namespaces is useless to an operator.
///
/// Following the Rust API guidelines, `Display` does not repeat the
/// underlying `io::Error`; it is available through
/// [`std::error::Error::source`] (which `tracing` and `anyhow` print).
#[derive(Debug, thiserror::Error)]
pub struct BackendError {
    op: Op,
    path: PathBuf,
    range: Option<Range>,
    cause: Cause,
    #[source]
    source: Option<io::Error>,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.path.display())?;
        if let Some(Range { offset, len }) = self.range {
            write!(f, " at offset {offset} ({len} bytes)")?;
        }
        match &self.cause {
            Cause::OutOfRange { size } => {
                write!(f, ": beyond the end of the backend ({size} bytes)")
            }
            Cause::Misaligned { block_size } => {
                write!(f, ": not aligned to the {block_size}-byte block size")
            }
            Cause::Refused { reason, .. } => write!(f, ": {reason}"),
            Cause::Io(kind) => write!(f, " failed: {}", kind.describe()),
        }
    }
}

impl BackendError {
    /// Wraps an operating-system error.
    pub(crate) fn io(op: Op, path: &Path, range: Option<(u64, u64)>, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_owned(),
            range: range.map(|(offset, len)| Range { offset, len }),
            cause: Cause::Io(BackendErrorKind::from_io(&source)),
            source: Some(source),
        }
    }

    pub(crate) fn out_of_range(op: Op, path: &Path, offset: u64, len: u64, size: u64) -> Self {
        Self {
            op,
            path: path.to_owned(),
            range: Some(Range { offset, len }),
            cause: Cause::OutOfRange { size },
            source: None,
        }
    }

    pub(crate) fn misaligned(op: Op, path: &Path, offset: u64, len: u64, block_size: u32) -> Self {
        Self {
            op,
            path: path.to_owned(),
            range: Some(Range { offset, len }),
            cause: Cause::Misaligned { block_size },
            source: None,
        }
    }

    /// A refusal that did not come from the operating system.
    pub(crate) fn refused(
        op: Op,
        path: &Path,
        kind: BackendErrorKind,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            op,
            path: path.to_owned(),
            range: None,
            cause: Cause::Refused {
                kind,
                reason: reason.into(),
            },
            source: None,
        }
    }

    /// Attaches the operating-system error that led to a refusal.
    pub(crate) fn with_source(mut self, source: io::Error) -> Self {
        self.source = Some(source);
        self
    }

    /// What kind of failure this is; see [`BackendErrorKind`] for how the
    /// NVMe layer should map it.
    pub fn kind(&self) -> BackendErrorKind {
        match &self.cause {
            Cause::OutOfRange { .. } => BackendErrorKind::OutOfRange,
            Cause::Misaligned { .. } => BackendErrorKind::Misaligned,
            Cause::Refused { kind, .. } | Cause::Io(kind) => *kind,
        }
    }

    /// The I/O addressed bytes beyond the end of the backend.
    pub fn is_out_of_range(&self) -> bool {
        self.kind() == BackendErrorKind::OutOfRange
    }

    /// The filesystem, quota or device ran out of space.
    pub fn is_no_space(&self) -> bool {
        self.kind() == BackendErrorKind::NoSpace
    }

    /// The operation that failed.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The file or device the backend is stored on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Start of the addressed byte range, for I/O operations.
    pub fn offset(&self) -> Option<u64> {
        self.range.map(|r| r.offset)
    }

    /// Length of the addressed byte range, for I/O operations.
    pub fn length(&self) -> Option<u64> {
        self.range.map(|r| r.len)
    }

    /// The underlying operating-system error, if there was one.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }

    /// The errno, if the operating system reported one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_kind() {
        let kind = |errno| BackendErrorKind::from_io(&io::Error::from_raw_os_error(errno));
        assert_eq!(kind(libc::ENOSPC), BackendErrorKind::NoSpace);
        assert_eq!(kind(libc::EDQUOT), BackendErrorKind::NoSpace);
        assert_eq!(kind(libc::EROFS), BackendErrorKind::ReadOnly);
        assert_eq!(kind(libc::EOPNOTSUPP), BackendErrorKind::Unsupported);
        assert_eq!(kind(libc::EIO), BackendErrorKind::Media);
        assert_eq!(kind(libc::ENOENT), BackendErrorKind::NotFound);
        assert_eq!(kind(libc::EBUSY), BackendErrorKind::Busy);
        assert_eq!(kind(libc::ECONNRESET), BackendErrorKind::Other);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(BackendErrorKind::from_io(&eof), BackendErrorKind::Other);
    }

    #[test]
    fn display_names_op_path_and_range() {
        let path = Path::new("/var/lib/ferrofab/ns1.img");
        let err = BackendError::out_of_range(Op::Read, path, 4096, 512, 4096);
        assert_eq!(
            err.to_string(),
            "read /var/lib/ferrofab/ns1.img at offset 4096 (512 bytes): \
             beyond the end of the backend (4096 bytes)"
        );
        assert!(err.is_out_of_range());
        assert_eq!((err.offset(), err.length()), (Some(4096), Some(512)));

        let err = BackendError::io(
            Op::Write,
            path,
            Some((0, 8192)),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(
            err.to_string(),
            "write /var/lib/ferrofab/ns1.img at offset 0 (8192 bytes) failed: no space left"
        );
        assert!(err.is_no_space());
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("No space left")));
    }
}
