//! Data-path authentication end to end (issue 16): keys issued by a real
//! controller, applied by the storage agent's built-in target, used by the
//! workstation's built-in initiator (through its holder), and rotated
//! under load.

use std::time::Duration;

use ferrofab_nvmeof_host::{ConnectOptions, Controller as Initiator, HostError, HostIdentity};
use ferrofab_proto::v1::{GetNodeRequest, GetVolumeRequest, RotateNodeKeyRequest};
use ferrofab_testkit::agent::*;

/// `[auth] require = true`: every export refuses hosts without a key.
const REQUIRE: &str = "\n[auth]\nrequire = true\n";

/// A controller requiring authentication, storage node s1 and
/// workstation ws1 (built-in drivers), and one volume for ws1.
fn required_cluster(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    volume: &str,
    size: &str,
) -> (Controller, AgentProc, AgentProc) {
    let ctl = start_controller_with_pki(dir, REQUIRE);
    let (s1, ws1) = rt.block_on(async {
        let s1 = AgentProc::enroll_and_start(&ctl, dir, "s1", "storage").await;
        let ws1 = AgentProc::enroll_and_start(&ctl, dir, "ws1", "workstation").await;
        layout(&ctl, &s1, &["ws1"], &[(volume, size)]).await;
        (s1, ws1)
    });
    (ctl, s1, ws1)
}

/// Not a test on its own: the writer process of the rotation test.
#[test]
#[ignore = "helper process of key_rotation_during_a_write_stream_loses_nothing"]
fn write_stream_helper() {
    write_stream_main();
}

/// The holder's log, without the terminal colours it is written with.
fn holder_log(ws: &AgentProc) -> String {
    let raw = std::fs::read_to_string(ws.state_dir().join("holder.log")).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ ... final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Authentication required: the workstation connects only because it got
/// its key. `node rotate-key` during a stream of fsynced writes: the
/// storage node takes the new key first, then the workstation
/// re-authenticates its live connection with it (no reconnect, no I/O
/// error), and every acknowledged block reads back.
#[test]
fn key_rotation_during_a_write_stream_loses_nothing() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (ctl, s1, ws1) = required_cluster(&rt, tmp.path(), "stream", "32MiB");
    let path = attach(&ws1, "stream");
    assert!(
        s1.log().contains("host key applied"),
        "the target got the host key: {}",
        s1.log()
    );
    let mut stream = WriteStream::start(&path);
    stream.wait_acked(200);
    let rotated = rt.block_on(async {
        ctl.admin()
            .await
            .rotate_node_key(RotateNodeKeyRequest { node: "ws1".into() })
            .await
            .expect("rotate")
            .into_inner()
    });
    assert_eq!(rotated.generation, 2);
    assert_eq!(rotated.fingerprint.len(), 16, "{rotated:?}");
    wait_for(
        "re-authenticated with generation 2",
        Duration::from_secs(60),
        || {
            let log = holder_log(&ws1);
            let line = log
                .lines()
                .find(|l| l.contains("re-authenticated with the rotated key"))?;
            line.contains("generation=2").then_some(())
        },
    );
    stream.finish_and_verify(|| format!("{}\n--- holder:\n{}", s1.log(), holder_log(&ws1)));
    // The rotation did not reconnect, and no secret reached a log.
    let logs = format!("{}{}{}", s1.log(), ws1.log(), holder_log(&ws1));
    assert!(!logs.contains("DHHC-1"), "a secret in a log");
    assert!(!holder_log(&ws1).contains("ReauthenticationFailed"));
    drop((ws1, s1));
}

