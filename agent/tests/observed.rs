//! End-to-end: every spec change is observed. After a resize, a new
//! expiry, a label change or a change of the tenant's allowed nodes,
//! `ferrofab wait volume/X` returns within seconds (the volume's
//! `observed_generation` catches up), and the `Exported` condition follows
//! the new size.

use std::time::{Duration, Instant};

use ferrofab_proto::v1::*;
use ferrofab_testkit::agent::*;

/// How long a `wait` after a change may take: the data path converges
/// within a second, so this is generous and still "a few seconds".
const WAIT: &str = "10s";

fn ok(ctl: &Controller, args: &[&str]) {
    let o = ferrofab(ctl, args);
    assert!(
        o.status.success(),
        "ferrofab {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `ferrofab wait volume/NAME`, which must succeed within [`WAIT`].
fn wait_volume(ctl: &Controller, name: &str, after: &str) {
    let t = Instant::now();
    let target = format!("volume/{name}");
    let o = ferrofab(ctl, &["wait", &target, "--timeout", WAIT]);
    assert!(
        o.status.success(),
        "`ferrofab wait {target}` after {after} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("wait after {after}: {:?}", t.elapsed());
}

async fn get_volume(ctl: &Controller, name: &str) -> Volume {
    ctl.admin()
        .await
        .get::<Volume>(name)
        .await
        .expect("get volume")
}

async fn update_volume(ctl: &Controller, f: impl FnOnce(&mut Volume)) {
    let mut v = get_volume(ctl, "scratch").await;
    f(&mut v);
    ctl.admin().await.update(v).await.expect("update volume");
}

fn exported_message(v: &Volume) -> String {
    v.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Exported"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn generations(v: &Volume) -> (u64, u64) {
    (
        v.metadata.as_ref().map_or(0, |m| m.generation),
        v.status.as_ref().map_or(0, |s| s.observed_generation),
    )
}

#[test]
fn every_spec_change_is_observed_and_wait_returns() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let ctl = start_controller(tmp.path());
    let (s1, [ws1, ws2]) = rt.block_on(s1_and_workstations_allowing(
        &ctl,
        ["ws1", "ws2"],
        &["ws1"],
        &[("scratch", "64MiB")],
    ));
    let path = attach(&ws1, "scratch");
    wait_volume(&ctl, "scratch", "creation");

    // Resize through the CLI: the workstation sees the new size, wait
    // returns, and the Exported message names the new size.
    ok(&ctl, &["volume", "resize", "scratch", "128MiB"]);
    wait_volume(&ctl, "scratch", "a resize");
    wait_for("grown exposure", Duration::from_secs(10), || {
        (std::fs::metadata(&path).ok()?.len() == 128 * MIB as u64).then_some(())
    });
    let v = rt.block_on(get_volume(&ctl, "scratch"));
    let (generation, observed) = generations(&v);
    assert_eq!((generation, observed), (2, 2), "{v:?}");
    let msg = exported_message(&v);
    assert!(
        msg.contains(&(128 * MIB).to_string()),
        "Exported follows the size: {msg}"
    );

    // A new expiry: nothing changes on the data path.
    rt.block_on(update_volume(&ctl, |v| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        v.spec.as_mut().expect("spec").expires_at = Some(prost_types::Timestamp {
            seconds: now + 30 * 86_400,
            nanos: 0,
        });
    }));
    wait_volume(&ctl, "scratch", "an expiry change");
    let (generation, observed) = generations(&rt.block_on(get_volume(&ctl, "scratch")));
    assert_eq!((generation, observed), (3, 3));

    // A label change.
    rt.block_on(update_volume(&ctl, |v| {
        v.metadata
            .as_mut()
            .expect("meta")
            .labels
            .insert("project".into(), "obs".into());
    }));
    wait_volume(&ctl, "scratch", "a label change");

    // The tenant allows another node.
    ok(
        &ctl,
        &[
            "tenant",
            "update",
            "lab",
            "--allowed-node",
            "ws1",
            "--allowed-node",
            "ws2",
        ],
    );
    wait_volume(&ctl, "scratch", "a tenant allowed-nodes change");
    let v = rt.block_on(get_volume(&ctl, "scratch"));
    let (generation, observed) = generations(&v);
    assert_eq!(generation, observed, "{v:?}");
    assert_eq!(
        std::fs::metadata(&path).expect("exposed").len(),
        128 * MIB as u64
    );
    drop((ws1, ws2, s1));
}

/// Burst expiry on the workstation: the agent learns the volume's
/// `expires_at` from its desired connection, shows it in `status` and
/// `attachments` (RFC 3339 and relative), warns once inside its
/// `expiry_warning` window (24 h by default) and exports it per exposed
/// volume; an extension moves it without reconnecting the volume.
#[test]
fn workstation_shows_warns_and_exports_the_expiry() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let ctl = start_controller(tmp.path());
    let (s1, [ws1]) = rt.block_on(s1_and_workstations(&ctl, ["ws1"], &[("scratch", "64MiB")]));
    let path = attach(&ws1, "scratch");
    // Expires in 3 h: inside the default 24 h window.
    ok(&ctl, &["volume", "update", "scratch", "--expires-in", "3h"]);
    wait_volume(&ctl, "scratch", "an expiry");
    let expires = get_volume_expiry(&rt, &ctl);
    let a = wait_for("expiry in status", Duration::from_secs(15), || {
        let st = ws1.status();
        let a = st["attachments"].as_array()?.first()?.clone();
        a.get("expires_at").is_some().then_some(a)
    });
    assert_eq!(
        a["expires_at"].as_str(),
        Some(ferrofab_agent::expiry::rfc3339(expires).as_str()),
        "{a}"
    );
    assert_eq!(a["expires_in"].as_str(), Some("in 3h"), "{a}");
    assert_eq!(a["expiry_warning"], true, "{a}");
    let (_, human, _) = ws1.cli(&["attachments"]);
    assert!(
        human.contains("expires ") && human.contains("(in 3h)  WARNING"),
        "{human}"
    );
    let m = ws1.metrics();
    assert!(
        m.contains(&format!(
            "ferrofab_agent_volume_expiry_timestamp_seconds{{volume=\"scratch\"}} {expires}"
        )),
        "{m}"
    );
    assert!(
        m.contains("ferrofab_agent_volume_expiry_warning{volume=\"scratch\"} 1"),
        "{m}"
    );
    wait_for("one warning in the log", Duration::from_secs(15), || {
        ws1.log()
            .contains("burst volume scratch expires at")
            .then_some(())
    });

    // Extended by a week: the warning clears, the volume stays connected.
    ok(&ctl, &["volume", "extend", "scratch", "--by", "7d"]);
    wait_volume(&ctl, "scratch", "an extension");
    wait_for("extension seen", Duration::from_secs(15), || {
        let st = ws1.status();
        let a = st["attachments"].as_array()?.first()?.clone();
        (a["expires_in"].as_str() == Some("in 7d")).then_some(())
    });
    let m = ws1.metrics();
    assert!(
        m.contains("ferrofab_agent_volume_expiry_warning{volume=\"scratch\"} 0"),
        "{m}"
    );
    assert_eq!(
        ws1.log().matches("burst volume scratch expires at").count(),
        1
    );
    // No detach span: the extension did not reconnect the volume.
    assert!(!ws1.log().contains("detach{"), "{}", ws1.log());
    assert_eq!(
        std::fs::metadata(&path).expect("exposed").len(),
        64 * MIB as u64
    );
    drop((ws1, s1));
}

fn get_volume_expiry(rt: &tokio::runtime::Runtime, ctl: &Controller) -> i64 {
    let v = rt.block_on(get_volume(ctl, "scratch"));
    v.spec
        .and_then(|s| s.expires_at)
        .expect("expires_at")
        .seconds
}
