//! One set of rules for every way in: Apply refuses exactly what the typed
//! RPCs refuse, tenants may not lift or postpone an expiry, and objects a
//! caller may not read look exactly like missing ones (issue 12, items 8,
//! 10 and 12).

use ferrofab_proto::v1::admin_service_client::AdminServiceClient;
use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Admin = AdminServiceClient<Channel>;

/// basic_layout plus tenant "other" (allowing no node) with volume
/// "theirs", and lab's volume "v" attached to ws1 as "v-ws1".
async fn two_tenants(c: &mut Admin) {
    basic_layout(c).await;
    c.create(tenant("other", "", 0, &[])).await.expect("other");
    for (name, t) in [("v", "lab"), ("theirs", "other")] {
        c.create(volume(name, t, "1GiB", "p1"))
            .await
            .expect("volume");
    }
    c.create(attachment("v-ws1", "v", "ws1"))
        .await
        .expect("attachment");
}

async fn get_att(c: &mut Admin, name: &str) -> Attachment {
    c.get::<Attachment>(name).await.expect("get attachment")
}

async fn get_pool(c: &mut Admin, name: &str) -> Pool {
    c.get::<Pool>(name).await.expect("get pool")
}

async fn get_vol(c: &mut Admin, name: &str) -> Volume {
    c.get::<Volume>(name).await.expect("get volume")
}

/// Apply of `layout`, dry and real, fails with the typed RPC's refusal:
/// same code, same message after the step prefix.
async fn apply_refuses_like(c: &mut Admin, layout: Layout, typed: &Status, step: &str) {
    for dry_run in [true, false] {
        let e = c
            .apply_layout(layout.clone(), dry_run)
            .await
            .expect_err("apply must refuse what the typed RPC refuses");
        assert_eq!(e.code(), typed.code(), "dry_run={dry_run}: {}", e.message());
        assert_eq!(
            e.message(),
            format!(
                "apply refused at {step}, nothing was changed: {}",
                typed.message()
            ),
            "dry_run={dry_run}"
        );
    }
}

fn only_attachment(a: Attachment) -> Layout {
    Layout {
        attachments: vec![a],
        ..Default::default()
    }
}

#[tokio::test]
async fn apply_refuses_the_three_attacks_like_the_typed_rpcs() {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    two_tenants(&mut c).await;

    // 1. Retarget a live attachment to another tenant's volume.
    let mut a = get_att(&mut c, "v-ws1").await;
    a.spec.as_mut().expect("spec").volume = "theirs".into();
    let typed = c.update(a.clone()).await.expect_err("typed retarget");
    assert_eq!(typed.code(), Code::InvalidArgument, "{}", typed.message());
    apply_refuses_like(&mut c, only_attachment(a), &typed, "attachment \"v-ws1\"").await;
    let now = get_att(&mut c, "v-ws1").await;
    assert_eq!(now.spec.expect("spec").volume, "v", "still the old volume");

    // 2. Move a pool to another node and a path under /etc.
    let mut p = get_pool(&mut c, "p1").await;
    {
        let spec = p.spec.as_mut().expect("spec");
        spec.node = "ws1".into();
        spec.backing.as_mut().expect("backing").path = "/srv/ferrofab/p1/../../../etc".into();
    }
    let typed = c.update(p.clone()).await.expect_err("typed pool move");
    assert_eq!(typed.code(), Code::InvalidArgument, "{}", typed.message());
    let layout = Layout {
        pools: vec![p],
        ..Default::default()
    };
    apply_refuses_like(&mut c, layout, &typed, "pool \"p1\"").await;
    let now = get_pool(&mut c, "p1").await.spec.expect("spec");
    assert_eq!(now.node, "s1");
    assert_eq!(now.backing.expect("backing").path, "/srv/ferrofab/p1");

    // 3. Point an attachment at a node that does not exist (deleting it
    //    afterwards would wait forever for that node to confirm).
    let mut a = get_att(&mut c, "v-ws1").await;
    a.spec.as_mut().expect("spec").node = "ghost".into();
    let typed = c.update(a.clone()).await.expect_err("typed ghost node");
    apply_refuses_like(&mut c, only_attachment(a), &typed, "attachment \"v-ws1\"").await;
    assert_eq!(
        get_att(&mut c, "v-ws1").await.spec.expect("spec").node,
        "ws1"
    );
}