/// Someone who learned a workstation's host NQN (it is in every Connect)
/// but has no key is refused at Connect, while the workstation itself,
/// which has its key, is connected.
#[test]
fn stolen_host_nqn_without_key_is_refused_at_connect() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (ctl, s1, ws1) = required_cluster(&rt, tmp.path(), "secret", "16MiB");
    let path = attach(&ws1, "secret");
    write_sync(&path, &pattern(MIB, 3));
    let (hostnqn, subnqn) = rt.block_on(async {
        let mut admin = ctl.admin().await;
        let node = admin
            .get_node(GetNodeRequest { name: "ws1".into() })
            .await
            .expect("node")
            .into_inner();
        let vol = admin
            .get_volume(GetVolumeRequest {
                name: "secret".into(),
            })
            .await
            .expect("volume")
            .into_inner();
        (
            node.spec.expect("spec").host_nqn,
            vol.status.expect("status").subsystem_nqn,
        )
    });
    let thief = HostIdentity::new(&hostnqn, uuid::Uuid::new_v4()).expect("identity");
    let opts = ConnectOptions::new(format!("127.0.0.1:{}", s1.data_port), subnqn, thief);
    let err = match Initiator::connect(opts) {
        Ok(_) => panic!("a host without the key must be refused"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            HostError::ConnectRejected { .. } | HostError::AuthenticationFailed { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string().to_lowercase().contains("authenticat"),
        "the refusal says why: {err}"
    );
    // The real workstation is untouched.
    assert_eq!(sha256_of(&path, MIB), sha256_of_bytes(&pattern(MIB, 3)));
    drop((ws1, s1));
}

/// A holder as built before authentication keys existed, for the upgrade
/// test: a real holder (its own state directory, the workstation's host
/// identity and expose directory) behind a proxy on the workstation's
/// holder socket that answers as the old build did: `hello` without
/// `dhchap_keys`, and an `ensure` carrying keys refused, as the old
/// spec's `deny_unknown_fields` refused it.
struct LegacyHolder {
    state: std::path::PathBuf,
    socket: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    proxy: Option<std::thread::JoinHandle<()>>,
}

impl LegacyHolder {
    fn start(ws: &AgentProc, state: std::path::PathBuf) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        std::fs::create_dir_all(&state).expect("mkdir");
        for f in ["hostnqn", "hostid"] {
            std::fs::copy(ws.state_dir().join(f), state.join(f)).expect("copy host identity");
        }
        let log = std::fs::File::create(state.join("holder.log")).expect("log");
        let mut child = std::process::Command::new(agent_bin())
            .args(["holder", "run", "--state-dir"])
            .arg(&state)
            .arg("--expose-dir")
            .arg(ws.expose_dir())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("holder run");
        wait_for("the old holder answers", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(state.join("holder.sock"))
                .ok()
                .map(|_| ())
        });
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let socket = ws.state_dir().join("holder.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let refused = std::sync::Arc::new(AtomicUsize::new(0));
        let (st, rf, real) = (stop.clone(), refused.clone(), state.join("holder.sock"));
        let proxy = std::thread::spawn(move || legacy_proxy(&listener, &real, &st, &rf));
        LegacyHolder {
            state,
            socket,
            stop,
            refused,
            proxy: Some(proxy),
        }
    }

    /// Stops the proxy and the holder behind it (its exposures go).
    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.proxy.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::process::Command::new(agent_bin())
            .args(["holder", "stop", "--timeout", "20s", "--state-dir"])
            .arg(&self.state)
            .status();
    }
}

impl Drop for LegacyHolder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn legacy_proxy(
    listener: &std::os::unix::net::UnixListener,
    real: &std::path::Path,
    stop: &std::sync::atomic::AtomicBool,
    refused: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{BufRead, BufReader, Write};
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let s = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = s.set_nonblocking(false);
        let mut line = String::new();
        if BufReader::new(&s).read_line(&mut line).is_err() {
            continue;
        }
        let req: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let spec = &req["spec"];
        let answer = if req["op"] == "ensure"
            && (spec.get("host_key").is_some() || spec.get("ctrl_key").is_some())
        {
            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "{\"ok\":false,\"error\":{\"code\":\"BadRequest\",\"message\":\"unknown field `host_key`\"}}".to_string()
        } else {
            let forwarded = (|| {
                let mut r = std::os::unix::net::UnixStream::connect(real).ok()?;
                r.write_all(line.as_bytes()).ok()?;
                let mut a = String::new();
                BufReader::new(&r).read_line(&mut a).ok()?;
                let mut v: serde_json::Value = serde_json::from_str(&a).ok()?;
                if let Some(h) = v.get_mut("hello").and_then(|h| h.as_object_mut()) {
                    h.remove("dhchap_keys");
                }
                Some(v.to_string())
            })();
            let Some(a) = forwarded else { continue };
            a
        };
        let _ = (&s).write_all(format!("{answer}\n").as_bytes());
    }
}

