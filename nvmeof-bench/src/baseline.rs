//! Raw loopback TCP, measured in-process: what the exchanges NVMe/TCP makes
//! cost on this machine through ordinary socket calls, so NVMe numbers can
//! be quoted as a ratio of it rather than as absolutes on a VM that swings
//! 2-3x. It is not a physical limit (see below for what it does not rule
//! out).
//!
//! Sizes mirror NVMe/TCP: a read is a 72-byte command capsule answered by
//! a 24-byte C2HData header plus 4 KiB (4120 bytes); a write is a capsule
//! carrying 4 KiB in-capsule (72 + 4096) answered by a 24-byte response;
//! the large tests do the same with 128 KiB.
//! Both ends run in this process, one thread each, pinned to different CPUs
//! when there are two (the server on the second, the client on the first:
//! target core 1, client core 0, like the SPDK comparisons), and CPU time
//! is taken per thread so each end's cost is visible.
//!
//! The deep tests (QD32, QD8 128 KiB, the stream) are a ceiling, not a
//! model of one implementation: both ends pipeline and batch like the best
//! queue could, so that no NVMe/TCP implementation on the same machine can
//! beat them. The client sends every free slot's request in one `writev`
//! and takes whatever responses have arrived in one `read`; the server
//! reads whatever requests have arrived in one `read` and answers all the
//! complete ones in one `writev` (large messages in calls of at most
//! [`MAX_WRITE_BYTES`], which measured faster). Every message is still a
//! header plus its payload, sent from its queue slot's own reused buffer
//! (no copy, no allocation per request) and moved through the socket, as
//! the least an NVMe/TCP exchange has to do; the receiving end takes it out
//! of the socket without copying it anywhere (`MSG_TRUNC`, see
//! `read_some`), which no real receiver can do. Both ends ask for large
//! socket buffers ([`SOCKET_BUFFER`]), like SPDK's sockets, so a window
//! never throttles the deepest test; every test also exists with both ends
//! spinning (`_busy`), which is how SPDK waits.
//!
//! What the ceiling covers is implementations that send with a copy into
//! the socket (`writev`) and receive with ordinary reads, measured at the
//! same CPU speed. It does not bound a sender using `MSG_ZEROCOPY`, a
//! receiver using `TCP_ZEROCOPY_RECEIVE`, socket busy polling
//! (`SO_BUSY_POLL`) or an in-kernel implementation, each of which can do
//! less per I/O; nor a peer measured in a faster second of the VM (its
//! speed changes by up to 1.5x within seconds). `MSG_TRUNC` only makes the
//! receiving end cheaper than any real receiver of that kind: ratios
//! against the ceiling measured before it was introduced (commit beb2ba1)
//! are not comparable with later ones.

use std::io::{self, IoSlice, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::stats::{CpuSummary, CpuTimes, LatencyHist, LatencySummary, OpSummary};
use super::BenchError;

/// NVMe/TCP command capsule (CapsuleCmd PDU header + SQE).
pub const CAPSULE: usize = 72;
/// NVMe/TCP C2HData / CapsuleResp PDU header.
pub const PDU_HDR: usize = 24;
/// Data size of the small I/O tests.
pub const IO_4K: usize = 4096;
/// Chunk size of the streaming test and data size of the large tests.
pub const STREAM_CHUNK: usize = 128 * 1024;
/// Chunks the streaming client hands the kernel per `write` (1 MiB).
const STREAM_BATCH: usize = 8;
/// Queue depth of the large (128 KiB) request/response tests, as in the
/// issue's 128K QD8 workloads.
const LARGE_DEPTH: usize = 8;
/// Most bytes one `writev` of a request/response test carries: a batch of
/// large messages goes out in calls of at most this much, so at QD8 ×
/// 128 KiB the window travels as two halves that overlap (one half being
/// copied out while the requests of the other are already coming back).
/// Measured on the 2-vCPU VM with a stand-alone copy of this exchange
/// (2026-12-05, both ends spinning, docs/benchmarks.md): the whole
/// window in one call moved 42K–49K 128 KiB reads per second, halves
/// 86K–92K, single messages 61K–68K. 32 × 4 KiB (132 KiB) stays one call,
/// which measured faster than halves (1.8–1.9M against 1.4–1.5M ops/s).
const MAX_WRITE_BYTES: usize = 512 << 10;
/// Send and receive buffer asked for on both ends of every test. Four times
/// the most a test keeps in flight (8 × 128 KiB), so neither end ever waits
/// for window or buffer space while its peer has work, and twice the 2 MiB
/// SPDK's sockets ask for. The kernel caps it at `net.core.{w,r}mem_max`
/// unless the process may force it (root); the sizes obtained are reported.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// How the ends wait for data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitMode {
    /// Both ends block in the kernel (sleep until woken).
    Blocking,
    /// The server spins on a non-blocking socket, the client blocks: what
    /// a busy-polling target sees from a sleeping kernel host.
    ServerBusy,
    /// Both ends spin on non-blocking sockets.
    Busy,
}

