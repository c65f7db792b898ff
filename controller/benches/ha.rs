//! The replicated control plane's benchmarks (issue 17), all against real
//! processes on loopback: Debian's `etcd-server` (one member) and the built
//! controller binary over mTLS. `cargo bench -p ferrofab-controller --bench
//! ha` prints `bench: NAME value unit` lines (tests/suites/bench_ha.sh turns
//! them into the table in docs/benchmarks.md).
//!
//! * **creates**: durable volume creates/s from 16 clients against a
//!   controller on redb and one on etcd, taken in alternating rounds in the
//!   same run (goal: etcd at least half of redb), with etcd's own count of
//!   transactions per acknowledged create (a create whose usage fence moved
//!   is decided again and costs another transaction);
//! * **watch**: delivery latency from an acknowledged create to a watcher
//!   seeing it, on redb (one controller) and on etcd with the write made
//!   through one replica and the watch open on another;
//! * **failover**: three replicas; kill -9 of the leader → the next
//!   acknowledged create (a client moving along its endpoint list) and →
//!   another replica holding the leader key, repeated;
//! * **agents**: 1,000 simulated agents (node certificates, the real
//!   WatchDesiredState/ReportStatus protocol, no data path) on one of three
//!   replicas; kill -9 of it → every agent's stream resumed on another
//!   replica, with how many resumed where they were (a snapshot no older
//!   than the last one, same content) and how many would have rebuilt.
//!
//! Knobs: FERROFAB_BENCH_HA_CREATES (creates per round and backend, default
//! 3,000), FERROFAB_BENCH_HA_ROUNDS (2), FERROFAB_BENCH_HA_WATCH (writes
//! timed per watch run, 500), FERROFAB_BENCH_HA_FAILOVERS (5),
//! FERROFAB_BENCH_HA_AGENTS (1,000), FERROFAB_BENCH_HA_PHASES (comma list
//! of creates, watch, failover, agents; default all).

#[path = "../tests/etcd_harness/mod.rs"]
mod etcd_harness;
mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_harness::Etcd;
use ferrofab_proto::v1::agent_service_client::AgentServiceClient;
use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use futures::FutureExt;
use hdrhistogram::Histogram;
use support::{env_count, measuring, observe, report};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsIdentity};

const CLIENTS: usize = 16;
const STORAGE_NODES: usize = 16;
const POOLS: usize = 64;
/// The leader lease of the failover runs: the `ha` suite's setting.
const LEASE_TTL: u64 = 4;
/// One API call's limit in the failover and agent runs; a call to a
/// killed replica fails at once (connection refused), one to a replica
/// that hangs would fail here.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

fn phase(name: &str) -> bool {
    std::env::var("FERROFAB_BENCH_HA_PHASES")
        .map_or(true, |p| p.split(',').any(|x| x.trim() == name))
}

/// Limits a bench with 1,000 agents from one address needs raised (real
/// agents come from 1,000 addresses).
const SERVER_LIMITS: &str = "[server]\nmax_connections = 4096\nmax_connections_per_peer = 4096\n";

fn etcd_toml(etcd: &Etcd, replica: &str) -> String {
    format!(
        "{SERVER_LIMITS}[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"{}\"]\nreplica_name = \"{replica}\"\nlease_ttl_seconds = {LEASE_TTL}\n",
        etcd.client_url
    )
}

fn opts(extra: String) -> Options {
    Options {
        extra_toml: extra,
        ..Options::default()
    }
}

/// `n` controller replicas on `etcd`, named r0.., sharing r0's PKI.
struct Replicas {
    ctls: Vec<Controller>,
    _dir: tempfile::TempDir,
}

fn replicas(etcd: &Etcd, n: usize) -> Replicas {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctls = Vec::new();
    for i in 0..n {
        let d = dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(d.join("pki")).expect("mkdir");
        if i > 0 {
            copy_files(&dir.path().join("r0/pki"), &d.join("pki"));
        }
        ctls.push(Controller::start_in(
            &d,
            opts(etcd_toml(etcd, &format!("r{i}"))),
        ));
    }
    Replicas { ctls, _dir: dir }
}

