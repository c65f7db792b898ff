//! What a ublk request becomes on the namespace, and what its answer to the
//! kernel is. Pure functions, so they are tested without a kernel.

use ferrofab_nvmeof_host::{HostError, IoOp};
use ferrofab_nvmeof_wire::spec::status::Status;

use crate::sys::{self, IoDesc};

/// Bytes per ublk sector (the kernel's unit, whatever the block size).
pub const SECTOR: u64 = 512;

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read `len` bytes at `offset` into the tag's buffer.
    Read {
        offset: u64,
        len: usize,
    },
    /// Write the first `len` bytes of the tag's buffer at `offset`.
    Write {
        offset: u64,
        len: usize,
    },
    Flush,
    Discard {
        offset: u64,
        len: u64,
    },
    WriteZeroes {
        offset: u64,
        len: u64,
    },
}

/// Why a request is answered at once with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("ublk operation {0} is not supported")]
    Unsupported(u8),
    #[error("request of {len} bytes is larger than the {buf}-byte I/O buffer")]
    TooLarge { len: u64, buf: usize },
    #[error("sector range {start}+{sectors} overflows")]
    Overflow { start: u64, sectors: u32 },
}

impl Refused {
    /// The negative errno the kernel gets back.
    pub fn errno(&self) -> i32 {
        match self {
            Refused::Unsupported(_) => -libc::EOPNOTSUPP,
            Refused::TooLarge { .. } | Refused::Overflow { .. } => -libc::EIO,
        }
    }
}

/// Decode descriptor `d`; `buf_len` is the size of each tag's buffer (the
/// kernel never sends more than `max_sectors`, but a descriptor is shared
/// memory and is checked, not trusted).
pub fn decode(d: &IoDesc, buf_len: usize) -> Result<Request, Refused> {
    // A flush carries no range: the block layer leaves its sector at -1.
    if d.op() == sys::UBLK_IO_OP_FLUSH {
        return Ok(Request::Flush);
    }
    let overflow = || Refused::Overflow {
        start: d.start_sector,
        sectors: d.nr_sectors,
    };
    let offset = d.start_sector.checked_mul(SECTOR).ok_or_else(overflow)?;
    let len = u64::from(d.nr_sectors) * SECTOR;
    offset.checked_add(len).ok_or_else(overflow)?;
    let data_len = || {
        if len > buf_len as u64 {
            Err(Refused::TooLarge { len, buf: buf_len })
        } else {
            Ok(len as usize)
        }
    };
    match d.op() {
        sys::UBLK_IO_OP_READ => Ok(Request::Read {
            offset,
            len: data_len()?,
        }),
        sys::UBLK_IO_OP_WRITE => Ok(Request::Write {
            offset,
            len: data_len()?,
        }),
        sys::UBLK_IO_OP_DISCARD => Ok(Request::Discard { offset, len }),
        sys::UBLK_IO_OP_WRITE_ZEROES => Ok(Request::WriteZeroes { offset, len }),
        op => Err(Refused::Unsupported(op)),
    }
}

impl Request {
    /// The namespace operation; `written` is a write's data (the tag's
    /// buffer itself, moved, not copied: see `QueueMem::take_written`),
    /// unused by the other operations.
    pub fn to_op(&self, written: Vec<u8>) -> IoOp {
        match *self {
            Request::Read { offset, len } => IoOp::Read { offset, len },
            Request::Write { offset, len } => {
                debug_assert_eq!(written.len(), len);
                IoOp::Write {
                    offset,
                    data: written,
                }
            }
            Request::Flush => IoOp::Flush,
            Request::Discard { offset, len } => IoOp::Deallocate { offset, len },
            Request::WriteZeroes { offset, len } => IoOp::WriteZeroes { offset, len },
        }
    }

    /// The result committed for a successful request: bytes moved for a
    /// read or write, 0 otherwise.
    pub fn success_result(&self) -> i32 {
        match *self {
            // At most the buffer size (bounded by MAX_IO_BYTES, well
            // below i32::MAX).
            Request::Read { len, .. } | Request::Write { len, .. } => len as i32,
            _ => 0,
        }
    }
}

/// The result committed for a request the namespace failed: every I/O
/// error (command status, lost connection, argument the target refused)
/// is `-EIO` to the block layer, which is what a disk reports; see
/// [`failure_errno`] for the one exception.
pub const IO_ERROR: i32 = -libc::EIO;

