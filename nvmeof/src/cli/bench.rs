//! `bench`: the loopback baseline, the local ceiling (`--file`), an
//! in-memory device (`--mem`, the engine's own overhead) and, once the
//! initiator lands, a remote namespace (`-a/-s/-n`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use ferrofab_nvmeof_bench::baseline::{self, BaselineParams, BaselineReport};
use ferrofab_nvmeof_bench::engine::{self, JobReport, RunOptions, Target};
use ferrofab_nvmeof_bench::io::{BackendBlockIo, DynBlockIo, MemBlockIo};
use ferrofab_nvmeof_bench::remote::{Remote, RemoteSpec};
use ferrofab_nvmeof_bench::report;
use ferrofab_nvmeof_bench::workload::{JobParams, Limit, Pattern};
pub use ferrofab_nvmeof_bench::PollMode;
use ferrofab_nvmeof_target::backend::{DirectIo, FileOptions};

/// `--direct` values; mirrors [`DirectIo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectArg {
    Auto,
    On,
    Off,
}

/// Arguments of `bench`. The options are boxed so this subcommand does
/// not make every `Command` value large.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub opts: Box<BenchOptions>,
}

/// Everything `bench` takes.
#[derive(Debug, clap::Args)]
pub struct BenchOptions {
    /// Measure raw loopback TCP (the physical limit). With a target, it runs
    /// first, in the same process, so the two are comparable.
    #[arg(long)]
    pub baseline: bool,
    /// Repeat the baseline set this many times, interleaved.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Do not pin the baseline's two ends to different CPUs.
    #[arg(long)]
    pub no_pin: bool,

    /// Local ceiling: pread/pwrite on this file or block device.
    #[arg(long, conflicts_with_all = ["traddr", "mem"])]
    pub file: Option<PathBuf>,
    /// With --file: create or extend the file to this size first.
    #[arg(long, value_parser = parse_size)]
    pub file_size: Option<u64>,
    /// With --file: O_DIRECT as the target would use it (auto = where the
    /// filesystem supports it).
    #[arg(long, value_enum, default_value_t = DirectArg::Auto)]
    pub direct: DirectArg,
    /// With --file: logical block size (512 or 4096), as the namespace has.
    #[arg(long, default_value_t = 512)]
    pub lbs: u32,
    /// Run against an in-memory device of this size (engine overhead).
    #[arg(long, value_parser = parse_size, conflicts_with = "traddr")]
    pub mem: Option<u64>,

    /// Target address (remote mode).
    #[arg(short = 'a', long = "traddr")]
    pub traddr: Option<String>,
    /// Target port (remote mode).
    #[arg(short = 's', long = "trsvcid", default_value_t = 4420)]
    pub trsvcid: u16,
    /// Subsystem NQN (remote mode).
    #[arg(short = 'n', long = "nqn")]
    pub nqn: Option<String>,
    /// Namespace ID (remote mode).
    #[arg(long, default_value_t = 1)]
    pub nsid: u32,
    /// Completion polling of the initiator, where it supports it (the
    /// default is the initiator's own: adaptive).
    #[arg(long, value_enum, default_value_t = PollMode::Adaptive)]
    pub poll_mode: PollMode,
    /// DH-HMAC-CHAP host secret (remote mode): `DHHC-1:...` or a file.
    #[arg(long, value_name = "SECRET|FILE")]
    pub dhchap_secret: Option<String>,
    /// DH-HMAC-CHAP controller secret (remote mode, bidirectional).
    #[arg(long, value_name = "SECRET|FILE")]
    pub dhchap_ctrl_secret: Option<String>,

