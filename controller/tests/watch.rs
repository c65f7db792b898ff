//! Watch streams deliver every change in revision order and resume from a
//! revision; kill -9 loses no acknowledged write.

use std::time::Duration;

use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;

#[tokio::test]
async fn watch_delivers_every_change_in_order_and_resumes() {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    c.create(tenant("pre", "", 0, &[])).await.expect("pre");
    let mut w = c
        .watch_tenants(WatchRequest {
            from_revision: 0,
            label_selector: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = next(&mut w).await;
    assert_eq!(first.r#type, EventType::Added as i32, "snapshot");
    let synced = next(&mut w).await;
    assert_eq!(synced.r#type, EventType::Synced as i32);

    let n = 50;
    for i in 0..n {
        c.create(tenant(&format!("t{i}"), "", 0, &[]))
            .await
            .expect("create");
    }
    let mut t = c.get::<Tenant>("t7").await.expect("get");
    t.spec.as_mut().expect("s").volume_quota = 3;
    c.update(t).await.expect("update");
    c.delete::<Tenant>("t9").await.expect("delete");

    let mut last = synced.revision;
    let mut seen = Vec::new();
    for _ in 0..n + 2 {
        let ev = next(&mut w).await;
        assert!(
            ev.revision > last,
            "revisions increase: {} then {}",
            last,
            ev.revision
        );
        last = ev.revision;
        seen.push(ev);
    }
    for (i, ev) in seen.iter().take(n).enumerate() {
        assert_eq!(ev.r#type, EventType::Added as i32);
        let Some(watch_event::Object::Tenant(t)) = &ev.object else {
            panic!("tenant")
        };
        assert_eq!(
            t.metadata.as_ref().expect("m").name,
            format!("t{i}"),
            "in creation order"
        );
    }
    assert_eq!(seen[n].r#type, EventType::Modified as i32);
    assert_eq!(seen[n + 1].r#type, EventType::Deleted as i32);

    // Resume from the middle: exactly the events after that revision.
    let mid = seen[n / 2].revision;
    let mut r = c
        .watch_tenants(WatchRequest {
            from_revision: mid,
            label_selector: String::new(),
        })
        .await
        .expect("resume")
        .into_inner();
    for ev in &seen[n / 2 + 1..] {
        let got = next(&mut r).await;
        assert_eq!(got.revision, ev.revision);
        assert_eq!(got.r#type, ev.r#type);
    }
}

#[tokio::test]
async fn watch_filters_by_label_selector() {
    let ctl = Controller::start();
    let mut c = ctl.admin().await;
    let mut w = c
        .watch_tenants(WatchRequest {
            from_revision: 0,
            label_selector: "team=vision".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next(&mut w).await.r#type, EventType::Synced as i32);
    c.create(tenant("a", "", 0, &[])).await.expect("a");
    let mut b = tenant("b", "", 0, &[]);
    b.metadata
        .as_mut()
        .expect("m")
        .labels
        .insert("team".into(), "vision".into());
    c.create(b).await.expect("b");
    let ev = next(&mut w).await;
    let Some(watch_event::Object::Tenant(t)) = ev.object else {
        panic!("tenant")
    };
    assert_eq!(t.metadata.expect("m").name, "b");
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_write() {
    let mut ctl = Controller::start();
    let mut c = ctl.admin().await;
    c.create(tenant("lab", "", 0, &[])).await.expect("lab");
    c.create(storage_node("s1", 4420)).await.expect("s1");
    c.create(pool("p1", "s1", "100TiB", &[])).await.expect("p1");
    // Writers run concurrently; the controller dies under them.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut cl = c.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let name = format!("w{w}-{i}");
                let r = cl.create(volume(&name, "lab", "1GiB", "p1")).await;
                match r {
                    Ok(_) => acked.lock().expect("lock").push(name),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ctl.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 20,
        "too few writes before the kill: {}",
        acked.len()
    );
    ctl.spawn();
    let mut c = ctl.admin().await;
    let list = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let present: std::collections::HashSet<String> = list
        .items
        .iter()
        .map(|v| v.metadata.as_ref().expect("m").name.clone())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    // Usage aggregates are rebuilt from the store too.
    let p = c.get::<Pool>("p1").await.expect("pool");
    assert_eq!(p.status.expect("st").volume_count as usize, present.len());
}

#[tokio::test]
async fn corrupt_store_and_bad_config_refuse_to_start() {
    let mut ctl = Controller::start();
    ctl.kill9();
    std::fs::write(ctl.dir.join("store.redb"), vec![0x42u8; 16384]).expect("corrupt");
    let out = ctl.command().output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.redb"), "{err}");

    std::fs::remove_file(ctl.dir.join("store.redb")).expect("rm");
    std::fs::write(ctl.dir.join("pki/server.crt"), "not a certificate").expect("bad cert");
    let out = ctl.command().output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.crt"), "{err}");

    let cfg = std::fs::read_to_string(ctl.config_path()).expect("cfg");
    std::fs::write(ctl.config_path(), format!("{cfg}\nbogus_key = 1\n")).expect("cfg");
    let out = ctl.command().output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bogus_key") || err.contains("unknown field"),
        "{err}"
    );
}
