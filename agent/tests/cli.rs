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

/// `status` (and every local API command) with a `--config` that does not
/// exist used to fall back to the default socket and could show another
/// agent's status. Now: `config_missing`, which the Puppet provider reads
/// as "agent absent", exit 1, and nothing is contacted.
#[test]
fn missing_config_is_an_error_not_the_default_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("absent.toml");
    let config = config.to_str().unwrap();
    for cmd in [vec!["status", "--json"], vec!["attachments", "--json"]] {
        let mut args = vec!["--config", config];
        args.extend(cmd);
        let (code, stdout, stderr) = agent(&args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
        assert_eq!(v["error"]["code"], "config_missing", "{v}");
        assert!(stderr.contains("absent.toml"), "{stderr}");
        assert!(!stderr.contains("agent.sock"), "{stderr}");
    }
    // A config that exists but is broken is its own error.
    std::fs::write(dir.path().join("bad.toml"), "node = 3\n").unwrap();
    let bad = dir.path().join("bad.toml");
    let (code, stdout, _) = agent(&["--config", bad.to_str().unwrap(), "status", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(v["error"]["code"], "config_invalid", "{v}");
}

/// A minimal agent config with real TLS files from a test CA.
fn good_config(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let pki = dir.join("pki");
    ferrofab_pki::init(&pki, &Default::default()).unwrap();
    let ca = ferrofab_pki::PkiDir::new(&pki).load_ca().unwrap();
    let id = ferrofab_pki::Identity::node("n1").unwrap();
    let validity = ferrofab_pki::Validity::from_now(std::time::Duration::from_secs(3600)).unwrap();
    let (cert, key) = ferrofab_pki::issue_to_dir(&ca, &id, validity, &pki, false).unwrap();
    std::fs::create_dir(dir.join("pool")).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "node = \"n1\"\nroles = [\"storage\"]\ncontroller_endpoints = [\"https://127.0.0.1:1\"]\n\
             state_dir = \"{state}\"\napi_socket = \"{state}/agent.sock\"\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             [pools.p1]\npath = \"{pool}\"\n",
            state = dir.join("state").display(),
            ca = pki.join("ca.crt").display(),
            cert = cert.display(),
            key = key.display(),
            pool = dir.join("pool").display(),
        ),
    )
    .unwrap();
    (path, key)
}

#[test]
fn check_config_accepts_a_good_config_and_names_faults() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, key) = good_config(dir.path());
    let cfg_s = cfg.to_str().unwrap();
    let (code, stdout, stderr) = agent(&["--config", cfg_s, "--check-config"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("config OK: {cfg_s}\n"));
    assert!(!dir.path().join("state").exists(), "check created state");

    std::fs::remove_dir(dir.path().join("pool")).unwrap();
    let (code, stdout, stderr) = agent(&["--config", cfg_s, "--check-config"]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.contains("pools.p1.path"), "{stderr}");
    std::fs::create_dir(dir.path().join("pool")).unwrap();

    std::fs::remove_file(&key).unwrap();
    let (code, _, stderr) = agent(&["--config", cfg_s, "--check-config"]);
    assert_eq!(code, 1);
    assert!(stderr.contains(".key"), "{stderr}");

    let (code, _, stderr) = agent(&["--config", "/nonexistent/agent.toml", "--check-config"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/agent.toml"), "{stderr}");
    // One copy of the I/O error's text.
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}
