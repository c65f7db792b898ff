//! Placement, quotas, finalizers and shrink refusal.

use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use tonic::Code;

#[tokio::test]
async fn selector_picks_most_free_pool_and_refusal_explains_each() {
    let (_ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    c.create(pool("p2", "s1", "200GiB", &[("tier", "fast")]))
        .await
        .expect("p2");
    c.create(pool("slow", "s1", "10TiB", &[("tier", "slow")]))
        .await
        .expect("slow");
    let v = c
        .create(volume_sel("a", "lab", "150GiB", &[("tier", "fast")]))
        .await
        .expect("a");
    assert_eq!(v.status.expect("st").pool, "p2");
    let v = c
        .create(volume_sel("b", "lab", "60GiB", &[("tier", "fast")]))
        .await
        .expect("b");
    assert_eq!(
        v.status.expect("st").pool,
        "p1",
        "p1 has 100GiB free, p2 50GiB"
    );
    let e = c
        .create(volume_sel("c", "lab", "60GiB", &[("tier", "fast")]))
        .await
        .expect_err("no room");
    assert_eq!(e.code(), Code::ResourceExhausted);
    let m = e.message();
    assert!(
        m.contains("pool \"p1\"") && m.contains("pool \"p2\"") && !m.contains("slow"),
        "{m}"
    );
    let e = c
        .create(volume_sel("d", "lab", "1GiB", &[("tier", "none")]))
        .await
        .expect_err("no match");
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn overcommit_and_namespace_limit() {
    let (_ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    let mut p = pool("thin", "s1", "10GiB", &[]);
    p.spec.as_mut().expect("s").overcommit_ratio = 2.0;
    p.spec.as_mut().expect("s").namespace_limit = 2;
    c.create(p).await.expect("thin");
    c.create(volume("v1", "lab", "15GiB", "thin"))
        .await
        .expect("overcommitted fits");
    c.create(volume("v2", "lab", "1GiB", "thin"))
        .await
        .expect("second");
    let e = c
        .create(volume("v3", "lab", "1GiB", "thin"))
        .await
        .expect_err("limit");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("namespace limit"), "{}", e.message());
}

#[tokio::test]
async fn tenant_quotas_are_enforced() {
    let (_ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    c.create(tenant("small", "10GiB", 2, &[]))
        .await
        .expect("small");
    c.create(volume("s-1", "small", "6GiB", "p1"))
        .await
        .expect("1");
    let e = c
        .create(volume("s-2", "small", "6GiB", "p1"))
        .await
        .expect_err("bytes");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("small") && e.message().contains("quota"),
        "{}",
        e.message()
    );
    c.create(volume("s-2", "small", "1GiB", "p1"))
        .await
        .expect("2");
    let e = c
        .create(volume("s-3", "small", "1GiB", "p1"))
        .await
        .expect_err("count");
    assert!(e.message().contains("volume quota"), "{}", e.message());
    // Growth counts against the quota too.
    let mut g = c.get::<Volume>("s-1").await.expect("get");
    g.spec.as_mut().expect("s").size = "20GiB".into();
    let e = c.update(g).await.expect_err("grow over quota");
    assert_eq!(e.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn attached_volume_cannot_be_deleted_and_shrink_is_refused() {
    let (_ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    let v = c
        .create(volume("data", "lab", "10GiB", "p1"))
        .await
        .expect("v");
    c.create(attachment("data-ws1", "data", "ws1"))
        .await
        .expect("att");
    let e = c.delete::<Volume>("data").await.expect_err("attached");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("data-ws1"), "{}", e.message());
    let mut s = v.clone();
    s.spec.as_mut().expect("s").size = "5GiB".into();
    let e = c.update(s).await.expect_err("shrink");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("only grow"), "{}", e.message());
    let e = c.delete::<Pool>("p1").await.expect_err("in use");
    assert!(e.message().contains("volume data"), "{}", e.message());
    // Not allowed by the tenant.
    c.create(workstation("ws9")).await.expect("ws9");
    let e = c
        .create(attachment("x", "data", "ws9"))
        .await
        .expect_err("not allowed");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("ws9"), "{}", e.message());
}

/// `dry_run` runs the checks of a create or resize (placement, capacity,
/// validation) and stores nothing; refusals are the real ones.
#[tokio::test]
async fn dry_run_checks_without_storing() {
    let (_ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    let ok = c
        .create_volume_with(volume("dry", "lab", "10GiB", "p1"), true)
        .await
        .expect("fits");
    assert_eq!(ok.status.expect("status").pool, "p1");
    let gone = c
        .get::<Volume>("dry")
        .await
        .expect_err("a dry run stores nothing");
    assert_eq!(gone.code(), Code::NotFound);
    let e = c
        .create_volume_with(volume("big", "lab", "500GiB", "p1"), true)
        .await
        .expect_err("over capacity");
    assert_eq!(e.code(), Code::ResourceExhausted);

    c.create_volume_with(volume("real", "lab", "10GiB", "p1"), false)
        .await
        .expect("real");
    let e = c
        .update_volume_with(volume("real", "lab", "500GiB", "p1"), true)
        .await
        .expect_err("grow beyond capacity");
    assert_eq!(e.code(), Code::ResourceExhausted);
    c.update_volume_with(volume("real", "lab", "20GiB", "p1"), true)
        .await
        .expect("grow fits");
    let v = c.get::<Volume>("real").await.expect("real");
    assert_eq!(v.status.expect("status").size_bytes, 10 << 30, "unchanged");
}
