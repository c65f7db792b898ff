//! The microscope workload (issue 20, item 4): write a large file in
//! 1 MiB blocks, fsync once at the end, read it back; either through a
//! file (the FUSE exposure of `ferrofab-nvmeof connect`) or through the
//! initiator alone (this process connects to the target itself).
//!
//! ```text
//! cargo bench -p ferrofab-nvmeof-expose --bench microscope -- \
//!     (--file PATH | --addr HOST:PORT --nqn NQN [--nsid 1] [--queues N]) \
//!     [--size 8GiB] [--bs 1MiB] [--qd 1] [--phase write|read|both]
//! ```
//!
//! Prints one JSON object per phase on stdout: seconds, bytes, the CPU
//! seconds of this process (getrusage: the writer, and in `--addr` mode the
//! initiator's threads too) and verify failures. Every block carries its
//! index in its first 16 bytes and the read phase checks it, so a block
//! lost or misplaced on the way fails the run. `tests/suites/bench_fuse.py`
//! runs it against `ferrofab-nvmeof serve` and adds the CPU of the holder
//! (`connect`) and of the target.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferrofab_nvmeof_bench::remote::{Remote, RemoteSpec};
use ferrofab_nvmeof_bench::PollMode;
use ferrofab_nvmeof_host::{BlockIo, IoOp, Namespace};

const MAGIC: u64 = 0x6d69_6372_6f73_636f; // "microsco"

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Write,
    Read,
}

struct Args {
    file: Option<String>,
    addr: Option<String>,
    nqn: Option<String>,
    nsid: u32,
    queues: u32,
    size: u64,
    bs: usize,
    qd: usize,
    phases: Vec<Phase>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "bad size unit in {s:?} (use k, M, G or KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        file: None,
        addr: None,
        nqn: None,
        nsid: 1,
        queues: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        size: 8 << 30,
        bs: 1 << 20,
        qd: 1,
        phases: vec![Phase::Write, Phase::Read],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--bench" {
            continue; // cargo bench adds it
        }
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--file" => a.file = Some(v()?),
            "--addr" => a.addr = Some(v()?),
            "--nqn" => a.nqn = Some(v()?),
            "--nsid" => a.nsid = v()?.parse().map_err(|e| format!("--nsid: {e}"))?,
            "--queues" => a.queues = v()?.parse().map_err(|e| format!("--queues: {e}"))?,
            "--size" => a.size = parse_size(&v()?)?,
            "--bs" => {
                a.bs = usize::try_from(parse_size(&v()?)?).map_err(|e| format!("--bs: {e}"))?
            }
            "--qd" => a.qd = v()?.parse().map_err(|e| format!("--qd: {e}"))?,
            "--phase" => {
                a.phases = match v()?.as_str() {
                    "write" => vec![Phase::Write],
                    "read" => vec![Phase::Read],
                    "both" => vec![Phase::Write, Phase::Read],
                    p => return Err(format!("--phase {p}: write, read or both")),
                }
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.bs < 16 || a.bs > 64 << 20 || a.qd == 0 || a.qd > 256 {
        return Err("--bs must be 16 B..64 MiB and --qd 1..256".into());
    }
    if a.file.is_some() == a.addr.is_some() {
        return Err("give exactly one of --file and --addr".into());
    }
    Ok(a)
}

fn cpu_s() -> f64 {
    // SAFETY: rusage is plain integers, for which all-zero is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn stamp(buf: &mut [u8], block: u64) {
    buf[..8].copy_from_slice(&block.to_le_bytes());
    buf[8..16].copy_from_slice(&(block ^ MAGIC).to_le_bytes());
}

fn stamped(buf: &[u8], block: u64) -> bool {
    buf.len() >= 16
        && buf[..8] == block.to_le_bytes()
        && buf[8..16] == (block ^ MAGIC).to_le_bytes()
}

/// A block's worth of data that is not all one byte (the target must not
/// get away with something a zero-detecting path could shortcut).
fn template(bs: usize) -> Vec<u8> {
    ferrofab_testkit::data::pattern(bs, 0x9e37_79b9_7f4a_7c15)
}

struct Outcome {
    seconds: f64,
    fsync_seconds: f64,
    failures: u64,
}

