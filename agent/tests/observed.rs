//! End-to-end: every spec change is observed. After a resize, a new
//! expiry, a label change or a change of the tenant's allowed nodes,
//! `ferrofab wait volume/X` returns within seconds (the volume's
//! `observed_generation` catches up), and the `Exported` condition follows
//! the new size.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use ferrofab_proto::v1::*;

/// How long a `wait` after a change may take: the data path converges
/// within a second, so this is generous and still "a few seconds".
const WAIT: &str = "10s";

/// Runs the `ferrofab` CLI as admin against `ctl`.
fn ferrofab(ctl: &Controller, args: &[&str]) -> Output {
    let cfg = ctl.dir.join("client.toml");
    if !cfg.exists() {
        let text = format!(
            "endpoint = \"https://localhost:{}\"\n[tls]\nca = \"{p}/ca.crt\"\n\
             cert = \"{p}/admin.crt\"\nkey = \"{p}/admin.key\"\n",
            ctl.port,
            p = ctl.dir.join("pki").display()
        );
        std::fs::write(&cfg, text).expect("client config");
    }
    Command::new(cli_bin())
        .args(args)
        .env("FERROFAB_CONFIG", &cfg)
        .env_remove("FERROFAB_ENDPOINT")
        .env("HOME", "/nonexistent")
        .output()
        .expect("run ferrofab")
}

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
        .get_volume(GetVolumeRequest { name: name.into() })
        .await
        .expect("get volume")
        .into_inner()
}

async fn update_volume(ctl: &Controller, f: impl FnOnce(&mut Volume)) {
    let mut v = get_volume(ctl, "scratch").await;
    f(&mut v);
    ctl.admin()
        .await
        .update_volume(UpdateVolumeRequest {
            volume: Some(v),
            ..Default::default()
        })
        .await
        .expect("update volume");
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
    let ctl = Controller::start(tmp.path());
    let (s1, ws1, ws2) = rt.block_on(async {
        let s1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "s1", "storage").await;
        let ws1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws1", "workstation").await;
        let ws2 = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws2", "workstation").await;
        layout(&ctl, &s1, &["ws1"], &[("scratch", "64MiB")]).await;
        (s1, ws1, ws2)
    });
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
