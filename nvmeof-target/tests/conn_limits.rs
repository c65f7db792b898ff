//! Connection caps and setup timeouts (issue 12, item 2): a flood of idle,
//! unauthenticated connections costs a bounded number of threads and
//! bytes, goes away after the ICReq timeout, and does not keep a real host
//! out.

use ferrofab_testkit::nvme::mini_host;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

use ferrofab_nvmeof_host::{BlockIo, ConnectOptions, Controller, Digests, HostIdentity};
use ferrofab_nvmeof_target::{ConnectionStats, Target, TargetOptions};
use ferrofab_testkit::process::closed_by_peer;
use ferrofab_testkit::wait::holds_within;
use mini_host::{fixture_with, HOSTNQN, SUBNQN};

/// Threads of this process now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP connection to `to` from the loopback address `from`, so that
/// several "peers" can be simulated on one machine.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // sockaddr structs live on the stack for the duration of each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let bind = sockaddr(SocketAddrV4::new(from, 0));
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, std::ptr::addr_of!(bind).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let SocketAddr::V4(to) = to else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        let dest = sockaddr(to);
        if libc::connect(fd, std::ptr::addr_of!(dest).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Open `n` idle connections from `from`.
fn flood(from: Ipv4Addr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| connect_from(from, to).expect("flood connect"))
        .collect()
}

fn stats(t: &Target) -> ConnectionStats {
    t.status()
        .connections
        .expect("built-in target keeps counters")
}

/// Wait until the target has accepted or refused `offered` connections.
fn wait_handled(t: &Target, offered: u64) {
    let handled = |s: ConnectionStats| s.accepted + s.refused_global + s.refused_per_peer;
    assert!(
        holds_within(Duration::from_secs(20), || handled(stats(t)) >= offered),
        "the target handled {} of {offered} connections: {:?}",
        handled(stats(t)),
        stats(t)
    );
}

fn host_options(addr: SocketAddr) -> ConnectOptions {
    let id = HostIdentity::new(HOSTNQN, uuid::Uuid::new_v4()).unwrap();
    let mut o = ConnectOptions::new(addr.to_string(), SUBNQN, id);
    o.nr_io_queues = 2;
    o.queue_size = 32;
    o.digests = Digests::default();
    o
}

const CAP: u32 = 64;
const PER_PEER: u32 = 16;

#[test]
fn connection_flood_is_capped_timed_out_and_a_real_host_still_gets_in() {
    let f = fixture_with(TargetOptions {
        max_connections: CAP,
        max_connections_per_peer: PER_PEER,
        icreq_timeout_ms: 4_000,
        connect_timeout_ms: 8_000,
        ..TargetOptions::default()
    });
    let threads_before = threads();
    let rss_before = rss_kib();

    // Two flooding peers, 150 idle connections each: only PER_PEER of
    // each get a thread, the rest are closed at once.
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let b = Ipv4Addr::new(127, 0, 0, 3);
    let mut flood_ab = flood(a, f.addr, 150);
    flood_ab.extend(flood(b, f.addr, 150));
    wait_handled(&f.target, 300);
    let s = stats(&f.target);
    assert_eq!(s.refused_per_peer, 2 * (150 - u64::from(PER_PEER)), "{s:?}");
    assert_eq!(s.open, 2 * u64::from(PER_PEER), "{s:?}");

    // A real host (the crate's initiator, 3 connections) gets in and does
    // I/O while the flood is open.
    let ctrl = Controller::connect(host_options(f.addr)).expect("host connects during the flood");
    let ns = ctrl.namespace(1).expect("namespace 1");
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    ns.write_at(&data, 1 << 20).expect("write during the flood");
    let mut back = vec![0u8; data.len()];
    ns.read_at(&mut back, 1 << 20)
        .expect("read during the flood");
    assert!(back == data);

    // Three more peers push past the global cap.
    let mut flood_cde = Vec::new();
    for last in 4..=6 {
        flood_cde.extend(flood(Ipv4Addr::new(127, 0, 0, last), f.addr, 100));
    }
    wait_handled(&f.target, 603);
    let s = stats(&f.target);
    assert!(s.refused_global > 0, "{s:?}");
    assert!(s.open <= u64::from(CAP), "{s:?}");
    let threads_peak = threads();
    let rss_peak = rss_kib();
    eprintln!(
        "600 flood connections offered: threads {threads_before} -> {threads_peak}, RSS {rss_before} -> {rss_peak} KiB, {s:?}"
    );
    // One thread per admitted connection plus the initiator's own, never
    // one per offered connection (620).
    assert!(
        threads_peak <= threads_before + CAP as usize + 24,
        "threads grew from {threads_before} to {threads_peak}"
    );
    assert!(
        rss_peak <= rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_peak} KiB"
    );

    // After the ICReq timeout every idle connection is gone; the host's
    // connected queues are not.
    assert!(
        holds_within(Duration::from_secs(12), || stats(&f.target).open == 3),
        "idle connections still open: {:?}",
        stats(&f.target)
    );
    let s = stats(&f.target);
    assert_eq!(s.icreq_timeouts, s.accepted - 3, "{s:?}");
    for c in flood_ab.iter_mut().chain(flood_cde.iter_mut()) {
        assert!(
            closed_by_peer(c, Duration::from_millis(1)),
            "a flood connection is still open"
        );
    }
    assert!(
        holds_within(Duration::from_secs(5), || threads()
            <= threads_peak - (CAP as usize - 3)),
        "connection threads did not exit: {} (peak {threads_peak})",
        threads()
    );
    ns.read_at(&mut back, 1 << 20)
        .expect("read after the flood");
    assert!(back == data);
    ctrl.disconnect().expect("disconnect");
}
