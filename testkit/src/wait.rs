//! Waiting for a condition: one polling loop for every suite.

use std::time::{Duration, Instant};

/// How often [`wait_until`] polls: often enough that a test does not
/// dawdle, rarely enough that polling a process's status costs nothing.
pub const POLL: Duration = Duration::from_millis(200);

/// Polls `f` until it returns `Some` or `timeout` passes (then panics
/// naming `what`, so a hang reads as what was awaited).
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, POLL, f).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Whether `f` holds within `limit`, asking every 20 ms (for conditions
/// a data-path test measures, where 200 ms would blur the timing); the
/// caller asserts with its own message.
pub fn holds_within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    poll(limit, Duration::from_millis(20), || f().then_some(())).is_some()
}

/// The one polling loop: calls `f` every `every` until it returns `Some`,
/// and once more at `limit`; `None` if it never did.
pub fn poll<T>(limit: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

#[cfg(feature = "control-plane")]
/// The next message of a server stream (desired state, watch events),
/// failing the test when none comes within `limit` or the stream ends.
pub async fn next_within<T>(s: &mut tonic::Streaming<T>, limit: Duration) -> T {
    tokio::time::timeout(limit, s.message())
        .await
        .expect("message in time")
        .expect("stream healthy")
        .expect("stream open")
}

#[cfg(feature = "control-plane")]
/// [`next_within`] with the suites' usual ten seconds.
pub async fn next<T>(s: &mut tonic::Streaming<T>) -> T {
    next_within(s, Duration::from_secs(10)).await
}

/// Panics unless a /metrics body has the process series every daemon
/// exports (`process_cpu_seconds_total`, ...; issue 18).
pub fn assert_process_series(metrics: &str) {
    for series in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}

/// A plain HTTP/1.1 GET of `path` from `addr` (metrics, health); the
/// whole response, head and body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}
