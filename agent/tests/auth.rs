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