impl WaitMode {
    fn server_spins(self) -> bool {
        self != WaitMode::Blocking
    }
    fn client_spins(self) -> bool {
        self == WaitMode::Busy
    }
}

/// One baseline measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineTest {
    /// Request/response at queue depth 1.
    Qd1 { write: bool, mode: WaitMode },
    /// 32 requests kept in flight on one connection, pipelined and
    /// batched; both ends block (`spin == false`) or both spin.
    Qd32 { write: bool, spin: bool },
    /// 8 requests of 128 KiB (write) or for 128 KiB (read) in flight,
    /// pipelined and batched; both ends block or both spin.
    Qd8Large { write: bool, spin: bool },
    /// One-way stream of 128 KiB chunks, 1 MiB per `writev`; both ends
    /// block or both spin.
    Stream { spin: bool },
}

impl BaselineTest {
    /// The standard set, in the order rounds interleave them.
    pub fn all() -> Vec<BaselineTest> {
        let mut v = Vec::new();
        for write in [false, true] {
            for mode in [WaitMode::Blocking, WaitMode::ServerBusy, WaitMode::Busy] {
                v.push(BaselineTest::Qd1 { write, mode });
            }
        }
        for spin in [false, true] {
            for write in [false, true] {
                v.push(BaselineTest::Qd32 { write, spin });
            }
        }
        for spin in [false, true] {
            for write in [false, true] {
                v.push(BaselineTest::Qd8Large { write, spin });
            }
        }
        v.push(BaselineTest::Stream { spin: false });
        v.push(BaselineTest::Stream { spin: true });
        v
    }

    /// Stable name used in tables and JSON.
    pub fn name(self) -> String {
        let rw = |w: bool| if w { "write" } else { "read" };
        let busy = |spin: bool| if spin { "_busy" } else { "" };
        match self {
            BaselineTest::Qd1 { write, mode } => {
                let m = match mode {
                    WaitMode::Blocking => "blocking",
                    WaitMode::ServerBusy => "server_busy",
                    WaitMode::Busy => "busy",
                };
                format!("qd1_{}_{m}", rw(write))
            }
            BaselineTest::Qd32 { write, spin } => format!("qd32_{}{}", rw(write), busy(spin)),
            BaselineTest::Qd8Large { write, spin } => {
                format!("qd8_{}_128k{}", rw(write), busy(spin))
            }
            BaselineTest::Stream { spin } => format!("stream_128k{}", busy(spin)),
        }
    }

    /// (request bytes, response bytes) per operation.
    pub fn sizes(self) -> (usize, usize) {
        let (req, resp) = self.messages();
        (req.len(), resp.len())
    }

    /// The request and the response of one operation, as header and
    /// payload: a write carries its data in the request, a read in the
    /// response; the stream's "requests" are bare 128 KiB chunks.
    fn messages(self) -> (Message, Message) {
        let exchange = |write: bool, data: usize| {
            let (to_server, to_client) = if write { (data, 0) } else { (0, data) };
            (
                Message::new(CAPSULE, to_server),
                Message::new(PDU_HDR, to_client),
            )
        };
        match self {
            BaselineTest::Qd1 { write, .. } | BaselineTest::Qd32 { write, .. } => {
                exchange(write, IO_4K)
            }
            BaselineTest::Qd8Large { write, .. } => exchange(write, STREAM_CHUNK),
            BaselineTest::Stream { .. } => (Message::new(0, STREAM_CHUNK), Message::new(0, 0)),
        }
    }