fn copy_files(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read pki dir").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy pki file");
        }
    }
}

fn redb_controller() -> Controller {
    Controller::start_with(opts(SERVER_LIMITS.into()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[m - 1] + xs[m]) / 2.0
    } else {
        xs[m]
    }
}

// ---------------------------------------------------------------- creates

/// A tenant without quota, 16 storage nodes and 64 pools (as the
/// `controller` bench).
async fn create_setup(ctl: &Controller) {
    let mut c = ctl.admin().await;
    c.create(tenant("lab", "", 0, &[])).await.expect("tenant");
    for i in 0..STORAGE_NODES {
        c.create(storage_node(&format!("s{i}"), 4420 + i as u32))
            .await
            .expect("node");
    }
    for p in 0..POOLS {
        let mut pl = pool(
            &format!("p{p}"),
            &format!("s{}", p % STORAGE_NODES),
            "1PiB",
            &[("tier", "fast")],
        );
        pl.spec.as_mut().expect("spec").namespace_limit = 100_000;
        c.create(pl).await.expect("pool");
    }
}

/// What one create run measured.
struct CreateRun {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Creates refused (RESOURCE_EXHAUSTED: placement overtaken too often).
    refused: usize,
}

/// `total` create attempts from [`CLIENTS`] clients; acknowledged ones
/// count towards the rate, refused ones are counted apart.
async fn create_run(ctl: &Controller, total: usize) -> CreateRun {
    let per = total / CLIENTS;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(ctl.admin().await);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("hist");
            let mut refused = 0;
            for i in 0..per {
                let v = volume_sel(&format!("v-{w}-{i}"), "lab", "1GiB", &[("tier", "fast")]);
                let t0 = Instant::now();
                match c.create(v).await {
                    Ok(_) => h.record(t0.elapsed().as_micros() as u64).expect("record"),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => refused += 1,
                    Err(s) => panic!("create: {s:?}"),
                }
            }
            (h, refused)
        }));
    }
    let mut h = Histogram::<u64>::new(3).expect("hist");
    let mut refused = 0;
    for t in tasks {
        let (th, r) = t.await.expect("client");
        h.add(th).expect("merge");
        refused += r;
    }
    let secs = start.elapsed().as_secs_f64();
    CreateRun {
        per_s: h.len() as f64 / secs,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e3,
        refused,
    }
}

/// Counters from etcd's `/metrics` (plain HTTP on the client URL):
/// transactions and ranges answered, proposals committed.
fn etcd_counters(etcd: &Etcd) -> HashMap<&'static str, f64> {
    let mut body = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(etcd.addr) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", etcd.addr);
        let _ = s.read_to_string(&mut body);
    }
    let mut out = HashMap::new();
    for (name, prefix) in [
        (
            "txn",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Txn\",",
        ),
        (
            "range",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",",
        ),
        ("proposals", "etcd_server_proposals_committed_total "),
    ] {
        let v = body
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        out.insert(name, v);
    }
    out
}

async fn redb_creates(total: usize) -> CreateRun {
    let ctl = redb_controller();
    create_setup(&ctl).await;
    create_run(&ctl, total).await
}

/// The run, and etcd's transactions and ranges per create attempt.
async fn etcd_creates(total: usize) -> (CreateRun, f64, f64) {
    let etcd = Etcd::start();
    let r = replicas(&etcd, 1);
    create_setup(&r.ctls[0]).await;
    let before = etcd_counters(&etcd);
    let run = create_run(&r.ctls[0], total).await;
    let after = etcd_counters(&etcd);
    let per = |k: &str| (after[k] - before[k]) / (total / CLIENTS * CLIENTS) as f64;
    (run, per("txn"), per("range"))
}

