//! Desired state and status flow between the controller and agents:
//! export → ready → connect; detach → disconnect → revoke; burst expiry.

use std::time::Duration;

use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use tokio_stream::StreamExt;

#[tokio::test]
async fn connect_only_after_export_ready_and_revoke_after_disconnect() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut ws1 = ctl.agent_as("node:ws1").await;
    let mut s1_stream = s1.watch_desired("s1").await;
    let mut ws_stream = ws1.watch_desired("ws1").await;
    let first = next(&mut s1_stream).await;
    assert!(first.exports.is_empty());
    assert_eq!(first.listeners.len(), 1);
    assert!(next(&mut ws_stream).await.connections.is_empty());

    let v = admin
        .create(volume("data", "lab", "10GiB", "p1"))
        .await
        .expect("v");
    let nqn = v.status.as_ref().expect("st").subsystem_nqn.clone();
    let ds = next(&mut s1_stream).await;
    assert_eq!(ds.exports.len(), 1);
    let ex = &ds.exports[0];
    assert_eq!((ex.nsid, ex.size_bytes, ex.block_size), (1, 10 << 30, 4096));
    assert_eq!(ex.subsystem_nqn, nqn);
    assert!(ex.backing_path.starts_with("/srv/ferrofab/p1/"));
    assert!(ex.allowed_hosts.is_empty());

    admin
        .create(attachment("data-ws1", "data", "ws1"))
        .await
        .expect("att");
    let ds = next(&mut s1_stream).await;
    assert_eq!(
        ds.exports[0].allowed_hosts,
        vec!["nqn.2014-08.org.nvmexpress:uuid:ws1".to_string()]
    );
    let ws_now = admin.desired_state("ws1").await.expect("ds");
    assert!(
        ws_now.connections.is_empty(),
        "no connect before the export is ready"
    );

    s1.report_status(ReportStatusRequest {
        node: "s1".into(),
        exports: vec![export_ready("data", &nqn)],
        ..Default::default()
    })
    .await
    .expect("report");
    let ws = next(&mut ws_stream).await;
    assert_eq!(ws.connections.len(), 1);
    let conn = &ws.connections[0];
    assert_eq!(
        (
            conn.address.as_str(),
            conn.port,
            conn.exposure_name.as_str()
        ),
        ("127.0.0.1", 4420, "data")
    );
    assert_eq!(conn.subsystem_nqn, nqn);
    assert!(!conn.read_only);
    let v = admin.get::<Volume>("data").await.expect("v");
    assert!(v.status.as_ref().expect("st").export_ready);
    assert_eq!(v.status.expect("st").phase, VolumePhase::Ready as i32);

    ws1.report_status(ReportStatusRequest {
        node: "ws1".into(),
        connections: vec![ConnectionStatus {
            attachment: "data-ws1".into(),
            volume: "data".into(),
            connected: true,
            device_path: "/dev/nvme1n1".into(),
            conditions: vec![],
            size_bytes: 1 << 30,
        }],
        ..Default::default()
    })
    .await
    .expect("ws report");
    let a = admin.get::<Attachment>("data-ws1").await.expect("a");
    assert_eq!(
        a.status.as_ref().expect("st").phase,
        AttachmentPhase::Attached as i32
    );
    let st = a.status.expect("st");
    assert_eq!(st.device_path, "/dev/nvme1n1");
    // The exposed size the workstation reported, for clients that wait
    // for a grow to reach the workstation.
    assert_eq!(st.size_bytes, 1 << 30);

    // Detach: disconnect first, host revoked only after the report.
    admin
        .delete::<Attachment>("data-ws1")
        .await
        .expect("detach");
    let ws = next(&mut ws_stream).await;
    assert!(ws.connections.is_empty(), "told to disconnect");
    let s1_now = admin.desired_state("s1").await.expect("ds");
    assert_eq!(
        s1_now.exports[0].allowed_hosts.len(),
        1,
        "host still allowed until disconnect reported"
    );
    let a = admin
        .get::<Attachment>("data-ws1")
        .await
        .expect("still there");
    assert_eq!(
        a.status.expect("st").phase,
        AttachmentPhase::Detaching as i32
    );
    ws1.report_status(ReportStatusRequest {
        node: "ws1".into(),
        ..Default::default()
    })
    .await
    .expect("disconnected");
    let s1_now = admin.desired_state("s1").await.expect("ds");
    assert!(
        s1_now.exports[0].allowed_hosts.is_empty(),
        "host revoked after disconnect"
    );

    // Volume deletion: the export goes into removals; gone once reported.
    admin.delete::<Volume>("data").await.expect("delete");
    let s1_now = admin.desired_state("s1").await.expect("ds");
    assert!(s1_now.exports.is_empty());
    assert_eq!(s1_now.removals.len(), 1);
    assert!(s1_now.removals[0].delete_data, "reclaim policy delete");
    admin
        .get::<Volume>("data")
        .await
        .expect("held by finalizer");
    s1.report_status(ReportStatusRequest {
        node: "s1".into(),
        ..Default::default()
    })
    .await
    .expect("export gone");
    let e = admin.get::<Volume>("data").await.expect_err("deleted");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let n = admin.get::<Node>("s1").await.expect("node");
    assert!(n.status.expect("st").last_heartbeat.is_some());
}