    #[arg(long, value_enum, default_value_t = Pattern::Randread)]
    pub pattern: Pattern,
    /// Read share for --pattern mixed, in percent.
    #[arg(long, default_value_t = 50)]
    pub rwmixread: u8,
    /// I/O size, e.g. 4k, 128KiB.
    #[arg(long, value_parser = parse_size, default_value = "4k")]
    pub bs: u64,
    /// In-flight I/Os per queue.
    #[arg(long, default_value_t = 1)]
    pub qd: u32,
    /// Queues (connections, or thread groups for blocking targets).
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Run time of the job (workload default 10s), or of each baseline
    /// test (default 1s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "size")]
    pub time: Option<Duration>,
    /// Total bytes to transfer instead of a run time, e.g. 1GiB.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Confine I/O to the region starting here.
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub offset: u64,
    /// Length of the region (default: to the end of the device).
    #[arg(long, value_parser = parse_size)]
    pub region: Option<u64>,
    /// Stamp written blocks and check every read and, at the end, every
    /// written block. Fails on lost, torn or misplaced writes.
    #[arg(long)]
    pub verify: bool,
    /// Seed for offsets and verify stamps.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Print JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Combined JSON document when both a baseline and a job ran.
#[derive(Serialize)]
struct Combined<'a> {
    baseline: Option<&'a BaselineReport>,
    job: Option<&'a JobReport>,
    comparison: Option<report::Comparison>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let args = *args.opts;
    let has_target = args.file.is_some() || args.mem.is_some() || args.traddr.is_some();
    if !args.baseline && !has_target {
        bail!("nothing to measure: give --baseline, --file PATH, --mem SIZE or -a ADDR -n NQN");
    }
    let baseline = if args.baseline {
        Some(run_baseline(&args)?)
    } else {
        None
    };
    let job = if has_target {
        Some(run_job(&args)?)
    } else {
        None
    };
    print(&args, baseline.as_ref(), job.as_ref())?;
    if let Some(first) = job
        .as_ref()
        .and_then(|j| j.verify.as_ref())
        .and_then(|v| v.first_bad.as_ref())
    {
        bail!(
            "verify failed: first bad offset {}: {}",
            first.offset,
            first.mismatch
        );
    }
    Ok(())
}

fn print(
    args: &BenchOptions,
    b: Option<&BaselineReport>,
    j: Option<&JobReport>,
) -> anyhow::Result<()> {
    let comparison = match (j, b) {
        (Some(j), Some(b)) => report::compare(j, b),
        _ => None,
    };
    if args.json {
        let text = match (b, j) {
            (Some(b), None) => serde_json::to_string_pretty(b)?,
            (None, Some(j)) => serde_json::to_string_pretty(j)?,
            _ => serde_json::to_string_pretty(&Combined {
                baseline: b,
                job: j,
                comparison: comparison.clone(),
            })?,
        };
        println!("{text}");
    } else {
        if let Some(b) = b {
            print!("{}", report::baseline_table(b));
        }
        if let Some(j) = j {
            print!("{}", report::job_table(j));
        }
        if let Some(c) = &comparison {
            print!("{}", report::comparison_line(c));
        }
    }
    Ok(())
}

fn run_baseline(args: &BenchOptions) -> anyhow::Result<BaselineReport> {
    let params = BaselineParams {
        duration: if args.file.is_none() && args.mem.is_none() && args.traddr.is_none() {
            args.time.unwrap_or(Duration::from_secs(1))
        } else {
            Duration::from_secs(1)
        },
        rounds: args.rounds,
        pin: !args.no_pin,
    };
    baseline::run(&params).context("loopback baseline")
}

fn job_params(args: &BenchOptions) -> anyhow::Result<JobParams> {
    let limit = match (args.time, args.size) {
        (_, Some(bytes)) => Limit::Bytes(bytes),
        (Some(t), None) => Limit::Time(t),
        (None, None) => Limit::Time(Duration::from_secs(10)),
    };
    Ok(JobParams {
        pattern: args.pattern,
        block_size: u32::try_from(args.bs).context("--bs too large")?,
        queue_depth: args.qd,
        queues: args.queues,
        limit,
        rwmixread: args.rwmixread,
        region_offset: args.offset,
        region_len: args.region,
        verify: args.verify,
        seed: args.seed,
    })
}

