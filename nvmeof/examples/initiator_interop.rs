//! Drives the built-in initiator against a real target for
//! tests/kernel/initiator-vs-nvmet.sh. Each subcommand is one check and
//! exits non-zero with a message when it fails.
//!
//! Guest coordination: `--release ADDR` connects to a port the guest
//! script listens on with `nc -l` and reads one line; that is the signal
//! for the guest to do its next step (grow the namespace, disable the
//! port). The connect is retried because qemu's user networking accepts
//! before the guest listens and then resets.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ferrofab_nvmeof_host::{
    BlockIo, ConnectOptions, Controller, ControllerState, Digests, HostIdentity, IoOp,
    NamespaceEvent,
};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: String,
    #[arg(long)]
    nqn: String,
    #[arg(long)]
    hostnqn: String,
    #[arg(long, default_value = "6f1c3a52-0000-4000-8000-00000000f00d")]
    hostid: String,
    #[arg(long)]
    digests: bool,
    #[arg(long, default_value_t = 4)]
    queues: u16,
    #[arg(long, default_value_t = 30)]
    ctrl_loss_tmo: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write, read back and verify MIB mebibytes at queue depth QD.
    Io {
        #[arg(long, default_value_t = 64)]
        mib: u64,
        #[arg(long, default_value_t = 32)]
        qd: usize,
    },
    /// Expect Connect to be refused because the host is not allowed.
    Denied,
    /// Release the guest to grow the namespace; wait for the resize event.
    Grow {
        #[arg(long)]
        release: String,
        #[arg(long)]
        expect_bytes: u64,
    },
    /// Run I/O while the guest disables and re-enables the port.
    Outage {
        #[arg(long)]
        release: String,
        #[arg(long, default_value_t = 40)]
        seconds: u64,
    },
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn release_guest(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = TcpStream::connect(addr).and_then(|s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            Ok(line)
        });
        if matches!(&reply, Ok(l) if l.trim() == "ferrofab-released") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the guest did not answer on {addr}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn options(a: &Args) -> anyhow::Result<ConnectOptions> {
    let id = HostIdentity::new(&a.hostnqn, uuid::Uuid::parse_str(&a.hostid)?)?;
    let mut o = ConnectOptions::new(a.addr.clone(), a.nqn.clone(), id);
    o.digests = Digests {
        header: a.digests,
        data: a.digests,
    };
    o.nr_io_queues = a.queues;
    o.queue_size = 64;
    o.ctrl_loss_tmo = Some(Duration::from_secs(a.ctrl_loss_tmo));
    o.reconnect_delay = Duration::from_millis(500);
    o.max_reconnect_delay = Duration::from_secs(2);
    o.kato = Duration::from_secs(5);
    Ok(o)
}

/// Sizes from 4 KiB (in-capsule) to 256 KiB (R2T), all whole 4 KiB.
fn io_size(i: u64) -> usize {
    4096 << (i % 7)
}

fn io(a: &Args, mib: u64, qd: usize) -> anyhow::Result<()> {
    let ctrl = Controller::connect(options(a)?)?;
    let ns = ctrl.namespace(1)?;
    let total = mib << 20;
    if ns.size() < total {
        bail!("namespace is {} bytes, need {total}", ns.size());
    }
    let mut ops = Vec::new();
    let mut off = 0u64;
    let mut i = 0u64;
    while off < total {
        let len = (io_size(i) as u64).min(total - off) as usize;
        ops.push((off, len));
        off += len as u64;
        i += 1;
    }
    let t0 = Instant::now();
    let mut p = ns.pipeline(qd);
    for (i, &(off, len)) in ops.iter().enumerate() {
        if p.is_full() {
            p.wait_any().context("pipeline")?.result?;
        }
        p.submit(
            i as u64,
            IoOp::Write {
                offset: off,
                data: pattern(off, len),
            },
        )?;
    }
    while let Some(c) = p.wait_any() {
        c.result?;
    }
    let wt = t0.elapsed();
    let t1 = Instant::now();
    let mut bad = 0;
    let mut check = |c: ferrofab_nvmeof_host::Completed| -> anyhow::Result<()> {
        let (off, len) = ops[c.tag as usize];
        if c.result? != pattern(off, len) {
            bad += 1;
        }
        Ok(())
    };
    for (i, &(off, len)) in ops.iter().enumerate() {
        if p.is_full() {
            check(p.wait_any().context("pipeline")?)?;
        }
        p.submit(i as u64, IoOp::Read { offset: off, len })?;
    }
    while let Some(c) = p.wait_any() {
        check(c)?;
    }
    let rt = t1.elapsed();
    if bad > 0 {
        bail!("{bad} of {} reads returned wrong data", ops.len());
    }
    println!(
        "io: {mib} MiB in {} ops, {} queues, QD {qd}, digests {}: write {:.1} MB/s, read {:.1} MB/s, verified",
        ops.len(),
        ctrl.io_queues(),
        a.digests,
        total as f64 / wt.as_secs_f64() / 1e6,
        total as f64 / rt.as_secs_f64() / 1e6
    );
    ctrl.disconnect()?;
    Ok(())
}

