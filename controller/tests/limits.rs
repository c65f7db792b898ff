//! Hardening (issue 12): what one client, node or raw TCP peer may hold
//! open or send is bounded, and the limits are visible in /metrics.

use std::time::{Duration, Instant};

use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use ferrofab_testkit::process::closed_by_peer;
use tokio_stream::StreamExt;

/// The value of an unlabelled metric (`ferrofab_controller_` + `name`).
fn metric(ctl: &Controller, name: &str) -> f64 {
    let full = format!("ferrofab_controller_{name} ");
    let body = http_get(&ctl.http, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&full))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
}

/// Polls `name` until it equals `want` or `limit` passes; returns the last
/// value seen.
async fn wait_metric(ctl: &Controller, name: &str, want: f64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let v = metric(ctl, name);
        if v == want || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn watch_all() -> WatchRequest {
    WatchRequest {
        from_revision: 0,
        label_selector: String::new(),
    }
}

/// Opens `n` WatchVolumes streams and reads each one's Synced marker, so
/// the server-side task is running when this returns.
async fn open_watches(
    c: &mut ferrofab_proto::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    n: usize,
) -> Vec<tonic::Streaming<WatchEvent>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut w = c
            .watch_volumes(watch_all())
            .await
            .expect("watch")
            .into_inner();
        let synced = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("synced in time")
            .expect("open")
            .expect("event");
        assert_eq!(synced.r#type, EventType::Synced as i32);
        out.push(w);
    }
    out
}

/// A node certificate sees no volume events while no volume is on it: its
/// watch tasks used to stay alive forever after the client cancelled,
/// because they only noticed when trying to send. They must end when the
/// client goes, and one identity may hold only so many at once.
#[tokio::test]
async fn cancelled_watches_end_and_are_capped_per_identity() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options {
        extra_toml: "[server]\nmax_watches_per_identity = 16\n".into(),
        ..Default::default()
    })
    .await;
    let mut node = ctl.admin_as("node:s1").await;
    for round in 0..5 {
        let watches = open_watches(&mut node, 16).await;
        assert_eq!(metric(&ctl, "watch_streams"), 16.0, "round {round}");
        // Writes the node may not see: nothing is ever sent on its streams.
        admin
            .create(tenant(&format!("t{round}"), "", 0, &[]))
            .await
            .expect("tenant");
        drop(watches);
        let left = wait_metric(&ctl, "watch_streams", 0.0, Duration::from_secs(5)).await;
        assert_eq!(
            left, 0.0,
            "round {round}: watch tasks outlived their clients"
        );
    }

    let _held = open_watches(&mut node, 16).await;
    let e = node
        .watch_volumes(watch_all())
        .await
        .expect_err("17th watch refused");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("max_watches_per_identity = 16") && e.message().contains("node:s1"),
        "{}",
        e.message()
    );
    assert_eq!(metric(&ctl, "watch_refused_total"), 1.0);
    // Desired-state streams count against the same allowance.
    let mut agent = ctl.agent_as("node:s1").await;
    let e = agent
        .watch_desired_state(WatchDesiredStateRequest {
            node: "s1".into(),
            ..Default::default()
        })
        .await
        .expect_err("over the cap");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    // Another identity has its own allowance.
    let mut w = admin
        .watch_volumes(watch_all())
        .await
        .expect("admin watch")
        .into_inner();
    assert!(w.message().await.expect("event").is_some());
}

/// Raw TCP connections that never send a ClientHello are closed after the
/// handshake timeout; beyond the connection cap they are closed at once;
/// a real client still gets through afterwards.
#[tokio::test]
async fn silent_connections_time_out_and_are_capped() {
    let ctl = Controller::start_with(Options {
        extra_toml: "[server]\nmax_connections = 20\ntls_handshake_timeout_ms = 1500\n".into(),
        ..Default::default()
    });
    let started = Instant::now();
    let mut idle: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(&ctl.addr).expect("connect"))
        .collect();
    assert_eq!(
        wait_metric(&ctl, "grpc_connections", 20.0, Duration::from_secs(5)).await,
        20.0
    );
    for i in 0..5 {
        let mut extra = std::net::TcpStream::connect(&ctl.addr).expect("connect");
        assert!(
            closed_by_peer(&mut extra, Duration::from_secs(1)),
            "connection {i} beyond the cap stayed open"
        );
    }
    assert_eq!(
        wait_metric(
            &ctl,
            "grpc_connections_refused_total",
            5.0,
            Duration::from_secs(5)
        )
        .await,
        5.0
    );
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_peer(s, Duration::from_secs(10)),
            "silent connection {i} still open"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "closed before the timeout: {took:?}"
    );
    assert_eq!(
        wait_metric(
            &ctl,
            "tls_handshake_timeouts_total",
            20.0,
            Duration::from_secs(5)
        )
        .await,
        20.0
    );
    assert_eq!(
        wait_metric(&ctl, "grpc_connections", 0.0, Duration::from_secs(5)).await,
        0.0
    );
    let mut admin = ctl.admin().await;
    admin
        .list_nodes(ListNodesRequest::default())
        .await
        .expect("a real client still works");
    assert_eq!(metric(&ctl, "grpc_connections"), 1.0);
}