/// The result for `req` failed with `err`. A discard or write-zeroes the
/// controller refuses as Invalid Command Opcode or Invalid Field (it does
/// not implement Dataset Management or Write Zeroes, or that use of it) is
/// `-EOPNOTSUPP`: the block layer then stops sending it instead of a file
/// system seeing I/O errors. Everything else is [`IO_ERROR`].
pub fn failure_errno(req: &Request, err: &HostError) -> i32 {
    let optional = matches!(req, Request::Discard { .. } | Request::WriteZeroes { .. });
    let unsupported = err.status().is_some_and(|s| {
        [Status::INVALID_OPCODE, Status::INVALID_FIELD]
            .iter()
            .any(|u| u.sct == s.sct && u.sc == s.sc)
    });
    if optional && unsupported {
        -libc::EOPNOTSUPP
    } else {
        IO_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(op: u8, start: u64, sectors: u32) -> IoDesc {
        IoDesc {
            op_flags: u32::from(op) | (1 << 13),
            nr_sectors: sectors,
            start_sector: start,
            addr: 0,
        }
    }

    #[test]
    fn unimplemented_discard_and_write_zeroes_are_not_supported_not_io_errors() {
        let status = |status| HostError::Command {
            cmd: "Dataset Management".into(),
            subnqn: "nqn.x".into(),
            addr: "a".into(),
            status,
        };
        let discard = Request::Discard {
            offset: 0,
            len: 4096,
        };
        let zeroes = Request::WriteZeroes {
            offset: 0,
            len: 4096,
        };
        let read = Request::Read {
            offset: 0,
            len: 4096,
        };
        for s in [Status::INVALID_OPCODE, Status::INVALID_FIELD] {
            assert_eq!(failure_errno(&discard, &status(s)), -libc::EOPNOTSUPP);
            assert_eq!(failure_errno(&zeroes, &status(s)), -libc::EOPNOTSUPP);
            // A read or write is not optional: an error is an error.
            assert_eq!(failure_errno(&read, &status(s)), IO_ERROR);
        }
        assert_eq!(
            failure_errno(&discard, &status(Status::INTERNAL_ERROR)),
            IO_ERROR
        );
        let lost = HostError::ConnectionLost {
            addr: "a".into(),
            qid: 1,
            why: "reset".into(),
        };
        assert_eq!(failure_errno(&zeroes, &lost), IO_ERROR);
    }

    #[test]
    fn reads_and_writes_become_byte_ranges() {
        assert_eq!(
            decode(&desc(sys::UBLK_IO_OP_READ, 8, 8), 65536),
            Ok(Request::Read {
                offset: 4096,
                len: 4096
            })
        );
        let w = decode(&desc(sys::UBLK_IO_OP_WRITE, 2, 1), 65536).unwrap();
        assert_eq!(
            w,
            Request::Write {
                offset: 1024,
                len: 512
            }
        );
        let buf: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        match w.to_op(buf.clone()) {
            IoOp::Write { offset, data } => {
                assert_eq!(offset, 1024);
                assert_eq!(data, buf);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.success_result(), 512);
    }

    #[test]
    fn flush_discard_and_write_zeroes() {
        assert_eq!(
            decode(&desc(sys::UBLK_IO_OP_FLUSH, 0, 0), 4096),
            Ok(Request::Flush)
        );
        // What the kernel really sends: a flush's sector is (u64)-1.
        assert_eq!(
            decode(&desc(sys::UBLK_IO_OP_FLUSH, u64::MAX, 0), 4096),
            Ok(Request::Flush)
        );
        let d = decode(&desc(sys::UBLK_IO_OP_DISCARD, 16, 1 << 20), 4096).unwrap();
        assert_eq!(
            d.to_op(Vec::new()),
            IoOp::Deallocate {
                offset: 8192,
                len: 512 << 20
            }
        );
        assert_eq!(d.success_result(), 0);
        let z = decode(&desc(sys::UBLK_IO_OP_WRITE_ZEROES, 1, 7), 4096).unwrap();
        assert_eq!(
            z.to_op(Vec::new()),
            IoOp::WriteZeroes {
                offset: 512,
                len: 3584
            }
        );
    }

    #[test]
    fn refused_requests_map_to_errnos() {
        let e = decode(&desc(sys::UBLK_IO_OP_WRITE_SAME, 0, 1), 4096).unwrap_err();
        assert_eq!(e.errno(), -libc::EOPNOTSUPP);
        // A descriptor claiming more than the buffer holds is not trusted.
        let e = decode(&desc(sys::UBLK_IO_OP_READ, 0, 9), 4096).unwrap_err();
        assert_eq!(
            e,
            Refused::TooLarge {
                len: 4608,
                buf: 4096
            }
        );
        assert_eq!(e.errno(), -libc::EIO);
        let e = decode(&desc(sys::UBLK_IO_OP_READ, u64::MAX / 256, 1), 4096).unwrap_err();
        assert!(matches!(e, Refused::Overflow { .. }));
        assert_eq!(IO_ERROR, -5);
    }
}
