//! `ferrofab-controller --check-config`: the verdict and the reason, and
//! no side effects (no store file created, so it can run beside a live
//! controller or before the first start).

use std::path::Path;
use std::process::Command;

fn check(config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrofab-controller"))
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .output()
        .expect("running ferrofab-controller");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &Path, store: &Path) -> std::path::PathBuf {
    let path = dir.join("controller.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nstore_path = \"{}\"\n[pki]\ndir = \"{}\"\n",
            store.display(),
            dir.join("pki").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_config_accepts_a_good_setup_without_creating_the_store() {
    let dir = tempfile::tempdir().unwrap();
    ferrofab_pki::init(&dir.path().join("pki"), &Default::default()).unwrap();
    let store = dir.path().join("store.redb");
    let cfg = write_config(dir.path(), &store);
    let (code, stdout, stderr) = check(&cfg);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("config OK: {}\n", cfg.display()));
    assert!(!store.exists(), "--check-config created the store");
}

#[test]
fn check_config_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    ferrofab_pki::init(&dir.path().join("pki"), &Default::default()).unwrap();

    // Store directory missing.
    let cfg = write_config(dir.path(), &dir.path().join("nope/store.redb"));
    let (code, stdout, stderr) = check(&cfg);
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    assert!(
        stderr.contains("store_path") && stderr.contains("nope"),
        "{stderr}"
    );

    // A TLS file missing.
    let cfg = write_config(dir.path(), &dir.path().join("store.redb"));
    std::fs::remove_file(dir.path().join("pki/server.key")).unwrap();
    let (code, _, stderr) = check(&cfg);
    assert_eq!(code, 1);
    assert!(stderr.contains("server.key"), "{stderr}");

    // Unknown key.
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\ncolour = 1\n").unwrap();
    let (code, _, stderr) = check(&cfg);
    assert_eq!(code, 1);
    assert!(stderr.contains("colour"), "{stderr}");

    // No file at all.
    let (code, _, stderr) = check(&dir.path().join("absent.toml"));
    assert_eq!(code, 1);
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

/// `pki.dir/authkeys.key`: named with what is wrong when it is missing
/// while the store holds sealed keys, too open, of the wrong length, or
/// not the one that seals the store's keys.
#[tokio::test]
async fn check_config_checks_the_authentication_key_file() {
    use ferrofab_testkit::prelude::*;
    let mut ctl = Controller::start();
    let mut admin = ctl.admin().await;
    basic_layout(&mut admin).await;
    admin
        .rotate_node_key(ferrofab_proto::v1::RotateNodeKeyRequest { node: "ws1".into() })
        .await
        .expect("a sealed key in the store");
    // While the controller runs the store is locked: the file alone.
    let (code, _, stderr) = check(&ctl.config_path());
    assert_eq!(code, 0, "{stderr}");
    ctl.kill9();
    let (code, _, stderr) = check(&ctl.config_path());
    assert_eq!(code, 0, "{stderr}");

    let key = ctl.dir.join("pki/authkeys.key");
    let good = std::fs::read(&key).expect("key file");
    let set_mode = |m| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    set_mode(0o644);
    let (code, _, stderr) = check(&ctl.config_path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("authkeys.key") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    set_mode(0o600);
    std::fs::write(&key, &good[..16]).expect("truncate");
    let (code, _, stderr) = check(&ctl.config_path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("authkeys.key") && stderr.contains("32 bytes"),
        "{stderr}"
    );
    std::fs::write(&key, [7u8; 32]).expect("another key");
    let (code, _, stderr) = check(&ctl.config_path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("authkeys.key") && stderr.contains("does not open"),
        "{stderr}"
    );
    std::fs::remove_file(&key).expect("rm");
    let (code, _, stderr) = check(&ctl.config_path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("authkeys.key") && stderr.contains("missing"),
        "{stderr}"
    );
    std::fs::write(&key, &good).expect("restore");
    set_mode(0o600);
    let (code, _, stderr) = check(&ctl.config_path());
    assert_eq!(code, 0, "{stderr}");
}
