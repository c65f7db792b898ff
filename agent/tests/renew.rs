//! Nodes renew their certificates before they expire, through
//! AgentService.Renew, without re-enrollment and without losing the
//! controller connection.

use std::time::Duration;

use ferrofab_testkit::agent::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_renews_its_certificate_before_expiry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // One-minute node certificates: issued backdated by five minutes for
    // clock skew, so they are in their last third at once.
    let ctl = start_controller_with_pki(tmp.path(), "node_cert_validity = \"1m\"\n");
    let mut ws = AgentProc::enroll_and_start(&ctl, tmp.path(), "ws-renew", "workstation").await;
    let etc = tmp.path().join("ws-renew/etc");
    let cert = etc.join("node.crt");
    let before = std::fs::read(&cert).expect("enrolled certificate");
    wait_for("the renewed certificate", Duration::from_secs(60), || {
        let now = std::fs::read(&cert).ok()?;
        (now != before).then_some(())
    });
    let tls = ferrofab_pki::load_client_tls(&etc.join("ca.crt"), &cert, &etc.join("node.key"))
        .expect("renewed certificate loads with the node's key");
    assert_eq!(tls.identity.to_string(), "node:ws-renew");
    // Still talking to the controller with it.
    wait_for("controller connection", Duration::from_secs(30), || {
        let st = ws.status();
        (st["result"]["controller_connected"] == true || st["controller_connected"] == true)
            .then_some(())
    });
    ws.stop();
}
