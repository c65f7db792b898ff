//! Sending a batch of replies whose read data stays in a memory namespace
//! until the kernel copies it into the socket.
//!
//! A read from a [`MemoryBackend`] queues only its C2HData header in the
//! connection's send buffer and records where its data goes
//! ([`MemSend`]). The flush then hands the headers, completions and the
//! data of every read of the batch to one `sendmsg`: one system call per
//! batch and one copy per byte (the kernel's, into the socket), which is
//! what SPDK's target does from its RAM bdev.
//!
//! The data is read-locked ([`ReadLocks`]) only for the `sendmsg` that does
//! not wait: what a full socket did not take is copied out, the locks are
//! dropped, and the rest is sent like any other reply. A host that stops
//! reading its socket can therefore never hold up another host's writes.
//! Such a send is counted in `NamespaceStats::sent_from_memory_partial`.

use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::backend::{MemoryBackend, ReadLocks};
use crate::registry::Namespace;

/// Most reads one batch sends from memory before it is flushed: two
/// iovecs each (header run, data) stay well inside Linux's `IOV_MAX` of
/// 1024.
pub(crate) const MAX_MEM_READS: usize = 256;
/// Flush a batch once its reads from memory reach this many bytes, so the
/// first data goes out while later commands of a long burst are handled
/// (and the read locks of one send cover a bounded range).
pub(crate) const MEM_FLUSH_BYTES: usize = 1024 * 1024;

/// A read's data to send from a memory namespace, right after the first
/// `at` bytes of the send buffer (its C2HData header ends there).
#[derive(Debug)]
pub(crate) struct MemSend {
    pub at: usize,
    /// The namespace read (a memory namespace), also for its counters.
    pub ns: Arc<Namespace>,
    pub offset: u64,
    pub len: usize,
}

/// Send `tx` with the data of `reads` spliced in at their positions, on
/// the connection's socket (whose send lock `w` the caller holds). Each
/// read's range was checked when it was queued
/// ([`MemoryBackend::check_read`]); one outside its namespace anyway fails
/// the send before anything goes out. Each read is counted in its
/// namespace's `sent_from_memory` once all of it was sent.
pub(crate) fn send_gathered(w: &mut TcpStream, tx: &[u8], reads: &[MemSend]) -> io::Result<()> {
    let partial = send_locked_then_rest(w, tx, reads)?;
    let mut counted: Vec<*const Namespace> = Vec::new();
    for r in reads {
        r.ns.stats.sent_from_memory.fetch_add(1, Ordering::Relaxed);
        let key = Arc::as_ptr(&r.ns);
        if partial && !counted.contains(&key) {
            counted.push(key);
            r.ns.stats
                .sent_from_memory_partial
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The send itself; `Ok(true)` when the socket did not take it all at
/// once, so the rest was copied out and sent after the locks were gone.
fn send_locked_then_rest(w: &mut TcpStream, tx: &[u8], reads: &[MemSend]) -> io::Result<bool> {
    let mut mems: Vec<&MemoryBackend> = Vec::with_capacity(reads.len());
    for r in reads {
        mems.push(r.ns.backend.memory().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "not a memory namespace")
        })?);
    }
    let rest = {
        let locks = ReadLocks::new(reads.iter().zip(&mems).map(|(r, m)| (*m, r.offset, r.len)));
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(2 * reads.len() + 1);
        let mut from = 0;
        for (r, m) in reads.iter().zip(&mems) {
            if r.at > from {
                iov.push(IoSlice::new(&tx[from..r.at]));
            }
            let data = locks.slice(m, r.offset, r.len).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "read outside the namespace")
            })?;
            iov.push(IoSlice::new(data));
            from = r.at;
        }
        if from < tx.len() {
            iov.push(IoSlice::new(&tx[from..]));
        }
        let mut left: &mut [IoSlice<'_>] = &mut iov;
        write_vectored_now(w, &mut left)?;
        if left.is_empty() {
            return Ok(false);
        }
        // The socket is full: keep a copy of what it did not take, so the
        // locks go before we wait for room.
        let mut rest = Vec::with_capacity(left.iter().map(|s| s.len()).sum());
        for s in left.iter() {
            rest.extend_from_slice(s);
        }
        rest
    };
    super::socket::write_all(w, &rest)?;
    Ok(true)
}

/// Send as much of `left` as the non-blocking socket takes now,
/// advancing `left` past it; stops without error when the socket is full.
fn write_vectored_now(w: &mut TcpStream, left: &mut &mut [IoSlice<'_>]) -> io::Result<()> {
    while !left.is_empty() {
        match send_vectored(w, left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `sendmsg` of `iov` with `MSG_NOSIGNAL`: a peer that reset the
/// connection gives `EPIPE` rather than a SIGPIPE that would end the whole
/// target (`writev` has no such flag), as on the other send paths.
fn send_vectored(w: &TcpStream, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix; the kernel only
    // reads through the pointer. At most 2 * MAX_MEM_READS + 1 entries,
    // inside IOV_MAX.
    msg.msg_iov = iov.as_ptr().cast_mut().cast();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at `iov`, valid for the call; the descriptor is
    // an open socket.
    let rc = unsafe { libc::sendmsg(w.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}
