//! End to end on the etcd backend: a real controller process whose store is
//! a real etcd reached over mTLS with the controller's own client
//! certificate, serving the admin API (what the CLI speaks) and agents'
//! desired-state streams; the state survives a kill -9 of the controller.

mod etcd_harness;

use std::path::Path;
use std::time::Duration;

use etcd_harness::{Etcd, Tls};
use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;

async fn next(s: &mut tonic::Streaming<DesiredState>) -> DesiredState {
    next_within(s, Duration::from_secs(15)).await
}

/// etcd's own PKI, unrelated to the controller's: server certificate for
/// 127.0.0.1 and a client certificate for the controller.
fn etcd_pki(dir: &Path) -> Tls {
    ferrofab_pki::init(dir, &ferrofab_pki::InitOptions::default()).expect("pki init");
    let client = TestPki::load(dir).client("admin");
    std::fs::write(dir.join("ctl-etcd.crt"), &client.cert).expect("write");
    std::fs::write(dir.join("ctl-etcd.key"), &client.key).expect("write");
    Tls {
        ca_file: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("ctl-etcd.crt"),
        client_key: dir.join("ctl-etcd.key"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_on_etcd_over_mtls_serves_admin_and_agents_and_survives_kill9() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let tls = etcd_pki(pki_dir.path());
    let etcd = Etcd::start_tls(tls.clone());
    let extra = format!(
        "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"{}\"]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        etcd.client_url,
        tls.ca_file.display(),
        tls.client_cert.display(),
        tls.client_key.display()
    );
    let mut ctl = Controller::start_with(Options {
        extra_toml: extra,
        ..Options::default()
    });
    let mut admin = ctl.admin().await;
    basic_layout(&mut admin).await;
    let mut s1 = ctl.agent_as("node:s1").await;
    let mut s1_stream = s1.watch_desired("s1").await;
    assert!(next(&mut s1_stream).await.exports.is_empty());
    let v = admin
        .create(volume("data", "lab", "10GiB", "p1"))
        .await
        .expect("create volume");
    let nqn = v.status.as_ref().expect("status").subsystem_nqn.clone();
    let ds = next(&mut s1_stream).await;
    assert_eq!(ds.exports.len(), 1, "the storage agent is told to export");
    admin
        .create(attachment("data-ws1", "data", "ws1"))
        .await
        .expect("attachment");
    s1.report_status(ReportStatusRequest {
        node: "s1".into(),
        exports: vec![ExportStatus {
            volume: "data".into(),
            subsystem_nqn: nqn.clone(),
            ready: true,
            conditions: vec![],
            generation: 1,
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("report");

    let info = admin
        .get_server_info(GetServerInfoRequest {})
        .await
        .expect("server info")
        .into_inner();
    assert_eq!(
        info.store, "etcd",
        "GetServerInfo names the configured backend"
    );

    // The objects are in etcd, under the documented prefix.
    let mut direct = etcd.client().await;
    let got = direct
        .get("/ferrofab/v1/objects/volumes/data", None)
        .await
        .expect("etcd get");
    assert_eq!(
        got.kvs().len(),
        1,
        "volume stored at /ferrofab/v1/objects/volumes/data"
    );

    // kill -9 and start again: everything comes back from etcd.
    ctl.kill9();
    ctl.spawn();
    let mut admin = ctl.admin().await;
    let v = admin
        .get::<Volume>("data")
        .await
        .expect("volume after restart");
    assert!(
        v.status.expect("status").export_ready,
        "the reported status was durable"
    );
    let mut ws1 = ctl.agent_as("node:ws1").await;
    let mut ws_stream = ws1.watch_desired("ws1").await;
    let ws = next(&mut ws_stream).await;
    assert_eq!(
        ws.connections.len(),
        1,
        "the workstation is told to connect"
    );
    assert_eq!(ws.connections[0].subsystem_nqn, nqn);
}