fn denied(a: &Args) -> anyhow::Result<()> {
    match Controller::connect(options(a)?) {
        Ok(_) => bail!(
            "connect with host {} succeeded but should be refused",
            a.hostnqn
        ),
        Err(e) => {
            let msg = e.to_string();
            println!("denied: {msg}");
            if !msg.contains("not allowed") && !msg.contains("refused") {
                bail!("unexpected error: {msg}");
            }
            Ok(())
        }
    }
}

fn grow(a: &Args, release: &str, expect: u64) -> anyhow::Result<()> {
    let ctrl = Controller::connect(options(a)?)?;
    let ns = ctrl.namespace(1)?;
    let before = ns.size();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    ctrl.watch(move |e| ev.lock().unwrap().push(e.clone()));
    release_guest(release)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ns.size() != expect {
        if Instant::now() > deadline {
            bail!(
                "namespace still {} bytes (expected {expect}); events {:?}",
                ns.size(),
                events.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ev = events.lock().unwrap().clone();
    if !ev
        .iter()
        .any(|e| matches!(e, NamespaceEvent::Resized { new, .. } if new.size_bytes() == expect))
    {
        bail!("no resize event: {ev:?}");
    }
    // The new space is usable.
    let data = pattern(42, 4096);
    ns.write_at(&data, expect - 4096)?;
    let mut back = vec![0u8; 4096];
    ns.read_at(&mut back, expect - 4096)?;
    if back != data {
        bail!("data at the end of the grown namespace does not verify");
    }
    println!(
        "grow: {before} -> {} bytes seen through the asynchronous event",
        ns.size()
    );
    ctrl.disconnect()?;
    Ok(())
}

fn outage(a: &Args, release: &str, seconds: u64) -> anyhow::Result<()> {
    let ctrl = Controller::connect(options(a)?)?;
    let ns = ctrl.namespace(1)?;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (ns, stop, ops, failures) =
                (ns.clone(), stop.clone(), ops.clone(), failures.clone());
            std::thread::spawn(move || {
                // Each worker owns 64 blocks of 64 KiB and keeps rewriting
                // them with a generation number, verifying every read.
                let mut gen = vec![0u64; 64];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let slot = (i % 64) as usize;
                    let off = (w * 64 + slot as u64) * 65536;
                    gen[slot] += 1;
                    let data = pattern(off ^ (gen[slot] << 40), 65536);
                    if let Err(e) = ns.write_at(&data, off) {
                        failures.lock().unwrap().push(format!("write {off}: {e}"));
                        return;
                    }
                    let mut back = vec![0u8; 65536];
                    if let Err(e) = ns.read_at(&mut back, off) {
                        failures.lock().unwrap().push(format!("read {off}: {e}"));
                        return;
                    }
                    if back != data {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("data mismatch at {off}"));
                        return;
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let before = ops.load(Ordering::Relaxed);
    release_guest(release)?;
    let start = Instant::now();
    let mut saw_reconnecting = false;
    while start.elapsed() < Duration::from_secs(seconds) {
        if ctrl.state() == ControllerState::Reconnecting {
            saw_reconnecting = true;
        }
        if saw_reconnecting
            && ctrl.state() == ControllerState::Live
            && start.elapsed() > Duration::from_secs(3)
        {
            // Give I/O a few seconds on the new association.
            std::thread::sleep(Duration::from_secs(3));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let f = failures.lock().unwrap().clone();
    if !f.is_empty() {
        bail!("I/O failed during the outage: {f:?}");
    }
    if !saw_reconnecting {
        bail!("the controller never noticed the outage");
    }
    if ctrl.state() != ControllerState::Live {
        bail!("controller is {:?} after the outage", ctrl.state());
    }
    println!(
        "outage: {} ops before, {} total, reconnected with no failed or lost I/O",
        before,
        ops.load(Ordering::Relaxed)
    );
    ctrl.disconnect()?;
    Ok(())
}

fn main() {
    ferrofab_nvmeof::cli::init_logging(ferrofab_nvmeof::cli::LogFormat::Human, 0);
    let a = Args::parse();
    let r = match &a.cmd {
        Cmd::Io { mib, qd } => io(&a, *mib, *qd),
        Cmd::Denied => denied(&a),
        Cmd::Grow {
            release,
            expect_bytes,
        } => grow(&a, release, *expect_bytes),
        Cmd::Outage { release, seconds } => outage(&a, release, *seconds),
    };
    if let Err(e) = r {
        eprintln!("initiator_interop: FAIL: {e:#}");
        std::process::exit(1);
    }
}
