//! `Namespace::submit_then`: completion callbacks, against the scripted
//! fake target of the test kit.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use ferrofab_nvmeof_host::{ConnectOptions, Controller, Digests, HostError, HostIdentity, IoOp};
use ferrofab_testkit::nvme::fake_target::{FakeTarget, Knobs, SUBNQN};

fn opts(t: &FakeTarget) -> ConnectOptions {
    let mut o = ConnectOptions::new(t.addr.clone(), SUBNQN, HostIdentity::ephemeral());
    o.nr_io_queues = 2;
    o.queue_size = 32;
    o.kato = Duration::from_secs(2);
    o.reconnect_delay = Duration::from_millis(100);
    o.max_reconnect_delay = Duration::from_millis(400);
    o.ctrl_loss_tmo = Some(Duration::from_secs(20));
    o
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    ferrofab_testkit::data::pattern(len, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

type Done = (u64, Result<Vec<u8>, HostError>, std::thread::ThreadId);

/// Many operations in flight from one thread that never waits on the
/// namespace: every callback runs once, with the right data, and (the
/// point of the API) on a thread other than the submitter's.
#[test]
fn callbacks_complete_many_operations_without_a_waiting_thread() {
    let t = FakeTarget::start(4096, Knobs::default());
    let ctrl = Controller::connect(opts(&t)).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let (tx, rx) = mpsc::channel::<Done>();
    let n = 48u64;
    for i in 0..n {
        let tx = tx.clone();
        let op = IoOp::Write {
            offset: i * 8192,
            data: pattern(i, 8192),
        };
        ns.submit_then(op, move |r| {
            let _ = tx.send((i, r, std::thread::current().id()));
        })
        .unwrap();
    }
    let me = std::thread::current().id();
    let mut elsewhere = 0;
    for _ in 0..n {
        let (_, r, on) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(r.unwrap().is_empty(), "a write returns no data");
        elsewhere += usize::from(on != me);
    }
    for i in 0..n {
        let tx = tx.clone();
        ns.submit_then(
            IoOp::Read {
                offset: i * 8192,
                len: 8192,
            },
            move |r| {
                let _ = tx.send((i, r, std::thread::current().id()));
            },
        )
        .unwrap();
    }
    let mut seen = vec![false; n as usize];
    for _ in 0..n {
        let (i, r, on) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(r.unwrap() == pattern(i, 8192), "read {i}");
        assert!(!seen[i as usize], "callback {i} ran twice");
        seen[i as usize] = true;
        elsewhere += usize::from(on != me);
    }
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    assert!(elsewhere > 0, "every callback ran on the submitter");
}

/// A failed command reaches the callback as an error.
#[test]
fn a_failed_command_reaches_the_callback_as_an_error() {
    let t = FakeTarget::start(1024, Knobs::default());
    let mut o = opts(&t);
    o.ctrl_loss_tmo = Some(Duration::from_secs(1));
    let ctrl = Controller::connect(o).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    t.set_refusing(true);
    t.drop_all();
    let (tx, rx) = mpsc::channel();
    ns.submit_then(
        IoOp::Read {
            offset: 0,
            len: 512,
        },
        move |r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(r, Err(HostError::ControllerLost { .. })), "{r:?}");
}

/// A damaged data digest is retried before the callback sees the data.
#[test]
fn a_data_digest_error_is_retried_before_the_callback() {
    let t = FakeTarget::start(1024, Knobs::default());
    let mut o = opts(&t);
    o.digests = Digests {
        header: true,
        data: true,
    };
    let ctrl = Controller::connect(o).unwrap();
    let ns = ctrl.namespace(1).unwrap();
    let data = pattern(11, 8192);
    ns.write_blocks(4096, &data).unwrap();
    t.corrupt_next_c2h.store(true, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    ns.submit_then(
        IoOp::Read {
            offset: 4096,
            len: 8192,
        },
        move |r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    let back = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert!(back == data);
    assert!(!t.corrupt_next_c2h.load(Ordering::SeqCst));
}
