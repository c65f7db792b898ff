//! End-to-end: a real controller and agent processes on loopback.

mod common;

use std::io::BufRead;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use ferrofab_proto::v1::{GetVolumeRequest, UpdateVolumeRequest};

const MIB: usize = 1 << 20;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn attach(ws: &AgentProc, volume: &str) -> PathBuf {
    let v = ws.cli_json(&["attach", volume, "--timeout", "90s", "--json"]);
    assert_eq!(v["schema_version"], 1, "{v}");
    PathBuf::from(v["path"].as_str().expect("path"))
}

async fn grow(ctl: &Controller, name: &str, size: &str) {
    let mut admin = ctl.admin().await;
    let mut v = admin
        .get_volume(GetVolumeRequest { name: name.into() })
        .await
        .expect("get volume")
        .into_inner();
    v.spec.as_mut().expect("spec").size = size.into();
    admin
        .update_volume(UpdateVolumeRequest {
            volume: Some(v),
            ..Default::default()
        })
        .await
        .expect("grow");
}

/// Converge a layout until the exposed file is writable; data survives a
/// detach and a reattach to another workstation (sha256); a grow shows on
/// the exposed file; status, attachments and metrics answer.
#[test]
fn converge_attach_detach_reattach_and_grow() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let ctl = Controller::start(tmp.path());
    let (s1, ws1, ws2) = rt.block_on(async {
        let s1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "s1", "storage").await;
        let ws1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws1", "workstation").await;
        let ws2 = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws2", "workstation").await;
        layout(&ctl, &s1, &["ws1", "ws2"], &[("scratch", "64MiB")]).await;
        (s1, ws1, ws2)
    });

    let path = attach(&ws1, "scratch");
    assert_eq!(path, ws1.expose_dir().join("scratch"));
    assert_eq!(
        std::fs::metadata(&path).expect("exposed").len(),
        64 * MIB as u64
    );
    // Attach is idempotent.
    assert_eq!(attach(&ws1, "scratch"), path);
    let data = pattern(4 * MIB, 42);
    write_sync(&path, &data);
    let want = sha256_of(&path, data.len());

    let list = ws1.cli_json(&["attachments", "--json"]);
    assert_eq!(list["attachments"][0]["volume"], "scratch", "{list}");
    let st = s1.status();
    assert_eq!(st["schema_version"], 1);
    assert_eq!(st["exports"][0]["ready"], true, "{st}");
    let m = s1.metrics();
    assert!(m.contains("ferrofab_agent_volume_writes_total{nqn="), "{m}");
    assert!(m.contains("ferrofab_agent_reconcile_total"), "{m}");

    let d = ws1.cli_json(&["detach", "scratch", "--json"]);
    assert_eq!(d["volume"], "scratch");
    assert!(!path.exists(), "exposure must be gone after detach");
    // Detach is idempotent.
    ws1.cli_json(&["detach", "scratch", "--json"]);

    let path2 = attach(&ws2, "scratch");
    assert_eq!(
        sha256_of(&path2, data.len()),
        want,
        "data must survive detach/reattach"
    );

    rt.block_on(grow(&ctl, "scratch", "128MiB"));
    wait_for("grown exposure", Duration::from_secs(60), || {
        (std::fs::metadata(&path2).ok()?.len() == 128 * MIB as u64).then_some(())
    });
    assert_eq!(sha256_of(&path2, data.len()), want);

    // Errors carry the controller's reason and exit non-zero.
    let (code, _, err) = ws2.cli(&["attach", "nope", "--timeout", "5s"]);
    assert_ne!(code, 0);
    assert!(err.contains("nope"), "{err}");
    drop((ws1, ws2, s1));
}