#[tokio::test]
async fn apply_keeps_every_immutable_field() {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    two_tenants(&mut c).await;
    c.create(pool("p2", "s1", "100GiB", &[("tier", "slow")]))
        .await
        .expect("p2");
    c.create(volume_sel("vs", "lab", "1GiB", &[("tier", "fast")]))
        .await
        .expect("vs");

    type Edit<T> = (&'static str, fn(&mut T));
    let volume_edits: [(&str, Edit<VolumeSpec>); 5] = [
        ("v", ("spec.tenant", |s| s.tenant = "other".into())),
        ("v", ("spec.block_size", |s| s.block_size = 512)),
        ("v", ("spec.pool", |s| s.pool = "p2".into())),
        ("vs", ("spec.tenant", |s| s.tenant = "other".into())),
        (
            "vs",
            ("spec.pool_selector", |s| {
                s.pool_selector = Some(LabelSelector {
                    match_labels: [("tier".to_string(), "slow".to_string())].into(),
                });
            }),
        ),
    ];
    for (name, (field, edit)) in volume_edits {
        let mut v = get_vol(&mut c, name).await;
        edit(v.spec.as_mut().expect("spec"));
        let typed = c
            .update_volume_with(v.clone(), false)
            .await
            .expect_err(field);
        assert_eq!(typed.code(), Code::InvalidArgument, "{field}");
        assert!(typed.message().contains(field), "{}", typed.message());
        let layout = Layout {
            volumes: vec![v],
            ..Default::default()
        };
        apply_refuses_like(&mut c, layout, &typed, &format!("volume {name:?}")).await;
    }

    let pool_edits: [Edit<PoolSpec>; 3] = [
        ("spec.node", |s| s.node = "ws1".into()),
        ("spec.backing", |s| {
            s.backing.as_mut().expect("b").path = "/srv/elsewhere".into()
        }),
        ("spec.backing", |s| {
            s.backing.as_mut().expect("b").kind = BackingKind::BlockDevice as i32
        }),
    ];
    for (field, edit) in pool_edits {
        let mut p = get_pool(&mut c, "p1").await;
        edit(p.spec.as_mut().expect("spec"));
        let typed = c.update(p.clone()).await.expect_err(field);
        assert!(typed.message().contains(field), "{}", typed.message());
        let layout = Layout {
            pools: vec![p],
            ..Default::default()
        };
        apply_refuses_like(&mut c, layout, &typed, "pool \"p1\"").await;
    }

    // spec.node is not immutable any more: changing it is a move (issue
    // 13 item 4), checked in tests/access.rs.
    let attachment_edits: [Edit<AttachmentSpec>; 2] = [
        ("spec.volume", |s| s.volume = "theirs".into()),
        ("spec.mode", |s| s.mode = AccessMode::ReadOnly as i32),
    ];
    for (field, edit) in attachment_edits {
        let mut a = get_att(&mut c, "v-ws1").await;
        edit(a.spec.as_mut().expect("spec"));
        let typed = c.update(a.clone()).await.expect_err(field);
        assert!(typed.message().contains(field), "{}", typed.message());
        apply_refuses_like(&mut c, only_attachment(a), &typed, "attachment \"v-ws1\"").await;
    }
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

async fn set_expiry(
    c: &mut Admin,
    name: &str,
    at: Option<prost_types::Timestamp>,
) -> Result<Volume, Status> {
    let mut v = get_vol(c, name).await;
    v.spec.as_mut().expect("spec").expires_at = at;
    c.update_volume_with(v, false).await
}

#[tokio::test]
async fn only_admins_lift_or_postpone_an_expiry() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let t0 = 4_000_000_000;
    let mut burst = volume("burst", "lab", "1GiB", "p1");
    burst.spec.as_mut().expect("spec").expires_at = ts(t0);
    admin.create(burst).await.expect("burst");
    let mut lab = ctl.admin_as("tenant:lab").await;

    let e = set_expiry(&mut lab, "burst", None)
        .await
        .expect_err("tenant lifts");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("remove spec.expires_at"),
        "{}",
        e.message()
    );
    let e = set_expiry(&mut lab, "burst", ts(t0 + 86_400))
        .await
        .expect_err("tenant extends");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("postpone"), "{}", e.message());
    assert_eq!(
        get_vol(&mut admin, "burst")
            .await
            .spec
            .expect("s")
            .expires_at,
        ts(t0)
    );

    let v = set_expiry(&mut lab, "burst", ts(t0 - 3_600))
        .await
        .expect("tenant shortens");
    assert_eq!(v.spec.expect("s").expires_at, ts(t0 - 3_600));

    // Admins may do everything.
    set_expiry(&mut admin, "burst", ts(t0 + 86_400))
        .await
        .expect("admin extends");
    set_expiry(&mut admin, "burst", None)
        .await
        .expect("admin lifts");
    set_expiry(&mut admin, "burst", ts(t0))
        .await
        .expect("admin sets");
    // A tenant may still put an expiry on its own volume without one.
    set_expiry(&mut admin, "burst", None).await.expect("lift");
    set_expiry(&mut lab, "burst", ts(t0))
        .await
        .expect("tenant adds an expiry");
}

