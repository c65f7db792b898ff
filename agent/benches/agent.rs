//! Agent benchmarks with the real data path on loopback: the built
//! controller and `ferrofab-agent` binaries as processes, the built-in
//! target and initiator, FUSE exposures.
//! `cargo bench -p ferrofab-agent --bench agent` prints one
//! `bench: NAME value unit` line per result (tests/suites/bench_agent.sh
//! turns them into the table in docs/benchmarks.md).
//!
//! * baseline, same run: a raw connect (admin queue, Identify, I/O queues,
//!   namespace scan) and disconnect of the built-in initiator against an
//!   in-process built-in target with one file namespace, authenticated
//!   like a real attachment (`[auth] require`, the default: DH-HMAC-CHAP
//!   on every queue, both directions, 32-byte SHA-256-transformed
//!   secrets as the controller issues them, the target's default hash and
//!   group), so attach and raw connect pay the same handshakes;
//! * single attach end to end: CreateAttachment on the admin API until the
//!   volume's file appears in the workstation's exposure directory, and
//!   DeleteAttachment until the file and the attachment are gone; p50/p99
//!   over FERROFAB_BENCH_ATTACH_CYCLES cycles (default 100);
//! * real layout: one Apply of FERROFAB_BENCH_REAL_VOLUMES volumes
//!   (default 256) on one storage agent, attached round-robin across 8
//!   workstation agents: time until every file is exposed and until the API
//!   shows every attachment Attached, then the agents' RSS.
//!
//! FERROFAB_BENCH_SLOW_LOGS=DIR keeps both agents' logs of every attach
//! slower than 300 ms in DIR/cycle-N (where the time went);
//! FERROFAB_BENCH_TRACE=DIR runs the controller and both agents of the
//! single-attach cycles at debug level and leaves their logs (and the
//! holder's) in DIR with DIR/cycles.tsv, one line per cycle with the
//! wall-clock start and the duration of its attach and its detach, so a
//! slow cycle can be followed through every process's log
//! (tests/suites/attach_trace.py prints the timeline);
//! FERROFAB_BENCH_REAL_VOLUMES=0 skips the real layout.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrofab_nvmeof_host::{ConnectOptions, Controller as HostController, HostIdentity};
use ferrofab_nvmeof_target::backend::{open_backend, FileOptions};
use ferrofab_nvmeof_target::{
    HostAuth, ListenerKind, NamespaceConfig, SubsystemConfig, Target, TargetOptions,
};
use ferrofab_nvmeof_wire::auth::{DhchapSecret, HashId};
use ferrofab_proto::v1::*;
use ferrofab_testkit::agent::*;

const WORKSTATIONS: usize = 8;
const WAIT: Duration = Duration::from_secs(120);
/// Host NQN of the raw connect baseline (the allow-list and key name it).
const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6b1d3f0e-2c4a-4e8b-9f1d-7a3c5e2b1d40";

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn report(name: &str, value: f64, unit: &str) {
    println!("bench: {name} {value:.2} {unit}");
}

/// p50 and p99 in milliseconds of `samples`.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

fn report_latencies(name: &str, samples: &mut [Duration]) -> (f64, f64) {
    let (p50, p99) = percentiles(samples);
    report(&format!("{name}_p50"), p50, "ms");
    report(&format!("{name}_p99"), p99, "ms");
    (p50, p99)
}

/// Sleeps in short steps until `f` holds (panics after `WAIT`).
fn spin_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A secret as the controller issues one (keyring: 32 random bytes,
/// SHA-256 transform).
fn issued_secret() -> DhchapSecret {
    DhchapSecret::generate(32, Some(HashId::Sha256)).expect("secret")
}

/// Raw connect + disconnect of the built-in initiator, `n` times, with the
/// authentication a real attachment does (see the module comment).
fn raw_connect_cycles(n: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::new(TargetOptions::default()).expect("target");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    target
        .add_listener(addr, ListenerKind::Io, None)
        .expect("listener");
    let nqn = "nqn.2026-11.io.ferrofab:bench-raw";
    target
        .add_subsystem(SubsystemConfig {
            nqn: nqn.into(),
            serial: String::new(),
            model: String::new(),
            allow_any_host: false,
            allowed_hosts: vec![HOST_NQN.into()],
        })
        .expect("subsystem");
    let (host_key, ctrl_key) = (issued_secret(), issued_secret());
    target
        .set_host_key(
            nqn,
            HOST_NQN,
            HostAuth {
                key: host_key.clone(),
                ctrl_key: Some(ctrl_key.clone()),
                hash: None,
                dhgroup: None,
            },
        )
        .expect("host key");
    target.set_require_auth(nqn, true).expect("require auth");
    let backend = open_backend(
        dir.path().join("raw.img"),
        &FileOptions {
            create: true,
            size: Some(64 * MIB as u64),
            block_size: 4096,
            ..Default::default()
        },
    )
    .expect("backend");
    let uuid = uuid::Uuid::new_v4();
    target
        .add_namespace(
            nqn,
            NamespaceConfig {
                nsid: 1,
                backend: Arc::clone(&backend),
                block_size: 4096,
                uuid,
                nguid: *uuid.as_bytes(),
                read_only: false,
            },
        )
        .expect("namespace");
    let identity = HostIdentity::new(HOST_NQN, uuid::Uuid::new_v4()).expect("host identity");
    let mut opts = ConnectOptions::new(addr.to_string(), nqn, identity);
    opts.dhchap_secret = Some(host_key);
    opts.dhchap_ctrl_secret = Some(ctrl_key);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let ctrl = HostController::connect(opts.clone()).expect("raw connect");
        ctrl.namespace(1).expect("namespace 1");
        ctrl.disconnect().expect("disconnect");
        out.push(t0.elapsed());
    }
    // The baseline is only like for like if every cycle authenticated.
    let auths = target.status().connections.map_or(0, |c| c.auth_successes);
    assert!(
        auths >= n as u64,
        "raw connect baseline: {auths} authentications in {n} connects"
    );
    target.shutdown();
    out
}