    fn depth(self) -> usize {
        match self {
            BaselineTest::Qd32 { .. } => 32,
            BaselineTest::Qd8Large { .. } => LARGE_DEPTH,
            BaselineTest::Stream { .. } => STREAM_BATCH,
            BaselineTest::Qd1 { .. } => 1,
        }
    }

    /// Payload bytes per operation (what MB/s counts).
    fn payload(self) -> usize {
        match self {
            BaselineTest::Qd8Large { .. } | BaselineTest::Stream { .. } => STREAM_CHUNK,
            _ => IO_4K,
        }
    }

    /// Whether the ends spin on non-blocking sockets: (server, client).
    fn spins(self) -> (bool, bool) {
        match self {
            BaselineTest::Qd1 { mode, .. } => (mode.server_spins(), mode.client_spins()),
            BaselineTest::Qd32 { spin, .. }
            | BaselineTest::Qd8Large { spin, .. }
            | BaselineTest::Stream { spin } => (spin, spin),
        }
    }
}

/// One message on the wire: a PDU header and the payload after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Message {
    header: usize,
    payload: usize,
}

impl Message {
    fn new(header: usize, payload: usize) -> Self {
        Self { header, payload }
    }

    fn len(self) -> usize {
        self.header + self.payload
    }
}

/// Baseline settings.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineParams {
    /// Length of each measurement.
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Times the whole set is repeated, interleaved, so drift of the VM
    /// shows up as spread rather than as a bias against one test.
    pub rounds: u32,
    /// Pin server and client to different CPUs.
    pub pin: bool,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for BaselineParams {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(1),
            rounds: 1,
            pin: true,
        }
    }
}

/// Result of one baseline measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineResult {
    pub name: String,
    pub round: u32,
    pub queue_depth: u32,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub elapsed_s: f64,
    /// Operations, rate, payload MB/s (4 KiB or 128 KiB per op) and
    /// client-observed latency (empty for the stream test).
    pub result: OpSummary,
    /// CPU of both ends together, per operation.
    pub cpu: CpuSummary,
    pub client_cpu_s: f64,
    pub server_cpu_s: f64,
    /// Socket send buffer the client obtained (bytes, as the kernel reports
    /// it: twice what was asked, capped by `net.core.wmem_max` unless
    /// forced).
    pub send_buffer_bytes: u64,
    /// Socket receive buffer the client obtained (likewise).
    pub receive_buffer_bytes: u64,
}

/// All baseline results of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub params: BaselineParams,
    pub pinned: bool,
    pub results: Vec<BaselineResult>,
}

/// Run the standard set.
pub fn run(params: &BaselineParams) -> Result<BaselineReport, BenchError> {
    run_tests(params, &BaselineTest::all())
}

/// Run `tests`, `params.rounds` times, interleaved.
pub fn run_tests(
    params: &BaselineParams,
    tests: &[BaselineTest],
) -> Result<BaselineReport, BenchError> {
    let cpus = if params.pin { pick_cpus() } else { None };
    let mut results = Vec::new();
    for round in 0..params.rounds.max(1) {
        for &t in tests {
            tracing::debug!(test = %t.name(), round, "baseline");
            results.push(measure(t, round, params.duration, cpus)?);
        }
    }
    Ok(BaselineReport {
        params: params.clone(),
        pinned: cpus.is_some(),
        results,
    })
}

/// Outcome of the client end.
struct ClientRun {
    ops: u64,
    elapsed: Duration,
    hist: LatencyHist,
    cpu: CpuTimes,
    /// (send, receive) socket buffer the client obtained, in bytes.
    buffers: (u64, u64),
}