#[tokio::test]
async fn expired_burst_volume_is_warned_then_detached_and_deleted() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::manual_clock("")).await;
    let mut debug = ctl.debug().await;
    let now = debug
        .advance_clock(AdvanceClockRequest { seconds: 0 })
        .await
        .expect("now")
        .into_inner()
        .now
        .expect("ts")
        .seconds;
    let mut v = volume("burst", "lab", "1GiB", "p1");
    v.spec.as_mut().expect("s").expires_at = Some(prost_types::Timestamp {
        seconds: now + 7200,
        nanos: 0,
    });
    v.spec.as_mut().expect("s").expiry_action = ExpiryAction::Delete as i32;
    admin.create(v).await.expect("v");
    admin
        .create(attachment("burst-ws1", "burst", "ws1"))
        .await
        .expect("att");

    // 1h before expiry (warn window is 1h): Warning condition.
    debug
        .advance_clock(AdvanceClockRequest { seconds: 3700 })
        .await
        .expect("advance");
    let v = admin.get::<Volume>("burst").await.expect("v");
    let c = v
        .status
        .expect("st")
        .conditions
        .into_iter()
        .find(|c| c.r#type == "Expiring")
        .expect("warning");
    assert_eq!(c.severity, Severity::Warning as i32);
    assert!(c.message.contains("detached and deleted"), "{}", c.message);
    // Times read as RFC 3339 plus relative, never epoch seconds.
    assert!(c.message.contains("Z (in 58m)"), "{}", c.message);
    assert!(!c.message.contains(&now.to_string()[..6]), "{}", c.message);

    // Past expires_at but within grace: still there, still attached,
    // and the status says when it goes.
    debug
        .advance_clock(AdvanceClockRequest { seconds: 3600 })
        .await
        .expect("advance");
    let v = admin.get::<Volume>("burst").await.expect("grace");
    let c = condition(&v, "Expired").expect("expired");
    assert_eq!(c.reason, "DeletionScheduled");
    assert!(c.message.contains("Z (in 8m)"), "{}", c.message);
    assert!(condition(&v, "Expiring").is_none());
    assert_eq!(
        v.status
            .expect("st")
            .expiry_deletes_at
            .expect("when")
            .seconds,
        now + 7200 + 600
    );
    admin
        .get::<Attachment>("burst-ws1")
        .await
        .expect("still attached within the grace");

    // Past grace (600 s): never connected, so detach and delete are immediate.
    debug
        .advance_clock(AdvanceClockRequest { seconds: 700 })
        .await
        .expect("advance");
    let e = admin
        .get::<Attachment>("burst-ws1")
        .await
        .expect_err("detached");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = admin.get::<Volume>("burst").await.expect_err("deleted");
    assert_eq!(e.code(), tonic::Code::NotFound);
}

type AdminClient = admin_service_client::AdminServiceClient<tonic::transport::Channel>;