/// `qd` threads take the next block in order: a sequential stream with up
/// to `qd` requests in flight, as a writer with a few buffers does.
fn run_file(path: &str, a: &Args, phase: Phase) -> Result<Outcome, String> {
    let f = OpenOptions::new()
        .read(true)
        .write(phase == Phase::Write)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))?;
    let len = f.metadata().map_err(|e| format!("stat {path}: {e}"))?.len();
    if len < a.size {
        return Err(format!(
            "{path} has {len} bytes, fewer than --size {}",
            a.size
        ));
    }
    let blocks = a.size / a.bs as u64;
    let next = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let f = Arc::new(f);
    let tmpl = template(a.bs);
    let start = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.qd)
            .map(|_| {
                let (f, next, failures, tmpl) = (&f, &next, &failures, &tmpl);
                s.spawn(move || -> Result<(), String> {
                    let mut buf = tmpl.clone();
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= blocks {
                            return Ok(());
                        }
                        let off = b * a.bs as u64;
                        if phase == Phase::Write {
                            stamp(&mut buf, b);
                            f.write_all_at(&buf, off)
                                .map_err(|e| format!("write at {off}: {e}"))?;
                        } else {
                            f.read_exact_at(&mut buf, off)
                                .map_err(|e| format!("read at {off}: {e}"))?;
                            if !stamped(&buf, b) {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("I/O thread panicked".into()),
            })
            .collect()
    });
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let io_done = start.elapsed().as_secs_f64();
    let mut fsync_seconds = 0.0;
    if phase == Phase::Write {
        let t = Instant::now();
        f.sync_all().map_err(|e| format!("fsync {path}: {e}"))?;
        fsync_seconds = t.elapsed().as_secs_f64();
    }
    Ok(Outcome {
        seconds: io_done + fsync_seconds,
        fsync_seconds,
        failures: failures.load(Ordering::Relaxed),
    })
}

/// The initiator's own pipeline: `qd` operations in flight on one
/// namespace handle, completions in any order.
fn run_remote(ns: &Namespace, a: &Args, phase: Phase) -> Result<Outcome, String> {
    if ns.size() < a.size {
        return Err(format!(
            "the namespace has {} bytes, fewer than --size {}",
            ns.size(),
            a.size
        ));
    }
    let blocks = a.size / a.bs as u64;
    let tmpl = template(a.bs);
    let mut pipe = ns.pipeline(a.qd);
    let mut failures = 0u64;
    let mut check = |c: ferrofab_nvmeof_host::Completed| -> Result<(), String> {
        let data = c.result.map_err(|e| format!("block {}: {e}", c.tag))?;
        if phase == Phase::Read && !stamped(&data, c.tag) {
            failures += 1;
        }
        Ok(())
    };
    let start = Instant::now();
    for b in 0..blocks {
        if pipe.is_full() {
            if let Some(c) = pipe.wait_any() {
                check(c)?;
            }
        }
        let offset = b * a.bs as u64;
        let op = if phase == Phase::Write {
            let mut data = tmpl.clone();
            stamp(&mut data, b);
            IoOp::Write { offset, data }
        } else {
            IoOp::Read { offset, len: a.bs }
        };
        pipe.submit(b, op).map_err(|e| format!("submit {b}: {e}"))?;
    }
    while let Some(c) = pipe.wait_any() {
        check(c)?;
    }
    let io_done = start.elapsed().as_secs_f64();
    let mut fsync_seconds = 0.0;
    if phase == Phase::Write {
        let t = Instant::now();
        ns.flush().map_err(|e| format!("flush: {e}"))?;
        fsync_seconds = t.elapsed().as_secs_f64();
    }
    Ok(Outcome {
        seconds: io_done + fsync_seconds,
        fsync_seconds,
        failures,
    })
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("microscope: {e}");
            std::process::exit(2);
        }
    };
    let remote = match (&a.addr, &a.nqn) {
        (Some(addr), Some(nqn)) => {
            let spec = RemoteSpec {
                addr: addr.clone(),
                subnqn: nqn.clone(),
                nsid: a.nsid,
                queues: a.queues,
                queue_depth: a.qd as u32,
                poll: PollMode::Interrupt,
                identity: None,
                dhchap: Default::default(),
            };
            match Remote::connect(&spec) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("microscope: connecting to {addr}: {e}");
                    std::process::exit(1);
                }
            }
        }
        (Some(_), None) => {
            eprintln!("microscope: --addr needs --nqn");
            std::process::exit(2);
        }
        _ => None,
    };
    let mut failed = false;
    for &phase in &a.phases {
        let c0 = cpu_s();
        let r = match (&remote, &a.file) {
            (Some(r), _) => run_remote(r.namespace(), &a, phase),
            (None, Some(f)) => run_file(f, &a, phase),
            (None, None) => Err("nothing to run".into()),
        };
        let cpu = cpu_s() - c0;
        match r {
            Ok(o) => {
                failed |= o.failures > 0;
                println!(
                    "{{\"mode\":\"{}\",\"phase\":\"{}\",\"bytes\":{},\"bs\":{},\"qd\":{},\
                     \"seconds\":{:.6},\"fsync_seconds\":{:.6},\"gb_per_s\":{:.4},\
                     \"cpu_s\":{:.4},\"verify_failures\":{}}}",
                    if remote.is_some() {
                        "initiator"
                    } else {
                        "file"
                    },
                    if phase == Phase::Write {
                        "write"
                    } else {
                        "read"
                    },
                    a.size / a.bs as u64 * a.bs as u64,
                    a.bs,
                    a.qd,
                    o.seconds,
                    o.fsync_seconds,
                    a.size as f64 / 1e9 / o.seconds.max(1e-9),
                    cpu,
                    o.failures
                );
            }
            Err(e) => {
                eprintln!("microscope: {e}");
                failed = true;
                break;
            }
        }
    }
    if let Some(r) = remote {
        if let Err(e) = r.disconnect() {
            eprintln!("microscope: disconnect: {e}");
        }
    }
    if failed {
        std::process::exit(1);
    }
}