fn measure(
    test: BaselineTest,
    round: u32,
    duration: Duration,
    cpus: Option<(usize, usize)>,
) -> Result<BaselineResult, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(BenchError::Baseline)?;
    let addr = listener.local_addr().map_err(BenchError::Baseline)?;
    let (req, resp) = test.messages();
    let (server_spins, client_spins) = test.spins();
    let depth = test.depth();
    // One thread per end, each pinned before it does anything else: a
    // thread inherits its creator's CPUs, and an end that spins on the
    // other end's CPU before that one has moved away would hold it off
    // (for good under a real-time policy).
    let (client, server_cpu) = std::thread::scope(|s| {
        let server = s.spawn(move || -> io::Result<CpuTimes> {
            if let Some((c, _)) = cpus {
                pin_to(c);
            }
            let (stream, _) = listener.accept()?;
            prepare(&stream, server_spins)?;
            let start = CpuTimes::thread();
            // At QD1 the batched ends make one round trip at a time.
            serve_batched(stream, req, resp, depth, server_spins)?;
            Ok(CpuTimes::thread().since(start))
        });
        let client = s.spawn(move || -> io::Result<ClientRun> {
            if let Some((_, c)) = cpus {
                pin_to(c);
            }
            let stream = TcpStream::connect(addr)?;
            prepare(&stream, client_spins)?;
            match test {
                BaselineTest::Stream { .. } => {
                    stream_client(stream, req, depth, client_spins, duration)
                }
                _ => batched_client(stream, req, resp, depth, client_spins, duration),
            }
        });
        let client = client
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("baseline client panicked")));
        let server = server
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("baseline server panicked")));
        (client, server)
    });
    let client = client.map_err(BenchError::Baseline)?;
    let server_cpu = server_cpu.map_err(BenchError::Baseline)?;
    let payload = test.payload() as u64;
    Ok(BaselineResult {
        name: test.name(),
        round,
        queue_depth: depth as u32,
        request_bytes: req.len() as u64,
        response_bytes: resp.len() as u64,
        elapsed_s: client.elapsed.as_secs_f64(),
        result: OpSummary::new(
            client.ops,
            client.ops * payload,
            client.elapsed,
            &client.hist,
        ),
        cpu: CpuSummary::new(client.cpu.plus(server_cpu), client.ops),
        client_cpu_s: client.cpu.total().as_secs_f64(),
        server_cpu_s: server_cpu.total().as_secs_f64(),
        send_buffer_bytes: client.buffers.0,
        receive_buffer_bytes: client.buffers.1,
    })
}

