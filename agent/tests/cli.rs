//! The CLI contract scripts rely on (the Puppet provider among them) that
//! needs no running agent or controller: the JSON error shape and exit code
//! when the agent cannot be reached, and `enroll --keep-config` refusing to
//! run without the config it promises to keep.

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrofab-agent"))
        .args(args)
        .output()
        .expect("running ferrofab-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unreachable_agent_gives_a_json_error_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let sock = sock.to_str().unwrap();
    let config = dir.path().join("absent.toml");
    let config = config.to_str().unwrap();
    for cmd in [
        vec!["attachments", "--json"],
        vec!["attach", "v1", "--json", "--timeout", "1s"],
        vec!["detach", "v1", "--json", "--timeout", "1s"],
    ] {
        let mut args = vec!["--config", config, "--socket", sock];
        args.extend(cmd);
        let (code, stdout, stderr) = agent(&args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["error"]["code"], "agent_unreachable", "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("none.sock"), "{msg}");
        assert!(stderr.contains("is ferrofab-agent running"), "{stderr}");
    }
    // Without --json the stdout stays empty: the reason is on stderr.
    let (code, stdout, _) = agent(&["--socket", sock, "attachments"]);
    assert_eq!((code, stdout.as_str()), (1, ""));
}

#[test]
fn enroll_keep_config_requires_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let (code, _, stderr) = agent(&[
        "--config",
        config.to_str().unwrap(),
        "enroll",
        "--keep-config",
        "--token",
        "t",
        "--controller",
        "127.0.0.1:9",
        "--ca",
        "/nonexistent/ca.pem",
        "--node",
        "ws1",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(
        !config.exists(),
        "enroll --keep-config must not write a config"
    );
}