async fn creates() {
    let total = env_count("FERROFAB_BENCH_HA_CREATES", 3_000);
    let rounds = env_count("FERROFAB_BENCH_HA_ROUNDS", 2).max(1);
    let (mut redb, mut etcd, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let (mut txns, mut ranges, mut refused) = (Vec::new(), Vec::new(), 0);
    let (mut p99r, mut p99e) = (Vec::new(), Vec::new());
    let (mut p50r, mut p50e) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which backend goes first: the VM's speed drifts.
        let (r, (e, txn, range)) = if round % 2 == 0 {
            let r = redb_creates(total).await;
            (r, etcd_creates(total).await)
        } else {
            let e = etcd_creates(total).await;
            (redb_creates(total).await, e)
        };
        eprintln!(
            "creates round {}: redb {:.0}/s, etcd {:.0}/s ({:.2}x), etcd txns/create {txn:.2}, refused {}/{}",
            round + 1,
            r.per_s,
            e.per_s,
            e.per_s / r.per_s,
            e.refused,
            r.refused
        );
        report(
            &format!("ha_creates_redb_round{}", round + 1),
            r.per_s,
            "ops/s",
        );
        report(
            &format!("ha_creates_etcd_round{}", round + 1),
            e.per_s,
            "ops/s",
        );
        redb.push(r.per_s);
        etcd.push(e.per_s);
        ratio.push(e.per_s / r.per_s);
        p50r.push(r.p50_ms);
        p50e.push(e.p50_ms);
        p99r.push(r.p99_ms);
        p99e.push(e.p99_ms);
        txns.push(txn);
        ranges.push(range);
        refused += e.refused + r.refused;
    }
    report("ha_creates_redb_16_clients", median(redb), "ops/s");
    report("ha_creates_etcd_16_clients", median(etcd), "ops/s");
    report("ha_creates_etcd_over_redb", median(ratio), "ratio");
    report("ha_create_p50_redb", median(p50r), "ms");
    report("ha_create_p50_etcd", median(p50e), "ms");
    report("ha_create_p99_redb", median(p99r), "ms");
    report("ha_create_p99_etcd", median(p99e), "ms");
    report("ha_etcd_txns_per_create", median(txns), "count");
    report("ha_etcd_ranges_per_create", median(ranges), "count");
    report("ha_creates_refused", refused as f64, "count");
}

// ------------------------------------------------------------------ watch