/// Set an end up before its clock starts: no Nagle delay, [`SOCKET_BUFFER`]
/// both ways, and non-blocking when it spins.
fn prepare(s: &TcpStream, spin: bool) -> io::Result<()> {
    s.set_nodelay(true)?;
    ask_buffer(s, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
    ask_buffer(s, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
    s.set_nonblocking(spin)
}

/// Ask for a [`SOCKET_BUFFER`] socket buffer: forced past the sysctl cap
/// when the process may (root), else as much as the cap allows. Best
/// effort: a smaller buffer shows in the reported sizes.
fn ask_buffer(s: &TcpStream, force: libc::c_int, plain: libc::c_int) {
    let size = SOCKET_BUFFER as libc::c_int;
    let set = |opt| {
        // SAFETY: setsockopt reads one c_int from the pointer and length we
        // pass, on a socket this stream owns.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(force) != 0 && set(plain) != 0 {
        tracing::debug!(opt = plain, "could not size the baseline's socket buffer");
    }
}

/// The size of a socket buffer as the kernel reports it (0 if it cannot).
fn buffer_size(s: &TcpStream, opt: libc::c_int) -> u64 {
    let mut size: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the c_int we own.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut size as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        u64::try_from(size).unwrap_or(0)
    } else {
        0
    }
}

fn buffer_sizes(s: &TcpStream) -> (u64, u64) {
    (
        buffer_size(s, libc::SO_SNDBUF),
        buffer_size(s, libc::SO_RCVBUF),
    )
}

/// What one end sends: every message is a header and a payload, and each
/// queue slot has its own message buffer (the header room right before
/// the payload, as a target can lay out its data buffers), the slots side
/// by side. All of it is allocated and written once before the clock
/// starts, then only referenced by the `writev` of each batch: no copy, no
/// allocation per request. A batch of consecutive slots is one contiguous
/// range, two when it wraps, which is the least the kernel can be handed.
struct Outgoing {
    len: usize,
    depth: usize,
    /// Most messages one `writev` carries.
    per_call: usize,
    /// `depth` messages of `len` bytes.
    slots: Vec<u8>,
}

impl Outgoing {
    /// `per_call` bounds the messages of one `writev`.
    fn new(msg: Message, depth: usize, per_call: usize, fill: u8) -> Self {
        Self {
            len: msg.len(),
            depth,
            per_call: per_call.max(1),
            slots: vec![fill; msg.len() * depth],
        }
    }

    /// For a request/response test: calls of at most [`MAX_WRITE_BYTES`].
    fn exchange(msg: Message, depth: usize, fill: u8) -> Self {
        Self::new(msg, depth, MAX_WRITE_BYTES / msg.len().max(1), fill)
    }

    /// Send the messages of slots `first..first + k` (wrapping, `k` at most
    /// the depth), `per_call` messages per `writev` (more calls only when
    /// the socket takes part of one).
    fn send<'a>(
        &'a self,
        s: &mut TcpStream,
        first: usize,
        k: usize,
        iov: &mut Vec<IoSlice<'a>>,
        spin: bool,
    ) -> io::Result<()> {
        let mut first = first % self.depth;
        let mut left = k;
        while left > 0 {
            let n = left.min(self.per_call);
            iov.clear();
            let to_end = n.min(self.depth - first);
            iov.push(IoSlice::new(
                &self.slots[first * self.len..(first + to_end) * self.len],
            ));
            if n > to_end {
                iov.push(IoSlice::new(&self.slots[..(n - to_end) * self.len]));
            }
            writev_full(s, iov, spin)?;
            first = (first + n) % self.depth;
            left -= n;
        }
        Ok(())
    }
}

/// A receive buffer of `len` bytes, touched once now so no page fault
/// lands in the timed part.
fn receive_buffer(len: usize) -> Vec<u8> {
    vec![0x11; len.max(1)]
}

/// Pipelined, batched server: reads whatever has arrived (up to 1 MiB or
/// `depth` requests, whichever is more) in one `read` and answers every
/// complete request in one `writev` (of at most [`MAX_WRITE_BYTES`]), until the peer closes. With an empty
/// response it just drains (the streaming test).
///
/// Cannot deadlock with [`batched_client`]: in every test one direction
/// carries only headers (at most `depth` × 72 bytes in flight), which fit
/// any socket buffer, so the end writing large messages always finds its
/// peer reading.
fn serve_batched(
    mut s: TcpStream,
    req: Message,
    resp: Message,
    depth: usize,
    spin: bool,
) -> io::Result<()> {
    let depth = depth.max(1);
    let out = Outgoing::exchange(resp, depth, 0xA5);
    let mut iov = Vec::with_capacity(2);
    let mut inbuf = receive_buffer((req.len() * depth).max(1 << 20));
    let (mut partial, mut slot) = (0usize, 0usize);
    loop {
        let n = read_some(&mut s, &mut inbuf, spin)?;
        if n == 0 {
            return Ok(());
        }
        partial += n;
        let mut complete = partial / req.len();
        partial %= req.len();
        while resp.len() > 0 && complete > 0 {
            let k = complete.min(depth);
            out.send(&mut s, slot, k, &mut iov, spin)?;
            slot = (slot + k) % depth;
            complete -= k;
        }
    }
}

