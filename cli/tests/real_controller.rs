//! The `ferrofab` binary against the real `ferrofab-controller` binary,
//! with certificates from `ferrofab pki`.
//!
//! The controller binary is `$FERROFAB_CONTROLLER_BIN` when set; otherwise
//! this test builds it with `cargo build -p ferrofab-controller` (a no-op
//! when `cargo test --workspace` already built it, and never stale when only
//! this package's tests run; see `ferrofab_testkit::controller`). If that
//! fails, the test fails and says why: a test that cannot run its tool
//! must never pass silently.

#[allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ferrofab_testkit::client::write_client_toml;
use ferrofab_testkit::controller::{Controller, Options};
use ferrofab_testkit::fake_controller::{fails, fails_with, ferrofab, ok};

/// The controller on `dir/pki` (made beforehand with `ferrofab pki`).
fn start(dir: &Path) -> Controller {
    Controller::start_in(dir, Options::plain(0))
}

#[test]
fn cli_against_real_controller() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    ok(&ferrofab(&["pki", "init", "--dir", p], None, None));
    ok(&ferrofab(
        &["pki", "issue", "--dir", p, "--identity", "admin"],
        None,
        None,
    ));
    let ctl = start(dir.path());
    let cfg = client_config(dir.path(), &ctl, "client", "admin");
    let run = |args: &[&str]| ferrofab(args, Some(&cfg), None);

    let layout = dir.path().join("layout.toml");
    std::fs::write(&layout, layout_toml("10GiB", &["ws-1"], "100GiB")).unwrap();
    let l = layout.to_str().unwrap();
    let plan = ok(&run(&["apply", "-f", l, "--dry-run"]));
    assert!(plan.contains("+ tenant/neuro"), "{plan}");
    assert!(plan.contains("+ pool/fast"), "{plan}");
    assert!(fails(&run(&["apply", "-f", l])).contains("--yes"));
    ok(&run(&["apply", "-f", l, "--yes"]));
    assert!(ok(&run(&["apply", "-f", l, "--dry-run"])).contains("no changes"));

    let tenants = ok(&run(&["tenant", "list"]));
    assert!(tenants.contains("neuro"), "{tenants}");
    ok(&run(&[
        "volume", "create", "v1", "--tenant", "neuro", "--size", "4GiB",
    ]));
    let json = ok(&run(&["volume", "get", "v1", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["spec"]["tenant"], "neuro");
    ok(&run(&["volume", "resize", "v1", "6GiB"]));

    let e = fails(&run(&[
        "volume", "create", "big", "--tenant", "neuro", "--size", "8GiB",
    ]));
    assert!(e.contains("quota"), "{e}");

    let token = ok(&run(&["node", "token", "create", "--node", "stor-2"]));
    assert_eq!(token.lines().count(), 1, "{token}");
    enroll_with_token(&pki, &ctl.addr, token.trim(), "stor-2");

    // Diffs show enum names and addresses as written, not wire numbers.
    let original = std::fs::read_to_string(&layout).unwrap();
    let changed = original
        .replace("127.0.0.1:4420", "127.0.0.1:4421")
        .replace(
            "capacity = \"100GiB\"",
            "capacity = \"100GiB\"\nreclaim_policy = \"retain\"",
        );
    std::fs::write(&layout, changed).unwrap();
    let plan = ok(&run(&["apply", "-f", l, "--dry-run"]));
    assert!(
        plan.contains("spec.data_addresses: 127.0.0.1:4420 -> 127.0.0.1:4421\n"),
        "{plan}"
    );
    assert!(
        plan.contains("spec.reclaim_policy: delete -> retain"),
        "{plan}"
    );
    // A pool's backing is immutable: the dry run refuses it as UpdatePool
    // would (it used to show the change, and Apply used to make it).
    let moved = original.replace("backing = \"directory\"", "backing = \"block-device\"");
    std::fs::write(&layout, moved).unwrap();
    let e = fails(&run(&["apply", "-f", l, "--dry-run"]));
    assert!(
        e.contains("apply refused at pool \"fast\", nothing was changed: invalid spec.backing")
            && e.contains("immutable"),
        "{e}"
    );

    let e = fails_with(&run(&["volume", "get", "nope"]), 3);
    assert!(e.contains("nope"), "{e}");

    // Issue 18: status, describe and version from the real controller.
    let version = shown(&["version"], &ok(&run(&["version"])));
    assert!(
        version.contains("\ncontroller  0.1.0 (commit "),
        "{version}"
    );
    let status = shown(&["status"], &ok(&run(&["status"])));
    for want in [
        "controller:  0.1.0 (commit ",
        "store redb at revision ",
        "pools:       1 pool, ",
        "volumes:     1 total, 1 not ready\n",
        "volumes not ready:\n  volume/v1  ",
    ] {
        assert!(status.contains(want), "missing {want:?} in\n{status}");
    }
    // Only stor-2 enrolled; the declared nodes never reported, and say so.
    assert!(
        status.contains("nodes:       1 ready, 2 not ready\n"),
        "{status}"
    );
    assert!(
        status.contains("  node/stor-1  no status reported yet\n"),
        "{status}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&run(&["status", "-o", "json"]))).unwrap();
    assert_eq!(doc["volumes"]["total"], 1, "{doc}");
    let d = shown(
        &["describe", "volume", "v1"],
        &ok(&run(&["describe", "volume", "v1"])),
    );
    for want in [
        "Name:        v1\n",
        "Kind:        Volume\n",
        "Expires:     never\n",
        "Placement:   ",
        "Exposure:    not attached\n",
        "Spec:\n",
        "  tenant: neuro\n",
        "  size: 6GiB\n",
        "Conditions:\n  TYPE ",
    ] {
        assert!(d.contains(want), "missing {want:?} in\n{d}");
    }
    // Events: v1's history (recorded within a second of each change),
    // the quota refusal, and both in describe and status.
    let mut events = String::new();
    for _ in 0..50 {
        events = ok(&run(&["events", "volume", "v1"]));
        if events.contains("Grown") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let events = shown(&["events", "volume", "v1"], &events);
    for want in [
        "LAST SEEN  TYPE    OBJECT     REASON   COUNT  MESSAGE\n",
        "Normal  volume/v1  Created  1      created\n",
        "volume/v1  Placed   1      placed on pool/fast on node/stor-1\n",
        "volume/v1  Grown    1      grown from 4GiB to 6GiB\n",
    ] {
        assert!(events.contains(want), "missing {want:?} in\n{events}");
    }
    let refused = ok(&run(&["events", "volume", "big", "-o", "json"]));
    let refused: serde_json::Value = serde_json::from_str(&refused).unwrap();
    assert_eq!(refused[0]["reason"], "Refused", "{refused}");
    assert_eq!(refused[0]["type"], "Warning", "{refused}");
    let d = ok(&run(&["describe", "volume", "v1"]));
    assert!(
        d.contains("Events:\n  LAST SEEN  TYPE    REASON   COUNT  MESSAGE\n"),
        "{d}"
    );
    let status = ok(&run(&["status"]));
    assert!(
        status.contains("recent warning events:\n")
            && status.contains("Warning  volume/big  Refused"),
        "{status}"
    );
    assert_eq!(
        ok(&run(&[
            "events", "volume", "v1", "-o", "name", "--limit", "1"
        ])),
        "volume/v1\n"
    );
    // Dynamic completion: names from the controller where a name goes,
    // exit 1 (static completion) elsewhere; and through the bash script.
    assert_eq!(ok(&run(&["__complete", "--", "volume", "get"])), "v1\n");
    assert_eq!(
        ok(&run(&["__complete", "--", "describe", "pool"])),
        "fast\n"
    );
    assert_eq!(
        run(&["__complete", "--", "volume", "create"]).status.code(),
        Some(1)
    );
    let script = ok(&run(&["completions", "bash"]));
    let bin_dir = ferrofab_testkit::process::sibling_bin("ferrofab");
    let bin_dir = bin_dir.parent().unwrap();
    let script_file = dir.path().join("ferrofab.bash");
    std::fs::write(&script_file, script).unwrap();
    let probe = format!(
        "source {}\nCOMP_WORDS=(ferrofab describe volume ''); COMP_CWORD=3; _ferrofab_dynamic; echo \"${{COMPREPLY[@]}}\"\n",
        script_file.display()
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&probe)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("FERROFAB_CONFIG", &cfg)
        .output()
        .expect("bash");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1\n", "{out:?}");
    let e = fails_with(&run(&["describe", "pool", "nope"]), 3);
    assert!(e.contains("nope"), "{e}");
    let names = ok(&run(&["node", "list", "-o", "name"]));
    assert_eq!(names, "node/stor-1\nnode/stor-2\nnode/ws-1\n");
    drop(ctl);
}

/// The layout both tests apply: tenant neuro with `quota`, allowed on
/// ws-1; storage node stor-1; `workstations`; pool fast of `capacity` on
/// stor-1.
fn layout_toml(quota: &str, workstations: &[&str], capacity: &str) -> String {
    let mut t = format!(
        "[[tenant]]\nname = \"neuro\"\ncapacity_quota = \"{quota}\"\nallowed_nodes = [\"ws-1\"]\n\n\
         [[node]]\nname = \"stor-1\"\nroles = [\"storage\"]\naddresses = [\"127.0.0.1:4420\"]\n\n"
    );
    for ws in workstations {
        t.push_str(&format!(
            "[[node]]\nname = \"{ws}\"\nroles = [\"workstation\"]\n\n"
        ));
    }
    t.push_str(&format!(
        "[[pool]]\nname = \"fast\"\nnode = \"stor-1\"\nbacking = \"directory\"\n\
         path = \"/srv/ferrofab/fast\"\ncapacity = \"{capacity}\"\n"
    ));
    t
}

/// Writes `dir/<file>.toml`, a client config for `stem` (admin,
/// tenant-neuro) with the certificates in `pki/` beside it.
fn client_config(dir: &Path, ctl: &Controller, file: &str, stem: &str) -> PathBuf {
    let cfg = dir.join(format!("{file}.toml"));
    write_client_toml(&cfg, ctl.port(), Path::new("pki"), stem)
}

/// Prints what a person would see, for the transcript.
fn shown(cmd: &[&str], out: &str) -> String {
    eprintln!("$ ferrofab {}\n{out}", cmd.join(" "));
    out.to_owned()
}

/// Issue 13 items 5 and 6: a tenant's node list changed by delta (also
/// under concurrent updates), and a burst volume listed with EXPIRES and
/// extended by an admin (a tenant may not).
#[test]
fn tenant_nodes_and_burst_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pki");
    let p = p.to_str().unwrap();
    ok(&ferrofab(&["pki", "init", "--dir", p], None, None));
    for id in ["admin", "tenant:neuro"] {
        ok(&ferrofab(
            &["pki", "issue", "--dir", p, "--identity", id],
            None,
            None,
        ));
    }
    let ctl = start(dir.path());
    let admin = client_config(dir.path(), &ctl, "admin", "admin");
    let tenant = client_config(dir.path(), &ctl, "tenant-neuro", "tenant-neuro");
    let run = |args: &[&str]| shown(args, &ok(&ferrofab(args, Some(&admin), None)));

    let layout = dir.path().join("layout.toml");
    std::fs::write(&layout, layout_toml("4TiB", &["ws-1", "ws-2"], "8TiB")).unwrap();
    run(&["apply", "-f", layout.to_str().unwrap(), "--yes"]);

    let allowed = |_: &dyn Fn(&[&str]) -> String| {
        let json = ok(&ferrofab(
            &["tenant", "get", "neuro", "-o", "json"],
            Some(&admin),
            None,
        ));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut n: Vec<String> = v["spec"]["allowed_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    run(&["tenant", "update", "neuro", "--add-node", "ws-2"]);
    assert_eq!(allowed(&run), ["ws-1", "ws-2"]);
    run(&["tenant", "update", "neuro", "--remove-node", "ws-1"]);
    assert_eq!(allowed(&run), ["ws-2"]);
    run(&["tenant", "update", "neuro", "--allowed-node", "ws-1"]);
    assert_eq!(allowed(&run), ["ws-1"]);
    // Replacing and editing the list at once is a usage error (exit 2).
    let both = ferrofab(
        &[
            "tenant",
            "update",
            "neuro",
            "--allowed-node",
            "ws-1",
            "--add-node",
            "ws-2",
        ],
        Some(&admin),
        None,
    );
    assert_eq!(both.status.code(), Some(2));

    // Concurrent deltas all land: each update is a conditional
    // read-modify-write retried on conflict, never a lost update.
    let extra: Vec<String> = (0..6).map(|i| format!("ws-x{i}")).collect();
    let children: Vec<_> = extra
        .iter()
        .map(|n| {
            std::process::Command::new(env!("CARGO_BIN_EXE_ferrofab"))
                .args(["tenant", "update", "neuro", "--add-node", n])
                .env("FERROFAB_CONFIG", &admin)
                .env("HOME", "/nonexistent")
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = allowed(&run);
    for n in &extra {
        assert!(after.contains(n), "{n} lost: {after:?}");
    }
    run(&["tenant", "update", "neuro", "--allowed-node", "ws-2"]);

    // The burst volume: EXPIRES in the list, extended by the admin only.
    run(&[
        "volume",
        "create",
        "burst",
        "--tenant",
        "neuro",
        "--size",
        "3TiB",
        "--expires-in",
        "13d",
    ]);
    run(&[
        "volume", "create", "home", "--tenant", "neuro", "--size", "10GiB",
    ]);
    let list = run(&["volume", "list"]);
    assert!(list.lines().next().unwrap().ends_with("EXPIRES"), "{list}");
    let row = |list: &str, name: &str| {
        list.lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_owned()
    };
    assert!(row(&list, "burst").ends_with("in 13d"), "{list}");
    assert!(row(&list, "home ").ends_with(" -"), "{list}");
    let e = fails(&ferrofab(
        &["volume", "extend", "burst", "--by", "7d"],
        Some(&tenant),
        None,
    ));
    eprintln!("$ ferrofab volume extend burst --by 7d   # as tenant:neuro\nferrofab: {e}");
    assert!(e.contains("only an administrator may postpone"), "{e}");
    run(&["volume", "extend", "burst", "--by", "7d"]);
    assert!(row(&run(&["volume", "list"]), "burst").ends_with("in 20d"));
    let e = fails(&ferrofab(
        &["volume", "extend", "home", "--by", "7d"],
        Some(&admin),
        None,
    ));
    assert!(e.contains("no expiry to extend"), "{e}");
    let e = fails(&ferrofab(
        &["volume", "resize", "burst", "2TiB"],
        Some(&admin),
        None,
    ));
    assert!(e.contains("from 3TiB to 2TiB"), "{e}");

    // Item 2: a file with one [[volume]] prunes only volumes, never the
    // pool, the tenant or the nodes.
    let one = dir.path().join("one-volume.toml");
    std::fs::write(
        &one,
        "[[volume]]\nname = \"burst\"\ntenant = \"neuro\"\nsize = \"3TiB\"\n",
    )
    .unwrap();
    let one = one.to_str().unwrap();
    let plan = run(&["apply", "-f", one, "--prune", "--dry-run"]);
    let deletions: Vec<&str> = plan.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(deletions, ["- volume/home"], "{plan}");
    // --prune-nodes only with --prune: a usage error (exit 2).
    let alone = ferrofab(
        &["apply", "-f", one, "--prune-nodes", "--dry-run"],
        Some(&admin),
        None,
    );
    assert_eq!(alone.status.code(), Some(2));
    drop(ctl);
}

/// The enrollment flow a new workstation goes through: key and CSR made
/// locally, exchanged with the token for a node certificate that then
/// authenticates as node:NAME; the token cannot be used twice.
fn enroll_with_token(pki: &Path, addr: &str, token: &str, node: &str) {
    use ferrofab_proto::v1::agent_service_client::AgentServiceClient;
    use ferrofab_proto::v1::{EnrollRequest, ReportStatusRequest};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ca = std::fs::read(pki.join("ca.crt")).unwrap();
        let port = addr.rsplit(':').next().unwrap();
        let connect = |id: Option<Identity>| {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("localhost");
            if let Some(id) = id {
                tls = tls.identity(id);
            }
            let ch = Channel::from_shared(format!("https://localhost:{port}"))
                .unwrap()
                .tls_config(tls)
                .unwrap();
            async move { AgentServiceClient::new(ch.connect().await.unwrap()) }
        };
        let identity = ferrofab_pki::Identity::node(node).unwrap();
        let kc = ferrofab_pki::generate_key_and_csr(&identity).unwrap();
        let req = EnrollRequest {
            bootstrap_token: token.to_owned(),
            csr_pem: kc.csr_pem.clone(),
            node_name: node.to_owned(),
            // An undeclared node must be given its roles.
            node: Some(ferrofab_proto::v1::NodeSpec {
                roles: vec![ferrofab_proto::v1::NodeRole::Workstation as i32],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut anon = connect(None).await;
        let resp = anon.enroll(req.clone()).await.unwrap().into_inner();
        let info = ferrofab_pki::CertInfo::from_pem(resp.certificate_pem.as_bytes()).unwrap();
        assert_eq!(info.identity, Some(identity));
        assert!(!info.is_expired());

        let mut agent = connect(Some(Identity::from_pem(&resp.certificate_pem, &kc.key_pem))).await;
        agent
            .report_status(ReportStatusRequest {
                node: node.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
        let e = anon.enroll(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("already used"), "{}", e.message());
    });
}
