//! What both backends are underneath: an open file or block device of a
//! known size, read and written with positioned I/O after the range check.
//!
//! The regular-file and block-device backends differ in how they open,
//! grow and zero; reading, writing, the durable write and the flush are
//! the same on both, so they live here once.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::direct::PositionedFile;
use super::{buf_len, check_io_range, BackendError, Op};

/// The open file or device a backend serves from.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) path: PathBuf,
    pub(super) io: PositionedFile,
    pub(super) block_size: u32,
    /// The exposed size; only ever grows, under the backend's resize lock.
    pub(super) size: AtomicU64,
}

impl Store {
    pub(super) fn new(path: PathBuf, io: PositionedFile, block_size: u32, size: u64) -> Store {
        Store {
            path,
            io,
            block_size,
            size: AtomicU64::new(size),
        }
    }

    pub(super) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(super) fn check(&self, op: Op, offset: u64, len: u64) -> Result<(), BackendError> {
        check_io_range(op, &self.path, offset, len, self.size(), self.block_size)
    }

    pub(super) fn io_error(
        &self,
        op: Op,
        offset: u64,
        len: u64,
    ) -> impl FnOnce(io::Error) -> BackendError + '_ {
        move |err| BackendError::io(op, &self.path, Some((offset, len)), err)
    }

    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        let len = buf_len(buf);
        self.check(Op::Read, offset, len)?;
        self.io
            .read_exact_at(buf, offset)
            .map_err(self.io_error(Op::Read, offset, len))
    }

    pub(super) fn read_append(
        &self,
        out: &mut Vec<u8>,
        len: usize,
        offset: u64,
    ) -> Result<(), BackendError> {
        self.check(Op::Read, offset, len as u64)?;
        self.io
            .read_append(out, len, offset)
            .map_err(self.io_error(Op::Read, offset, len as u64))
    }

    /// The file to `sendfile` a checked read from, unless it bypasses the
    /// page cache (see [`super::BlockBackend::sendfile_source`]).
    pub(super) fn sendfile_source(
        &self,
        offset: u64,
        len: usize,
    ) -> Result<Option<BorrowedFd<'_>>, BackendError> {
        self.check(Op::Read, offset, len as u64)?;
        if self.io.is_direct() {
            return Ok(None);
        }
        // `sendfile` stops short at the end of the file, after the data
        // header is out, and the connection must then be ended; a host
        // retrying the read would meet the same end again. A file cut
        // shorter than the namespace underneath us goes to the copy path,
        // which answers the read with an error status instead.
        let file = self.io.file();
        match file.metadata() {
            Ok(m) if offset.saturating_add(len as u64) <= m.len() => Ok(Some(file.as_fd())),
            _ => Ok(None),
        }
    }

    pub(super) fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        let len = buf_len(buf);
        self.check(Op::Write, offset, len)?;
        self.io
            .write_all_at(buf, offset)
            .map_err(self.io_error(Op::Write, offset, len))
    }

    pub(super) fn write_at_durable(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        let len = buf_len(buf);
        self.check(Op::DurableWrite, offset, len)?;
        self.io
            .write_all_at_durable(buf, offset)
            .map_err(self.io_error(Op::DurableWrite, offset, len))
    }

    pub(super) fn flush(&self) -> Result<(), BackendError> {
        self.io
            .sync_data()
            .map_err(|err| BackendError::io(Op::Flush, &self.path, None, err))
    }
}
