//! The initiator against the built-in target over loopback TCP.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrofab_nvmeof_host::{
    discover, BlockIo, ConnectOptions, Controller, ControllerState, Digests, HostIdentity, IoOp,
    NamespaceEvent,
};
use ferrofab_nvmeof_target::{ListenerKind, Target, TargetOptions};

// The target's test fixture (a served namespace, a raw-PDU host) from the
// test kit, shared rather than copied.
use ferrofab_testkit::nvme::mini_host;

use mini_host::{serve, DirectIo, Fixture, HOSTNQN, OTHER_HOST, SUBNQN};

fn opts(addr: impl ToString, hostnqn: &str) -> ConnectOptions {
    let id = HostIdentity::new(hostnqn, uuid::Uuid::new_v4()).unwrap();
    let mut o = ConnectOptions::new(addr.to_string(), SUBNQN, id);
    o.nr_io_queues = 2;
    o.queue_size = 64;
    o.reconnect_delay = Duration::from_millis(100);
    o.max_reconnect_delay = Duration::from_millis(500);
    o.ctrl_loss_tmo = Some(Duration::from_secs(20));
    o
}

fn target(opts: TargetOptions) -> Fixture {
    mini_host::fixture_with(opts)
}

/// `len` pseudo-random bytes, different for each `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    ferrofab_testkit::data::pattern(len, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn roundtrip(digests: Digests) {
    let f = target(TargetOptions {
        max_h2c_data: 16 * 1024,
        ..TargetOptions::default()
    });
    let mut o = opts(f.addr, HOSTNQN);
    o.digests = digests;
    let ctrl = Controller::connect(o).unwrap();
    assert_eq!(ctrl.namespaces().len(), 1);
    let ns = ctrl.namespace(1).unwrap();
    assert_eq!(ns.size(), 64 << 20);
    assert_eq!(ns.block_size(), 512);
    for (i, len) in [512usize, 4096, 16 * 1024, 20 * 1024, 256 * 1024, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let off = (i as u64) << 22;
        let data = pattern(i as u64, len);
        ns.write_at(&data, off).unwrap();
        let mut back = vec![0u8; len];
        ns.read_at(&mut back, off).unwrap();
        assert!(back == data, "length {len}");
    }
    ns.write_zeroes(0, 4096).unwrap();
    let mut back = vec![1u8; 4096];
    ns.read_at(&mut back, 0).unwrap();
    assert!(back.iter().all(|&b| b == 0));
    ns.deallocate(1 << 20, 1 << 20).unwrap();
    ns.flush().unwrap();
    ctrl.disconnect().unwrap();
}

#[test]
fn read_write_verify() {
    roundtrip(Digests::default());
}

#[test]
fn read_write_verify_with_digests() {
    roundtrip(Digests {
        header: true,
        data: true,
    });
}

#[test]
fn pipelined_qd32_over_four_queues() {
    let f = target(TargetOptions::default());
    let mut o = opts(f.addr, HOSTNQN);
    o.nr_io_queues = 4;
    let ctrl = Controller::connect(o).unwrap();
    assert_eq!(ctrl.io_queues(), 4);
    let ns = ctrl.namespace(1).unwrap();
    let mut p = ns.pipeline(32);
    let n = 2048u64;
    for i in 0..n {
        if p.is_full() {
            p.wait_any().unwrap().result.unwrap();
        }
        p.submit(
            i,
            IoOp::Write {
                offset: i * 8192,
                data: pattern(i, 8192),
            },
        )
        .unwrap();
    }
    while let Some(c) = p.wait_any() {
        c.result.unwrap();
    }
    for i in 0..n {
        if p.is_full() {
            let c = p.wait_any().unwrap();
            assert!(c.result.unwrap() == pattern(c.tag, 8192));
        }
        p.submit(
            i,
            IoOp::Read {
                offset: i * 8192,
                len: 8192,
            },
        )
        .unwrap();
    }
    while let Some(c) = p.wait_any() {
        assert!(c.result.unwrap() == pattern(c.tag, 8192));
    }
}

#[test]
fn discovery() {
    let f = target(TargetOptions::default());
    let daddr = f
        .target
        .add_listener(
            "127.0.0.1:0".parse().unwrap(),
            ListenerKind::Discovery,
            None,
        )
        .unwrap();
    let id = HostIdentity::new(HOSTNQN, uuid::Uuid::new_v4()).unwrap();
    let entries = discover(&daddr.to_string(), &id).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.subnqn == SUBNQN && e.trsvcid == f.addr.port().to_string()),
        "{entries:?}"
    );
}

#[test]
fn host_not_allowed_is_a_clear_error() {
    let f = target(TargetOptions::default());
    let e = Controller::connect(opts(f.addr, OTHER_HOST)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "connect to {SUBNQN} at {} refused: host {OTHER_HOST} not allowed (connect: host not allowed)",
            f.addr
        )
    );
}