fn node_capable(ctl: &Controller, rt: &tokio::runtime::Runtime, node: &str) -> bool {
    rt.block_on(async {
        ctl.admin()
            .await
            .get_node(GetNodeRequest { name: node.into() })
            .await
            .expect("node")
            .into_inner()
            .status
            .is_some_and(|s| s.dhchap_capable)
    })
}

/// An agent upgraded beside a holder from before keys (holders outlive
/// agent restarts on purpose): the node reports that it cannot
/// authenticate, the controller issues it no key and the attachment keeps
/// serving without one; once that holder is replaced by a current one,
/// the node can, gets its key, and the live connection authenticates.
#[test]
fn a_holder_from_before_keys_gets_no_key_until_replaced() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    // Hosts without keys must stay allowed for the old holder.
    let ctl = start_controller_with_pki(tmp.path(), "\n[auth]\nrequire = false\n");
    let (s1, mut ws1) = rt.block_on(async {
        let s1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "s1", "storage").await;
        let ws1 = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws1", "workstation").await;
        layout(&ctl, &s1, &["ws1"], &[]).await;
        (s1, ws1)
    });
    // The upgrade: the agent restarts beside a holder of the old build.
    ws1.stop();
    let _ = std::process::Command::new(agent_bin())
        .args(["holder", "stop", "--timeout", "20s", "--state-dir"])
        .arg(ws1.state_dir())
        .status();
    let mut legacy = LegacyHolder::start(&ws1, tmp.path().join("legacy-holder"));
    ws1.spawn();
    // The node reported capable on its first start (beside a new holder):
    // the volume is created only once the restarted agent has reported
    // what it adopted, as after a real upgrade, where the node never
    // reported capable.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node_capable(&ctl, &rt, "ws1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the node still reports capable beside an old holder"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    rt.block_on(create_volume(&ctl, "legacy", "16MiB", "p1"));
    let path = attach(&ws1, "legacy");
    write_sync(&path, &pattern(MIB, 5));
    // Several report rounds (resync 2 s): time for a key to go out if
    // the node claimed it could use one.
    std::thread::sleep(Duration::from_secs(6));
    assert!(!node_capable(&ctl, &rt, "ws1"), "reported capable");
    assert!(
        !s1.log().contains("host key applied"),
        "a key was issued for a holder that cannot use it: {}",
        s1.log()
    );
    assert_eq!(
        legacy.refused.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "keys were sent to the old holder"
    );
    assert_eq!(sha256_of(&path, MIB), sha256_of_bytes(&pattern(MIB, 5)));

    // Replaced by a current holder (the volume is idle): capable, keyed.
    ws1.stop();
    legacy.stop();
    ws1.spawn();
    wait_for(
        "ws1 reports dhchap_capable",
        Duration::from_secs(60),
        || node_capable(&ctl, &rt, "ws1").then_some(()),
    );
    wait_for(
        "the target holds ws1's key",
        Duration::from_secs(60),
        || s1.log().contains("host key applied").then_some(()),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !holder_log(&ws1).contains("re-authenticated with the rotated key") {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection did not authenticate with its key:\n{}\n--- agent:\n{}",
            holder_log(&ws1),
            ws1.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sha256_of(&path, MIB), sha256_of_bytes(&pattern(MIB, 5)));
    drop((ws1, s1));
}
