//! Raw loopback TCP, measured in-process: the physical limit of this
//! machine for the exchanges NVMe/TCP makes, so NVMe numbers can be quoted
//! as a ratio of it rather than as absolutes on a VM that swings 2-3x.
//!
//! Sizes mirror NVMe/TCP: a read is a 72-byte command capsule answered by
//! a 24-byte C2HData header plus 4 KiB (4120 bytes); a write is a capsule
//! carrying 4 KiB in-capsule (72 + 4096) answered by a 24-byte response;
//! the large tests do the same with 128 KiB.
//! Both ends run in this process, pinned to different CPUs when there are
//! two (the server on the second, the client on the first: target core 1,
//! client core 0, like the SPDK comparisons), and CPU time is taken per
//! thread so each end's cost is visible.
//!
//! The deep tests (QD32, QD8 128 KiB, the stream) are a ceiling, not a
//! model of one implementation: both ends pipeline and batch like the best
//! queue could, so that no NVMe/TCP implementation on the same machine can
//! beat them. The client sends every free slot's request in one `write`
//! and takes whatever responses have arrived in one `read`; the server
//! reads whatever requests have arrived in one `read` and answers all the
//! complete ones in one `write`. The QD32 tests also exist with both ends
//! spinning (`_busy`), which is how SPDK waits.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
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
    /// pipelined and batched, both ends blocking.
    Qd8Large { write: bool },
    /// One-way stream of 128 KiB chunks, 1 MiB per `write`.
    Stream,
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
        v.push(BaselineTest::Qd8Large { write: false });
        v.push(BaselineTest::Qd8Large { write: true });
        v.push(BaselineTest::Stream);
        v
    }

    /// Stable name used in tables and JSON.
    pub fn name(self) -> String {
        let rw = |w: bool| if w { "write" } else { "read" };
        match self {
            BaselineTest::Qd1 { write, mode } => {
                let m = match mode {
                    WaitMode::Blocking => "blocking",
                    WaitMode::ServerBusy => "server_busy",
                    WaitMode::Busy => "busy",
                };
                format!("qd1_{}_{m}", rw(write))
            }
            BaselineTest::Qd32 { write, spin } => {
                format!("qd32_{}{}", rw(write), if spin { "_busy" } else { "" })
            }
            BaselineTest::Qd8Large { write } => format!("qd8_{}_128k", rw(write)),
            BaselineTest::Stream => "stream_128k".into(),
        }
    }

    /// (request bytes, response bytes) per operation.
    pub fn sizes(self) -> (usize, usize) {
        match self {
            BaselineTest::Qd1 { write, .. } | BaselineTest::Qd32 { write, .. } => {
                if write {
                    (CAPSULE + IO_4K, PDU_HDR)
                } else {
                    (CAPSULE, PDU_HDR + IO_4K)
                }
            }
            BaselineTest::Qd8Large { write } => {
                if write {
                    (CAPSULE + STREAM_CHUNK, PDU_HDR)
                } else {
                    (CAPSULE, PDU_HDR + STREAM_CHUNK)
                }
            }
            BaselineTest::Stream => (STREAM_CHUNK, 0),
        }
    }

    fn depth(self) -> usize {
        match self {
            BaselineTest::Qd32 { .. } => 32,
            BaselineTest::Qd8Large { .. } => LARGE_DEPTH,
            _ => 1,
        }
    }

    /// Payload bytes per operation (what MB/s counts).
    fn payload(self) -> usize {
        match self {
            BaselineTest::Qd8Large { .. } | BaselineTest::Stream => STREAM_CHUNK,
            _ => IO_4K,
        }
    }

    /// Whether the ends spin on non-blocking sockets: (server, client).
    fn spins(self) -> (bool, bool) {
        match self {
            BaselineTest::Qd1 { mode, .. } => (mode.server_spins(), mode.client_spins()),
            BaselineTest::Qd32 { spin, .. } => (spin, spin),
            _ => (false, false),
        }
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
}

fn measure(
    test: BaselineTest,
    round: u32,
    duration: Duration,
    cpus: Option<(usize, usize)>,
) -> Result<BaselineResult, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(BenchError::Baseline)?;
    let addr = listener.local_addr().map_err(BenchError::Baseline)?;
    let (req, resp) = test.sizes();
    let (server_spins, client_spins) = test.spins();
    let depth = test.depth();
    let (client, server_cpu) = std::thread::scope(|s| {
        let server = s.spawn(move || -> io::Result<CpuTimes> {
            let (stream, _) = listener.accept()?;
            if let Some((c, _)) = cpus {
                pin_to(c);
            }
            let start = CpuTimes::thread();
            // At QD1 the batched ends make one round trip at a time.
            serve_batched(stream, req, resp, depth, server_spins)?;
            Ok(CpuTimes::thread().since(start))
        });
        let client = (|| -> io::Result<ClientRun> {
            let stream = TcpStream::connect(addr)?;
            if let Some((_, c)) = cpus {
                pin_to(c);
            }
            match test {
                BaselineTest::Stream => stream_client(stream, duration),
                _ => batched_client(stream, req, resp, depth, client_spins, duration),
            }
        })();
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
        request_bytes: req as u64,
        response_bytes: resp as u64,
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
    })
}

