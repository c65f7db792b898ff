//! One behavioural suite for every store backend: the embedded redb file and
//! etcd (a real `etcd` from Debian's etcd-server on loopback, see
//! `etcd_harness`). Each check runs against both; etcd-only checks cover
//! what redb cannot show (sparse revisions, compaction, paging).

mod etcd_harness;

use std::time::Duration;

use etcd_harness::{Etcd, Proxy};
use ferrofab_controller::store::etcd::{EtcdConfig, EtcdStore};
use ferrofab_controller::store::redb::RedbStore;
use ferrofab_controller::store::{EventKind, Revision, SharedStore, Store, Txn, TxnResult};

fn etcd_cfg(url: &str, page: usize) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![url.to_string()],
        list_page_size: page,
        ..EtcdConfig::default()
    }
}

fn open_etcd(url: &str, page: usize) -> EtcdStore {
    EtcdStore::open(&etcd_cfg(url, page)).expect("open etcd store")
}

async fn commit(s: &dyn Store, t: Txn) -> TxnResult {
    s.txn(t).await.expect("reply").expect("commit")
}

fn committed(r: TxnResult) -> Revision {
    match r {
        TxnResult::Committed { revision } => revision,
        other => panic!("expected a commit, got {other:?}"),
    }
}

async fn check_put_get_delete(s: &dyn Store) {
    let r1 = committed(
        commit(
            s,
            Txn::new()
                .when("volumes/a", 0)
                .put("volumes/a", b"1".to_vec()),
        )
        .await,
    );
    let kv = s.get("volumes/a").expect("get").expect("present");
    assert_eq!(kv.value, b"1");
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r1));
    let r2 = committed(
        commit(
            s,
            Txn::new()
                .when("volumes/a", r1)
                .put("volumes/a", b"2".to_vec()),
        )
        .await,
    );
    assert!(r2 > r1, "revisions increase: {r1} then {r2}");
    let kv = s.get("volumes/a").expect("get").expect("present");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.value.as_slice()),
        (r1, r2, &b"2"[..])
    );
    let r3 = committed(commit(s, Txn::new().when("volumes/a", r2).delete("volumes/a")).await);
    assert!(r3 > r2);
    assert_eq!(s.get("volumes/a").expect("get"), None);
    assert!(
        s.revision() >= r3,
        "store revision {} covers {r3}",
        s.revision()
    );
}

async fn check_conflict(s: &dyn Store) {
    let r = committed(
        commit(
            s,
            Txn::new().when("pools/c", 0).put("pools/c", b"1".to_vec()),
        )
        .await,
    );
    let again = commit(
        s,
        Txn::new().when("pools/c", 0).put("pools/c", b"x".to_vec()),
    )
    .await;
    assert_eq!(
        again,
        TxnResult::CompareFailed {
            key: "pools/c".into(),
            actual: r
        }
    );
    let absent = commit(
        s,
        Txn::new()
            .when("pools/none", 7)
            .put("pools/c", b"x".to_vec()),
    )
    .await;
    assert_eq!(
        absent,
        TxnResult::CompareFailed {
            key: "pools/none".into(),
            actual: 0
        }
    );
    assert_eq!(
        s.get("pools/c").expect("get").expect("kept").value,
        b"1",
        "a failed txn writes nothing"
    );
    // Two writers racing on the same read: exactly one wins.
    let a = s.txn(Txn::new().when("pools/c", r).put("pools/c", b"a".to_vec()));
    let b = s.txn(Txn::new().when("pools/c", r).put("pools/c", b"b".to_vec()));
    let (a, b) = (
        a.await.expect("a").expect("a"),
        b.await.expect("b").expect("b"),
    );
    let wins = [&a, &b]
        .iter()
        .filter(|r| matches!(r, TxnResult::Committed { .. }))
        .count();
    assert_eq!(
        wins, 1,
        "exactly one of two racing writers commits: {a:?} {b:?}"
    );
}

async fn check_list(s: &dyn Store) {
    let mut last = 0;
    for i in 0..5 {
        let k = format!("tenants/t{i}");
        last = committed(commit(s, Txn::new().put(k, vec![i])).await);
    }
    committed(commit(s, Txn::new().put("nodes/n", vec![9])).await);
    let (kvs, rev) = s.list("tenants/").expect("list");
    let keys: Vec<&str> = kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tenants/t0",
            "tenants/t1",
            "tenants/t2",
            "tenants/t3",
            "tenants/t4"
        ]
    );
    assert!(
        rev >= last,
        "list revision {rev} covers the last write {last}"
    );
    let (nodes, _) = s.list("nodes/").expect("list");
    assert_eq!(nodes.len(), 1);
}