/// Controller killed: the data path keeps serving; after its restart the
/// agents resync (a grow made after the restart reaches the workstation).
/// Drift: a backing file removed out of band is reported with its reason.
#[test]
fn controller_outage_resync_and_drift() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let mut ctl = Controller::start(tmp.path());
    let (s1, ws1) = rt.block_on(async {
        let s1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "s1", "storage").await;
        let ws1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws1", "workstation").await;
        layout(
            &ctl,
            &s1,
            &["ws1"],
            &[("data", "32MiB"), ("victim", "16MiB")],
        )
        .await;
        (s1, ws1)
    });
    let path = attach(&ws1, "data");

    ctl.kill9();
    wait_for("agents notice the outage", Duration::from_secs(30), || {
        (ws1.status()["controller_connected"] == false).then_some(())
    });
    let data = pattern(MIB, 7);
    write_sync(&path, &data);
    assert_eq!(sha256_of(&path, data.len()), sha256_of_bytes(&data));

    // A storage agent restarted without the controller rebuilds its exports
    // from the cache; the workstation reconnects.
    let mut s1 = s1;
    s1.stop();
    s1.spawn();
    wait_for("export rebuilt from cache", Duration::from_secs(30), || {
        let st = s1.status();
        let ok = st["exports"]
            .as_array()?
            .iter()
            .any(|e| e["volume"] == "data" && e["ready"] == true);
        ok.then_some(())
    });
    let data2 = pattern(MIB, 8);
    write_sync(&path, &data2);
    assert_eq!(sha256_of(&path, data2.len()), sha256_of_bytes(&data2));

    ctl.spawn();
    wait_for("agents reconnect", Duration::from_secs(60), || {
        (ws1.status()["controller_connected"] == true
            && s1.status()["controller_connected"] == true)
            .then_some(())
    });
    rt.block_on(grow(&ctl, "data", "64MiB"));
    wait_for(
        "grow after controller restart",
        Duration::from_secs(60),
        || (std::fs::metadata(&path).ok()?.len() == 64 * MIB as u64).then_some(()),
    );

    // Drift: remove the backing file of "victim" behind the agent's back.
    let victim = std::fs::read_dir(s1.pool_dir())
        .expect("pool dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .find(|p| {
            let m = std::fs::read_to_string(format!("{}.ferrofab-owner", p.display()))
                .unwrap_or_default();
            m.contains("\"victim\"")
        })
        .expect("victim backing file with ownership marker");
    std::fs::remove_file(&victim).expect("remove backing file");
    wait_for("drift reported", Duration::from_secs(30), || {
        let st = s1.status();
        let e = st["exports"]
            .as_array()?
            .iter()
            .find(|e| e["volume"] == "victim")?
            .clone();
        (e["ready"] == false && e["reason"] == "BackingFileMissing").then_some(())
    });
    drop((ws1, s1));
}

fn sha256_of_bytes(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

const BLOCKS: u64 = 1500;
const BS: usize = 4096;

fn stamp(i: u64) -> Vec<u8> {
    let mut b = pattern(BS, 1000 + i);
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

/// Not a test on its own: the writer process of the kill -9 test. Writes
/// stamped blocks with an fsync each and prints "ack N" once N is durable.
#[test]
#[ignore = "helper process of storage_agent_kill9_during_write_stream"]
fn write_stream_helper() {
    use std::io::Write;
    let Some(path) = std::env::var_os("FF_STREAM_PATH") else {
        return;
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open exposed file");
    let mut out = std::io::stdout().lock();
    for i in 0..BLOCKS {
        f.write_all_at(&stamp(i), i * BS as u64).expect("write");
        f.sync_data().expect("fsync");
        writeln!(out, "ack {i}").expect("stdout");
        out.flush().expect("flush");
    }
}

/// kill -9 of the storage agent during a stream of verified, fsynced
/// writes through the exposure: after its restart the stream completes and
/// every acknowledged write reads back.
#[test]
fn storage_agent_kill9_during_write_stream() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let ctl = Controller::start(tmp.path());
    let (mut s1, ws1) = rt.block_on(async {
        let s1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "s1", "storage").await;
        let ws1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws1", "workstation").await;
        layout(&ctl, &s1, &["ws1"], &[("stream", "32MiB")]).await;
        (s1, ws1)
    });
    let path = attach(&ws1, "stream");
    // The writer is another process: this one must not hold the exposed
    // file open while it forks the restarted agent (a forked child closing
    // its copy of the descriptor sends FUSE a FLUSH, which waits for the
    // storage node that is being restarted).
    let mut writer = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "write_stream_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FF_STREAM_PATH", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let mut lines = std::io::BufReader::new(writer.stdout.take().expect("stdout")).lines();
    let mut acked = 0u64;
    for line in lines.by_ref() {
        if let Some(i) = line.expect("writer output").strip_prefix("ack ") {
            acked = i.parse::<u64>().expect("ack number") + 1;
            if acked >= 200 {
                break;
            }
        }
    }
    assert!(acked >= 200, "write stream did not start");
    s1.kill9();
    std::thread::sleep(Duration::from_millis(500));
    s1.spawn();
    for line in lines {
        if let Some(i) = line.expect("writer output").strip_prefix("ack ") {
            acked = i.parse::<u64>().expect("ack number") + 1;
        }
    }
    let st = writer.wait().expect("writer exit");
    assert!(
        st.success(),
        "write stream failed after {acked} acks; storage log:\n{}",
        s1.log()
    );
    assert_eq!(acked, BLOCKS);
    let f = std::fs::File::open(&path).expect("open");
    for i in 0..BLOCKS {
        let mut buf = vec![0u8; BS];
        f.read_exact_at(&mut buf, i * BS as u64).expect("read back");
        assert!(buf == stamp(i), "acknowledged block {i} lost or damaged");
    }
    drop((ws1, s1));
}
