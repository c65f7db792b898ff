//! Setup timeouts (issue 12, item 2): a connection that never sends its
//! ICReq, or sends ICReq but never Connect, is closed and counted.

use ferrofab_testkit::nvme::mini_host;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferrofab_nvmeof_host::Digests;
use ferrofab_nvmeof_target::{ConnectionStats, Target, TargetOptions};
use ferrofab_testkit::wait::holds_within;
use mini_host::{fixture_with, MiniHost};

fn stats(t: &Target) -> ConnectionStats {
    t.status()
        .connections
        .expect("built-in target keeps counters")
}

#[test]
fn stalled_icreq_is_closed_after_the_icreq_timeout() {
    let f = fixture_with(TargetOptions {
        icreq_timeout_ms: 500,
        ..TargetOptions::default()
    });
    let mut s = TcpStream::connect(f.addr).unwrap();
    // Half an ICReq, then nothing: the deadline runs from the accept, not
    // from the last byte, so trickling does not keep it open.
    s.write_all(&[0u8, 0, 128, 0]).unwrap();
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 16];
    let n = s.read(&mut b).unwrap_or(0);
    let took = start.elapsed();
    assert_eq!(n, 0, "the target closes the connection");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert_eq!(stats(&f.target).icreq_timeouts, 1);
    assert!(holds_within(Duration::from_secs(2), || stats(&f.target)
        .open
        == 0));
}

#[test]
fn icreq_without_connect_is_closed_after_the_connect_timeout() {
    let f = fixture_with(TargetOptions {
        connect_timeout_ms: 1_000,
        ..TargetOptions::default()
    });
    let mut h = MiniHost::open(f.addr, Digests::default());
    let start = Instant::now();
    // Still open shortly after the ICResp.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stats(&f.target).open, 1);
    assert!(h.recv_owned().is_none(), "nothing but the close comes back");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    let s = stats(&f.target);
    assert_eq!((s.connect_timeouts, s.icreq_timeouts), (1, 0), "{s:?}");

    // A queue that did connect is not subject to it.
    let (mut admin, _) = mini_host::admin_queue(f.addr, Digests::default());
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        admin
            .admin(ferrofab_nvmeof_wire::spec::admin::KEEP_ALIVE, 0, 0, 0, 0)
            .status(),
        ferrofab_nvmeof_wire::spec::status::Status::SUCCESS
    );
}