fn condition(v: &Volume, kind: &str) -> Option<Condition> {
    v.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .cloned()
}

async fn attach(admin: &mut AdminClient, name: &str, volume: &str) -> Result<(), tonic::Status> {
    admin
        .create(attachment(name, volume, "ws1"))
        .await
        .map(|_| ())
}

/// The default expiry action: detached at expires_at, data kept for
/// `expiry.retain_grace_seconds` (7 days by default), an extension
/// revives it, then it is deleted.
#[tokio::test]
async fn expired_burst_volume_is_retained_detached_then_extended_then_deleted() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::manual_clock("")).await;
    let mut debug = ctl.debug().await;
    let advance = |seconds| AdvanceClockRequest { seconds };
    let now = debug
        .advance_clock(advance(0))
        .await
        .expect("now")
        .into_inner()
        .now
        .expect("ts")
        .seconds;
    let expires = now + 7200;
    let mut v = volume("keep", "lab", "1GiB", "p1");
    v.spec.as_mut().expect("s").expires_at = Some(prost_types::Timestamp {
        seconds: expires,
        nanos: 0,
    });
    admin.create(v).await.expect("v");
    attach(&mut admin, "keep-ws1", "keep").await.expect("att");
    let get = |admin: &mut AdminClient| {
        let mut admin = admin.clone();
        async move { admin.get::<Volume>("keep").await }
    };

    // Just past expires_at: detached at once (no short grace), data kept.
    debug.advance_clock(advance(7210)).await.expect("advance");
    let e = admin
        .get::<Attachment>("keep-ws1")
        .await
        .expect_err("detached");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let v = get(&mut admin).await.expect("kept");
    let c = condition(&v, "Expired").expect("expired");
    assert_eq!(
        (c.reason.as_str(), c.severity),
        ("Retained", Severity::Warning as i32)
    );
    assert!(c.message.contains("expired at "), "{}", c.message);
    assert!(c.message.contains("Z (10s ago)"), "{}", c.message);
    assert!(c.message.contains("data kept until "), "{}", c.message);
    assert!(c.message.contains("Z (in 7d)"), "{}", c.message);
    assert!(!c.message.contains(&expires.to_string()), "{}", c.message);
    assert_eq!(
        v.status
            .as_ref()
            .expect("st")
            .expiry_deletes_at
            .expect("when")
            .seconds,
        expires + 7 * 86_400
    );
    // The data is still on the storage node: an export, no removal.
    let ds = admin.desired_state("s1").await.expect("ds");
    assert!(ds.exports.iter().any(|x| x.volume == "keep"), "{ds:?}");
    assert!(ds.removals.is_empty(), "{ds:?}");
    // No new attachment while expired; the refusal says how to revive it.
    let e = attach(&mut admin, "again", "keep")
        .await
        .expect_err("expired");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("volume extend keep --by"),
        "{}",
        e.message()
    );

    // Six days later: still there, the message counts down.
    debug
        .advance_clock(advance(6 * 86_400))
        .await
        .expect("advance");
    let v = get(&mut admin).await.expect("kept");
    let c = condition(&v, "Expired").expect("expired");
    assert!(c.message.contains("Z (in 24h)"), "{}", c.message);

    // An administrator extends it by 7 days: alive again at once, and it
    // can be attached again.
    let mut v = v;
    v.spec.as_mut().expect("s").expires_at = Some(prost_types::Timestamp {
        seconds: expires + 7 * 86_400,
        nanos: 0,
    });
    let v = admin.update(v).await.expect("extend");
    assert!(condition(&v, "Expired").is_none(), "{:?}", v.status);
    assert_eq!(v.status.as_ref().expect("st").expiry_deletes_at, None);
    attach(&mut admin, "keep-ws1", "keep")
        .await
        .expect("re-attach");

    // Expires again, then the retain grace runs out: deleted.
    debug.advance_clock(advance(86_400)).await.expect("advance");
    let v = get(&mut admin).await.expect("kept");
    assert_eq!(
        condition(&v, "Expired").expect("expired").reason,
        "Retained"
    );
    debug
        .advance_clock(advance(7 * 86_400))
        .await
        .expect("advance");
    let e = get(&mut admin).await.expect_err("deleted");
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn debug_service_is_absent_without_the_test_flag() {
    let ctl = Controller::start();
    let e = ctl
        .debug()
        .await
        .advance_clock(AdvanceClockRequest { seconds: 1 })
        .await
        .expect_err("absent");
    assert_eq!(e.code(), tonic::Code::Unimplemented);
}

