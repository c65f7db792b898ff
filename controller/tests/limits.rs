//! Hardening (issue 12): what one client, node or raw TCP peer may hold
//! open or send is bounded, and the limits are visible in /metrics.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferrofab_proto::v1::*;
use tokio_stream::StreamExt;

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

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
    let ctl = Controller::start_with(Options {
        extra_toml: "[server]\nmax_watches_per_identity = 16\n".into(),
        ..Default::default()
    });
    let mut admin = ctl.admin().await;
    basic_layout(&mut admin).await;
    let mut node = ctl.admin_as("node:s1").await;
    for round in 0..5 {
        let watches = open_watches(&mut node, 16).await;
        assert_eq!(metric(&ctl, "watch_streams"), 16.0, "round {round}");
        // Writes the node may not see: nothing is ever sent on its streams.
        admin
            .create_tenant(CreateTenantRequest {
                tenant: Some(tenant(&format!("t{round}"), "", 0, &[])),
            })
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
    // Another identity has its own allowance.
    let mut w = admin
        .watch_volumes(watch_all())
        .await
        .expect("admin watch")
        .into_inner();
    assert!(w.message().await.expect("event").is_some());
}

/// True once the server has closed `s` (EOF or reset) within `limit`.
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
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
            closed_within(&mut extra, Duration::from_secs(1)),
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
            closed_within(s, Duration::from_secs(10)),
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
