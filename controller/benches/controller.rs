//! Controller benchmarks against the built binary over mTLS on loopback.
//! `cargo bench -p ferrofab-controller --bench controller`; prints one
//! `bench: NAME value unit` line per result (tests/suites/bench_controller.sh
//! turns them into the table in docs/benchmarks.md).
//!
//! * baselines measured in the same run, on the same disk: raw redb durable
//!   commits/s from one writer, and the controller's store layer (group
//!   commit) with 16 concurrent writers — what the API numbers are relative
//!   to;
//! * durable creates, 1 client and 16 clients, each on a fresh controller,
//!   with throughput of the first and last fifth of the run, so a cost that
//!   grows with the object count shows up as a falling ratio;
//! * the same 16-client run while 16 storage agents and 16 workstation
//!   agents watch their desired state (the planner's cost per change);
//! * watch delivery latency, and RSS with 1,000 open watch streams.
//!
//! FERROFAB_BENCH_CREATES overrides the 10,000 creates per run;
//! FERROFAB_BENCH_PHASES (comma list of baselines, single, multi, agents;
//! default all) runs a subset, e.g. under a profiler.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrofab_controller::store::{redb::RedbStore, Store, Txn};
use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use hdrhistogram::Histogram;
use support::{env_count, measuring, report, rss_mb};
use tokio_stream::StreamExt;

const CLIENTS: usize = 16;
const STORAGE_NODES: usize = 16;
const WORKSTATIONS: usize = 16;
const POOLS: usize = 64;

fn creates() -> usize {
    env_count("FERROFAB_BENCH_CREATES", 10_000)
}

/// Raw redb: one durable (fsynced) write transaction per key, one writer;
/// returns (overall, first fifth, last fifth) commits/s, so a storage
/// engine that slows as it fills is told apart from controller overhead.
fn redb_raw_commits(n: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb::Database::create(dir.path().join("raw.redb")).expect("redb");
    let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
    let value = vec![0x5au8; 512];
    let start = Instant::now();
    let mut done = Vec::with_capacity(n);
    for i in 0..n {
        let mut w = db.begin_write().expect("begin");
        w.set_durability(redb::Durability::Immediate);
        {
            let mut t = w.open_table(table).expect("table");
            t.insert(format!("volumes/raw-{i}").as_str(), value.as_slice())
                .expect("insert");
        }
        w.commit().expect("commit");
        done.push(start.elapsed());
    }
    fifths(&done)
}

/// Overall, first-fifth and last-fifth rates of sorted completion times.
fn fifths(done: &[Duration]) -> (f64, f64, f64) {
    let n = done.len();
    let fifth = (n / 5).max(1);
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    (
        n as f64 / secs(done[n - 1]),
        fifth as f64 / secs(done[fifth - 1]),
        fifth as f64 / secs(done[n - 1] - done[n - 1 - fifth]),
    )
}

