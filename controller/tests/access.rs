//! Access modes of attachments and the fence of a move (issue 13, items 3
//! and 4): conflicting attachments are refused on every path with the
//! holder named, and a moved read-write attachment reaches its new node
//! only once the storage node proved the old host revoked and gone.

use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use tonic::Code;

const WS1: &str = "nqn.2014-08.org.nvmexpress:uuid:ws1";
const WS2: &str = "nqn.2014-08.org.nvmexpress:uuid:ws2";

/// basic_layout plus workstations ws2 and ws3 allowed by "lab", and lab's
/// volume "v".
async fn layout(c: &mut Admin) -> String {
    basic_layout(c).await;
    for ws in ["ws2", "ws3"] {
        c.create(workstation(ws)).await.expect("workstation");
    }
    let mut t = c.get::<Tenant>("lab").await.expect("lab");
    t.spec.as_mut().expect("spec").allowed_nodes = vec!["ws1".into(), "ws2".into(), "ws3".into()];
    c.update(t).await.expect("tenant update");
    let v = c
        .create(volume("v", "lab", "1GiB", "p1"))
        .await
        .expect("volume");
    v.status.expect("status").subsystem_nqn
}

/// A controller with [`layout`]: its admin client and volume v's NQN.
async fn start() -> (Controller, Admin, String) {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    let nqn = layout(&mut c).await;
    (ctl, c, nqn)
}

/// Creates attachment "a" of volume "v" on `node` through `c`.
async fn attach_a(c: &mut Admin, node: &str, mode: AccessMode) {
    c.create(att("a", node, mode)).await.expect("attach");
}

/// The storage node's report ([`s1_report`]) sent by s1.
async fn s1_says(s1: &mut Agent, nqn: &str, rev: u64, allowed: &[&str], connected: &[&str]) {
    s1.report_status(s1_report(nqn, rev, allowed, connected))
        .await
        .expect("s1 report");
}

fn att(name: &str, node: &str, mode: AccessMode) -> Attachment {
    let mut a = attachment(name, "v", node);
    a.spec.as_mut().expect("spec").mode = mode as i32;
    a
}

async fn create(c: &mut Admin, a: Attachment) -> Result<Attachment, tonic::Status> {
    c.create(a).await
}

async fn get_att(c: &mut Admin, name: &str) -> Attachment {
    c.get::<Attachment>(name).await.expect("get attachment")
}

async fn delete(c: &mut Admin, name: &str) {
    c.delete::<Attachment>(name).await.expect("delete");
}

/// Apply of one attachment, dry and real, refuses with the typed message.
async fn apply_refuses(c: &mut Admin, a: Attachment, typed: &tonic::Status) {
    for dry_run in [true, false] {
        let e = c
            .apply_layout(
                Layout {
                    attachments: vec![a.clone()],
                    ..Default::default()
                },
                dry_run,
            )
            .await
            .expect_err("apply must refuse the conflict");
        assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
        assert!(
            e.message().ends_with(typed.message()),
            "dry_run={dry_run}: {} vs {}",
            e.message(),
            typed.message()
        );
    }
}

