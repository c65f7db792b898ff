//! Durable creates per second with 16 concurrent clients, redb against etcd
//! on loopback in the same run (issue 17's goal: etcd at least half of
//! redb). Store level: each create is one `Txn` comparing the key absent and
//! putting a 256-byte value, acknowledged once durable (redb: fsynced group
//! commit; etcd: Raft log fsynced by the one-member cluster and seen by the
//! backend's watch). `cargo bench -p ferrofab-controller --bench
//! store_backends` prints `bench: NAME value unit` lines.
//!
//! FERROFAB_BENCH_STORE_CREATES overrides the 4,000 creates per backend.

#[path = "../tests/etcd_harness/mod.rs"]
mod etcd_harness;
mod support;

use std::time::{Duration, Instant};

use ferrofab_controller::store::etcd::{EtcdConfig, EtcdStore};
use ferrofab_controller::store::redb::RedbStore;
use ferrofab_controller::store::{SharedStore, Txn, TxnResult};
use hdrhistogram::Histogram;
use support::{env_count, measuring, report};

const CLIENTS: usize = 16;

/// Runs `total` creates from [`CLIENTS`] tasks; returns creates/s and the
/// p99 latency of one create.
async fn creates(store: SharedStore, total: usize) -> (f64, Duration) {
    let per = total.div_ceil(CLIENTS);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            for i in 0..per {
                let key = format!("volumes/c{c}-{i}");
                let t = Instant::now();
                let r = s
                    .txn(Txn::new().when(key.clone(), 0).put(key, vec![7u8; 256]))
                    .await
                    .expect("reply")
                    .expect("commit");
                assert!(matches!(r, TxnResult::Committed { .. }), "{r:?}");
                h.record(t.elapsed().as_micros() as u64).expect("record");
            }
            h
        }));
    }
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("client")).expect("merge");
    }
    let secs = start.elapsed().as_secs_f64();
    (
        (per * CLIENTS) as f64 / secs,
        Duration::from_micros(all.value_at_quantile(0.99)),
    )
}

fn main() {
    let total = if measuring() {
        env_count("FERROFAB_BENCH_STORE_CREATES", 4_000)
    } else {
        64
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let redb: SharedStore =
        std::sync::Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("redb"));
    let (redb_rate, redb_p99) = rt.block_on(creates(redb, total));
    let etcd = etcd_harness::Etcd::start();
    let store: SharedStore = std::sync::Arc::new(
        EtcdStore::open(&EtcdConfig {
            endpoints: vec![etcd.client_url.clone()],
            ..EtcdConfig::default()
        })
        .expect("etcd store"),
    );
    let (etcd_rate, etcd_p99) = rt.block_on(creates(store, total));
    report("store_redb_creates_16_clients", redb_rate, "creates/s");
    report("store_etcd_creates_16_clients", etcd_rate, "creates/s");
    report("store_redb_create_p99", redb_p99.as_secs_f64() * 1e3, "ms");
    report("store_etcd_create_p99", etcd_p99.as_secs_f64() * 1e3, "ms");
    report("store_etcd_over_redb", etcd_rate / redb_rate, "ratio");
}
