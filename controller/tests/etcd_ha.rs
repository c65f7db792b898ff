//! Several controllers on one real etcd: the fenced leader (a leader cut
//! off from etcd is replaced within about one lease TTL, and its writes
//! made with the old leadership are refused), and writes from any replica
//! (two controllers racing creates into one nearly full pool and one
//! tenant's quota never over-commit either; racing growths retry a lost
//! usage-fence race instead of answering ABORTED).

mod etcd_harness;

use std::time::{Duration, Instant};

use etcd_harness::{Etcd, Proxy};
use ferrofab_controller::leader::{Leadership, Replica, Role};
use ferrofab_controller::store::etcd::{EtcdConfig, EtcdStore};
use ferrofab_controller::store::{Store, StoreError, Txn, TxnResult};
use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;

const TTL: u64 = 2;

fn open(url: &str) -> EtcdStore {
    EtcdStore::open(&EtcdConfig {
        endpoints: vec![url.to_string()],
        lease_ttl_seconds: TTL,
        timeout_ms: 1_500,
        ..EtcdConfig::default()
    })
    .expect("open etcd store")
}

fn replica(name: &str) -> Replica {
    Replica {
        name: name.into(),
        endpoint: format!("{name}:1"),
    }
}

async fn wait_role(l: &Leadership, within: Duration, want: impl Fn(&Role) -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if want(&l.role()) {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("role not reached within {within:?}; last {:?}", l.role());
}

/// `a` campaigns first and leads; then `b` campaigns and follows it.
async fn a_leads_b_follows(a: &EtcdStore, b: &EtcdStore) -> (Leadership, Leadership) {
    let la = a.campaign(replica("a"));
    wait_role(&la, Duration::from_secs(10), |r| {
        matches!(r, Role::Leader(_))
    })
    .await;
    let lb = b.campaign(replica("b"));
    wait_role(&lb, Duration::from_secs(10), |r| {
        *r == Role::Follower {
            leader: Some("a".into()),
        }
    })
    .await;
    (la, lb)
}

fn leader_guard(r: Role) -> ferrofab_controller::store::LeaderGuard {
    match r {
        Role::Leader(g) => g,
        other => panic!("not leader: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_is_replaced_and_fenced() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.addr).await;
    let a = open(&proxy.url);
    let b = open(&etcd.client_url);
    let (la, lb) = a_leads_b_follows(&a, &b).await;
    let old = leader_guard(la.role());
    let w = a
        .txn(
            Txn::new()
                .put("k/a1", b"1".to_vec())
                .fenced(Some(old.clone())),
        )
        .await
        .expect("answer")
        .expect("a leads: its fenced write commits");
    assert!(matches!(w, TxnResult::Committed { .. }));
    let view = b.cluster().expect("cluster view");
    assert_eq!(view.leader.as_deref(), Some("a"));
    assert_eq!(view.replicas.len(), 2, "{view:?}");
    assert_eq!(view.members.len(), 1);
    assert_eq!(view.members[0].health, "ok");

    // Partition a from etcd: b takes over within about one TTL (the
    // lease runs out, then b's next check takes the key).
    proxy.cut();
    let took = wait_role(&lb, Duration::from_secs(4 * TTL), |r| {
        matches!(r, Role::Leader(_))
    })
    .await;
    assert!(
        took <= Duration::from_secs(TTL + 2),
        "new leader after {took:?}, lease TTL {TTL}s"
    );
    wait_role(&la, Duration::from_secs(2 * TTL), |r| {
        !matches!(r, Role::Leader(_))
    })
    .await;

    // The old leader comes back still holding its old guard (as a paused
    // process would): its singleton write is refused, nothing written.
    proxy.heal();
    let mut refused = None;
    for _ in 0..50 {
        match a
            .txn(
                Txn::new()
                    .put("k/a2", b"2".to_vec())
                    .fenced(Some(old.clone())),
            )
            .await
            .expect("answer")
        {
            Err(StoreError::Io(_) | StoreError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(Err(StoreError::NotLeader { .. }))),
        "the deposed leader's write must be refused: {refused:?}"
    );
    assert_eq!(b.get("k/a2").expect("get"), None, "nothing was written");
    let new = leader_guard(lb.role());
    assert_ne!(new.create_revision, old.create_revision);
    let w = b
        .txn(Txn::new().put("k/b1", b"1".to_vec()).fenced(Some(new)))
        .await
        .expect("answer")
        .expect("the new leader writes");
    assert!(matches!(w, TxnResult::Committed { .. }));
    // Unfenced writes (any replica's API writes) are not affected.
    let w = a
        .txn(Txn::new().put("k/a3", b"3".to_vec()))
        .await
        .expect("answer")
        .expect("unfenced write");
    assert!(matches!(w, TxnResult::Committed { .. }));
}

/// Two controller processes on one etcd, sharing one PKI.
fn two_controllers(etcd: &Etcd) -> (Controller, Controller, tempfile::TempDir) {
    let dirs = tempfile::tempdir().expect("tempdir");
    let extra = |name: &str| {
        format!(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"{}\"]\nreplica_name = \"{name}\"\nlease_ttl_seconds = {TTL}\n",
            etcd.client_url
        )
    };
    let a_dir = dirs.path().join("a");
    let b_dir = dirs.path().join("b");
    std::fs::create_dir_all(&a_dir).expect("mkdir");
    let a = Controller::start_in(
        &a_dir,
        Options {
            extra_toml: extra("a"),
            ..Options::default()
        },
    );
    std::fs::create_dir_all(b_dir.join("pki")).expect("mkdir");
    for e in std::fs::read_dir(a_dir.join("pki")).expect("pki dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), b_dir.join("pki").join(e.file_name())).expect("copy pki");
        }
    }
    let b = Controller::start_in(
        &b_dir,
        Options {
            extra_toml: extra("b"),
            ..Options::default()
        },
    );
    (a, b, dirs)
}

/// Creates `n` volumes of `size` alternately through `a` and `b`, all at
/// once; returns how many were acknowledged.
async fn race(a: &Controller, b: &Controller, n: usize, tenant: &str, pool: &str) -> usize {
    let vols = (0..n)
        .map(|i| volume(&format!("{tenant}-{pool}-{i}"), tenant, "1GiB", pool))
        .collect();
    race_all(a, b, vols, false).await
}

/// Sends `vols` alternately through `a` and `b`, all at once, as creates
/// or (`update`) as updates; returns how many were acknowledged. Only
/// capacity or quota refusals may come back: a write that lost the race
/// for a usage fence decides again, it never surfaces as ABORTED.
async fn race_all(a: &Controller, b: &Controller, vols: Vec<Volume>, update: bool) -> usize {
    let mut tasks = Vec::new();
    for (i, v) in vols.into_iter().enumerate() {
        let mut c = if i % 2 == 0 {
            a.admin().await
        } else {
            b.admin().await
        };
        tasks.push(tokio::spawn(async move {
            if update {
                c.update(v).await
            } else {
                c.create(v).await
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(s) => assert_eq!(
                s.code(),
                tonic::Code::ResourceExhausted,
                "only capacity refusals expected: {s:?}"
            ),
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_creates_never_over_commit_a_pool_or_a_quota() {
    let etcd = Etcd::start();
    let (a, b, _dirs) = two_controllers(&etcd);
    let mut admin = a.admin().await;
    admin
        .create(tenant("lab", "", 0, &["ws1"]))
        .await
        .expect("tenant");
    admin
        .create(tenant("small", "", 3, &["ws1"]))
        .await
        .expect("tenant");
    admin.create(storage_node("s1", 4420)).await.expect("s1");
    admin.create(workstation("ws1")).await.expect("ws1");
    admin
        .create(pool("tight", "s1", "5GiB", &[]))
        .await
        .expect("pool");
    admin
        .create(pool("big", "s1", "1TiB", &[]))
        .await
        .expect("pool");
    // Let b's cache see the layout before racing.
    let mut admin_b = b.admin().await;
    let t0 = Instant::now();
    while admin_b.get::<Pool>("big").await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "b never saw the pool"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let placed = race(&a, &b, 12, "lab", "tight").await;
    let quota = race(&a, &b, 10, "small", "big").await;
    // What the store holds, read back through either replica.
    let vols = admin
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    let in_tight: u64 = vols
        .iter()
        .filter(|v| v.status.as_ref().is_some_and(|s| s.pool == "tight"))
        .map(|v| v.status.as_ref().map_or(0, |s| s.size_bytes))
        .sum();
    let small = vols
        .iter()
        .filter(|v| v.spec.as_ref().is_some_and(|s| s.tenant == "small"))
        .count();
    // What `ferrofab status` shows: replicas, the leader, etcd health.
    let t0 = Instant::now();
    let cp = loop {
        let info = admin
            .get_server_info(GetServerInfoRequest {})
            .await
            .expect("server info")
            .into_inner();
        let cp = info
            .control_plane
            .expect("etcd: control plane shown to the admin");
        if !cp.leader.is_empty() && cp.replicas.len() == 2 {
            break cp;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no leader: {cp:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(cp.replica, "a");
    assert!(cp.leader == "a" || cp.leader == "b", "{cp:?}");
    assert_eq!(cp.replicas.iter().filter(|r| r.leader).count(), 1);
    assert_eq!(cp.store_members.len(), 1);
    assert_eq!(cp.store_members[0].health, "ok");
    assert!(cp.store_members[0].leader, "a one-member etcd leads itself");

    assert_eq!(placed, 5, "exactly the pool's 5 GiB are placed");
    assert_eq!(in_tight, 5 << 30, "no over-commit of the pool");
    assert_eq!(quota, 3, "exactly the tenant's volume quota");
    assert_eq!(small, 3, "no over-commit of the quota");

    grows_race_without_aborting(&a, &b).await;
}

/// Eight 1 GiB volumes in a 13 GiB pool, all grown to 2 GiB at once
/// through both replicas: the pool has room for five growths. A growth
/// whose usage fence was overtaken decides again instead of answering
/// ABORTED, so exactly five succeed and three are refused for capacity.
async fn grows_race_without_aborting(a: &Controller, b: &Controller) {
    let mut admin = a.admin().await;
    admin
        .create(pool("grow", "s1", "13GiB", &[]))
        .await
        .expect("pool");
    for i in 0..8 {
        admin
            .create(volume(&format!("g{i}"), "lab", "1GiB", "grow"))
            .await
            .expect("volume");
    }
    let mut admin_b = b.admin().await;
    let t0 = Instant::now();
    while admin_b.get::<Volume>("g7").await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "b never saw g7");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grows = (0..8)
        .map(|i| volume(&format!("g{i}"), "lab", "2GiB", "grow"))
        .collect();
    let grown = race_all(a, b, grows, true).await;
    let in_pool: u64 = admin
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items
        .iter()
        .filter_map(|v| v.status.as_ref())
        .filter(|s| s.pool == "grow")
        .map(|s| s.size_bytes)
        .sum();
    assert_eq!(grown, 5, "exactly the five growths the pool has room for");
    assert_eq!(in_pool, 13 << 30, "no over-commit of the pool by growths");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resigning_leader_hands_over_before_its_lease_would_expire() {
    let etcd = Etcd::start();
    let a = open(&etcd.client_url);
    let b = open(&etcd.client_url);
    let (_la, lb) = a_leads_b_follows(&a, &b).await;
    let t0 = Instant::now();
    tokio::task::spawn_blocking(move || {
        a.resign();
        a
    })
    .await
    .expect("resign");
    let took = wait_role(&lb, Duration::from_secs(4 * TTL), |r| {
        matches!(r, Role::Leader(_))
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(TTL),
        "handed over in {took:?}, before the {TTL}s lease would have run out"
    );
    assert_eq!(
        b.cluster().expect("view").replicas.len(),
        1,
        "a deregistered"
    );
}

/// Sixteen clients creating volumes in one tenant without quota through
/// one replica: every create is acknowledged. While the tenant's usage
/// fence guarded them, concurrent creates overtook each other on that one
/// key and some gave up after 32 attempts (RESOURCE_EXHAUSTED; the `ha`
/// bench saw 320 of 3,000 refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_in_a_tenant_without_quota_are_not_refused() {
    let etcd = Etcd::start();
    let (a, _b, _dirs) = two_controllers(&etcd);
    let mut admin = a.admin().await;
    admin
        .create(tenant("lab", "", 0, &[]))
        .await
        .expect("tenant");
    for i in 0..8u32 {
        let node = format!("s{i}");
        admin
            .create(storage_node(&node, 4420 + i))
            .await
            .expect("node");
        admin
            .create(pool(&format!("p{i}"), &node, "1PiB", &[("tier", "fast")]))
            .await
            .expect("pool");
    }
    let mut tasks = Vec::new();
    for c in 0..16 {
        let mut cl = a.admin().await;
        tasks.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for i in 0..25 {
                let v = volume_sel(&format!("v{c}-{i}"), "lab", "1GiB", &[("tier", "fast")]);
                if let Err(s) = cl.create(v).await {
                    refused.push(s);
                }
            }
            refused
        }));
    }
    for t in tasks {
        let refused = t.await.expect("client");
        assert!(refused.is_empty(), "creates refused: {refused:?}");
    }
}