#[tokio::test]
async fn conflicting_attachments_are_refused_naming_the_holder() {
    let (ctl, mut c, _) = start().await;
    create(&mut c, att("v-ws1", "ws1", AccessMode::Unspecified))
        .await
        .expect("first read-write attachment");

    // A second read-write attachment on another node.
    let second = att("v-ws2", "ws2", AccessMode::ReadWrite);
    let e = create(&mut c, second.clone())
        .await
        .expect_err("second writer refused");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "volume \"v\" is attached read-write to node \"ws1\" (attachment \"v-ws1\"); \
         detach it first or run: ferrofab volume move v --to ws2"
    );
    apply_refuses(&mut c, second, &e).await;

    // Read-only on another node is refused too while a writer holds it.
    let e = create(&mut c, att("v-ro", "ws2", AccessMode::ReadOnly))
        .await
        .expect_err("RO beside RW refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());

    // The same node may attach again (re-create after a delete too).
    create(&mut c, att("v-ws1-ro", "ws1", AccessMode::ReadOnly))
        .await
        .expect("same node");

    // The volume's tenant learns the holder too (its own volume).
    let mut lab = ctl.admin_as("tenant:lab").await;
    let e = create(&mut lab, att("v-lab", "ws3", AccessMode::ReadWrite))
        .await
        .expect_err("tenant refused");
    assert!(e.message().contains("\"ws1\""), "{}", e.message());

    // Gone writer: readers on many nodes.
    for n in ["v-ws1", "v-ws1-ro"] {
        delete(&mut c, n).await;
    }
    for (name, ws) in [("r1", "ws1"), ("r2", "ws2")] {
        create(&mut c, att(name, ws, AccessMode::ReadOnly))
            .await
            .expect("RO + RO");
    }
    create(&mut c, att("m3", "ws3", AccessMode::ReadWriteMany))
        .await
        .expect("RWX beside RO");
    let e = create(&mut c, att("w3", "ws3", AccessMode::ReadWrite))
        .await
        .expect_err("RW beside readers");
    assert!(e.message().contains("read-only"), "{}", e.message());

    // Readers and clustered writers are served accordingly.
    let ds = c.desired_state("s1").await.expect("ds");
    let ex = &ds.exports[0];
    assert_eq!(ex.allowed_hosts.len(), 3);
    assert_eq!(ex.read_only_hosts, vec![WS1.to_string(), WS2.to_string()]);
}

#[tokio::test]
async fn many_writers_only_by_opt_in() {
    let (_ctl, mut c, _) = start().await;
    for (name, ws) in [("m1", "ws1"), ("m2", "ws2")] {
        create(&mut c, att(name, ws, AccessMode::ReadWriteMany))
            .await
            .expect("RWX + RWX");
    }
    let e = create(&mut c, att("w3", "ws3", AccessMode::ReadWrite))
        .await
        .expect_err("RW beside RWX");
    assert!(e.message().contains("read-write-many"), "{}", e.message());
}

/// The storage node's report: ready, with what the target allows and has
/// connected, made against desired state `rev`.
fn s1_report(nqn: &str, rev: u64, allowed: &[&str], connected: &[&str]) -> ReportStatusRequest {
    ReportStatusRequest {
        node: "s1".into(),
        exports: vec![ExportStatus {
            volume: "v".into(),
            subsystem_nqn: nqn.into(),
            ready: true,
            generation: 1,
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            connected_hosts: connected.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }],
        desired_revision: rev,
        ..Default::default()
    }
}

