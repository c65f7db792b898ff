//! End-to-end tests of the `ferrofab` binary against an in-process fake
//! controller over mutual TLS (see `ferrofab_testkit::fake_controller`).

use ferrofab_testkit::fake_controller::{fails, fails_with, ferrofab, ok, stderr, stdout, Harness};

const LAYOUT: &str = r#"
[[tenant]]
name = "neuro"
capacity_quota = "4TiB"

[[volume]]
name = "scratch-1"
tenant = "neuro"
size = "100GiB"
"#;

#[test]
fn pki_init_issue_show_offline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    let out = ok(&ferrofab(
        &["pki", "init", "--dir", p, "--san", "ctl.lan"],
        None,
        None,
    ));
    assert_eq!(out.lines().count(), 4, "{out}");
    let again = ferrofab(&["pki", "init", "--dir", p], None, None);
    assert!(fails(&again).contains("--force"));
    ok(&ferrofab(
        &["pki", "issue", "--dir", p, "--identity", "node:n1"],
        None,
        None,
    ));
    let show = ok(&ferrofab(
        &[
            "pki",
            "show",
            pki.join("node-n1.crt").to_str().unwrap(),
            "-o",
            "json",
        ],
        None,
        None,
    ));
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["identity"], "node:n1");
    assert_eq!(v["expired"], false);
}

#[test]
fn completions_and_missing_config() {
    let out = ok(&ferrofab(&["completions", "bash"], None, None));
    assert!(out.contains("ferrofab"));
    let e = fails(&ferrofab(&["volume", "list"], None, None));
    assert!(e.starts_with("no client configuration"), "{e}");
}

#[test]
fn volume_lifecycle_and_errors() {
    let h = Harness::start();
    assert_eq!(
        ok(&h.run(&["tenant", "create", "neuro", "--capacity-quota", "4TiB"])),
        "tenant/neuro created\n"
    );
    assert_eq!(
        ok(&h.run(&[
            "volume",
            "create",
            "scratch-1",
            "--tenant",
            "neuro",
            "--size",
            "100GiB"
        ])),
        "volume/scratch-1 created\n"
    );
    let json = ok(&h.run(&["volume", "get", "scratch-1", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "Volume");
    assert_eq!(v["spec"]["size"], "100GiB");

    let table = ok(&h.run(&["volume", "list"]));
    assert!(
        table.starts_with("NAME       TENANT  SIZE    POOL  NODE  PHASE"),
        "{table}"
    );
    assert!(table.contains("scratch-1  neuro   100GiB"), "{table}");

    assert_eq!(
        ok(&h.run(&["volume", "resize", "scratch-1", "200GiB"])),
        "volume/scratch-1 updated\n"
    );
    let e = fails(&h.run(&["volume", "resize", "scratch-1", "1GiB"]));
    assert_eq!(
        e,
        "volume \"scratch-1\": cannot shrink from 200GiB to 1GiB (volumes only grow)"
    );

    let e = fails(&h.run(&[
        "volume", "create", "big", "--tenant", "neuro", "--size", "4TiB",
    ]));
    assert_eq!(
        e,
        "volume \"big\": over quota: tenant \"neuro\" has 3.9TiB of 4TiB left"
    );

    let yaml = ok(&h.run(&["volume", "delete", "scratch-1", "-o", "yaml"]));
    assert!(yaml.starts_with("kind: Volume\n"), "{yaml}");
    // Not found has its own exit status (3), for scripts.
    let e = fails_with(&h.run(&["volume", "get", "scratch-1"]), 3);
    assert_eq!(e, "volume \"scratch-1\" not found");
    let e = fails(&h.run(&["pool", "list"]));
    assert!(e.contains("not in the fake"), "{e}");
}

#[test]
fn identity_comes_from_the_client_certificate() {
    let h = Harness::start();
    let tenant_cfg = h.config_as("tenant-neuro");
    let e = fails(&ferrofab(&["volume", "list"], Some(&tenant_cfg), None));
    assert_eq!(e, "listing volumes: tenant:neuro may not do this");
}

#[test]
fn apply_shows_diff_and_needs_confirmation_without_a_terminal() {
    let h = Harness::start();
    let file = h.path("layout.toml");
    std::fs::write(&file, LAYOUT).unwrap();
    let f = file.to_str().unwrap();

    let plan = ok(&h.run(&["apply", "-f", f, "--dry-run"]));
    assert_eq!(
        plan,
        "+ tenant/neuro\n+ volume/scratch-1\nplan: 2 created, 0 updated, 0 deleted, 0 unchanged\n"
    );
    assert_eq!(h.fake.applies(), 0);

    // No terminal and no --yes: the diff is shown, nothing is applied.
    let o = h.run(&["apply", "-f", f]);
    assert!(stdout(&o).contains("+ volume/scratch-1"));
    assert!(fails(&o).contains("pass --yes"));
    assert_eq!(h.fake.applies(), 0);

    let o = h.run(&["apply", "-f", f, "--yes", "--wait", "--timeout", "20s"]);
    ok(&o);
    assert!(stderr(&o).contains("applied: 2 created"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("volume/scratch-1 ready"),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.fake.applies(), 1);

    assert_eq!(ok(&h.run(&["apply", "-f", f, "--yes"])), "no changes\n");
    assert_eq!(h.fake.applies(), 1);

    std::fs::write(&file, LAYOUT.replace("100GiB", "200GiB")).unwrap();
    let j = ok(&h.run(&["apply", "-f", f, "--dry-run", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["diffs"][1]["action"], "updated");
    assert_eq!(v["diffs"][1]["changes"][0]["old"], "100GiB");
}

#[test]
fn apply_rejects_invalid_layout_before_contacting_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[volume]]\nname = \"a\"\ntenant = \"t\"\nsize = \"lots\"\n",
    )
    .unwrap();
    let e = fails(&ferrofab(
        &["apply", "-f", file.to_str().unwrap()],
        None,
        None,
    ));
    assert!(
        e.starts_with(&format!(
            "{}: volume \"a\": size: invalid size",
            file.display()
        )),
        "{e}"
    );
}

#[test]
fn wait_polls_until_ready_and_times_out() {
    let h = Harness::start();
    ok(&h.run(&[
        "volume", "create", "v1", "--tenant", "neuro", "--size", "1GiB",
    ]));
    let o = h.run(&["wait", "volume/v1", "--timeout", "20s"]);
    ok(&o);
    assert_eq!(stderr(&o), "volume/v1 ready\n");
    let e = fails(&h.run(&["wait", "volume/ghost", "--timeout", "2s"]));
    assert_eq!(
        e,
        "timed out after 2s waiting for volume/ghost (does not exist (yet))"
    );
}

#[test]
fn node_token_create() {
    let h = Harness::start();
    let token = ok(&h.run(&["node", "token", "create", "--node", "n1", "--ttl", "30m"]));
    let parsed: Result<ferrofab_pki::Token, _> = token.trim().parse();
    assert!(parsed.is_ok(), "{token}");
    let e = fails(&h.run(&["node", "token", "create", "--node", "N1"]));
    assert!(e.starts_with("invalid name \"N1\""), "{e}");
}