/// `f(name)`'s refusal for another tenant's object is exactly its refusal
/// for a name that does not exist (with the name swapped).
fn assert_hidden(what: &str, theirs: &Status, missing: &Status, name: &str) {
    assert_eq!(
        theirs.code(),
        missing.code(),
        "{what}: {}",
        theirs.message()
    );
    assert_eq!(
        theirs.message().replace(name, "nope"),
        missing.message(),
        "{what}"
    );
    assert!(
        !theirs.message().contains("belongs") && !theirs.message().contains("tenant other"),
        "{what}: {}",
        theirs.message()
    );
}

#[tokio::test]
async fn foreign_objects_look_exactly_like_missing_ones() {
    let ctl = Controller::start();
    let mut admin = ctl.admin().await;
    two_tenants(&mut admin).await;
    // Other's own attachment (other now allows ws1).
    admin
        .update(tenant("other", "", 0, &["ws1"]))
        .await
        .expect("allow ws1");
    admin
        .create(attachment("theirs-ws1", "theirs", "ws1"))
        .await
        .expect("their attachment");
    let mut lab = ctl.admin_as("tenant:lab").await;

    macro_rules! probe {
        ($what:literal, $name:literal, |$n:ident| $call:expr) => {{
            let theirs = {
                let $n = $name.to_string();
                $call.await.expect_err(concat!($what, " foreign"))
            };
            let missing = {
                let $n = "nope".to_string();
                $call.await.expect_err(concat!($what, " missing"))
            };
            assert_hidden($what, &theirs, &missing, $name);
            theirs
        }};
    }
    let e = probe!("GetVolume", "theirs", |n| lab
        .get_volume(GetVolumeRequest { name: n }));
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "volume \"theirs\" not found");
    probe!("UpdateVolume", "theirs", |n| lab.update_volume(
        UpdateVolumeRequest {
            volume: Some(volume(&n, "lab", "2GiB", "p1")),
            dry_run: false,
        }
    ));
    probe!("UpdateVolume dry run", "theirs", |n| lab.update_volume(
        UpdateVolumeRequest {
            volume: Some(volume(&n, "lab", "2GiB", "p1")),
            dry_run: true,
        }
    ));
    probe!("DeleteVolume", "theirs", |n| lab.delete_volume(
        DeleteVolumeRequest {
            name: n,
            resource_version: 0,
        }
    ));
    probe!("CreateAttachment", "theirs", |n| lab.create_attachment(
        CreateAttachmentRequest {
            attachment: Some(attachment("probe", &n, "ws1")),
        }
    ));
    let e = probe!("GetAttachment", "theirs-ws1", |n| lab
        .get_attachment(GetAttachmentRequest { name: n }));
    assert_eq!(e.code(), Code::NotFound);
    probe!("UpdateAttachment", "theirs-ws1", |n| lab.update_attachment(
        UpdateAttachmentRequest {
            attachment: Some(attachment(&n, "v", "ws1")),
            ..Default::default()
        }
    ));
    probe!("DeleteAttachment", "theirs-ws1", |n| lab.delete_attachment(
        DeleteAttachmentRequest {
            name: n,
            resource_version: 0,
        }
    ));
    probe!("GetTenant", "other", |n| lab
        .get_tenant(GetTenantRequest { name: n }));
    probe!("GetNode", "s1", |n| lab
        .get_node(GetNodeRequest { name: n }));

    // A node asking for a volume its tenant does not grant it learns no
    // more than for a missing volume.
    admin
        .create_node(CreateNodeRequest {
            node: Some(workstation("ws2")),
        })
        .await
        .expect("ws2");
    let mut ws2 = ctl.admin_as("node:ws2").await;
    probe!("CreateAttachment by node", "theirs", |n| ws2
        .create_attachment(CreateAttachmentRequest {
            attachment: Some(attachment("probe", &n, "ws2")),
        }));

    // Watches and lists show nothing of the other tenant either.
    let mut w = lab
        .watch_volumes(WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(ev) = w.message().await.expect("event") {
        if ev.r#type == EventType::Synced as i32 {
            break;
        }
        if let Some(watch_event::Object::Volume(v)) = ev.object {
            seen.push(v.metadata.expect("m").name);
        }
    }
    assert_eq!(seen, vec!["v".to_string()]);
}