/// The controller's store layer alone, 16 concurrent writers (group commit).
async fn store_commits(n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / CLIENTS {
                let key = format!("volumes/s-{w}-{i}");
                store
                    .txn(Txn::new().when(key.clone(), 0).put(key, vec![0x5a; 512]))
                    .await
                    .expect("reply")
                    .expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (n / CLIENTS * CLIENTS) as f64 / start.elapsed().as_secs_f64()
}

async fn setup(ctl: &Controller) {
    let mut c = ctl.admin().await;
    let ws: Vec<String> = (0..WORKSTATIONS).map(|i| format!("ws{i}")).collect();
    let ws_refs: Vec<&str> = ws.iter().map(String::as_str).collect();
    c.create(tenant("lab", "", 0, &ws_refs))
        .await
        .expect("tenant");
    for i in 0..STORAGE_NODES {
        // Each node its own data port: the controller refuses two nodes
        // announcing the same address.
        c.create(storage_node(&format!("s{i}"), 4420 + i as u32))
            .await
            .expect("node");
    }
    for w in &ws {
        c.create(workstation(w)).await.expect("workstation");
    }
    for p in 0..POOLS {
        let node = format!("s{}", p % STORAGE_NODES);
        let mut pl = pool(&format!("p{p}"), &node, "1PiB", &[("tier", "fast")]);
        pl.spec.as_mut().expect("s").namespace_limit = 100_000;
        c.create(pl).await.expect("pool");
    }
}

/// What one create run measured.
struct Run {
    per_s: f64,
    first_fifth_per_s: f64,
    last_fifth_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn create_run(ctl: &Controller, clients: usize, total: usize) -> Run {
    let per = total / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let mut c = ctl.admin().await;
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::with_capacity(per);
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let v = volume_sel(&format!("v-{w}-{i}"), "lab", "1GiB", &[("tier", "fast")]);
                let t0 = Instant::now();
                c.create(v).await.expect("create");
                lat.push(t0.elapsed());
                done.push(start.elapsed());
            }
            (done, lat)
        }));
    }
    let mut done = Vec::new();
    let mut h = Histogram::<u64>::new(3).expect("hist");
    for t in tasks {
        let (d, l) = t.await.expect("task");
        done.extend(d);
        for x in l {
            h.record(x.as_micros() as u64).expect("record");
        }
    }
    done.sort();
    let (per_s, first_fifth_per_s, last_fifth_per_s) = fifths(&done);
    Run {
        per_s,
        first_fifth_per_s,
        last_fifth_per_s,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

fn report_run(tag: &str, r: &Run) {
    report(&format!("creates_per_s_{tag}"), r.per_s, "ops/s");
    report(
        &format!("creates_per_s_{tag}_first_fifth"),
        r.first_fifth_per_s,
        "ops/s",
    );
    report(
        &format!("creates_per_s_{tag}_last_fifth"),
        r.last_fifth_per_s,
        "ops/s",
    );
    report(&format!("create_latency_{tag}_p50"), r.p50_ms, "ms");
    report(&format!("create_latency_{tag}_p99"), r.p99_ms, "ms");
}

/// Agents watching their desired state for the whole run; returns how many
/// snapshots they received (drained continuously, like real agents).
async fn start_agents(ctl: &Controller) -> Vec<tokio::task::JoinHandle<u64>> {
    let mut names: Vec<String> = (0..STORAGE_NODES).map(|i| format!("s{i}")).collect();
    names.extend((0..WORKSTATIONS).map(|i| format!("ws{i}")));
    let mut out = Vec::new();
    for n in names {
        let mut a = ctl.agent_as(&format!("node:{n}")).await;
        let mut s = a
            .watch_desired_state(WatchDesiredStateRequest {
                node: n,
                ..Default::default()
            })
            .await
            .expect("watch desired state")
            .into_inner();
        out.push(tokio::spawn(async move {
            let mut got = 0;
            while let Some(Ok(_)) = s.next().await {
                got += 1;
            }
            got
        }));
    }
    out
}

async fn watch_latency(ctl: &Controller, n: usize) -> (f64, f64) {
    let mut c = ctl.admin().await;
    let mut w = c
        .watch_tenants(WatchRequest {
            from_revision: 0,
            label_selector: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    loop {
        let ev = w.next().await.expect("open").expect("ev");
        if ev.r#type == EventType::Synced as i32 {
            break;
        }
    }
    let mut h = Histogram::<u64>::new(3).expect("hist");
    for i in 0..n {
        let t0 = Instant::now();
        c.create(tenant(&format!("w{i}"), "", 0, &[]))
            .await
            .expect("create");
        w.next().await.expect("open").expect("ev");
        h.record(t0.elapsed().as_micros() as u64).expect("record");
    }
    (
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

async fn watch_rss(ctl: &Controller, streams: usize) -> f64 {
    let mut held = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(ctl.admin().await);
    }
    for i in 0..streams {
        let k = clients.len();
        let c = &mut clients[i % k];
        let s = c
            .watch_volumes(WatchRequest {
                from_revision: 0,
                label_selector: "none=none".into(),
            })
            .await
            .expect("watch")
            .into_inner();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = ctl.pid().map_or(0.0, rss_mb);
    drop(held);
    rss
}

fn phase(name: &str) -> bool {
    std::env::var("FERROFAB_BENCH_PHASES").map_or(true, |p| p.split(',').any(|x| x.trim() == name))
}

async fn run_all() {
    let n = creates();
    if phase("baselines") {
        let (raw, first, last) = redb_raw_commits(n);
        report("redb_raw_durable_commits_per_s_1_writer", raw, "ops/s");
        report("redb_raw_1_writer_first_fifth", first, "ops/s");
        report("redb_raw_1_writer_last_fifth", last, "ops/s");
        let store = store_commits(n).await;
        report("store_durable_commits_per_s_16_writers", store, "ops/s");
    }
    if phase("single") {
        let ctl = Controller::start();
        setup(&ctl).await;
        report_run("1_client", &create_run(&ctl, 1, n).await);
    }
    if phase("multi") {
        multi(n).await;
    }
    if phase("agents") {
        with_agents(n).await;
    }
}

async fn multi(n: usize) {
    let ctl = Controller::start();
    setup(&ctl).await;
    report_run("16_clients", &create_run(&ctl, CLIENTS, n).await);
    let (p50, p99) = watch_latency(&ctl, 1000).await;
    report("watch_delivery_p50", p50, "ms");
    report("watch_delivery_p99", p99, "ms");
    let rss = watch_rss(&ctl, 1000).await;
    report("rss_1000_watch_streams", rss, "MB");
}

async fn with_agents(n: usize) {
    let ctl = Controller::start();
    setup(&ctl).await;
    let agents = start_agents(&ctl).await;
    report_run("16_clients_32_agents", &create_run(&ctl, CLIENTS, n).await);
    let rss = ctl.pid().map_or(0.0, rss_mb);
    report("rss_after_creates_with_agents", rss, "MB");
    drop(ctl);
    let mut snapshots = 0;
    for a in agents {
        snapshots += a.await.unwrap_or(0);
    }
    report("desired_state_snapshots_sent", snapshots as f64, "count");
}

fn main() {
    if !measuring() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run_all());
}