fn cond(kind: &str, ok: bool, message: &str) -> Condition {
    Condition {
        r#type: kind.into(),
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        } as i32,
        reason: "Test".into(),
        message: message.into(),
        ..Default::default()
    }
}

fn junk(prefix: &str, n: usize) -> Vec<Condition> {
    (0..n)
        .map(|i| cond(&format!("{prefix}{i}"), true, &"x".repeat(1000)))
        .collect()
}

fn types(conds: &[Condition]) -> Vec<&str> {
    conds.iter().map(|c| c.r#type.as_str()).collect()
}

async fn get_node(
    c: &mut ferrofab_proto::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    name: &str,
) -> Node {
    c.get::<Node>(name).await.expect("node")
}

/// A node used to be able to add any number of condition types to its
/// Node and its volumes, kept forever: two reports made the Node 6 MB and
/// `node list` failed for everyone. Only known types are kept, the
/// reported set replaces the previous one, and messages are bounded.
#[tokio::test]
async fn node_reports_keep_only_known_conditions_and_replace_them() {
    use prost::Message;
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut conditions = junk("Junk", 400);
    conditions.push(cond("DataPath", false, &"é".repeat(3000)));
    let report = |conditions: Vec<Condition>, exports: Vec<ExportStatus>| ReportStatusRequest {
        node: "s1".into(),
        node_status: Some(NodeStatus {
            conditions,
            ..Default::default()
        }),
        exports,
        ..Default::default()
    };
    s1.report_status(report(conditions, vec![]))
        .await
        .expect("report");
    s1.report_status(report(junk("More", 400), vec![]))
        .await
        .expect("second report");
    let n = get_node(&mut admin, "s1").await;
    let st = n.status.clone().expect("status");
    assert_eq!(
        types(&st.conditions),
        ["Ready"],
        "junk dropped; DataPath no longer reported, so gone"
    );
    assert!(n.encoded_len() < 4096, "Node is {} bytes", n.encoded_len());
    assert_eq!(metric(&ctl, "report_conditions_dropped_total"), 800.0);

    let mut long = report(vec![cond("DataPath", false, &"é".repeat(3000))], vec![]);
    long.node_status.as_mut().expect("st").agent_version = "v".repeat(500);
    s1.report_status(long).await.expect("report");
    let st = get_node(&mut admin, "s1").await.status.expect("status");
    assert_eq!(types(&st.conditions), ["Ready", "DataPath"]);
    assert!(st.conditions[1].message.len() <= 1024);
    assert!(st.agent_version.len() <= 128, "{}", st.agent_version.len());
    // This message and version, and the first report's DataPath message.
    assert_eq!(metric(&ctl, "report_fields_truncated_total"), 3.0);

    // Volumes through export reports.
    let v = admin
        .create(volume("v1", "lab", "1GiB", "p1"))
        .await
        .expect("volume");
    let nqn = v.status.expect("status").subsystem_nqn;
    let export = ExportStatus {
        volume: "v1".into(),
        subsystem_nqn: nqn,
        ready: true,
        conditions: junk("VolJunk", 400),
        generation: 1,
        ..Default::default()
    };
    s1.report_status(report(vec![], vec![export]))
        .await
        .expect("export report");
    let v = admin.get::<Volume>("v1").await.expect("volume");
    assert!(v.status.as_ref().expect("st").export_ready);
    assert!(
        !types(&v.status.as_ref().expect("st").conditions)
            .iter()
            .any(|t| t.starts_with("VolJunk")),
        "{:?}",
        v.status
    );
    assert!(
        v.encoded_len() < 8192,
        "Volume is {} bytes",
        v.encoded_len()
    );
    admin
        .list_nodes(ListNodesRequest::default())
        .await
        .expect("node list works");
}

/// More exports than `nodes.max_report_entries` in one report are refused
/// with the field named.
#[tokio::test]
async fn oversized_reports_are_refused_by_field() {
    let (ctl, _admin) = Controller::with_basic_layout(Options {
        extra_toml: "[nodes]\nmax_report_entries = 10\n".into(),
        ..Default::default()
    })
    .await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let e = s1
        .report_status(ReportStatusRequest {
            node: "s1".into(),
            exports: vec![ExportStatus::default(); 11],
            ..Default::default()
        })
        .await
        .expect_err("too many exports");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("exports") && e.message().contains("nodes.max_report_entries"),
        "{}",
        e.message()
    );
    assert_eq!(
        metric(&ctl, "limit_refusals_total{limit=\"report_size\"}"),
        1.0,
        "refusal counted"
    );
}

