//! Socket plumbing for connection threads: waiting for input in the chosen
//! poll mode, and writing whole buffers to a non-blocking socket.
//!
//! Sockets are always non-blocking. That lets one code path serve every
//! poll mode (spinning on `read` or sleeping in `poll(2)`), and lets another
//! thread end a connection at any moment by shutting the socket down, which
//! wakes the connection thread with end-of-file.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrofab_nvmeof_wire::wire::Digests;

use super::sync::lock;

/// How a connection thread waits for the next PDU.
///
/// Sleeping costs a wake-up (tens of microseconds on a virtual machine);
/// spinning costs a CPU core. `Adaptive` spins for a short while after each
/// burst of traffic, which catches the next command of a busy queue at
/// polling latency, then sleeps so idle queues cost nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PollMode {
    /// Always sleep in `poll(2)` until data arrives. Lowest CPU use.
    Interrupt,
    /// Spin for up to `spin_us` microseconds, then sleep.
    Adaptive { spin_us: u32 },
    /// Spin forever: one core per connection, lowest latency.
    Busy,
}

impl Default for PollMode {
    fn default() -> Self {
        PollMode::Adaptive { spin_us: 50 }
    }
}

impl PollMode {
    /// Parse the command-line and config spelling: `interrupt`, `busy`,
    /// `adaptive` or `adaptive:SPIN_US`.
    pub fn parse(s: &str) -> Result<PollMode, String> {
        match s {
            "interrupt" => Ok(PollMode::Interrupt),
            "busy" => Ok(PollMode::Busy),
            "adaptive" => Ok(PollMode::default()),
            other => match other.strip_prefix("adaptive:") {
                Some(us) => us
                    .parse()
                    .map(|spin_us| PollMode::Adaptive { spin_us })
                    .map_err(|_| format!("invalid spin time {us:?} in poll mode {s:?}")),
                None => Err(format!(
                    "unknown poll mode {s:?} (use interrupt, adaptive, adaptive:MICROSECONDS or busy)"
                )),
            },
        }
    }

    /// The spelling [`PollMode::parse`] reads.
    pub fn as_config(self) -> String {
        match self {
            PollMode::Interrupt => "interrupt".into(),
            PollMode::Busy => "busy".into(),
            PollMode::Adaptive { spin_us } => format!("adaptive:{spin_us}"),
        }
    }

    fn spin_budget(self) -> Option<Duration> {
        match self {
            PollMode::Interrupt => None,
            PollMode::Adaptive { spin_us } => Some(Duration::from_micros(u64::from(spin_us))),
            PollMode::Busy => Some(Duration::MAX),
        }
    }
}

impl TryFrom<String> for PollMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PollMode::parse(&s)
    }
}

impl From<PollMode> for String {
    fn from(m: PollMode) -> String {
        m.as_config()
    }
}

/// Read whatever is available into `buf`, waiting according to `mode`.
/// Returns 0 at end of file, and an error of kind `TimedOut` when nothing
/// arrived before `deadline`.
pub fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    mode: PollMode,
    deadline: Option<Instant>,
) -> io::Result<usize> {
    let spin_until = mode.spin_budget().map(|b| Instant::now().checked_add(b));
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let left = match deadline {
            Some(d) if now >= d => return Err(io::ErrorKind::TimedOut.into()),
            Some(d) => Some(d - now),
            None => None,
        };
        let spinning = match spin_until {
            Some(None) => true, // busy: the deadline overflowed, spin forever
            Some(Some(spin_deadline)) => now < spin_deadline,
            None => false,
        };
        if spinning {
            std::hint::spin_loop();
        } else {
            wait_fd_for(stream, libc::POLLIN, left)?;
        }
    }
}

/// Write all of `buf` to a non-blocking socket.
pub fn write_all(stream: &mut TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_fd(stream, libc::POLLOUT)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write all of `buf` to a non-blocking socket with `MSG_MORE`: more data
/// follows at once, so the kernel may hold a partial segment back.
fn send_all_more(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the
        // duration of the call, and the descriptor is an open socket.
        let rc = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(rc) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(_) => retry_or_fail(stream, io::Error::last_os_error())?,
        }
    }
    Ok(())
}