/// Pipelined, batched client keeping `depth` requests in flight: the
/// requests of all free slots go out in one `writev` (of at most
/// [`MAX_WRITE_BYTES`]), and one `read` takes
/// every response that has arrived. A request's latency runs from the
/// `writev` that carried it to the `read` that completed its response.
fn batched_client(
    mut s: TcpStream,
    req: Message,
    resp: Message,
    depth: usize,
    spin: bool,
    duration: Duration,
) -> io::Result<ClientRun> {
    let depth = depth.max(1);
    let out = Outgoing::exchange(req, depth, 0x5A);
    let mut iov = Vec::with_capacity(2);
    let mut inbuf = receive_buffer(resp.len() * depth);
    let mut hist = LatencyHist::new();
    let mut sent = std::collections::VecDeque::with_capacity(depth);
    let (mut partial, mut slot) = (0usize, 0usize);
    let buffers = buffer_sizes(&s);
    let cpu0 = CpuTimes::thread();
    let start = Instant::now();
    let deadline = start + duration;
    let mut ops = 0u64;
    loop {
        let now = Instant::now();
        if now < deadline && sent.len() < depth {
            let k = depth - sent.len();
            out.send(&mut s, slot, k, &mut iov, spin)?;
            slot = (slot + k) % depth;
            sent.extend(std::iter::repeat_n(now, k));
        }
        if sent.is_empty() {
            break;
        }
        let n = read_some(&mut s, &mut inbuf, spin)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed",
            ));
        }
        partial += n;
        let done = (partial / resp.len()).min(sent.len());
        partial -= done * resp.len();
        let now = Instant::now();
        for t in sent.drain(..done) {
            hist.record(now.duration_since(t));
        }
        ops += done as u64;
    }
    let elapsed = start.elapsed();
    let cpu = CpuTimes::thread().since(cpu0);
    Ok(ClientRun {
        ops,
        elapsed,
        hist,
        cpu,
        buffers,
    })
}

/// One-way stream, `batch` chunks per `writev`; the elapsed time includes
/// the server draining it.
fn stream_client(
    mut s: TcpStream,
    chunk: Message,
    batch: usize,
    spin: bool,
    duration: Duration,
) -> io::Result<ClientRun> {
    let out = Outgoing::new(chunk, batch, batch, 0x3C);
    let mut iov = Vec::with_capacity(2);
    let buffers = buffer_sizes(&s);
    let cpu0 = CpuTimes::thread();
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        out.send(&mut s, 0, batch, &mut iov, spin)?;
        ops += batch as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    // Wait for the server to see EOF and close, so the data really arrived.
    let mut sink = [0u8; 1];
    let _ = read_some(&mut s, &mut sink, spin)?;
    Ok(ClientRun {
        ops,
        elapsed: start.elapsed(),
        hist: LatencyHist::new(),
        cpu: CpuTimes::thread().since(cpu0),
        buffers,
    })
}

/// Spin until the socket is ready for `events`, asking with `poll(2)` and
/// a zero timeout, as SPDK's reactor asks epoll. Retrying the `read` itself
/// instead would take the socket lock on every try, and segments the peer
/// delivers meanwhile would wait in the socket's backlog until the lock is
/// released.
fn spin_until(s: &TcpStream, events: libc::c_short) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: poll reads and writes the one pollfd we own.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        if rc > 0 {
            return Ok(());
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        std::hint::spin_loop();
    }
}