fn ready_condition(n: &Node) -> Option<Condition> {
    n.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .cloned()
}

#[tokio::test]
async fn silent_node_becomes_not_ready_and_gets_no_new_volumes() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::manual_clock(
        "[nodes]\nheartbeat_timeout_seconds = 45\ncheck_interval_seconds = 1\n",
    ))
    .await;
    let mut debug = ctl.debug().await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let report = ReportStatusRequest {
        node: "s1".into(),
        ..Default::default()
    };
    s1.report_status(report.clone()).await.expect("report");
    debug
        .advance_clock(AdvanceClockRequest { seconds: 50 })
        .await
        .expect("advance");
    let mut cond = None;
    for _ in 0..50 {
        let n = admin.get::<Node>("s1").await.expect("node");
        cond = ready_condition(&n);
        if cond
            .as_ref()
            .is_some_and(|c| c.status == ConditionStatus::False as i32)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cond = cond.expect("Ready condition");
    assert_eq!(cond.status, ConditionStatus::False as i32, "{cond:?}");
    assert_eq!(cond.reason, "NoHeartbeat");
    assert!(cond.message.contains("no heartbeat for 50s"), "{cond:?}");

    let e = admin
        .create(volume("v1", "lab", "1GiB", "p1"))
        .await
        .expect_err("placed on a silent node");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("NotReady"), "{}", e.message());

    s1.report_status(report).await.expect("report again");
    let n = admin.get::<Node>("s1").await.expect("node");
    assert_eq!(
        ready_condition(&n).map(|c| c.status),
        Some(ConditionStatus::True as i32)
    );
    admin
        .create(volume("v1", "lab", "1GiB", "p1"))
        .await
        .expect("placed once the node is back");
}

/// Open desired-state and watch streams never end by themselves; SIGTERM
/// must end them rather than wait for every agent to hang up.
#[tokio::test]
async fn sigterm_exits_promptly_with_streams_open() {
    let mut ctl = Controller::start();
    let mut admin = ctl.admin().await;
    basic_layout(&mut admin).await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut desired = s1.watch_desired("s1").await;
    next(&mut desired).await;
    let mut events = admin
        .watch_volumes(WatchRequest {
            from_revision: 0,
            label_selector: String::new(),
        })
        .await
        .expect("watch volumes")
        .into_inner();
    let synced = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("snapshot in time");
    assert!(synced.is_some(), "watch stream open");

    let status = tokio::task::spawn_blocking(move || ctl.terminate(Duration::from_secs(10)))
        .await
        .expect("join");
    let status = status.expect("controller still running 10 s after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    // Both streams end (cleanly or with an error), not hang.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = desired.next().await {}
        while let Some(Ok(_)) = events.next().await {}
    })
    .await;
    assert!(end.is_ok(), "streams did not end after shutdown");
}

/// The allowed hosts of `node`'s first export, as its desired state says.
async fn first_export_hosts(
    admin: &mut ferrofab_proto::v1::admin_service_client::AdminServiceClient<
        tonic::transport::Channel,
    >,
    node: &str,
) -> Vec<String> {
    let ds = admin.desired_state(node).await.expect("desired state");
    ds.exports[0].allowed_hosts.clone()
}