/// Creates `n` tenants through `writer`, one at a time, while `watcher`
/// watches tenants.
async fn watch_run(writer: &Controller, watcher: &Controller, n: usize) -> WatchRun {
    let mut w = watcher
        .admin()
        .await
        .watch_tenants(WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    loop {
        let ev = w.next().await.expect("watch open").expect("event");
        if ev.r#type == EventType::Synced as i32 {
            break;
        }
    }
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen2 = seen.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(ev)) = w.next().await {
            if let Some(watch_event::Object::Tenant(t)) = ev.object {
                let name = t.metadata.unwrap_or_default().name;
                seen2.lock().expect("seen").insert(name, Instant::now());
            }
        }
    });
    let mut c = writer.admin().await;
    let mut acked = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("w{i}");
        let issued = Instant::now();
        c.create(tenant(&name, "", 0, &[])).await.expect("create");
        acked.push((name, issued, Instant::now()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().expect("seen").len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let seen = seen.lock().expect("seen");
    assert_eq!(seen.len(), n, "the watcher missed events");
    let (mut from_issue, mut from_ack) = (
        Histogram::<u64>::new(3).expect("hist"),
        Histogram::<u64>::new(3).expect("hist"),
    );
    let us = |d: Duration| d.as_micros() as u64;
    for (name, issued, acked) in &acked {
        let at = seen[name];
        from_issue
            .record(us(at.saturating_duration_since(*issued)))
            .expect("record");
        from_ack
            .record(us(at.saturating_duration_since(*acked)))
            .expect("record");
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1e3;
    WatchRun {
        issue_p50: q(&from_issue, 0.5),
        issue_p99: q(&from_issue, 0.99),
        ack_p99: q(&from_ack, 0.99),
    }
}

/// Watch delivery: from the create call (p50, p99) and from its
/// acknowledgement (p99; the event often arrives before the answer).
struct WatchRun {
    issue_p50: f64,
    issue_p99: f64,
    ack_p99: f64,
}

fn report_watch(tag: &str, w: &WatchRun) {
    report(&format!("ha_watch_{tag}_p50"), w.issue_p50, "ms");
    report(&format!("ha_watch_{tag}_p99"), w.issue_p99, "ms");
    report(&format!("ha_watch_{tag}_after_ack_p99"), w.ack_p99, "ms");
}

async fn watch() {
    let n = env_count("FERROFAB_BENCH_HA_WATCH", 500);
    let ctl = redb_controller();
    report_watch("redb", &watch_run(&ctl, &ctl, n).await);
    drop(ctl);
    let etcd = Etcd::start();
    let r = replicas(&etcd, 2);
    report_watch(
        "etcd_other_replica",
        &watch_run(&r.ctls[0], &r.ctls[1], n).await,
    );
}

// --------------------------------------------------------------- failover

/// The replica name in etcd's leader key, if any.
async fn leader(c: &mut etcd_client::Client) -> Option<String> {
    let r = c.get("/ferrofab/v1/leader", None).await.ok()?;
    let kv = r.kvs().first()?;
    Some(String::from_utf8_lossy(kv.value()).into_owned())
}

async fn wait_leader(c: &mut etcd_client::Client, not: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(l) = leader(c).await.filter(|l| Some(l.as_str()) != not) {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no new leader within 60 s");
}

/// A client creating tenants through an endpoint list, moving to the next
/// endpoint when a call fails; returns the acknowledgement times.
fn writer(
    mut clients: Vec<Admin>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tag: usize,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    tokio::spawn(async move {
        let mut acks = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let t = tenant(&format!("f{tag}-{i}"), "", 0, &[]);
            let c = &mut clients[at % 3];
            match tokio::time::timeout(CALL_TIMEOUT, c.create(t)).await {
                Ok(Ok(_)) => {
                    acks.push(Instant::now());
                    i += 1;
                }
                // Already created by a call whose answer was lost.
                Ok(Err(s)) if s.code() == tonic::Code::AlreadyExists => i += 1,
                _ => at += 1,
            }
        }
        acks
    })
}

async fn failover() {
    let reps = env_count("FERROFAB_BENCH_HA_FAILOVERS", 5).max(1);
    let etcd = Etcd::start();
    let mut r = replicas(&etcd, 3);
    let mut ec = etcd.client().await;
    let (mut to_write, mut to_leader) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let old = wait_leader(&mut ec, None).await;
        let li: usize = old
            .trim_start_matches('r')
            .parse()
            .expect("replica name r<N>");
        // The client's endpoint list starts at the leader.
        let mut clients = Vec::new();
        for k in 0..3 {
            clients.push(r.ctls[(li + k) % 3].admin().await);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = writer(clients, stop.clone(), rep);
        tokio::time::sleep(Duration::from_millis(500)).await;
        r.ctls[li].kill9();
        let t0 = Instant::now();
        let new = wait_leader(&mut ec, Some(&old)).await;
        let took_leader = t0.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let acks = w.await.expect("writer");
        let first = acks
            .iter()
            .find(|a| **a > t0)
            .map(|a| a.duration_since(t0))
            .expect("a write after the kill");
        eprintln!(
            "failover {}: {old} killed; first write after {:.0} ms, {new} leads after {:.0} ms",
            rep + 1,
            ms(first),
            ms(took_leader)
        );
        to_write.push(ms(first));
        to_leader.push(ms(took_leader));
        r.ctls[li].spawn();
    }
    let max = |xs: &[f64]| xs.iter().copied().fold(0.0, f64::max);
    report(
        "ha_failover_first_write_p50",
        median(to_write.clone()),
        "ms",
    );
    report("ha_failover_first_write_max", max(&to_write), "ms");
    report(
        "ha_failover_new_leader_p50",
        median(to_leader.clone()),
        "ms",
    );
    report("ha_failover_new_leader_max", max(&to_leader), "ms");
}

// ----------------------------------------------------------------- agents

/// What one simulated agent saw on its first snapshot after a reconnect.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resumed {
    /// Not older than its last snapshot, same content: nothing to redo.
    InPlace,
    /// Same revision or newer but different content (the world changed).
    Changed,
    /// Older than what it had: it would step back.
    Older,
}

#[derive(Default)]
struct AgentLog {
    /// (replica index, when the first snapshot of a session arrived, what
    /// it was relative to the previous one; None on the first session).
    sessions: Vec<(usize, Instant, Option<Resumed>)>,
}

impl AgentLog {
    /// The first session whose first snapshot came after `t`.
    fn after(&self, t: Instant) -> Option<&(usize, Instant, Option<Resumed>)> {
        self.sessions.iter().find(|s| s.1 > t)
    }
}

fn tls_for(cred: &Cred, ca: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(TlsIdentity::from_pem(&cred.cert, &cred.key))
        .domain_name("localhost")
}

/// The first endpoint that accepts a connection, trying `order` (indexes
/// into `eps`), as the agent's `ControllerClient::channel` does with its
/// `controller_endpoint_order`; returns the replica's index in `eps`.
async fn connect_first(
    eps: &[String],
    order: &[usize],
    tls: &ClientTlsConfig,
) -> Option<(usize, Channel)> {
    for &i in order {
        let ch = Channel::from_shared(format!("https://{}", eps.get(i)?))
            .ok()?
            .tls_config(tls.clone())
            .ok()?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await;
        if let Ok(ch) = ch {
            return Some((i, ch));
        }
    }
    None
}

/// The agents' endpoint order: `FERROFAB_BENCH_HA_AGENT_ORDER=listed` for
/// the list's order (every agent alike), else the agent's default,
/// `spread` (`ferrofab_proto::failover::spread_order` of the node name).
fn agent_order(node: &str, n: usize) -> Vec<usize> {
    match std::env::var("FERROFAB_BENCH_HA_AGENT_ORDER").as_deref() {
        Ok("listed") => (0..n).collect(),
        _ => ferrofab_proto::failover::spread_order(node, n),
    }
}

/// The agent's reconnect delay (agent/src/client.rs `Backoff`): base
/// 500 ms doubling, each delay between half and all of the step.
fn reconnect_delay(step: Duration) -> Duration {
    use rand::Rng;
    let half = step / 2;
    half + Duration::from_millis(rand::thread_rng().gen_range(0..=half.as_millis() as u64))
}

fn classify(last: &DesiredState, now: &DesiredState) -> Resumed {
    if now.revision < last.revision {
        Resumed::Older
    } else if ferrofab_controller::planner::same_content(last, now) {
        Resumed::InPlace
    } else {
        Resumed::Changed
    }
}

/// One simulated agent: connect to the first endpoint that answers in its
/// order,
/// watch from the last revision, report what it "applied" after every
/// snapshot and every 10 s; on a lost stream wait the agent's backoff and
/// start again.
fn sim_agent(
    node: String,
    eps: Vec<String>,
    tls: ClientTlsConfig,
    log: Arc<Mutex<AgentLog>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<DesiredState> = None;
        let mut step = Duration::from_millis(500);
        let order = agent_order(&node, eps.len());
        while !*stop.borrow() {
            if let Some((idx, ch)) = connect_first(&eps, &order, &tls).await {
                let mut a = AgentServiceClient::new(ch);
                let req = WatchDesiredStateRequest {
                    node: node.clone(),
                    after_revision: last.as_ref().map_or(0, |d| d.revision),
                };
                if let Ok(Ok(s)) =
                    tokio::time::timeout(CALL_TIMEOUT, a.watch_desired_state(req)).await
                {
                    step = Duration::from_millis(500);
                    session(
                        &node,
                        idx,
                        s.into_inner(),
                        &mut a,
                        &mut last,
                        &log,
                        stop.clone(),
                    )
                    .await;
                }
            }
            tokio::time::sleep(reconnect_delay(step)).await;
            step = (step * 2).min(Duration::from_secs(30));
        }
    })
}

