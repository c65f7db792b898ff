//! The `ferrofab` binary against the real `ferrofab-controller` binary,
//! with certificates from `ferrofab pki`.
//!
//! The controller binary is looked up next to `ferrofab` in the target
//! directory (built by `cargo test --workspace`) or at
//! `$FERROFAB_CONTROLLER_BIN`. When it is absent, or still the placeholder,
//! the test says so on stderr and passes: the CLI's own behaviour is
//! covered by `cli_e2e.rs` against the fake.

#[allow(dead_code)]
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{fails, ferrofab, ok};

struct Controller {
    child: Child,
    addr: String,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn controller_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERROFAB_CONTROLLER_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_BIN_EXE_ferrofab")).with_file_name("ferrofab-controller");
    p.is_file().then_some(p)
}

/// Starts the controller with `dir/pki` and waits for its ready line.
/// `None` means "not available here" (absent or placeholder binary).
fn start(bin: &Path, dir: &Path) -> Option<Controller> {
    let pki = dir.join("pki");
    let config = dir.join("controller.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore_path = \"{store}\"\n\
         [tls]\ncert = \"{p}/server.crt\"\nkey = \"{p}/server.key\"\nclient_ca = \"{p}/ca.crt\"\n\
         [enrollment]\nca_cert = \"{p}/ca.crt\"\nca_key = \"{p}/ca.key\"\n",
        store = dir.join("store.redb").display(),
        p = pki.display()
    );
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    if !line.contains("ready") {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not implemented") {
            return None;
        }
        panic!("controller did not start: {line:?} {err}");
    }
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .unwrap()
        .to_owned();
    Some(Controller { child, addr })
}

#[test]
fn cli_against_real_controller() {
    let Some(bin) = controller_bin() else {
        eprintln!("skipped: no ferrofab-controller binary next to ferrofab");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    ok(&ferrofab(&["pki", "init", "--dir", p], None, None));
    ok(&ferrofab(
        &["pki", "issue", "--dir", p, "--identity", "admin"],
        None,
        None,
    ));
    let Some(ctl) = start(&bin, dir.path()) else {
        eprintln!("skipped: ferrofab-controller is still the placeholder");
        return;
    };
    let port = ctl.addr.rsplit(':').next().unwrap();
    let cfg = dir.path().join("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "endpoint = \"https://localhost:{port}\"\n[tls]\nca = \"pki/ca.crt\"\ncert = \"pki/admin.crt\"\nkey = \"pki/admin.key\"\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| ferrofab(args, Some(&cfg), None);

    let layout = dir.path().join("layout.toml");
    std::fs::write(
        &layout,
        r#"
[[tenant]]
name = "neuro"
capacity_quota = "10GiB"
allowed_nodes = ["ws-1"]

[[node]]
name = "stor-1"
roles = ["storage"]
addresses = ["127.0.0.1:4420"]

[[node]]
name = "ws-1"
roles = ["workstation"]

[[pool]]
name = "fast"
node = "stor-1"
backing = "directory"
path = "/srv/ferrofab/fast"
capacity = "100GiB"
"#,
    )
    .unwrap();
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

    let e = fails(&run(&["volume", "get", "nope"]));
    assert!(e.contains("nope"), "{e}");
    drop(ctl);
}