async fn check_watch_from(s: &dyn Store) {
    let r0 = s.revision();
    let rx = committed(
        commit(
            s,
            Txn::new()
                .put("volumes/x", vec![1])
                .put("volumes/y", vec![2]),
        )
        .await,
    );
    let rz = committed(commit(s, Txn::new().put("volumes/z", vec![3])).await);
    let w = s.watch("volumes/", r0).expect("watch from r0");
    let got: Vec<(String, Revision)> = w
        .backlog
        .iter()
        .map(|e| (e.kv.key.clone(), e.revision))
        .collect();
    assert_eq!(
        got,
        [
            ("volumes/x".into(), rx),
            ("volumes/y".into(), rx),
            ("volumes/z".into(), rz)
        ]
    );
    assert!(
        w.backlog[1].batch_end,
        "a transaction ends on its last event"
    );
    let w2 = s.watch("volumes/", rx).expect("watch from rx");
    assert_eq!(w2.backlog.len(), 1, "only what came after rx");
    let mut live = s.watch("volumes/", s.revision()).expect("live watch");
    let rd = committed(commit(s, Txn::new().delete("volumes/x")).await);
    let ev = tokio::time::timeout(Duration::from_secs(10), live.live.recv())
        .await
        .expect("live event in time")
        .expect("event");
    assert_eq!(
        (ev.kind, ev.kv.key.as_str(), ev.revision),
        (EventKind::Delete, "volumes/x", rd)
    );
    assert_eq!(ev.kv.value, vec![1], "a delete carries the last value");
}

async fn conformance(s: &dyn Store) {
    check_put_get_delete(s).await;
    check_conflict(s).await;
    check_list(s).await;
    check_watch_from(s).await;
}

#[tokio::test]
async fn redb_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = RedbStore::open(&dir.path().join("s.redb")).expect("open");
    conformance(&s).await;
}

#[tokio::test]
async fn etcd_conforms() {
    let etcd = Etcd::start();
    // A page of 2 makes every list above span several range requests.
    let s = open_etcd(&etcd.client_url, 2);
    conformance(&s).await;
}

/// Data and revisions survive a restart of the store, and of etcd itself.
#[tokio::test]
async fn etcd_restart_resume() {
    let etcd = Etcd::start();
    let (before, r) = {
        let s = open_etcd(&etcd.client_url, 100);
        let before = s.revision();
        committed(commit(&s, Txn::new().put("nodes/gone", b"g".to_vec())).await);
        committed(commit(&s, Txn::new().delete("nodes/gone")).await);
        (
            before,
            committed(commit(&s, Txn::new().put("nodes/a", b"1".to_vec())).await),
        )
    };
    let dir = etcd.kill();
    let etcd = Etcd::start_in(dir);
    let s = open_etcd(&etcd.client_url, 100);
    assert!(
        s.revision() >= r,
        "revision {} kept after restart (was {r})",
        s.revision()
    );
    let kv = s.get("nodes/a").expect("get").expect("kept");
    assert_eq!(kv.mod_revision, r);
    let r2 = committed(
        commit(
            &s,
            Txn::new().when("nodes/a", r).put("nodes/a", b"2".to_vec()),
        )
        .await,
    );
    assert!(r2 > r);
    let shared: SharedStore = std::sync::Arc::new(s);
    let w = shared
        .watch("", r)
        .expect("watch from the restart revision");
    assert_eq!(w.backlog.len(), 1);
    // The history from before the restart was reloaded from etcd: a
    // watcher resumes from a pre-restart revision, deletes with their value.
    let w = shared
        .watch("", before)
        .expect("resume from before the restart");
    let got: Vec<(EventKind, &str, &[u8])> = w
        .backlog
        .iter()
        .map(|e| (e.kind, e.kv.key.as_str(), e.kv.value.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            (EventKind::Put, "nodes/gone", &b"g"[..]),
            (EventKind::Delete, "nodes/gone", &b"g"[..]),
            (EventKind::Put, "nodes/a", &b"1"[..]),
            (EventKind::Put, "nodes/a", &b"2"[..]),
        ]
    );
}