#[test]
fn grow_is_seen_through_the_aen() {
    let f = target(TargetOptions::default());
    let ctrl = Controller::connect(opts(f.addr, HOSTNQN)).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    ctrl.watch(move |e| ev.lock().unwrap().push(e.clone()));
    f.target.resize_namespace(SUBNQN, 1, 96 << 20).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.size() != 96 << 20 {
        assert!(Instant::now() < deadline, "size still {}", ns.size());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(
        &events.lock().unwrap()[..],
        [NamespaceEvent::Resized { new, .. }] if new.size_bytes() == 96 << 20
    ));
    let data = pattern(5, 4096);
    ns.write_at(&data, (96 << 20) - 4096).unwrap();
    // And once more: the AER was re-armed and the log page read unmasked
    // further notices.
    f.target.resize_namespace(SUBNQN, 1, 128 << 20).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.size() != 128 << 20 {
        assert!(Instant::now() < deadline, "second grow not seen");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The target goes away (every connection ends) and comes back on the same
/// port with the same storage: I/O running meanwhile neither fails nor
/// loses data.
#[test]
fn target_restart_within_ctrl_loss_tmo() {
    let f = target(TargetOptions::default());
    let addr = f.addr;
    let ctrl = Controller::connect(opts(addr, HOSTNQN)).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (ns, stop, ops) = (ns.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let off = (w * 256 + i % 256) * 4096;
                    let data = pattern(off ^ (i << 32), 4096);
                    ns.write_at(&data, off).unwrap();
                    let mut back = vec![0u8; 4096];
                    ns.read_at(&mut back, off).unwrap();
                    assert!(back == data, "data at {off}");
                    ops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    while ops.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Same storage, new target process-equivalent on the same port.
    let Fixture { target, dir, .. } = f;
    target.shutdown();
    drop(target);
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(ctrl.state(), ControllerState::Live);
    let t2 = Target::new(TargetOptions::default()).unwrap();
    let mut bound = None;
    for _ in 0..50 {
        match t2.add_listener(addr, ListenerKind::Io, None) {
            Ok(a) => {
                bound = Some(a);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    assert_eq!(bound, Some(addr));
    serve(&t2, dir.path(), DirectIo::Auto);
    let before = ops.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ops.load(Ordering::Relaxed) < before + 200 {
        assert!(Instant::now() < deadline, "I/O did not resume");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(ctrl.state(), ControllerState::Live);
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// Raw loopback TCP, both ends spinning: 72 bytes out, 4144 bytes back
/// (the size of a 4 KiB read's command and answer).
fn raw_tcp_round_trips(n: usize) -> Vec<Duration> {
    use std::io::{Read, Write};
    fn read_spin(s: &mut std::net::TcpStream, buf: &mut [u8]) {
        let mut got = 0;
        while got < buf.len() {
            match s.read(&mut buf[got..]) {
                Ok(0) => panic!("eof"),
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut req = [0u8; 72];
        let resp = vec![7u8; 4144];
        for _ in 0..n {
            read_spin(&mut s, &mut req);
            s.write_all(&resp).unwrap();
        }
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_nonblocking(true).unwrap();
    let mut resp = vec![0u8; 4144];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&[1u8; 72]).unwrap();
        read_spin(&mut c, &mut resp);
        out.push(t.elapsed());
    }
    server.join().unwrap();
    out
}

/// QD1 4 KiB read latency against the built-in target with busy polling on
/// both sides, next to a raw TCP round trip. Run with
/// `cargo test --release --test host_target -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a pass/fail test; run by hand in release mode (./tests/run bench measures it)"]
fn qd1_latency_vs_raw_tcp() {
    use ferrofab_nvmeof_target::PollMode;
    let n = 20000;
    let f = target(TargetOptions {
        poll_mode: PollMode::Busy,
        ..TargetOptions::default()
    });
    let mut o = opts(f.addr, HOSTNQN);
    o.nr_io_queues = 1;
    o.poll_spin = Duration::from_secs(1);
    let mut buf = vec![0u8; 4096];
    for round in 0..3 {
        // The baseline runs while no target thread spins.
        let mut raw = raw_tcp_round_trips(n);
        let ctrl = Controller::connect(o.clone()).unwrap();
        let ns = ctrl.namespace(1).unwrap();
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            ns.read_at(&mut buf, (i as u64 % 4096) * 4096).unwrap();
            lat.push(t.elapsed());
        }
        let (r50, r99) = (percentile(&mut raw, 0.5), percentile(&mut raw, 0.99));
        let (h50, h99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
        println!(
            "round {round}: raw TCP p50 {r50:?} p99 {r99:?}; initiator QD1 4K read p50 {h50:?} p99 {h99:?}; ratio p50 {:.2}",
            h50.as_secs_f64() / r50.as_secs_f64()
        );
        ctrl.disconnect().unwrap();
    }
}
