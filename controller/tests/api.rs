//! CRUD, Apply, optimistic concurrency and input validation against a real
//! controller process over mTLS.

use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use tonic::Code;

#[tokio::test]
async fn crud_round_trip_for_every_kind() {
    let (_ctl, mut c) = Controller::with_basic_layout(Options::default()).await;

    let v = c
        .create(volume("scratch", "lab", "4GiB", "p1"))
        .await
        .expect("create volume");
    let st = v.status.clone().expect("status");
    assert_eq!(st.pool, "p1");
    assert_eq!(st.size_bytes, 4 << 30);
    assert!(st.subsystem_nqn.starts_with("nqn."), "{st:?}");
    assert_eq!(v.metadata.as_ref().expect("meta").generation, 1);

    let got = c.get::<Volume>("scratch").await.expect("get");
    assert_eq!(got, v);

    let list = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.items.len(), 1);
    assert!(list.revision >= rv(&v));

    let nodes = c
        .list_nodes(ListNodesRequest {
            label_selector: String::new(),
            ..Default::default()
        })
        .await
        .expect("nodes")
        .into_inner();
    assert_eq!(nodes.items.len(), 2);

    // Update: labels only keeps the generation; a growth bumps it.
    let mut upd = got.clone();
    upd.metadata
        .as_mut()
        .expect("meta")
        .labels
        .insert("team".into(), "vision".into());
    let upd = c.update(upd).await.expect("label");
    assert_eq!(upd.metadata.as_ref().expect("m").generation, 1);
    let mut grow = upd.clone();
    grow.spec.as_mut().expect("spec").size = "8GiB".into();
    let grown = c.update(grow).await.expect("grow");
    assert_eq!(grown.metadata.as_ref().expect("m").generation, 2);
    assert_eq!(grown.status.as_ref().expect("st").size_bytes, 8 << 30);
    assert_eq!(
        grown.status.as_ref().expect("st").uuid,
        st.uuid,
        "identity is stable"
    );

    let sel = c
        .list_volumes(ListVolumesRequest {
            label_selector: "team=vision".into(),
            ..Default::default()
        })
        .await
        .expect("list sel")
        .into_inner();
    assert_eq!(sel.items.len(), 1);
    let sel = c
        .list_volumes(ListVolumesRequest {
            label_selector: "team=other".into(),
            ..Default::default()
        })
        .await
        .expect("list sel")
        .into_inner();
    assert!(sel.items.is_empty());

    let pool = c.get::<Pool>("p1").await.expect("pool");
    assert_eq!(pool.status.as_ref().expect("st").allocated_bytes, 8 << 30);

    // Never exported: deletion is immediate.
    c.delete::<Volume>("scratch").await.expect("delete");
    let e = c.get::<Volume>("scratch").await.expect_err("gone");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("scratch"), "{}", e.message());

    c.delete::<Pool>("p1").await.expect("pool");
    c.delete::<Node>("s1").await.expect("node");
    c.delete::<Tenant>("lab").await.expect("tenant");
}

