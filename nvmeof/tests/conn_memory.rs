//! Memory after large transfers (issue 12, item 3), measured on a
//! `ferrofab-nvmeof serve` process so the test's own allocations do not
//! count: connections that each sent an 8 MiB H2CData PDU must not keep
//! their 16 MiB receive buffers, neither while they stay connected and
//! idle nor after they close.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};

// The target's test fixture (a served namespace, a raw-PDU host) from the
// test kit, shared rather than copied.
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::wire::Digests;
use ferrofab_testkit::nvme::mini_host;
use mini_host::{admin_queue, io_queue, pattern, SUBNQN};

const BIG: usize = 8 << 20;
const QUEUES: u16 = 16;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `serve` with 8 MiB H2CData PDUs allowed; returns it and its
/// address.
fn start(dir: &std::path::Path) -> (Serve, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cfg = dir.join("target.toml");
    std::fs::write(
        &cfg,
        format!(
            "[target]\nmax_h2c_data = {BIG}\nmdts_bytes = {BIG}\nio_threads = 0\n\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
             [[subsystem]]\nnqn = \"{SUBNQN}\"\nallowed_hosts = [\"{}\"]\n\n\
             [[subsystem.namespace]]\nnsid = 1\npath = \"{}\"\nsize = \"64MiB\"\ndirect_io = \"off\"\n",
            mini_host::HOSTNQN,
            dir.join("ns1.img").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrofab-nvmeof"))
        .args(["serve", "--no-watch", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start serve");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    assert!(line.contains("ready, serving"), "{line}");
    (
        Serve(child),
        format!("127.0.0.1:{port}").parse().expect("addr"),
    )
}

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn memory_goes_back_after_large_pdus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, addr) = start(dir.path());
    let pid = serve.0.id();
    let (mut admin, cntlid) = admin_queue(addr, Digests::default());
    let before = rss_kib(pid);

    // QUEUES queues each write 8 MiB in one H2CData PDU, then stay
    // connected and idle until every one has written.
    let written = Arc::new(Barrier::new(usize::from(QUEUES) + 1));
    let measured = Arc::new(Barrier::new(usize::from(QUEUES) + 1));
    let workers: Vec<_> = (1..=QUEUES)
        .map(|qid| {
            let (written, measured) = (written.clone(), measured.clone());
            std::thread::spawn(move || {
                let mut h = io_queue(addr, Digests::default(), cntlid, qid);
                assert_eq!(h.maxh2cdata as usize, BIG);
                let slba = u64::from(qid % 8) * (BIG as u64 / 512);
                let r = h.write(slba, &pattern(BIG, qid as u8), false);
                assert_eq!(r.status(), Status::SUCCESS);
                written.wait();
                measured.wait();
            })
        })
        .collect();
    written.wait();
    let idle = rss_kib(pid);
    measured.wait();
    for w in workers {
        w.join().expect("worker");
    }
    // The I/O queues are closed now; give the target a moment to notice.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let closed = rss_kib(pid);
    eprintln!(
        "serve RSS: {before} KiB before, {idle} KiB with {QUEUES} idle queues after 8 MiB PDUs, {closed} KiB after they closed"
    );
    // Kept buffers would be QUEUES x 16 MiB = 256 MiB.
    let bound = 48 * 1024;
    assert!(
        idle < before + bound,
        "idle connections keep {} KiB",
        idle - before
    );
    assert!(
        closed < before + bound,
        "closed connections left {} KiB",
        closed.saturating_sub(before)
    );
    assert_eq!(
        admin
            .admin(ferrofab_nvmeof_wire::spec::admin::KEEP_ALIVE, 0, 0, 0, 0)
            .status(),
        Status::SUCCESS
    );
}