/// Send `len` bytes of `file` at `offset` on a non-blocking socket with
/// `sendfile(2)`. A file that ends early is an error: the peer was
/// promised `len` bytes.
fn sendfile_all(
    stream: &TcpStream,
    file: BorrowedFd<'_>,
    offset: u64,
    mut len: usize,
) -> io::Result<()> {
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    while len > 0 {
        // SAFETY: both descriptors are open for the duration of the call
        // and `off` is a valid, exclusively borrowed offset.
        let rc = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
        match usize::try_from(rc) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => len -= n.min(len),
            Err(_) => retry_or_fail(stream, io::Error::last_os_error())?,
        }
    }
    Ok(())
}

/// After a failed send: wait for room when the socket was full, go on
/// when interrupted, and give up on anything else.
fn retry_or_fail(stream: &TcpStream, err: io::Error) -> io::Result<()> {
    match err.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        io::ErrorKind::WouldBlock => wait_fd(stream, libc::POLLOUT),
        _ => Err(err),
    }
}

fn wait_fd(stream: &TcpStream, events: libc::c_short) -> io::Result<()> {
    wait_fd_for(stream, events, None)
}

/// Wait until the socket is ready for `events`, or `limit` has passed
/// (forever when `None`). A timeout returns `Ok`: the caller retries its
/// operation and checks its own deadline.
fn wait_fd_for(
    stream: &TcpStream,
    events: libc::c_short,
    limit: Option<Duration>,
) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events,
        revents: 0,
    };
    // Round up so a sub-millisecond remainder does not spin.
    let timeout_ms = limit.map_or(-1, |d| {
        libc::c_int::try_from(d.as_millis().saturating_add(1)).unwrap_or(libc::c_int::MAX)
    });
    loop {
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and
        // the count passed is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The sending side of one queue connection, shared between its own thread
/// and the threads that complete asynchronous events on it or tear it down.
#[derive(Debug)]
pub struct ConnLink {
    pub peer: SocketAddr,
    pub qid: u16,
    pub digests: Digests,
    writer: Mutex<TcpStream>,
    /// The submission queue head the connection last reported, so that a
    /// completion sent from another thread carries a current value.
    pub sqhd: AtomicU16,
}

impl ConnLink {
    pub fn new(stream: TcpStream, peer: SocketAddr, qid: u16, digests: Digests) -> ConnLink {
        ConnLink {
            peer,
            qid,
            digests,
            writer: Mutex::new(stream),
            sqhd: AtomicU16::new(0),
        }
    }

    /// Send whole PDUs; concurrent senders never interleave.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = lock(&self.writer);
        write_all(&mut w, bytes)
    }

    /// Send `head` (whole PDUs and, last, a data PDU's header), then `len`
    /// bytes of `file` at `offset` as that PDU's data, with no other
    /// sender in between. The head goes with `MSG_MORE`, so the kernel
    /// packs it with the data instead of sending a short segment first.
    /// An error may come after part of it was sent: the stream is then
    /// out of step and the caller must end the connection.
    pub fn send_with_file(
        &self,
        head: &[u8],
        file: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> io::Result<()> {
        let w = lock(&self.writer);
        send_all_more(&w, head)?;
        sendfile_all(&w, file, offset, len)
    }

    /// Send `tx` with the data of reads from memory namespaces spliced in
    /// (see `gather.rs`), with no other sender in between.
    pub(crate) fn send_gathered(
        &self,
        tx: &[u8],
        reads: &[super::gather::MemSend],
    ) -> io::Result<()> {
        let mut w = lock(&self.writer);
        super::gather::send_gathered(&mut w, tx, reads)
    }

    /// End the connection. Its thread sees end-of-file and exits.
    pub fn kill(&self) {
        let w = lock(&self.writer);
        let _ = w.shutdown(Shutdown::Both);
    }

    /// Another handle on the same socket.
    pub fn try_clone_stream(&self) -> io::Result<TcpStream> {
        lock(&self.writer).try_clone()
    }

    pub fn sqhd(&self) -> u16 {
        self.sqhd.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_poll_modes() {
        assert_eq!(PollMode::parse("busy"), Ok(PollMode::Busy));
        assert_eq!(PollMode::parse("interrupt"), Ok(PollMode::Interrupt));
        assert_eq!(
            PollMode::parse("adaptive:7"),
            Ok(PollMode::Adaptive { spin_us: 7 })
        );
        assert!(PollMode::parse("adaptive:x").is_err());
        assert!(PollMode::parse("fast").is_err());
    }
}