async fn session(
    node: &str,
    idx: usize,
    mut s: tonic::Streaming<DesiredState>,
    a: &mut AgentServiceClient<Channel>,
    last: &mut Option<DesiredState>,
    log: &Mutex<AgentLog>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(Duration::from_secs(10), s.next()) => n,
            _ = stop.changed() => return,
        };
        match next {
            Ok(Some(Ok(mut ds))) => {
                while let Some(Some(Ok(newer))) = s.next().now_or_never() {
                    ds = newer;
                }
                if first {
                    let how = last.as_ref().map(|l| classify(l, &ds));
                    log.lock()
                        .expect("log")
                        .sessions
                        .push((idx, Instant::now(), how));
                    first = false;
                }
                *last = Some(ds);
            }
            Ok(_) => return,
            Err(_) => {} // heartbeat
        }
        if let Some(l) = last.as_ref() {
            let r = tokio::time::timeout(CALL_TIMEOUT, a.report_status(observe(node, l))).await;
            if !matches!(r, Ok(Ok(_))) {
                return;
            }
        }
    }
}

/// Storage nodes s0..s9 with a pool each, workstations w0.. with one
/// attached volume each: every agent's desired state holds something.
async fn agent_layout(ctl: &Controller, storage: usize, ws: usize) {
    let mut c = ctl.admin().await;
    let names: Vec<String> = (0..ws).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    c.create(tenant("lab", "", 0, &refs)).await.expect("tenant");
    let mut nodes: Vec<Node> = (0..storage)
        .map(|i| storage_node(&format!("s{i}"), 4420 + i as u32))
        .collect();
    nodes.extend(names.iter().map(|n| workstation(n)));
    let pools = (0..storage)
        .map(|i| {
            let mut p = pool(&format!("p{i}"), &format!("s{i}"), "1PiB", &[]);
            p.spec.as_mut().expect("spec").namespace_limit = 100_000;
            p
        })
        .collect();
    apply(
        &mut c,
        Layout {
            nodes,
            pools,
            ..Default::default()
        },
    )
    .await;
    for chunk in (0..ws).collect::<Vec<_>>().chunks(100) {
        let layout = Layout {
            volumes: chunk
                .iter()
                .map(|i| {
                    volume(
                        &format!("v{i}"),
                        "lab",
                        "1GiB",
                        &format!("p{}", i % storage),
                    )
                })
                .collect(),
            attachments: chunk
                .iter()
                .map(|i| attachment(&format!("a{i}"), &format!("v{i}"), &format!("w{i}")))
                .collect(),
            ..Default::default()
        };
        apply(&mut c, layout).await;
    }
}