/// Each node has a token bucket of reports; over it, RESOURCE_EXHAUSTED
/// says when to retry, and other nodes are unaffected.
#[tokio::test]
async fn report_status_is_rate_limited_per_node() {
    let (ctl, _admin) = Controller::with_basic_layout(Options {
        extra_toml: "[nodes]\nreport_rate_per_second = 0.5\nreport_burst = 5\n".into(),
        ..Default::default()
    })
    .await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let report = |node: &str| ReportStatusRequest {
        node: node.into(),
        ..Default::default()
    };
    for i in 0..5 {
        s1.report_status(report("s1"))
            .await
            .unwrap_or_else(|e| panic!("report {i} within the burst: {e:?}"));
    }
    let e = s1
        .report_status(report("s1"))
        .await
        .expect_err("over the rate");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("nodes.report_rate_per_second") && e.message().contains("retry in"),
        "{}",
        e.message()
    );
    let pushback: u64 = e
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry pushback trailer");
    assert!(pushback > 0 && pushback <= 2000, "{pushback}");
    let mut ws1 = ctl.agent_as("node:ws1").await;
    ws1.report_status(report("ws1"))
        .await
        .expect("another node has its own bucket");
    assert_eq!(metric(&ctl, "report_status_throttled_total"), 1.0);
}