#[tokio::test]
async fn tenant_placement_refusals_name_no_pool_capacity_or_node() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let mut lab = ctl.admin_as("tenant:lab").await;
    let leaks = ["p1", "s1", "100GiB", "free", "overcommit", "NotReady"];
    for (what, v) in [
        (
            "selector",
            volume_sel("big", "lab", "8TiB", &[("tier", "fast")]),
        ),
        ("explicit pool", volume("big", "lab", "8TiB", "p1")),
        ("no pool given", volume("big", "lab", "8TiB", "")),
    ] {
        for dry_run in [true, false] {
            let e = lab
                .create_volume(CreateVolumeRequest {
                    volume: Some(v.clone()),
                    dry_run,
                })
                .await
                .expect_err("too big");
            assert_eq!(e.code(), Code::ResourceExhausted, "{what}: {}", e.message());
            let msg = e.message();
            assert!(
                msg.contains("8TiB") && msg.contains("administrator"),
                "{msg}"
            );
            for leak in leaks {
                if what == "explicit pool" && leak == "p1" {
                    continue; // the tenant named it itself
                }
                assert!(!msg.contains(leak), "{what}: {leak:?} in {msg}");
            }
        }
        // The administrator keeps the full explanation.
        let e = admin
            .create_volume_with(v, true)
            .await
            .expect_err("too big for admin too");
        assert!(
            e.message().contains("p1") && e.message().contains("100GiB"),
            "{what}: {}",
            e.message()
        );
    }
    let e = lab
        .create_volume_with(volume_sel("big", "lab", "1GiB", &[("tier", "none")]), false)
        .await
        .expect_err("no match");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(!e.message().contains("pools exist"), "{}", e.message());
    // A pool that does not exist reads like a full one.
    let full = lab
        .create_volume_with(volume("big", "lab", "8TiB", "p1"), false)
        .await
        .expect_err("full");
    let missing = lab
        .create_volume_with(volume("big", "lab", "8TiB", "nope"), false)
        .await
        .expect_err("missing pool");
    assert_eq!(missing.code(), full.code());
    assert_eq!(missing.message().replace("nope", "p1"), full.message());
}

/// A dry run judges a step against the store only when nothing earlier in
/// the same layout changes what the step reads: raising a quota and adding
/// the volume that needs it is not refused by the dry run.
#[tokio::test]
async fn dry_run_does_not_refuse_what_the_layout_itself_enables() {
    let (_ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    c.update(tenant("lab", "1GiB", 0, &["ws1"]))
        .await
        .expect("small quota");
    let layout = Layout {
        tenants: vec![tenant("lab", "10GiB", 0, &["ws1"])],
        volumes: vec![volume("big", "lab", "4GiB", "p1")],
        ..Default::default()
    };
    for dry_run in [true, false] {
        c.apply_layout(layout.clone(), dry_run)
            .await
            .unwrap_or_else(|e| panic!("dry_run={dry_run}: {}", e.message()));
    }
    // Without the quota raise, the dry run refuses the volume like
    // CreateVolume does.
    let mut l2 = layout.clone();
    l2.tenants.clear();
    l2.volumes = vec![volume("bigger", "lab", "8GiB", "p1")];
    let typed = c
        .create_volume_with(volume("bigger", "lab", "8GiB", "p1"), true)
        .await
        .expect_err("over quota");
    assert_eq!(typed.code(), Code::ResourceExhausted);
    let e = c
        .apply_layout(l2, true)
        .await
        .expect_err("dry run over quota");
    assert_eq!(e.code(), typed.code());
    assert!(e.message().ends_with(typed.message()), "{}", e.message());
}

/// An Apply rehearses against a private copy of the store, so a typed
/// create landing between its rehearsal and its commit must not make both
/// fit a quota that holds only one of them (`Shared::capacity_gate`).
#[tokio::test]
async fn apply_and_a_typed_create_never_both_take_the_last_quota() {
    let (ctl, mut c) = Controller::with_basic_layout(Options::default()).await;
    let mut d = ctl.admin().await;
    for round in 0..12 {
        let t = format!("q{round}");
        c.create(tenant(&t, "10GiB", 0, &[])).await.expect("tenant");
        let layout = Layout {
            volumes: vec![volume(&format!("a{round}"), &t, "6GiB", "p1")],
            ..Default::default()
        };
        let (applied, created) = tokio::join!(
            c.apply_layout(layout, false),
            d.create(volume(&format!("b{round}"), &t, "6GiB", "p1")),
        );
        assert!(
            applied.is_ok() != created.is_ok(),
            "round {round}: exactly one 6GiB volume fits tenant {t}'s 10GiB: apply {:?}, create {:?}",
            applied.map(drop).map_err(|e| e.message().to_string()),
            created.map(drop).map_err(|e| e.message().to_string()),
        );
    }
}
