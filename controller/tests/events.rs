//! Events: transitions are recorded in the store (created, placed,
//! grown, refused), repeats fold into one entry, the history is bounded
//! by `events.max_events` (drops counted on /metrics), it survives a
//! restart, WatchEvents streams new entries, and only admins read it.

use std::time::Duration;

use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;

async fn events_of(c: &mut Admin, kind: Kind, name: &str) -> Vec<ObjectEvent> {
    c.list_events(ListEventsRequest {
        kind: kind as i32,
        name: name.into(),
        limit: 0,
    })
    .await
    .expect("list events")
    .into_inner()
    .events
}

/// Polls until `name` has an event with each of `reasons`.
async fn wait_for_reasons(c: &mut Admin, kind: Kind, name: &str, reasons: &[&str]) {
    for _ in 0..100 {
        let got = events_of(c, kind, name).await;
        if reasons.iter().all(|r| got.iter().any(|e| e.reason == *r)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = events_of(c, kind, name).await;
    panic!("{kind:?} {name}: wanted {reasons:?}, have {got:?}");
}

#[tokio::test]
async fn transitions_are_recorded_bounded_durable_and_streamed() {
    let (mut ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    c.create(volume("v1", "lab", "1GiB", "p1"))
        .await
        .expect("v1");
    wait_for_reasons(&mut c, Kind::Volume, "v1", &["Created", "Placed"]).await;
    let placed = events_of(&mut c, Kind::Volume, "v1")
        .await
        .into_iter()
        .find(|e| e.reason == "Placed")
        .expect("placed");
    assert_eq!(placed.message, "placed on pool/p1 on node/s1");
    assert_eq!(placed.severity(), Severity::Info);

    // A refusal about the cluster (capacity) is recorded, and a repeat
    // folds into the same entry.
    for _ in 0..2 {
        let err = c
            .create(volume("huge", "lab", "1TiB", "p1"))
            .await
            .expect_err("over capacity");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    }
    let refused = events_of(&mut c, Kind::Volume, "huge").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].reason, "Refused");
    assert_eq!(refused[0].count, 2);
    assert_eq!(refused[0].severity(), Severity::Warning);

    // WatchEvents from the list's revision sees the grow.
    let rev = c
        .list_events(ListEventsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .revision;
    let mut w = c
        .watch_events(WatchEventsRequest {
            kind: Kind::Volume as i32,
            name: "v1".into(),
            from_revision: rev,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut v = c.get::<Volume>("v1").await.expect("get");
    v.spec.as_mut().expect("spec").size = "2GiB".into();
    c.update(v).await.expect("grow");
    let ev = next(&mut w).await;
    assert_eq!(ev.reason, "Grown", "{ev:?}");
    assert_eq!(ev.message, "grown from 1GiB to 2GiB");

    // Tenants may not read the history (it names every tenant's objects).
    let mut lab = ctl.admin_as("tenant:lab").await;
    let err = lab
        .list_events(ListEventsRequest::default())
        .await
        .expect_err("tenant");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Kept in the store: a restart keeps the history.
    let before = events_of(&mut c, Kind::Volume, "v1").await.len();
    ctl.terminate(Duration::from_secs(10));
    ctl.spawn();
    let mut c = ctl.admin().await;
    assert_eq!(events_of(&mut c, Kind::Volume, "v1").await.len(), before);
}

#[tokio::test]
async fn history_is_bounded_and_drops_are_counted() {
    let ctl = Controller::start_with(Options::manual_clock("\n[events]\nmax_events = 3\n"));
    let mut c = ctl.admin().await;
    for i in 0..6 {
        c.create(tenant(&format!("t{i}"), "", 0, &[]))
            .await
            .expect("tenant");
    }
    // Six Created events, at most three kept: the newest.
    wait_for_reasons(&mut c, Kind::Tenant, "t5", &["Created"]).await;
    let all = c
        .list_events(ListEventsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .events;
    assert!(all.len() <= 3, "{all:?}");
    assert!(all.iter().any(|e| e.name == "t5"), "{all:?}");
    let metrics = http_get(&ctl.http, "/metrics");
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrofab_controller_events_dropped_total "))
        .expect("events_dropped series");
    assert!(
        dropped.trim().parse::<f64>().expect("number") >= 3.0,
        "{dropped}"
    );
}

#[test]
fn a_zero_bound_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\nstore_path = \"s.redb\"\n[pki]\ndir = \"pki\"\n[events]\nmax_events = 0\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrofab-controller"))
        .arg("--config")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("events.max_events"), "{err}");
}
