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
    let mut ws1 = ctl.agent_as("node:ws1").await;
    // The workstation says it can authenticate (built-in initiator).
    ws1.report_status(ReportStatusRequest {
        node: "ws1".into(),
        node_status: Some(NodeStatus {
            dhchap_capable: true,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("ws1 report");
    let mut s1_stream = s1
        .watch_desired_state(WatchDesiredStateRequest {
            node: "s1".into(),
            ..Default::default()
        })
        .await
        .expect("s1 watch")
        .into_inner();
    let mut ws_stream = ws1
        .watch_desired_state(WatchDesiredStateRequest {
            node: "ws1".into(),
            ..Default::default()
        })
        .await
        .expect("ws watch")
        .into_inner();
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

    let v = admin
        .create_volume(CreateVolumeRequest {
            volume: Some(volume("data", "lab", "1GiB", "p1")),
            ..Default::default()
        })
        .await
        .expect("volume")
        .into_inner();
    let nqn = v.status.expect("status").subsystem_nqn;
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
        !ds.exports[0].require_auth,
        "[auth] require is off by default"
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