/// An attachment to a volume that is already exported reaches the
/// workstation at once, while still Pending: deleting it before the
/// workstation reports must still wait for the disconnect before the host
/// is revoked (revoking first cuts a live connection).
#[tokio::test]
async fn pending_attachment_to_exported_volume_waits_for_disconnect() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut ws1 = ctl.agent_as("node:ws1").await;
    let v = admin
        .create(volume("data", "lab", "10GiB", "p1"))
        .await
        .expect("v");
    let nqn = v.status.expect("st").subsystem_nqn;
    s1.report_status(ReportStatusRequest {
        node: "s1".into(),
        exports: vec![export_ready("data", &nqn)],
        ..Default::default()
    })
    .await
    .expect("export ready");
    let att = attachment("data-ws1", "data", "ws1");
    admin.create(att).await.expect("att");
    let ws = admin.desired_state("ws1").await.expect("ds");
    assert_eq!(ws.connections.len(), 1, "handed to the workstation at once");

    let name = GetAttachmentRequest {
        name: "data-ws1".into(),
    };
    admin
        .delete::<Attachment>(name.name.clone())
        .await
        .expect("detach");
    let a = admin.get_attachment(name.clone()).await.expect("kept");
    let phase = a.into_inner().status.expect("st").phase;
    assert_eq!(phase, AttachmentPhase::Detaching as i32);
    assert_eq!(first_export_hosts(&mut admin, "s1").await.len(), 1);

    ws1.report_status(ReportStatusRequest {
        node: "ws1".into(),
        ..Default::default()
    })
    .await
    .expect("disconnected");
    assert!(first_export_hosts(&mut admin, "s1").await.is_empty());
    let gone = admin.get_attachment(name).await;
    assert_eq!(gone.expect_err("removed").code(), tonic::Code::NotFound);
}

fn exported_for(volume: &str, nqn: &str, generation: u64, msg: &str) -> ExportStatus {
    ExportStatus {
        conditions: vec![Condition {
            r#type: "Exported".into(),
            status: ConditionStatus::True as i32,
            reason: "ExportReady".into(),
            message: msg.into(),
            ..Default::default()
        }],
        generation,
        ..export_ready(volume, nqn)
    }
}

/// A resize is observed only once the storage node reports the export
/// ready for the new generation; the `Exported` message follows each
/// report; a status write does not bump the generation.
#[tokio::test]
async fn observed_generation_follows_the_generation_the_agent_confirms() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let v = admin
        .create(volume("data", "lab", "1GiB", "p1"))
        .await
        .expect("v");
    let nqn = v.status.as_ref().expect("st").subsystem_nqn.clone();
    let get = |mut a: admin_service_client::AdminServiceClient<tonic::transport::Channel>| async move {
        let v = a.get::<Volume>("data").await.expect("get");
        let st = v.status.clone().expect("st");
        let msg = st
            .conditions
            .iter()
            .find(|c| c.r#type == "Exported")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        (v, st.observed_generation, msg)
    };
    let report = |e: ExportStatus| ReportStatusRequest {
        node: "s1".into(),
        exports: vec![e],
        ..Default::default()
    };
    s1.report_status(report(exported_for("data", &nqn, 1, "1 GiB")))
        .await
        .expect("report");
    let (mut v, observed, msg) = get(admin.clone()).await;
    assert_eq!((observed, msg.as_str()), (1, "1 GiB"));

    v.spec.as_mut().expect("spec").size = "2GiB".into();
    admin.update(v).await.expect("resize");
    let ds = admin.desired_state("s1").await.expect("ds");
    assert_eq!(
        ds.exports[0].generation, 2,
        "the export carries the generation"
    );

    s1.report_status(report(exported_for("data", &nqn, 1, "1 GiB")))
        .await
        .expect("stale report");
    let (_, observed, _) = get(admin.clone()).await;
    assert_eq!(observed, 1, "a report about generation 1 observes nothing");

    s1.report_status(report(exported_for("data", &nqn, 2, "2 GiB")))
        .await
        .expect("report");
    let (v, observed, msg) = get(admin.clone()).await;
    assert_eq!((observed, msg.as_str()), (2, "2 GiB"));
    assert_eq!(
        v.metadata.expect("meta").generation,
        2,
        "status writes keep it"
    );

    s1.report_status(report(exported_for("data", &nqn, 2, "2 GiB, 1 connected")))
        .await
        .expect("report");
    let (_, _, msg) = get(admin.clone()).await;
    assert_eq!(msg, "2 GiB, 1 connected", "refreshed without a spec change");
}
