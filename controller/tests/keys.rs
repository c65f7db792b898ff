//! Data-path authentication keys (issue 16): issued by the controller,
//! sealed at rest, sent only to the two nodes that use each one, never to
//! an administrator, and rotated storage side first.

use std::time::Duration;

use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use tokio_stream::StreamExt;

const WS1_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:ws1";

/// The next snapshot of `s` that satisfies `f`.
async fn until(
    s: &mut tonic::Streaming<DesiredState>,
    what: &str,
    f: impl Fn(&DesiredState) -> bool,
) -> DesiredState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ds = tokio::time::timeout_at(deadline, s.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("stream open")
            .expect("state");
        if f(&ds) {
            return ds;
        }
    }
}

fn host_key(ds: &DesiredState) -> Option<&DhchapKey> {
    ds.exports
        .first()?
        .host_keys
        .iter()
        .find(|k| k.host_nqn == WS1_NQN)?
        .key
        .as_ref()
}

fn report_held(nqn: &str, generation: u64) -> ReportStatusRequest {
    ReportStatusRequest {
        node: "s1".into(),
        exports: vec![ExportStatus {
            volume: "data".into(),
            subsystem_nqn: nqn.into(),
            ready: true,
            generation: 1,
            host_keys: vec![KeyApplied {
                host_nqn: WS1_NQN.into(),
                generation,
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn keys_reach_only_their_two_nodes_and_rotate_storage_first() {
    let ctl = Controller::start();
    let mut admin = ctl.admin().await;
    basic_layout(&mut admin).await;
    let mut s1 = ctl.agent_as("node:s1").await;
    // The workstation says it can authenticate (built-in initiator).
    report_capable(&ctl, "ws1").await;
    let mut s1_stream = watch(&ctl, "s1").await;
    let mut ws_stream = watch(&ctl, "ws1").await;
    let mut admin_view = ctl
        .agent_as("admin")
        .await
        .watch_desired_state(WatchDesiredStateRequest {
            node: "s1".into(),
            ..Default::default()
        })
        .await
        .expect("admin watch")
        .into_inner();

    let nqn = create_volume_nqn(&mut admin, "data").await;
    admin
        .create_attachment(CreateAttachmentRequest {
            attachment: Some(attachment("data-ws1", "data", "ws1")),
        })
        .await
        .expect("attachment");

    // The storage node gets the host's key and the subsystem's controller key.
    let ds = until(&mut s1_stream, "host key on s1", |d| host_key(d).is_some()).await;
    let k1 = host_key(&ds).expect("key").clone();
    assert_eq!(k1.generation, 1);
    assert!(k1.secret.starts_with("DHHC-1:01:"), "a DHHC-1 secret");
    assert_eq!(k1.fingerprint.len(), 16);
    let ctrl = ds.exports[0].ctrl_key.clone().expect("controller key");
    assert!(
        ds.exports[0].require_auth,
        "[auth] require is on in a new cluster"
    );
    // Its Debug output (what a log line would show) has no secret.
    assert!(!format!("{ds:?}").contains(&k1.secret));

    // An administrator watching the same node sees the export, no secret.
    let seen = until(&mut admin_view, "export in the admin's view", |d| {
        d.exports
            .first()
            .is_some_and(|e| !e.allowed_hosts.is_empty())
    })
    .await;
    assert!(seen.exports[0].host_keys.is_empty());
    assert!(seen.exports[0].ctrl_key.is_none());
    let got = admin
        .get_desired_state(GetDesiredStateRequest { node: "ws1".into() })
        .await
        .expect("GetDesiredState")
        .into_inner();
    assert!(got.connections.iter().all(|c| c.host_key.is_none()));

    // The workstation gets its key once the storage node holds it.
    s1.report_status(report_held(&nqn, 1))
        .await
        .expect("report");
    let ws = until(&mut ws_stream, "key on ws1", |d| {
        d.connections.first().is_some_and(|c| c.host_key.is_some())
    })
    .await;
    let c = &ws.connections[0];
    assert_eq!(c.host_key.as_ref().expect("host key").secret, k1.secret);
    assert_eq!(c.ctrl_key.as_ref().expect("ctrl key").secret, ctrl.secret);

    // Only an administrator rotates; never a node, never a tenant.
    let e = ctl
        .admin_as("tenant:lab")
        .await
        .rotate_node_key(RotateNodeKeyRequest { node: "ws1".into() })
        .await
        .expect_err("tenant");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = admin
        .rotate_node_key(RotateNodeKeyRequest { node: "s1".into() })
        .await
        .expect_err("a storage node has no host key");
    assert!(e.message().contains("not a workstation"), "{}", e.message());
    let r = admin
        .rotate_node_key(RotateNodeKeyRequest { node: "ws1".into() })
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(r.generation, 2);
    assert!(!format!("{r:?}").contains("DHHC-1"));

    // Storage first ...
    let ds = until(&mut s1_stream, "generation 2 on s1", |d| {
        host_key(d).is_some_and(|k| k.generation == 2)
    })
    .await;
    let k2 = host_key(&ds).expect("key").clone();
    assert_ne!(k2.secret, k1.secret);
    assert_eq!(k2.fingerprint, r.fingerprint);
    // ... the workstation keeps generation 1 until s1 holds 2.
    let early = tokio::time::timeout(
        Duration::from_millis(700),
        until(&mut ws_stream, "generation 2 on ws1 too early", |d| {
            d.connections
                .first()
                .and_then(|c| c.host_key.as_ref())
                .is_some_and(|k| k.generation == 2)
        }),
    )
    .await;
    assert!(early.is_err(), "ws1 got generation 2 before s1 held it");
    s1.report_status(report_held(&nqn, 2))
        .await
        .expect("report");
    let ws = until(&mut ws_stream, "generation 2 on ws1", |d| {
        d.connections
            .first()
            .and_then(|c| c.host_key.as_ref())
            .is_some_and(|k| k.generation == 2)
    })
    .await;
    assert_eq!(
        ws.connections[0].host_key.as_ref().expect("key").secret,
        k2.secret
    );

    // At rest the store holds no secret in clear; the key file is private.
    let store = std::fs::read(ctl.dir.join("store.redb")).expect("store");
    for k in [&k1.secret, &k2.secret, &ctrl.secret] {
        let needle = k.as_bytes();
        assert!(
            !store.windows(needle.len()).any(|w| w == needle),
            "a secret in clear in the store"
        );
    }
}

/// `node`'s desired-state stream, watched as that node.
async fn watch(ctl: &Controller, node: &str) -> tonic::Streaming<DesiredState> {
    ctl.agent_as(&format!("node:{node}"))
        .await
        .watch_desired_state(WatchDesiredStateRequest {
            node: node.into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner()
}

/// Creates volume `name` of tenant lab in p1; its subsystem NQN.
async fn create_volume_nqn(admin: &mut Admin, name: &str) -> String {
    admin
        .create_volume(CreateVolumeRequest {
            volume: Some(volume(name, "lab", "1GiB", "p1")),
            ..Default::default()
        })
        .await
        .expect("volume")
        .into_inner()
        .status
        .expect("status")
        .subsystem_nqn
}

/// Reports that `node` can authenticate.
async fn report_capable(ctl: &Controller, node: &str) {
    ctl.agent_as(&format!("node:{node}"))
        .await
        .report_status(ReportStatusRequest {
            node: node.into(),
            node_status: Some(NodeStatus {
                dhchap_capable: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("report");
}

/// The `authkeys/` records in the stopped controller's store.
fn key_records(ctl: &Controller) -> Vec<String> {
    let store = ferrofab_controller::store::open(
        &ferrofab_controller::store::StoreConfig::default(),
        &ctl.dir.join("store.redb"),
    )
    .expect("open store");
    let (kvs, _) = store.list("authkeys/").expect("list");
    kvs.into_iter().map(|kv| kv.key).collect()
}

/// Which generation each storage node's target holds is in the store: a
/// restarted controller hands the workstation its key at once, before any
/// storage node reported again. And the records of deleted objects go
/// (a workstation's host key, a storage node's held generations, a
/// deleted volume's controller key), level-triggered.
#[tokio::test]
async fn key_records_survive_a_restart_and_go_with_their_objects() {
    let mut ctl = Controller::start();
    let mut admin = ctl.admin().await;
    basic_layout(&mut admin).await;
    admin.create(workstation("ws2")).await.expect("ws2");
    report_capable(&ctl, "ws1").await;
    report_capable(&ctl, "ws2").await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut s1_stream = watch(&ctl, "s1").await;
    let mut vols = Vec::new();
    for name in ["data", "scratch"] {
        vols.push(create_volume_nqn(&mut admin, name).await);
    }
    for (a, v) in [("data-ws1", "data"), ("scratch-ws1", "scratch")] {
        admin
            .create_attachment(CreateAttachmentRequest {
                attachment: Some(attachment(a, v, "ws1")),
            })
            .await
            .expect("attachment");
    }
    until(&mut s1_stream, "both controller keys on s1", |d| {
        d.exports.len() == 2 && d.exports.iter().all(|e| e.ctrl_key.is_some())
    })
    .await;
    s1.report_status(report_held(&vols[0], 1))
        .await
        .expect("report");
    admin
        .rotate_node_key(RotateNodeKeyRequest { node: "ws2".into() })
        .await
        .expect("a key for ws2");
    let m = http_get(&ctl.http, "/metrics");
    for series in [
        "ferrofab_controller_host_key_rotations_total{trigger=\"manual\"} 1",
        "ferrofab_controller_host_key_generation{node=\"ws1\"} 1",
        "ferrofab_controller_host_key_generation{node=\"ws2\"} 1",
        "ferrofab_controller_host_key_issued_timestamp_seconds{node=\"ws1\"}",
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
    }
    assert!(!m.contains("DHHC-1"), "a secret in the metrics");

    ctl.kill9();
    ctl.spawn();
    let m = http_get(&ctl.http, "/metrics");
    assert!(
        m.contains("ferrofab_controller_host_key_generation{node=\"ws2\"} 1"),
        "the key gauges start from the store after a restart:\n{m}"
    );
    let mut ws_stream = watch(&ctl, "ws1").await;
    let first = tokio::time::timeout(Duration::from_secs(10), ws_stream.next())
        .await
        .expect("a snapshot")
        .expect("stream open")
        .expect("state");
    assert!(
        first
            .connections
            .first()
            .is_some_and(|c| c.host_key.as_ref().is_some_and(|k| k.generation == 1)),
        "after a restart the workstation gets its key at once: {:?}",
        first.connections.first().map(|c| c.host_key.is_some())
    );

    // Deleted: workstation ws2 (it has a host key) and volume scratch
    // (its subsystem had a controller key); s1 reports scratch's export
    // gone, as its agent would.
    let mut admin = ctl.admin().await;
    admin.delete::<Node>("ws2").await.expect("delete ws2");
    admin
        .delete::<Attachment>("scratch-ws1")
        .await
        .expect("delete attachment");
    admin
        .delete::<Volume>("scratch")
        .await
        .expect("delete scratch");
    let mut s1 = ctl.agent_as("node:s1").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while admin.get::<Volume>("scratch").await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "scratch not deleted");
        s1.report_status(report_held(&vols[0], 1))
            .await
            .expect("report");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The housekeeping runs at start-up and then every minute: restart.
    ctl.kill9();
    ctl.spawn();
    let _ = ctl.admin().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctl.kill9();
    let records = key_records(&ctl);
    assert!(
        records.contains(&"authkeys/host/ws1".to_string()),
        "{records:?}"
    );
    assert!(
        records.contains(&"authkeys/held/s1".to_string()),
        "{records:?}"
    );
    assert!(
        records.contains(&format!("authkeys/ctrl/{}", vols[0])),
        "{records:?}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r.ends_with("/ws2") || r.contains(&vols[1])),
        "records of deleted objects remain: {records:?}"
    );
}

async fn auth_policy(ctl: &Controller) -> (bool, String) {
    let i = ctl
        .admin()
        .await
        .get_server_info(GetServerInfoRequest::default())
        .await
        .expect("server info")
        .into_inner();
    (i.auth_required, i.auth_required_source)
}

/// `[auth] require` defaults to the cluster's own setting, recorded at its
/// first start: on for a new cluster; off for a store that already had
/// objects without a record (an upgrade locks nobody out); the config key
/// overrides either way. Exports follow it.
#[tokio::test]
async fn authentication_is_required_by_default_in_new_clusters_only() {
    let mut ctl = Controller::start();
    assert_eq!(auth_policy(&ctl).await, (true, "cluster".into()));
    let mut admin = ctl.admin().await;
    basic_layout(&mut admin).await;
    report_capable(&ctl, "ws1").await;
    create_volume_nqn(&mut admin, "data").await;
    let mut s1_stream = watch(&ctl, "s1").await;
    admin
        .create_attachment(CreateAttachmentRequest {
            attachment: Some(attachment("data-ws1", "data", "ws1")),
        })
        .await
        .expect("attachment");
    until(&mut s1_stream, "a required export", |d| {
        d.exports.first().is_some_and(|e| e.require_auth)
    })
    .await;

    // A store from before the setting: objects, no record.
    ctl.kill9();
    {
        let store = ferrofab_controller::store::open(
            &ferrofab_controller::store::StoreConfig::default(),
            &ctl.dir.join("store.redb"),
        )
        .expect("open store");
        let txn = ferrofab_controller::store::Txn::new().delete("authkeys/require");
        store.txn(txn).await.expect("writer").expect("delete");
    }
    ctl.spawn();
    assert_eq!(auth_policy(&ctl).await, (false, "cluster".into()));
    let mut s1_stream = watch(&ctl, "s1").await;
    until(&mut s1_stream, "an optional export", |d| {
        d.exports.first().is_some_and(|e| !e.require_auth)
    })
    .await;
    // Recorded now: a later start keeps it.
    ctl.kill9();
    ctl.spawn();
    assert_eq!(auth_policy(&ctl).await, (false, "cluster".into()));

    // The config key overrides.
    ctl.kill9();
    let cfg = ctl.config_path();
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, format!("{text}\n[auth]\nrequire = true\n")).expect("config");
    ctl.spawn();
    assert_eq!(auth_policy(&ctl).await, (true, "config".into()));
}