/// One receive of whatever has arrived (spinning while nothing has, in
/// spin mode); 0 on EOF. The bytes leave the socket with `MSG_TRUNC`:
/// dequeued and acknowledged like any read, but not copied into `buf`.
/// Neither end looks at them, and a real NVMe/TCP receiver has to land
/// its payload in memory (one copy per byte on loopback), so by
/// construction the ceiling does less work per I/O than any
/// implementation can, rather than by a margin a faster moment of the VM
/// could eat (docs/benchmarks.md, item 5). `buf.len()` still bounds each
/// call, as a real receive buffer would.
fn read_some(s: &mut TcpStream, buf: &mut [u8], spin: bool) -> io::Result<usize> {
    loop {
        if spin {
            spin_until(s, libc::POLLIN)?;
        }
        // SAFETY: `buf` is live and writable for `buf.len()` bytes (with
        // MSG_TRUNC on TCP the kernel does not even write it).
        let r = unsafe {
            libc::recv(
                s.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock if spin => {}
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// `writev` all of `iov`, in more calls only when the socket buffer takes
/// part of it (spinning for room in spin mode).
fn writev_full(s: &mut TcpStream, mut iov: &mut [IoSlice<'_>], spin: bool) -> io::Result<()> {
    while !iov.is_empty() {
        match s.write_vectored(iov) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut iov, n),
            Err(e) if spin && e.kind() == io::ErrorKind::WouldBlock => {
                spin_until(s, libc::POLLOUT)?
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Two distinct CPUs this process may run on, for (server, client): the
/// server on the second allowed CPU and the client on the first, as the
/// SPDK comparisons pin the target to core 1 and the client to core 0.
fn pick_cpus() -> Option<(usize, usize)> {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the size we pass into the set
    // we own; pid 0 is this thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    let mut allowed = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET only reads bit `c` of the initialised set, and
        // `c` stays below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    let client = allowed.next()?;
    let server = allowed.next()?;
    Some((server, client))
}

/// Pin the calling thread to `cpu`; best effort (a failure only makes the
/// numbers noisier).
fn pin_to(cpu: usize) {
    // SAFETY: plain libc calls on a zeroed set we own; pid 0 = this thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        tracing::debug!(cpu, "could not pin baseline thread");
    }
}

/// Latency summary of a result, if it has one.
pub fn latency(r: &BaselineResult) -> Option<LatencySummary> {
    (r.result.latency.max_us > 0.0).then_some(r.result.latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(tests: &[BaselineTest]) -> BaselineReport {
        let p = BaselineParams {
            duration: Duration::from_millis(100),
            rounds: 1,
            pin: false,
        };
        run_tests(&p, tests).expect("baseline")
    }

    #[test]
    fn names_are_unique_and_sizes_match_nvme() {
        let all = BaselineTest::all();
        let mut names: Vec<_> = all.iter().map(|t| t.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        let qd32 = |write| BaselineTest::Qd32 { write, spin: false };
        assert_eq!(qd32(false).sizes(), (72, 4120));
        assert_eq!(qd32(true).sizes(), (4168, 24));
        let large = |write| BaselineTest::Qd8Large { write, spin: true };
        assert_eq!(large(false).sizes(), (72, 24 + 128 * 1024));
        assert_eq!(large(true).sizes(), (72 + 128 * 1024, 24));
        assert_eq!(
            BaselineTest::Stream { spin: false }.sizes(),
            (128 * 1024, 0)
        );
    }

    #[test]
    fn request_response_modes_complete() {
        let r = quick(&[
            BaselineTest::Qd1 {
                write: false,
                mode: WaitMode::Blocking,
            },
            BaselineTest::Qd1 {
                write: true,
                mode: WaitMode::Busy,
            },
            BaselineTest::Qd32 {
                write: false,
                spin: false,
            },
            BaselineTest::Qd32 {
                write: true,
                spin: true,
            },
            BaselineTest::Qd8Large {
                write: false,
                spin: false,
            },
            BaselineTest::Qd8Large {
                write: true,
                spin: true,
            },
        ]);
        // Only sanity: spinning ends on a loaded 2-CPU machine can be very
        // slow while tests run in parallel.
        for x in &r.results {
            assert!(x.result.ops > 0, "{x:?}");
            assert!(x.result.latency.p50_us > 0.0, "{x:?}");
            assert!(x.cpu.per_op_us > 0.0, "{x:?}");
        }
    }

    /// The kernel's cap on a socket buffer size one may ask for without
    /// forcing it.
    fn sysctl_cap(name: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn ends_get_large_socket_buffers() {
        let r = quick(&[BaselineTest::Qd1 {
            write: false,
            mode: WaitMode::Blocking,
        }]);
        let x = &r.results[0];
        // The kernel reports twice the size it grants; without forcing, the
        // grant is capped by the sysctl.
        let want = |cap: u64| 2 * (SOCKET_BUFFER as u64).min(cap.max(1));
        assert!(x.send_buffer_bytes >= want(sysctl_cap("wmem_max")), "{x:?}");
        assert!(
            x.receive_buffer_bytes >= want(sysctl_cap("rmem_max")),
            "{x:?}"
        );
    }

    #[test]
    fn stream_moves_data() {
        let r = quick(&[
            BaselineTest::Stream { spin: false },
            BaselineTest::Stream { spin: true },
        ]);
        for x in &r.results {
            assert!(x.result.mb_per_s > 1.0, "{x:?}");
            assert!(latency(x).is_none());
        }
    }
}
