//! Controller benchmarks against the built binary over mTLS on loopback:
//! durable creates (1 and 16 clients), watch delivery latency, and RSS with
//! many open watch streams. `cargo bench -p ferrofab-controller`;
//! FERROFAB_BENCH_CREATES overrides the 10,000 creates per run.
//! Prints one `bench: NAME value unit` line per result.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use ferrofab_proto::v1::*;
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;

fn creates() -> usize {
    std::env::var("FERROFAB_BENCH_CREATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

async fn setup(ctl: &Controller) {
    let mut c = ctl.admin().await;
    c.create_tenant(CreateTenantRequest {
        tenant: Some(tenant("lab", "", 0, &[])),
    })
    .await
    .expect("tenant");
    c.create_node(CreateNodeRequest {
        node: Some(storage_node("s1", 4420)),
    })
    .await
    .expect("node");
    for p in 0..64 {
        let mut pl = pool(&format!("p{p}"), "s1", "1PiB", &[("tier", "fast")]);
        pl.spec.as_mut().expect("s").namespace_limit = 100_000;
        c.create_pool(CreatePoolRequest { pool: Some(pl) })
            .await
            .expect("pool");
    }
}

async fn create_run(ctl: &Controller, clients: usize, total: usize, tag: &str) -> f64 {
    let per = total / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let mut c = ctl.admin().await;
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let v = volume_sel(
                    &format!("{tag}-{w}-{i}"),
                    "lab",
                    "1GiB",
                    &[("tier", "fast")],
                );
                c.create_volume(CreateVolumeRequest { volume: Some(v) })
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (per * clients) as f64 / start.elapsed().as_secs_f64()
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
        c.create_tenant(CreateTenantRequest {
            tenant: Some(tenant(&format!("w{i}"), "", 0, &[])),
        })
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

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
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

fn main() {
    // `cargo test --benches` passes --bench-less flags; run only on `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let n = creates();
        let ctl = Controller::start();
        setup(&ctl).await;
        let single = create_run(&ctl, 1, n, "a").await;
        println!("bench: creates_per_s_1_client {single:.0} ops/s");
        let multi = create_run(&ctl, 16, n, "b").await;
        println!("bench: creates_per_s_16_clients {multi:.0} ops/s");
        let (p50, p99) = watch_latency(&ctl, 1000).await;
        println!("bench: watch_delivery_p50 {p50:.2} ms");
        println!("bench: watch_delivery_p99 {p99:.2} ms");
        let rss = watch_rss(&ctl, 1000).await;
        println!("bench: rss_1000_watch_streams {rss:.0} MB");
    });
}