fn attachment(name: &str, volume: &str, node: &str) -> Attachment {
    Attachment {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(AttachmentSpec {
            volume: volume.into(),
            node: node.into(),
            mode: AccessMode::ReadWrite as i32,
        }),
        status: None,
    }
}

/// Log filter of the traced processes (FERROFAB_BENCH_TRACE).
const TRACE_LOG: &str = "info,ferrofab_controller=debug,ferrofab_agent=debug,ferrofab_nvmeof=warn";

/// Microseconds since the Unix epoch (the logs' clock).
fn wall_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Restarts `agent` at the trace log level (FERROFAB_BENCH_TRACE).
fn trace_agent(agent: &mut AgentProc) {
    agent.stop();
    agent.env.push(("FERROFAB_LOG".into(), TRACE_LOG.into()));
    agent.spawn();
}

/// Copies every `*.log` under `dir` into `to`, named by its path below
/// `base` (`s1/agent.log` → `s1_agent.log`).
fn keep_logs(base: &Path, dir: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for p in entries.filter_map(Result::ok).map(|e| e.path()) {
        if p.is_dir() {
            keep_logs(base, &p, to);
        } else if p.extension().is_some_and(|x| x == "log") {
            let rel = p.strip_prefix(base).unwrap_or(&p);
            let _ = std::fs::copy(&p, to.join(rel.to_string_lossy().replace('/', "_")));
        }
    }
}

/// Attach/detach cycles of one volume on one workstation; returns the
/// attach and detach durations.
fn attach_cycles(n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let trace = std::env::var_os("FERROFAB_BENCH_TRACE").map(std::path::PathBuf::from);
    if trace.is_some() {
        // The controller inherits its log filter from this process.
        std::env::set_var("FERROFAB_LOG", TRACE_LOG);
    }
    let ctl = start_controller(tmp.path());
    let (s1, ws1) = rt.block_on(async {
        let mut s1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "s1", "storage").await;
        let mut ws1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws1", "workstation").await;
        if trace.is_some() {
            trace_agent(&mut s1);
            trace_agent(&mut ws1);
        }
        layout(&ctl, &s1, &["ws1"], &[("bench", "64MiB")]).await;
        (s1, ws1)
    });
    wait_exports_ready(&s1, &["bench"], WAIT);
    let exposed = ws1.expose_dir().join("bench");
    let mut admin = rt.block_on(ctl.admin());
    let (mut attach, mut detach) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut cycles_tsv =
        String::from("cycle\tattach_start_us\tattach_ms\tdetach_start_us\tdetach_ms\n");
    for _ in 0..n {
        let attach_wall = wall_us();
        let t0 = Instant::now();
        rt.block_on(admin.create(attachment("bench-a", "bench", "ws1")))
            .expect("create attachment");
        spin_until("exposure", || exposed.exists());
        attach.push(t0.elapsed());
        if let Some(dir) = std::env::var_os("FERROFAB_BENCH_SLOW_LOGS") {
            if t0.elapsed() > Duration::from_millis(300) {
                let dir = Path::new(&dir).join(format!("cycle-{}", attach.len()));
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(dir.join("s1.log"), s1.log());
                let _ = std::fs::write(dir.join("ws1.log"), ws1.log());
                eprintln!("slow attach {:?}: logs in {}", t0.elapsed(), dir.display());
            }
        }

        let detach_wall = wall_us();
        let t1 = Instant::now();
        rt.block_on(admin.delete::<Attachment>("bench-a"))
            .expect("delete attachment");
        spin_until("exposure gone", || !exposed.exists());
        spin_until("attachment removed", || {
            std::thread::sleep(Duration::from_millis(4));
            rt.block_on(admin.get::<Attachment>("bench-a"))
                .is_err_and(|e| e.code() == tonic::Code::NotFound)
        });
        detach.push(t1.elapsed());
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        cycles_tsv.push_str(&format!(
            "{}\t{attach_wall}\t{:.2}\t{detach_wall}\t{:.2}\n",
            attach.len(),
            attach.last().map_or(0.0, ms),
            detach.last().map_or(0.0, ms),
        ));
    }
    drop((ws1, s1));
    if let Some(dir) = trace {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("cycles.tsv"), cycles_tsv);
        keep_logs(tmp.path(), tmp.path(), &dir);
        eprintln!("trace: cycles and logs in {}", dir.display());
    }
    (attach, detach)
}