fn ws_report(node: &str, connected: bool) -> ReportStatusRequest {
    ReportStatusRequest {
        node: node.into(),
        connections: if connected {
            vec![ConnectionStatus {
                attachment: "a".into(),
                volume: "v".into(),
                connected: true,
                device_path: "/run/ferrofab/v".into(),
                conditions: vec![],
                size_bytes: 0,
            }]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

/// Whether the move of attachment "a" has released its old node.
async fn released(c: &mut Admin) -> bool {
    let a = get_att(c, "a").await;
    a.status.expect("st").moved_from_released
}

async fn desired(c: &mut Admin, node: &str) -> DesiredState {
    c.desired_state(node).await.expect("ds")
}

async fn move_to(c: &mut Admin, to: &str, force: bool) -> Attachment {
    let mut a = get_att(c, "a").await;
    a.spec.as_mut().expect("spec").node = to.into();
    c.update_attachment(UpdateAttachmentRequest {
        attachment: Some(a),
        force,
    })
    .await
    .expect("move")
    .into_inner()
}

/// The fence rule: the new node gets no connection until the storage
/// node's report, made against a desired state that no longer allows the
/// old host, shows that host neither allowed nor connected.
#[tokio::test]
async fn a_move_connects_the_new_node_only_after_the_old_host_is_fenced() {
    let (ctl, mut c, nqn) = start().await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut ws1 = ctl.agent_as("node:ws1").await;
    let mut ws2 = ctl.agent_as("node:ws2").await;
    attach_a(&mut c, "ws1", AccessMode::ReadWrite).await;
    let rev = desired(&mut c, "s1").await.revision;
    s1_says(&mut s1, &nqn, rev, &[WS1], &[]).await;
    ws1.report_status(ws_report("ws1", true))
        .await
        .expect("ws1 connected");
    assert_eq!(desired(&mut c, "ws1").await.connections.len(), 1);

    let moved = move_to(&mut c, "ws2", false).await;
    let st = moved.status.expect("status");
    assert_eq!(st.moved_from_node, "ws1");
    assert!(!st.moved_from_released);
    assert!(
        desired(&mut c, "ws1").await.connections.is_empty(),
        "old node told to disconnect"
    );
    assert!(
        desired(&mut c, "ws2").await.connections.is_empty(),
        "fenced"
    );
    let ex = desired(&mut c, "s1").await.exports.remove(0);
    assert!(
        ex.allowed_hosts.contains(&WS1.to_string()),
        "old host kept until it disconnects"
    );

    // ws1 still reports the connection: nothing moves.
    ws1.report_status(ws_report("ws1", true)).await.expect("r");
    assert!(desired(&mut c, "s1").await.exports[0]
        .allowed_hosts
        .contains(&WS1.to_string()));
    // ws1 disconnected: its host is revoked on the export.
    let mut gone = ws_report("ws1", false);
    gone.desired_revision = desired(&mut c, "ws1").await.revision;
    ws1.report_status(gone).await.expect("r");
    let ds = desired(&mut c, "s1").await;
    assert_eq!(ds.exports[0].allowed_hosts, vec![WS2.to_string()]);
    let a = get_att(&mut c, "a").await.status.expect("status");
    assert!(a.moved_from_released && a.fence_revision > 0);
    assert!(desired(&mut c, "ws2").await.connections.is_empty());

    // A report against an older desired state proves nothing, nor one
    // where the old host is still connected (or still allowed).
    s1_says(&mut s1, &nqn, a.fence_revision - 1, &[WS2], &[]).await;
    assert!(
        desired(&mut c, "ws2").await.connections.is_empty(),
        "stale report"
    );
    s1_says(&mut s1, &nqn, ds.revision, &[WS2], &[WS1]).await;
    assert!(
        desired(&mut c, "ws2").await.connections.is_empty(),
        "still connected"
    );
    s1_says(&mut s1, &nqn, ds.revision, &[WS1, WS2], &[]).await;
    assert!(
        desired(&mut c, "ws2").await.connections.is_empty(),
        "still allowed"
    );
    // A workstation's word about the export counts for nothing.
    let mut fake = s1_report(&nqn, ds.revision, &[WS2], &[]);
    fake.node = "ws2".into();
    ws2.report_status(fake).await.expect("r");
    assert!(
        desired(&mut c, "ws2").await.connections.is_empty(),
        "not the storage node"
    );

    s1_says(&mut s1, &nqn, ds.revision, &[WS2], &[]).await;
    let conns = desired(&mut c, "ws2").await.connections;
    assert_eq!(conns.len(), 1, "fenced: the new node connects");
    assert!(!conns[0].read_only);
    let a = get_att(&mut c, "a").await.status.expect("status");
    assert!(a.moved_from_node.is_empty());
}

/// The old workstation releases its host only by a report made after it
/// saw the move and no longer listing the attachment: "listed but not
/// connected" (reconnecting) or a stale report keeps the host allowed.
#[tokio::test]
async fn a_move_is_released_only_by_a_current_report_without_the_attachment() {
    let (ctl, mut c, nqn) = start().await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut ws1 = ctl.agent_as("node:ws1").await;
    attach_a(&mut c, "ws1", AccessMode::ReadWrite).await;
    let rev = desired(&mut c, "s1").await.revision;
    s1_says(&mut s1, &nqn, rev, &[WS1], &[]).await;
    ws1.report_status(ws_report("ws1", true)).await.expect("r");
    move_to(&mut c, "ws2", false).await;
    let rev = desired(&mut c, "ws1").await.revision;
    let still_allowed = |ds: DesiredState| ds.exports[0].allowed_hosts.contains(&WS1.to_string());

    // Still listed, not connected (reconnecting): not released.
    let mut blip = ws_report("ws1", true);
    blip.connections[0].connected = false;
    blip.desired_revision = rev;
    ws1.report_status(blip).await.expect("r");
    assert!(
        still_allowed(desired(&mut c, "s1").await),
        "listed, reconnecting"
    );
    assert!(!released(&mut c).await);

    // Absent, but made before ws1 saw the move: not released.
    let mut stale = ws_report("ws1", false);
    let moved_at = get_att(&mut c, "a").await.status.expect("st").move_revision;
    assert!(moved_at > 0 && moved_at <= rev, "move revision recorded");
    stale.desired_revision = moved_at - 1;
    ws1.report_status(stale).await.expect("r");
    assert!(still_allowed(desired(&mut c, "s1").await), "stale report");
    assert!(!released(&mut c).await);

    // Absent, made against the move: released.
    let mut gone = ws_report("ws1", false);
    gone.desired_revision = rev;
    ws1.report_status(gone).await.expect("r");
    assert!(!still_allowed(desired(&mut c, "s1").await), "released");
    assert!(released(&mut c).await);
}

#[tokio::test]
async fn a_forced_move_revokes_the_old_host_at_once() {
    let (ctl, mut c, nqn) = start().await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut s1_stream = s1.watch_desired("s1").await;
    next(&mut s1_stream).await;
    attach_a(&mut c, "ws1", AccessMode::ReadWrite).await;
    let rev = desired(&mut c, "s1").await.revision;
    s1_says(&mut s1, &nqn, rev, &[WS1], &[WS1]).await;

    // ws1 is down: it will never report the disconnect.
    let moved = move_to(&mut c, "ws2", true).await;
    let st = moved.status.expect("status");
    assert!(st.moved_from_released && st.fence_revision > 0, "{st:?}");
    let ds = desired(&mut c, "s1").await;
    assert_eq!(
        ds.exports[0].allowed_hosts,
        vec![WS2.to_string()],
        "revoked at once"
    );
    assert!(desired(&mut c, "ws2").await.connections.is_empty());
    s1_says(&mut s1, &nqn, ds.revision, &[WS2], &[]).await;
    assert_eq!(desired(&mut c, "ws2").await.connections.len(), 1);

    // Moving to a node the tenant does not allow, or onto a reader's
    // conflict, is refused like a creation.
    let mut a = get_att(&mut c, "a").await;
    a.spec.as_mut().expect("spec").node = "s1".into();
    let e = c
        .update_attachment(UpdateAttachmentRequest {
            attachment: Some(a),
            force: false,
        })
        .await
        .expect_err("not allowed");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
}

/// A move through Apply (a changed node in the layout) is the same move.
#[tokio::test]
async fn apply_moves_an_attachment() {
    let (_ctl, mut c, _) = start().await;
    attach_a(&mut c, "ws1", AccessMode::ReadWrite).await;
    let r = c
        .apply_layout(
            Layout {
                attachments: vec![att("a", "ws2", AccessMode::ReadWrite)],
                ..Default::default()
            },
            false,
        )
        .await
        .expect("apply move");
    assert_eq!(r.diffs.len(), 1);
    let a = get_att(&mut c, "a").await;
    assert_eq!(a.spec.expect("spec").node, "ws2");
    // Never connected on ws1 (no export ready yet), but fenced all the
    // same until ws1 reports.
    assert_eq!(a.status.expect("status").moved_from_node, "ws1");
}

/// Readers and clustered writers move without a fence (they may overlap),
/// but the status no longer claims the old node's exposure.
#[tokio::test]
async fn a_reader_moves_without_a_fence() {
    let (_ctl, mut c, _) = start().await;
    attach_a(&mut c, "ws1", AccessMode::ReadOnly).await;
    let moved = move_to(&mut c, "ws2", false).await;
    let st = moved.status.expect("status");
    assert!(st.moved_from_node.is_empty(), "{st:?}");
    assert_eq!(st.phase, AttachmentPhase::Pending as i32);
    assert!(st.device_path.is_empty());
}

/// A move is checked like a creation on the new node: a node identity may
/// hold attachments only for itself, so it cannot hand its own over.
#[tokio::test]
async fn a_node_cannot_move_its_attachment_to_another_node() {
    let (ctl, mut c, _) = start().await;
    let mut ws1 = ctl.admin_as("node:ws1").await;
    attach_a(&mut ws1, "ws1", AccessMode::ReadWrite).await;
    let mut a = get_att(&mut c, "a").await;
    a.spec.as_mut().expect("spec").node = "ws2".into();
    let e = ws1
        .update_attachment(UpdateAttachmentRequest {
            attachment: Some(a),
            force: false,
        })
        .await
        .expect_err("node moving its attachment away");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    let a = get_att(&mut c, "a").await;
    assert_eq!(a.spec.expect("spec").node, "ws1", "not moved");
}

/// An expired volume's attachment cannot move, as it could not be created.
#[tokio::test]
async fn an_expired_volumes_attachment_cannot_move() {
    let (_ctl, mut c, _) = start().await;
    attach_a(&mut c, "ws1", AccessMode::ReadWrite).await;
    let mut v = c.get::<Volume>("v").await.expect("v");
    v.spec.as_mut().expect("spec").expires_at = Some(prost_types::Timestamp {
        seconds: 1_000,
        nanos: 0,
    });
    c.update_volume_with(v, false).await.expect("expire");
    let mut a = get_att(&mut c, "a").await;
    a.spec.as_mut().expect("spec").node = "ws2".into();
    let e = c
        .update_attachment(UpdateAttachmentRequest {
            attachment: Some(a),
            force: false,
        })
        .await
        .expect_err("moving an expired volume's attachment");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("expired"), "{}", e.message());
}

/// Attach latency (issue 20, item 7): a storage node that reports its
/// allowed hosts gets the workstation's host first; the workstation is
/// told to connect only once that node reported the host allowed, so its
/// first connect is not refused. Older storage agents are not waited for.
#[tokio::test]
async fn a_workstation_connects_only_once_the_storage_node_admitted_its_host() {
    let (ctl, mut c, nqn) = start().await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let reports_hosts = |allowed: &[&str]| ReportStatusRequest {
        node_status: Some(NodeStatus {
            reports_allowed_hosts: true,
            ..Default::default()
        }),
        ..s1_report(&nqn, 0, allowed, &[])
    };
    s1.report_status(reports_hosts(&[]))
        .await
        .expect("export ready, no host");
    attach_a(&mut c, "ws1", AccessMode::ReadWrite).await;
    let ex = desired(&mut c, "s1").await.exports.remove(0);
    assert_eq!(
        ex.allowed_hosts,
        vec![WS1.to_string()],
        "host allowed first"
    );
    assert!(
        desired(&mut c, "ws1").await.connections.is_empty(),
        "no connection before the storage node admits the host"
    );
    // A report that does not list the host yet admits nothing.
    s1.report_status(reports_hosts(&[])).await.expect("report");
    assert!(desired(&mut c, "ws1").await.connections.is_empty());
    s1.report_status(reports_hosts(&[WS1]))
        .await
        .expect("host admitted");
    assert_eq!(
        get_att(&mut c, "a").await.status.expect("st").admitted_host,
        WS1
    );
    assert_eq!(desired(&mut c, "ws1").await.connections.len(), 1);
    // A later report without the host (a restarting target) does not
    // withdraw the connection.
    s1.report_status(reports_hosts(&[])).await.expect("report");
    assert_eq!(desired(&mut c, "ws1").await.connections.len(), 1);
}
