//! One-step enrollment end to end: a token minted with the CLI is all a
//! node needs (`ferrofab-agent enroll --token T --controller ADDR`); the
//! CA comes from the controller's handshake, checked against the token's
//! pin, the node name from the token and the roles from the declared Node.
//! A token whose pin does not match the controller's CA is refused before
//! anything is written.
//!
//! Run: `cargo test -p ferrofab-agent --test enroll`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ferrofab_agent::{AgentConfig, Role};
use ferrofab_proto::v1::{ConditionStatus, Node};
use ferrofab_testkit::agent::*;

fn ok(what: &str, o: Output) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// `ferrofab-agent enroll` with only the token and the address, plus the
/// flags that keep it inside `dir`.
fn enroll(ctl: &Controller, dir: &Path, token: &str) -> Output {
    Command::new(agent_bin())
        .args(["enroll", "--token", token, "--controller", &ctl.addr])
        .arg("--config")
        .arg(dir.join("etc/agent.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .expect("run enroll")
}

fn mint(ctl: &Controller, node: &str) -> String {
    ok(
        "node token create",
        ferrofab(ctl, &["node", "token", "create", "--node", node]),
    )
}

#[test]
fn token_and_address_are_enough_and_a_wrong_pin_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctl = start_controller(tmp.path());
    let data_port = free_port();
    ok(
        "node create",
        ferrofab(
            &ctl,
            &[
                "node",
                "create",
                "stor-9",
                "--role",
                "storage",
                "--address",
                &format!("127.0.0.1:{data_port}"),
            ],
        ),
    );

    // A token whose pin is not this controller's CA: refused, nothing written.
    let token = mint(&ctl, "stor-9");
    assert_eq!(token.split('.').count(), 4, "token carries no pin: {token}");
    let (head, _) = token.rsplit_once('.').expect("pin part");
    let forged = format!("{head}.{}", ferrofab_pki::CaPin::of_der(b"another CA"));
    let bad = tmp.path().join("bad");
    let out = enroll(&ctl, &bad, &forged);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wrong pin accepted");
    assert!(
        err.contains("controller's CA does not match the token's pin"),
        "{err}"
    );
    assert!(
        !bad.exists(),
        "a refused enrollment wrote {}",
        bad.display()
    );
    // A token without a pin needs --ca, and says so.
    let out = enroll(&ctl, &bad, head);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--ca"), "{err}");
    assert!(
        !bad.exists(),
        "a refused enrollment wrote {}",
        bad.display()
    );

    // The real token (not burned by the refusals above) enrolls in one step.
    let node_dir = tmp.path().join("stor-9");
    let out = enroll(&ctl, &node_dir, &token);
    let printed = ok("enroll", out);
    assert!(printed.contains("\"stor-9\""), "{printed}");
    let config = node_dir.join("etc/agent.toml");
    let mut cfg = AgentConfig::load(&config).expect("enrolled config");
    assert_eq!(cfg.node, "stor-9");
    assert_eq!(cfg.roles, vec![Role::Storage]);
    let ca = std::fs::read(&cfg.tls.ca).expect("ca.crt written");
    assert_eq!(
        ferrofab_pki::first_cert_from_pem("written", &ca).expect("ca"),
        ferrofab_pki::first_cert_from_pem(
            "controller",
            &std::fs::read(ctl.ca()).expect("controller ca")
        )
        .expect("ca"),
        "the learned CA is the controller's"
    );

    // Run it (sockets and directories inside the temp dir) until Ready.
    cfg.expose_dir = node_dir.join("volumes");
    cfg.api_socket = node_dir.join("agent.sock");
    cfg.resync_interval = "2s".into();
    std::fs::write(&config, cfg.to_toml().expect("toml")).expect("write config");
    let mut agent = AgentProc::start("stor-9", node_dir, config, data_port, 0);
    let rt = rt();
    wait_for("stor-9 Ready", Duration::from_secs(30), || {
        let node = rt
            .block_on(async { ctl.admin().await.get::<Node>("stor-9").await })
            .ok()?;
        let spec = node.spec.as_ref()?;
        assert_eq!(spec.data_addresses.len(), 1, "declared address kept");
        node.status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == ConditionStatus::True as i32)
            .then_some(())
    });
    agent.stop();
}