/// A report answering a desired-state snapshot may pass an empty bucket,
/// but not the first snapshot of a stream: otherwise a node could open a
/// watch, answer its snapshot and close it, in a loop, and report at will.
#[tokio::test]
async fn reopening_watches_earns_no_free_reports() {
    let (ctl, _admin) = Controller::with_basic_layout(Options {
        extra_toml: "[nodes]\nreport_rate_per_second = 0.5\nreport_burst = 2\n".into(),
        ..Default::default()
    })
    .await;
    let mut s1 = ctl.agent_as("node:s1").await;
    for i in 0..2 {
        s1.report_status(ReportStatusRequest {
            node: "s1".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("report {i} within the burst: {e:?}"));
    }
    for round in 0..3 {
        let mut stream = s1
            .watch_desired_state(WatchDesiredStateRequest {
                node: "s1".into(),
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        let ds = stream
            .message()
            .await
            .expect("snapshot")
            .expect("a first snapshot");
        let e = s1
            .report_status(ReportStatusRequest {
                node: "s1".into(),
                desired_revision: ds.revision,
                ..Default::default()
            })
            .await
            .expect_err("an answer to a stream's first snapshot pays like any report");
        assert_eq!(
            e.code(),
            tonic::Code::ResourceExhausted,
            "round {round}: {e:?}"
        );
        drop(stream);
    }
}

async fn ready_status(
    admin: &mut ferrofab_proto::v1::admin_service_client::AdminServiceClient<
        tonic::transport::Channel,
    >,
) -> Option<Condition> {
    get_node(admin, "s1")
        .await
        .status?
        .conditions
        .into_iter()
        .find(|c| c.r#type == "Ready")
}

/// Waits a few heartbeat check passes (check_interval_seconds = 1) and
/// returns the Ready condition then.
async fn ready_after_checks(
    admin: &mut ferrofab_proto::v1::admin_service_client::AdminServiceClient<
        tonic::transport::Channel,
    >,
) -> Condition {
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ready_status(admin).await.expect("Ready condition")
}

/// Heartbeats live in memory: a report that changes nothing does not
/// write the store, yet the node stays Ready on in-memory liveness and
/// turns NotReady when silent.
#[tokio::test]
async fn heartbeats_are_kept_in_memory_and_readiness_still_works() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::manual_clock(
        "[nodes]\nheartbeat_timeout_seconds = 45\ncheck_interval_seconds = 1\n\
                     heartbeat_persist_interval_seconds = 1000\n",
    ))
    .await;
    let mut debug = ctl.debug().await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let report = ReportStatusRequest {
        node: "s1".into(),
        node_status: Some(NodeStatus {
            agent_version: "test".into(),
            conditions: vec![cond("ConfigApplied", true, "ok")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let first = s1
        .report_status(report.clone())
        .await
        .expect("report")
        .into_inner()
        .revision;
    let advance = |secs| AdvanceClockRequest { seconds: secs };
    for _ in 0..20 {
        debug.advance_clock(advance(2)).await.expect("advance");
        let rev = s1
            .report_status(report.clone())
            .await
            .expect("heartbeat")
            .into_inner()
            .revision;
        assert_eq!(rev, first, "a heartbeat-only report wrote the store");
    }
    assert_eq!(metric(&ctl, "report_status_unpersisted_total"), 20.0);
    // Stored heartbeat is 40 s old; heard 0 s ago. 40 s more: still Ready
    // on the in-memory heartbeat (stored one would say 80 s).
    debug.advance_clock(advance(40)).await.expect("advance");
    let c = ready_after_checks(&mut admin).await;
    assert_eq!(c.status, ConditionStatus::True as i32, "{c:?}");
    debug.advance_clock(advance(10)).await.expect("advance");
    let c = ready_after_checks(&mut admin).await;
    assert_eq!(c.status, ConditionStatus::False as i32, "{c:?}");
    assert!(c.message.contains("no heartbeat for 50s"), "{c:?}");
    s1.report_status(report.clone()).await.expect("back");
    assert_eq!(
        ready_status(&mut admin).await.map(|c| c.status),
        Some(ConditionStatus::True as i32),
        "a report after NotReady is a change and is written"
    );
}

/// One host cannot take every connection slot: while enrollment is on, TLS
/// needs no client certificate, so connections from one address are
/// capped on their own (issue 12, item 9).
#[tokio::test]
async fn one_peer_cannot_take_every_connection_slot() {
    let ctl = Controller::start_with(Options {
        extra_toml: "[server]\nmax_connections_per_peer = 5\ntls_handshake_timeout_ms = 30000\n"
            .into(),
        ..Default::default()
    });
    let port: u16 = ctl
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let from_other_host = || {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        s
    };
    let mut held = Vec::new();
    for _ in 0..5 {
        let s = from_other_host()
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect");
        held.push(s.into_std().expect("std"));
    }
    assert_eq!(
        wait_metric(&ctl, "grpc_connections", 5.0, Duration::from_secs(5)).await,
        5.0
    );
    for i in 0..3 {
        let s = from_other_host()
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect");
        let mut s = s.into_std().expect("std");
        s.set_nonblocking(false).expect("blocking");
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(2)),
            "connection {i} beyond the per-peer cap stayed open"
        );
    }
    assert_eq!(
        wait_metric(
            &ctl,
            "grpc_connections_refused_per_peer_total",
            3.0,
            Duration::from_secs(5)
        )
        .await,
        3.0
    );
    // Another address (127.0.0.1) still gets in while 127.0.0.2 is full.
    let mut admin = ctl.admin().await;
    admin
        .list_nodes(ListNodesRequest::default())
        .await
        .expect("another host still connects");
    assert_eq!(metric(&ctl, "grpc_connections_refused_total"), 0.0);
    drop(held);
}

/// Liveness is not stored, so a restarted controller has heard from no
/// one. It must give every node that reported before a full timeout from
/// start-up (its agent reconnects with backoff), not mark them all
/// NotReady on its first pass because the stored heartbeats are old.
#[tokio::test]
async fn restarted_controller_gives_nodes_a_full_timeout() {
    // A 6 s timeout leaves the first check (1.2 s after restart) 1.5 s of
    // margin even on a loaded machine; NotReady is then polled for.
    let mut ctl = Controller::start_with(Options {
        extra_toml: "[nodes]\nheartbeat_timeout_seconds = 6\ncheck_interval_seconds = 1\n".into(),
        ..Default::default()
    });
    let mut admin = ctl.admin().await;
    basic_layout(&mut admin).await;
    let mut s1 = ctl.agent_as("node:s1").await;
    s1.report_status(ReportStatusRequest {
        node: "s1".into(),
        ..Default::default()
    })
    .await
    .expect("report");
    ctl.kill9();
    // Longer than the timeout: the stored heartbeat is stale at restart.
    tokio::time::sleep(Duration::from_secs(7)).await;
    ctl.spawn();
    let restarted = Instant::now();
    let mut admin = ctl.admin().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = ready_status(&mut admin).await.expect("Ready");
    assert!(
        restarted.elapsed() < Duration::from_millis(4500),
        "the machine took {:?} for a restart and one read; too slow to judge",
        restarted.elapsed()
    );
    assert_eq!(
        c.status,
        ConditionStatus::True as i32,
        "marked at once after restart: {c:?}"
    );
    let deadline = restarted + Duration::from_secs(15);
    loop {
        let c = ready_status(&mut admin).await.expect("Ready");
        if c.status == ConditionStatus::False as i32 {
            assert_eq!(c.reason, "NoHeartbeat");
            assert!(
                restarted.elapsed() >= Duration::from_secs(6),
                "marked before a full timeout from start-up: {c:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "silent node never marked: {c:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