fn run_job(args: &BenchOptions) -> anyhow::Result<JobReport> {
    let params = job_params(args)?;
    let (target, name, remote) = open_target(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Ctrl-C ends the job cleanly so a partial result is still reported.
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("installing the SIGINT handler")?;
    let opts = RunOptions {
        progress: true,
        stop: Some(stop),
        target_name: name,
    };
    let report = engine::run(target, &params, &opts);
    if let Some(remote) = remote {
        let s = remote.io_stats();
        let ios = s.completions.max(1) as f64;
        tracing::info!(
            capsules = s.capsules,
            sends = s.sends,
            receives = s.receives,
            completions = s.completions,
            rx_thread_completions = s.rx_thread_completions,
            sends_per_io = format_args!("{:.3}", s.sends as f64 / ios),
            receives_per_io = format_args!("{:.3}", s.receives as f64 / ios),
            sleeps_per_io = format_args!("{:.3}", s.sleeps as f64 / ios),
            spin_us_per_io = format_args!("{:.2}", s.spin_ns as f64 / ios / 1e3),
            learned_wait_us = format_args!("{:.1}", s.learned_wait_ns as f64 / 1e3),
            "initiator data path"
        );
        if let Err(e) = remote.disconnect() {
            tracing::warn!(error = %e, "disconnect after bench failed");
        }
    }
    Ok(report?)
}

/// The target to measure, and the remote connection to close afterwards.
fn open_target(args: &BenchOptions) -> anyhow::Result<(Target, String, Option<Remote>)> {
    if let Some(path) = &args.file {
        let opts = FileOptions {
            create: args.file_size.is_some(),
            size: args.file_size,
            direct_io: match args.direct {
                DirectArg::Auto => DirectIo::Auto,
                DirectArg::On => DirectIo::On,
                DirectArg::Off => DirectIo::Off,
            },
            block_size: args.lbs,
            preallocate: false,
        };
        let dev = BackendBlockIo::open(path, &opts)
            .with_context(|| format!("opening {}", path.display()))?;
        let name = format!("file:{}", path.display());
        return Ok((
            Target::Blocking(Arc::new(dev) as Arc<DynBlockIo>),
            name,
            None,
        ));
    }
    if let Some(size) = args.mem {
        let dev = MemBlockIo::new(size, 512);
        return Ok((Target::Blocking(Arc::new(dev)), "mem".into(), None));
    }
    let (Some(addr), Some(nqn)) = (&args.traddr, &args.nqn) else {
        bail!("remote mode needs both -a ADDR and -n SUBNQN");
    };
    let spec = RemoteSpec {
        addr: format!("{addr}:{}", args.trsvcid),
        subnqn: nqn.clone(),
        nsid: args.nsid,
        queues: args.queues,
        queue_depth: args.qd,
        poll: args.poll_mode,
        identity: None,
        dhchap: ferrofab_nvmeof_wire::auth::HostSecrets {
            host: args
                .dhchap_secret
                .as_deref()
                .map(|v| super::host::load_secret("--dhchap-secret", v))
                .transpose()?,
            ctrl: args
                .dhchap_ctrl_secret
                .as_deref()
                .map(|v| super::host::load_secret("--dhchap-ctrl-secret", v))
                .transpose()?,
        },
    };
    let remote = Remote::connect(&spec).context("connecting to the target")?;
    let target = remote.target(args.queues, args.qd);
    let name = format!("nvme-tcp:{}/{}/ns{}", spec.addr, spec.subnqn, spec.nsid);
    Ok((target, name, Some(remote)))
}

/// Sizes follow the project-wide rules of [`ferrofab_nvmeof_wire::units::parse_size`]
/// (`4k` and `4KiB` are binary, `4KB` decimal).
pub fn parse_size(s: &str) -> Result<u64, String> {
    ferrofab_nvmeof_wire::units::parse_size(s).map_err(|e| e.to_string())
}

/// Parse `10s`, `500ms`, `2m`, `1.5s`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn parse(v: &[&str]) -> Result<BenchOptions, clap::Error> {
        let mut all = vec!["bench"];
        all.extend_from_slice(v);
        Wrap::try_parse_from(all).map(|w| *w.a.opts)
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("128KiB"), Ok(128 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("4x").is_err());
        assert!(parse_size("k").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn remote_args_parse() {
        let a = parse(&[
            "-a",
            "127.0.0.1",
            "-s",
            "4420",
            "-n",
            "nqn.x",
            "--pattern",
            "randread",
            "--bs",
            "4k",
            "--qd",
            "32",
            "--queues",
            "2",
            "--time",
            "10s",
            "--poll-mode",
            "busy",
            "--json",
        ])
        .expect("parse");
        assert_eq!(a.qd, 32);
        assert_eq!(a.queues, 2);
        assert_eq!(a.trsvcid, 4420);
        assert_eq!(a.poll_mode, PollMode::Busy);
    }

    #[test]
    fn time_and_size_conflict() {
        assert!(parse(&["--mem", "1M", "--time", "1s", "--size", "1M"]).is_err());
    }

    #[test]
    fn mem_job_runs_end_to_end() {
        let a = parse(&[
            "--mem",
            "4M",
            "--pattern",
            "mixed",
            "--size",
            "1M",
            "--verify",
            "--qd",
            "2",
        ])
        .expect("parse");
        let r = run_job(&a).expect("job");
        assert_eq!(r.total.bytes, 1 << 20);
        assert_eq!(r.verify.expect("verify").failures, 0);
    }

    #[test]
    fn file_job_creates_and_uses_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ceiling.img");
        let p = path.to_string_lossy().to_string();
        let a = parse(&[
            "--file",
            &p,
            "--file-size",
            "2M",
            "--pattern",
            "write",
            "--size",
            "1M",
        ])
        .expect("parse");
        let r = run_job(&a).expect("job");
        assert_eq!(r.write.bytes, 1 << 20);
        assert!(r.target.starts_with("file:"));
    }
}