#[tokio::test]
async fn redb_restart_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    let r = {
        let s = RedbStore::open(&path).expect("open");
        committed(commit(&s, Txn::new().put("nodes/a", b"1".to_vec())).await)
    };
    let s = RedbStore::open(&path).expect("reopen");
    assert_eq!(s.revision(), r);
    assert_eq!(
        s.get("nodes/a").expect("get").expect("kept").mod_revision,
        r
    );
}

/// etcd's revisions are not dense: a write outside the prefix takes one.
/// A watcher resuming from a revision before it must not be refused as if
/// history were missing.
#[tokio::test]
async fn etcd_sparse_revisions_resume() {
    let etcd = Etcd::start();
    let s = open_etcd(&etcd.client_url, 100);
    let r0 = s.revision();
    let mut other = etcd.client().await;
    other
        .put("/somebody/else", "x", None)
        .await
        .expect("foreign put");
    other
        .put("/somebody/else", "y", None)
        .await
        .expect("foreign put");
    let r = committed(commit(&s, Txn::new().put("volumes/v", vec![1])).await);
    assert!(r >= r0 + 3, "foreign writes took revisions: r0={r0} r={r}");
    let w = s.watch("", r0).expect("resume across the gap");
    assert_eq!(w.backlog.len(), 1);
    assert_eq!(w.backlog[0].revision, r);
    assert!(s.watch("", r0 + 1).is_ok());
}

/// A partition long enough for etcd to compact past the follower's
/// revision: etcd cancels the watch with a compact revision, the store
/// lists again and publishes the difference, and a watcher that was open
/// all along ends with the right state. Multi-threaded: the proxy runs on
/// the test's runtime while the store's reads block a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_relists_and_resumes() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.addr).await;
    let s = open_etcd(&proxy.url, 2);
    committed(commit(&s, Txn::new().put("volumes/keep", vec![1])).await);
    committed(commit(&s, Txn::new().put("volumes/gone", vec![2])).await);
    committed(commit(&s, Txn::new().put("volumes/changed", vec![3])).await);
    let mut w = s.watch("volumes/", s.revision()).expect("watch");

    proxy.cut();
    let mut direct = etcd.client().await;
    let p = "/ferrofab/v1/objects/";
    direct
        .delete(format!("{p}volumes/gone"), None)
        .await
        .expect("delete");
    direct
        .put(format!("{p}volumes/changed"), vec![30], None)
        .await
        .expect("put");
    direct
        .put(format!("{p}volumes/new"), vec![4], None)
        .await
        .expect("put");
    let at = direct
        .put(format!("{p}volumes/new"), vec![5], None)
        .await
        .expect("put");
    let at = at.header().expect("header").revision();
    direct
        .compact(
            at,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
    proxy.heal();

    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, w.live.recv())
            .await
            .expect("re-listed changes in time")
            .expect("event");
        seen.insert(ev.kv.key.clone(), (ev.kind, ev.kv.value.clone()));
    }
    assert_eq!(seen["volumes/gone"], (EventKind::Delete, vec![2]));
    assert_eq!(seen["volumes/changed"], (EventKind::Put, vec![30]));
    assert_eq!(seen["volumes/new"], (EventKind::Put, vec![5]));
    assert_eq!(s.relists(), 1);
    assert!(
        ferrofab_controller::store::etcd::RELISTS.get() >= 1,
        "counted in /metrics"
    );
    assert!(
        !seen.contains_key("volumes/keep"),
        "unchanged keys are not re-sent"
    );
    // And it follows on after the re-list.
    let r = committed(commit(&s, Txn::new().put("volumes/after", vec![6])).await);
    let ev = tokio::time::timeout(Duration::from_secs(10), w.live.recv())
        .await
        .expect("in time")
        .expect("event");
    assert_eq!((ev.kv.key.as_str(), ev.revision), ("volumes/after", r));
}

/// An unreachable etcd stops start-up within `timeout_ms`, naming etcd,
/// instead of hanging or starting with an empty store.
#[test]
fn unreachable_etcd_fails_open_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let cfg = EtcdConfig {
        timeout_ms: 500,
        ..etcd_cfg(&format!("http://127.0.0.1:{port}"), 10)
    };
    let started = std::time::Instant::now();
    let err = EtcdStore::open(&cfg).err().expect("must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by timeout_ms"
    );
    eprintln!("open failed as expected: {err}");
    assert!(err.to_string().contains("store.etcd.endpoints"), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}