/// Pipelined, batched server: reads whatever has arrived (up to 1 MiB or
/// `depth` requests, whichever is more) in one `read` and answers every
/// complete request in one `write`, until the peer closes. With
/// `resp == 0` it just drains (the streaming test).
///
/// Cannot deadlock with [`batched_client`]: in every test one direction
/// carries only headers (at most `depth` × 72 bytes in flight), which fit
/// any socket buffer, so the end writing large messages always finds its
/// peer reading.
fn serve_batched(
    mut s: TcpStream,
    req: usize,
    resp: usize,
    depth: usize,
    spin: bool,
) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_nonblocking(spin)?;
    let depth = depth.max(1);
    let mut inbuf = vec![0u8; (req * depth).max(1 << 20)];
    let outbuf = vec![0xA5u8; resp * depth];
    let mut partial = 0usize;
    loop {
        let n = read_some(&mut s, &mut inbuf, spin)?;
        if n == 0 {
            return Ok(());
        }
        partial += n;
        let mut complete = partial / req;
        partial %= req;
        while resp > 0 && complete > 0 {
            let k = complete.min(depth);
            write_full(&mut s, &outbuf[..k * resp], spin)?;
            complete -= k;
        }
    }
}

/// Pipelined, batched client keeping `depth` requests in flight: the
/// requests of all free slots go out in one `write`, and one `read` takes
/// every response that has arrived. A request's latency runs from the
/// `write` that carried it to the `read` that completed its response.
fn batched_client(
    mut s: TcpStream,
    req: usize,
    resp: usize,
    depth: usize,
    spin: bool,
    duration: Duration,
) -> io::Result<ClientRun> {
    s.set_nodelay(true)?;
    s.set_nonblocking(spin)?;
    let depth = depth.max(1);
    let outbuf = vec![0x5Au8; req * depth];
    let mut inbuf = vec![0u8; resp * depth];
    let mut hist = LatencyHist::new();
    let mut sent = std::collections::VecDeque::with_capacity(depth);
    let mut partial = 0usize;
    let cpu0 = CpuTimes::thread();
    let start = Instant::now();
    let deadline = start + duration;
    let mut ops = 0u64;
    loop {
        let now = Instant::now();
        if now < deadline && sent.len() < depth {
            let k = depth - sent.len();
            write_full(&mut s, &outbuf[..k * req], spin)?;
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
        let done = (partial / resp).min(sent.len());
        partial -= done * resp;
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
    })
}

/// One-way stream, [`STREAM_BATCH`] chunks per `write`; the elapsed time
/// includes the server draining it.
fn stream_client(mut s: TcpStream, duration: Duration) -> io::Result<ClientRun> {
    s.set_nodelay(true)?;
    let batch = vec![0x3Cu8; STREAM_CHUNK * STREAM_BATCH];
    let cpu0 = CpuTimes::thread();
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        s.write_all(&batch)?;
        ops += STREAM_BATCH as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    // Wait for the server to see EOF so the data really arrived.
    let mut sink = [0u8; 1];
    let _ = s.read(&mut sink)?;
    Ok(ClientRun {
        ops,
        elapsed: start.elapsed(),
        hist: LatencyHist::new(),
        cpu: CpuTimes::thread().since(cpu0),
    })
}

/// One `read` of whatever has arrived (spinning while nothing has, in
/// spin mode); 0 on EOF.
fn read_some(s: &mut TcpStream, buf: &mut [u8], spin: bool) -> io::Result<usize> {
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if spin && e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn write_full(s: &mut TcpStream, buf: &[u8], spin: bool) -> io::Result<()> {
    let mut put = 0;
    while put < buf.len() {
        match s.write(&buf[put..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => put += n,
            Err(e) if spin && e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
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
        assert_eq!(
            BaselineTest::Qd8Large { write: false }.sizes(),
            (72, 24 + 128 * 1024)
        );
        assert_eq!(
            BaselineTest::Qd8Large { write: true }.sizes(),
            (72 + 128 * 1024, 24)
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
            BaselineTest::Qd8Large { write: false },
            BaselineTest::Qd8Large { write: true },
        ]);
        // Only sanity: spinning ends on a loaded 2-CPU machine can be very
        // slow while tests run in parallel.
        for x in &r.results {
            assert!(x.result.ops > 0, "{x:?}");
            assert!(x.result.latency.p50_us > 0.0, "{x:?}");
            assert!(x.cpu.per_op_us > 0.0, "{x:?}");
        }
    }

    #[test]
    fn stream_moves_data() {
        let r = quick(&[BaselineTest::Stream]);
        assert!(r.results[0].result.mb_per_s > 1.0, "{:?}", r.results[0]);
        assert!(latency(&r.results[0]).is_none());
    }
}