async fn apply(c: &mut Admin, layout: Layout) {
    c.apply(ApplyRequest {
        layout: Some(layout),
        dry_run: false,
        prune: false,
        prune_nodes: false,
    })
    .await
    .expect("apply");
}

async fn agents() {
    let n = env_count("FERROFAB_BENCH_HA_AGENTS", 1_000).max(20);
    let storage = 10;
    let etcd = Etcd::start();
    let mut r = replicas(&etcd, 3);
    agent_layout(&r.ctls[0], storage, n - storage).await;
    let eps: Vec<String> = r.ctls.iter().map(|c| c.addr.clone()).collect();
    let ca = r.ctls[0].pki.ca_cert.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut logs = Vec::new();
    let mut tasks = Vec::new();
    let t_connect = Instant::now();
    for i in 0..n {
        let node = if i < storage {
            format!("s{i}")
        } else {
            format!("w{}", i - storage)
        };
        let tls = tls_for(&r.ctls[0].pki.client(&format!("node:{node}")), &ca);
        let log: Arc<Mutex<AgentLog>> = Arc::default();
        logs.push(log.clone());
        tasks.push(sim_agent(node, eps.clone(), tls, log, stop.clone()));
    }
    // Agents with a session whose first snapshot came after `t`.
    let all_on = |logs: &[Arc<Mutex<AgentLog>>], t: Instant| {
        logs.iter()
            .filter(|l| l.lock().expect("log").after(t).is_some())
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while all_on(&logs, t_connect) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(all_on(&logs, t_connect), n, "not every agent connected");
    let connected = t_connect.elapsed();
    // Let the reports settle (exports ready, connections handed out).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut initially = [0usize; 3];
    for l in &logs {
        initially[l.lock().expect("log").sessions[0].0] += 1;
    }
    let on_r0: Vec<Arc<Mutex<AgentLog>>> = logs
        .iter()
        .filter(|l| l.lock().expect("log").sessions[0].0 == 0)
        .cloned()
        .collect();
    let before: usize = logs
        .iter()
        .map(|l| l.lock().expect("log").sessions.len())
        .sum();
    r.ctls[0].kill9();
    let t0 = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while all_on(&on_r0, t0) < on_r0.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the agents of the other replicas a moment: none should move.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let moved = all_on(&logs, t0);
    let mut times = Vec::new();
    let mut per_replica = [0usize; 3];
    let (mut in_place, mut changed, mut older) = (0, 0, 0);
    for l in &on_r0 {
        let l = l.lock().expect("log");
        if let Some((idx, at, how)) = l.after(t0) {
            times.push(ms(at.duration_since(t0)));
            per_replica[*idx] += 1;
            match how {
                Some(Resumed::InPlace) => in_place += 1,
                Some(Resumed::Changed) => changed += 1,
                Some(Resumed::Older) | None => older += 1,
            }
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    eprintln!(
        "agents: {n} connected in {:.1} s (r0 {}, r1 {}, r2 {}); after the kill of r0 \
         {} of its {} resumed (r1 {}, r2 {}), all within {:.0} ms; {moved} sessions began after the kill",
        connected.as_secs_f64(),
        initially[0],
        initially[1],
        initially[2],
        times.len(),
        on_r0.len(),
        per_replica[1],
        per_replica[2],
        q(1.0)
    );
    report("ha_agents", n as f64, "count");
    report("ha_agents_initial_connect", ms(connected), "ms");
    report(
        "ha_agents_initially_on_replica_0",
        initially[0] as f64,
        "count",
    );
    report(
        "ha_agents_initially_on_replica_1",
        initially[1] as f64,
        "count",
    );
    report(
        "ha_agents_initially_on_replica_2",
        initially[2] as f64,
        "count",
    );
    report("ha_agents_moved", times.len() as f64, "count");
    report("ha_agents_sessions_after_kill", moved as f64, "count");
    report("ha_agents_move_p50", q(0.5), "ms");
    report("ha_agents_move_p99", q(0.99), "ms");
    report("ha_agents_move_all", q(1.0), "ms");
    report("ha_agents_resumed_in_place", in_place as f64, "count");
    report("ha_agents_resumed_changed", changed as f64, "count");
    report("ha_agents_resumed_older", older as f64, "count");
    report("ha_agents_on_replica_1", per_replica[1] as f64, "count");
    report("ha_agents_on_replica_2", per_replica[2] as f64, "count");
    report(
        "ha_agents_reconnects_before_kill",
        before.saturating_sub(n) as f64,
        "count",
    );
}

fn main() {
    if !measuring() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        if phase("creates") {
            creates().await;
        }
        if phase("watch") {
            watch().await;
        }
        if phase("failover") {
            failover().await;
        }
        if phase("agents") {
            agents().await;
        }
    });
}