/// Files in `dir` (the exposure of one workstation).
fn exposed_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.filter_map(Result::ok).count())
}

/// The real layout: reports the converge times and the RSS.
fn real_layout(volumes: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let ctl = start_controller(tmp.path());
    let ws_names: Vec<String> = (0..WORKSTATIONS).map(|i| format!("ws{i}")).collect();
    let (s1, wss) = rt.block_on(async {
        let s1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "s1", "storage").await;
        let mut wss = Vec::new();
        for w in &ws_names {
            wss.push(AgentProc::enroll_and_start(&ctl, tmp.path(), w, "workstation").await);
        }
        (s1, wss)
    });
    let refs: Vec<&str> = ws_names.iter().map(String::as_str).collect();
    let mut p = pool_at("p1", "s1", &s1.pool_dir(), "10GiB", &[]);
    let spec = p.spec.as_mut().expect("spec");
    spec.capacity = "1TiB".into();
    spec.namespace_limit = 4096;
    let layout = Layout {
        tenants: vec![tenant("lab", "", 0, &refs)],
        pools: vec![p],
        volumes: (0..volumes)
            .map(|i| volume(&format!("v{i}"), "lab", "16MiB", "p1"))
            .collect(),
        attachments: (0..volumes)
            .map(|i| {
                attachment(
                    &format!("a{i}"),
                    &format!("v{i}"),
                    &ws_names[i % WORKSTATIONS],
                )
            })
            .collect(),
        ..Default::default()
    };
    let mut admin = rt.block_on(ctl.admin());
    let t0 = Instant::now();
    rt.block_on(admin.apply(ApplyRequest {
        layout: Some(layout),
        dry_run: false,
        prune: false,
        prune_nodes: false,
    }))
    .expect("apply");
    let applied = t0.elapsed();
    let deadline = Instant::now() + WAIT;
    while wss
        .iter()
        .map(|w| exposed_count(&w.expose_dir()))
        .sum::<usize>()
        < volumes
    {
        assert!(
            Instant::now() < deadline,
            "real layout did not converge: {} of {volumes} exposed",
            wss.iter()
                .map(|w| exposed_count(&w.expose_dir()))
                .sum::<usize>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let exposed = t0.elapsed();
    spin_until("every attachment Attached in the API", || {
        std::thread::sleep(Duration::from_millis(50));
        let list = rt
            .block_on(admin.list_attachments(ListAttachmentsRequest::default()))
            .expect("list attachments")
            .into_inner();
        list.items
            .iter()
            .filter(|a| {
                a.status
                    .as_ref()
                    .is_some_and(|s| s.phase == AttachmentPhase::Attached as i32)
            })
            .count()
            == volumes
    });
    let attached = t0.elapsed();
    report("real_apply", applied.as_secs_f64() * 1000.0, "ms");
    report("real_converged_exposed", exposed.as_secs_f64(), "s");
    report("real_converged_api", attached.as_secs_f64(), "s");
    report(
        "real_per_volume",
        exposed.as_secs_f64() * 1000.0 / volumes as f64,
        "ms",
    );
    report("real_storage_agent_rss", s1.rss_mb(), "MB");
    let ws_rss: Vec<f64> = wss.iter().map(AgentProc::rss_mb).collect();
    report(
        "real_workstation_agent_rss_mean",
        ws_rss.iter().sum::<f64>() / ws_rss.len() as f64,
        "MB",
    );
    report(
        "real_workstation_agent_rss_max",
        ws_rss.iter().copied().fold(0.0, f64::max),
        "MB",
    );
    report("real_controller_rss", ctl.rss_mb(), "MB");
    drop((wss, s1));
}

fn main() {
    // `cargo test --benches` runs this without --bench; measure only on
    // `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    require_tool("umount", "mount");
    let cycles = env_count("FERROFAB_BENCH_ATTACH_CYCLES", 100);
    let mut raw = raw_connect_cycles(cycles);
    let (raw_p50, _) = report_latencies("raw_connect", &mut raw);
    let (mut attach, mut detach) = attach_cycles(cycles);
    let (attach_p50, attach_p99) = report_latencies("attach", &mut attach);
    report_latencies("detach", &mut detach);
    report("attach_p50_vs_raw_connect_p50", attach_p50 / raw_p50, "x");
    report("attach_p99_vs_raw_connect_p50", attach_p99 / raw_p50, "x");
    let volumes = env_count("FERROFAB_BENCH_REAL_VOLUMES", 256);
    if volumes > 0 {
        real_layout(volumes);
    }
}