#[tokio::test]
async fn stale_update_is_aborted_with_current_version() {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    let t = c.create(tenant("lab", "1TiB", 0, &[])).await.expect("t");
    let mut a = t.clone();
    a.spec.as_mut().expect("s").volume_quota = 5;
    let a = c.update(a).await.expect("first");
    let mut b = t.clone();
    b.spec.as_mut().expect("s").volume_quota = 7;
    let e = c.update(b).await.expect_err("stale");
    assert_eq!(e.code(), Code::Aborted);
    assert!(
        e.message()
            .contains(&format!("current resource_version is {}", rv(&a))),
        "{}",
        e.message()
    );
    let e = c
        .delete_tenant(DeleteTenantRequest {
            name: "lab".into(),
            resource_version: rv(&t),
        })
        .await
        .expect_err("stale delete");
    assert_eq!(e.code(), Code::Aborted);
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let (_ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    let cases = [
        (volume("Bad_Name", "lab", "1GiB", "p1"), "metadata.name"),
        (volume("v", "lab", "lots", "p1"), "spec.size"),
        (volume("v", "lab", "1GiB", "nope"), "spec.pool"),
        (volume("v", "ghost", "1GiB", "p1"), "spec.tenant"),
    ];
    for (v, field) in cases {
        let e = c.create(v).await.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {}", e.message());
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let mut n = workstation("ws2");
    n.spec.as_mut().expect("s").host_nqn = "iqn.bad".into();
    let e = c.create(n).await.expect_err("nqn");
    assert!(e.message().contains("spec.host_nqn"), "{}", e.message());
    let mut t = tenant("t2", "", 0, &[]);
    t.metadata
        .as_mut()
        .expect("m")
        .labels
        .insert("bad key!".into(), "x".into());
    let e = c.create(t).await.expect_err("label");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("metadata.labels"), "{}", e.message());
    let e = c.create(tenant("lab", "", 0, &[])).await.expect_err("dup");
    assert_eq!(e.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn oversized_request_is_refused() {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    let mut t = tenant("big", "", 0, &[]);
    t.metadata
        .as_mut()
        .expect("m")
        .annotations
        .insert("blob".into(), "x".repeat(2 << 20));
    let e = c.create(t).await.expect_err("too big");
    // tonic refuses over-limit messages before decoding them.
    assert_eq!(e.code(), Code::OutOfRange, "{}", e.message());
    assert!(e.message().contains("too large"), "{}", e.message());
}

#[tokio::test]
async fn apply_reports_field_level_diff_and_honours_dry_run() {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    let layout = Layout {
        tenants: vec![tenant("lab", "1TiB", 10, &["ws1"])],
        nodes: vec![storage_node("s1", 4420), workstation("ws1")],
        pools: vec![pool("p1", "s1", "1TiB", &[("tier", "fast")])],
        volumes: vec![volume_sel("data", "lab", "10GiB", &[("tier", "fast")])],
        attachments: vec![attachment("data-ws1", "data", "ws1")],
    };
    let dry = c.apply_layout(layout.clone(), true).await.expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(dry.diffs.len(), 6);
    assert!(dry
        .diffs
        .iter()
        .all(|d| d.action == DiffAction::Created as i32));
    assert!(
        c.list_tenants(ListTenantsRequest::default())
            .await
            .expect("l")
            .into_inner()
            .items
            .is_empty(),
        "dry run wrote nothing"
    );

    let real = c.apply_layout(layout.clone(), false).await.expect("apply");
    assert!(real.revision > 0);
    let v = c.get::<Volume>("data").await.expect("v");
    assert_eq!(v.status.as_ref().expect("st").pool, "p1");

    // Second apply with a change: one UPDATED with the field, rest UNCHANGED.
    let mut l2 = layout.clone();
    l2.volumes[0].spec.as_mut().expect("s").size = "20GiB".into();
    let again = c.apply_layout(l2, false).await.expect("apply2");
    let upd: Vec<&ObjectDiff> = again
        .diffs
        .iter()
        .filter(|d| d.action == DiffAction::Updated as i32)
        .collect();
    assert_eq!(upd.len(), 1, "{:?}", again.diffs);
    assert_eq!(upd[0].name, "data");
    assert_eq!(upd[0].changes[0].path, "spec.size");
    assert_eq!(upd[0].changes[0].old_value, "10GiB");
    assert_eq!(upd[0].changes[0].new_value, "20GiB");
    assert_eq!(
        again
            .diffs
            .iter()
            .filter(|d| d.action == DiffAction::Unchanged as i32)
            .count(),
        5
    );

    // Prune touches only the kinds the layout names: without any
    // attachment in the file, the attachment stays.
    let mut l3 = layout;
    l3.attachments.clear();
    l3.volumes[0].spec.as_mut().expect("s").size = "20GiB".into();
    let pruned = c
        .apply(ApplyRequest {
            layout: Some(l3),
            dry_run: false,
            prune: true,
            prune_nodes: false,
        })
        .await
        .expect("prune")
        .into_inner();
    assert!(
        !pruned
            .diffs
            .iter()
            .any(|d| d.action == DiffAction::Deleted as i32),
        "{:?}",
        pruned.diffs
    );
    c.get::<Attachment>("data-ws1").await.expect("kept");
}

fn apply_req(layout: Layout, dry_run: bool, prune: bool, prune_nodes: bool) -> ApplyRequest {
    ApplyRequest {
        layout: Some(layout),
        dry_run,
        prune,
        prune_nodes,
    }
}

fn deleted(r: &ApplyResponse) -> Vec<String> {
    r.diffs
        .iter()
        .filter(|d| d.action == DiffAction::Deleted as i32)
        .map(|d| d.name.clone())
        .collect()
}

fn labelled(mut v: Volume, k: &str, val: &str) -> Volume {
    v.metadata
        .as_mut()
        .expect("meta")
        .labels
        .insert(k.into(), val.into());
    v
}

/// Issue 13 item 2: prune scope, dangling references, dry-run parity and
/// all-or-nothing.
#[tokio::test]
async fn apply_prune_is_scoped_checked_and_all_or_nothing() {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    let full = Layout {
        tenants: vec![tenant("lab", "1TiB", 10, &["ws1"])],
        nodes: vec![storage_node("s1", 4420), workstation("ws1")],
        pools: vec![pool("p1", "s1", "1TiB", &[])],
        volumes: vec![
            volume("a", "lab", "10GiB", "p1"),
            volume("b", "lab", "10GiB", "p1"),
            volume("c", "lab", "10GiB", "p1"),
        ],
        attachments: vec![attachment("a-ws1", "a", "ws1")],
    };
    c.apply(apply_req(full.clone(), false, false, false))
        .await
        .expect("apply");

    // One [[volume]]: only other volumes are planned for deletion, never
    // the pool, the tenant, the nodes or the attachment.
    let only_b = Layout {
        volumes: vec![volume("b", "lab", "10GiB", "p1")],
        ..Default::default()
    };
    let e = c
        .apply(apply_req(only_b.clone(), true, true, false))
        .await
        .expect_err("volume a is attached");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("a-ws1"), "{}", e.message());
    assert!(
        e.message().contains("nothing was changed"),
        "{}",
        e.message()
    );
    let with_a = Layout {
        volumes: vec![
            volume("a", "lab", "10GiB", "p1"),
            volume("b", "lab", "10GiB", "p1"),
        ],
        ..Default::default()
    };
    let plan = c
        .apply(apply_req(with_a.clone(), true, true, false))
        .await
        .expect("plan")
        .into_inner();
    assert_eq!(deleted(&plan), vec!["c".to_string()]);

    // Nodes only with prune_nodes; a node still in use is refused by name.
    let only_s1 = Layout {
        nodes: vec![storage_node("s1", 4420)],
        ..Default::default()
    };
    let plan = c
        .apply(apply_req(only_s1.clone(), true, true, false))
        .await
        .expect("plan")
        .into_inner();
    assert!(deleted(&plan).is_empty(), "{:?}", plan.diffs);
    let e = c
        .apply(apply_req(only_s1, false, true, true))
        .await
        .expect_err("ws1 is in use");
    assert!(e.message().contains("attachment a-ws1"), "{}", e.message());

    // The dry run refuses a shrink, as the apply does.
    let shrink = Layout {
        volumes: vec![volume("a", "lab", "5GiB", "p1")],
        ..Default::default()
    };
    let e = c
        .apply(apply_req(shrink, true, false, false))
        .await
        .expect_err("dry run refuses a shrink");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("cannot shrink from 10GiB to 5GiB"),
        "sizes read as sizes: {}",
        e.message()
    );

    // All or nothing: a new tenant, a label change and a prune before a
    // refused step leave no trace.
    let mixed = Layout {
        tenants: vec![
            tenant("lab", "1TiB", 10, &["ws1"]),
            tenant("new", "1TiB", 1, &[]),
        ],
        volumes: vec![
            labelled(volume("b", "lab", "10GiB", "p1"), "k", "v"),
            volume("a", "lab", "5GiB", "p1"),
        ],
        ..Default::default()
    };
    let e = c
        .apply(apply_req(mixed, false, true, false))
        .await
        .expect_err("shrink refused");
    assert!(
        e.message().contains("nothing was changed"),
        "{}",
        e.message()
    );
    let tenants = c
        .list_tenants(ListTenantsRequest::default())
        .await
        .expect("t")
        .into_inner();
    assert_eq!(tenants.items.len(), 1, "tenant \"new\" was not created");
    let vols = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("v")
        .into_inner();
    assert_eq!(vols.items.len(), 3, "volume c was not pruned");
    let b = vols
        .items
        .iter()
        .find(|v| v.metadata.as_ref().is_some_and(|m| m.name == "b"));
    assert!(b
        .and_then(|v| v.metadata.as_ref())
        .is_some_and(|m| m.labels.is_empty()));

    // A valid plan commits in one revision.
    let done = c
        .apply(apply_req(with_a, false, true, false))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!(deleted(&done), vec!["c".to_string()]);
    let e = c.get::<Volume>("c").await.expect_err("c pruned");
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn metrics_and_healthz_are_served_over_plain_http() {
    let (ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    let health = http_get(&ctl.http, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let m = http_get(&ctl.http, "/metrics");
    assert!(
        m.contains("ferrofab_controller_api_latency_seconds_bucket"),
        "{m}"
    );
    assert!(m.contains("method=\"CreatePool\""), "{m}");
    assert!(
        m.contains("ferrofab_controller_objects{kind=\"node\"} 2"),
        "{m}"
    );
    assert!(m.contains("ferrofab_controller_connected_agents"), "{m}");
    // Issue 18: the body is OpenMetrics and says so; per-pool capacity
    // gauges, per-node readiness and the build, by label.
    let head = m
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(
        m.contains(
            "ferrofab_controller_pool_capacity_bytes{pool=\"p1\",node=\"s1\"} 107374182400\n"
        ),
        "{m}"
    );
    assert!(
        m.contains("ferrofab_controller_pool_allocated_bytes{pool=\"p1\",node=\"s1\"} 0\n"),
        "{m}"
    );
    assert!(
        m.contains("ferrofab_controller_pool_free_bytes{pool=\"p1\",node=\"s1\"} 107374182400\n"),
        "{m}"
    );
    // The same figures as GetPool once a volume takes space.
    c.create(volume("v1", "lab", "1GiB", "p1"))
        .await
        .expect("v1");
    let m = http_get(&ctl.http, "/metrics");
    assert!(
        m.contains(
            "ferrofab_controller_pool_allocated_bytes{pool=\"p1\",node=\"s1\"} 1073741824\n"
        ),
        "{m}"
    );
    assert!(
        m.contains("ferrofab_controller_pool_free_bytes{pool=\"p1\",node=\"s1\"} 106300440576\n"),
        "{m}"
    );
    // No agent ever reported: not ready.
    assert!(
        m.contains("ferrofab_controller_node_ready{node=\"s1\"} 0"),
        "{m}"
    );
    // Per-volume size and burst expiry, by volume, pool and tenant; the
    // process series before OpenMetrics' closing line.
    assert!(
        m.contains("ferrofab_controller_volume_size_bytes{volume=\"v1\",pool=\"p1\",tenant=\"lab\"} 1073741824\n"),
        "{m}"
    );
    let mut burst = volume("burst", "lab", "1GiB", "p1");
    burst.spec.as_mut().expect("spec").expires_at = Some(prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    });
    c.create(burst).await.expect("burst");
    let m = http_get(&ctl.http, "/metrics");
    assert!(
        m.contains("ferrofab_controller_volume_expiry_timestamp_seconds{volume=\"burst\",pool=\"p1\",tenant=\"lab\"} 4000000000\n"),
        "{m}"
    );
    assert!(!m.contains("expiry_timestamp_seconds{volume=\"v1\""), "{m}");
    assert_process_series(&m);
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
    assert!(
        m.contains(&format!(
            "ferrofab_build_info{{component=\"controller\",version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{m}"
    );
}
