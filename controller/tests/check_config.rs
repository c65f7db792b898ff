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
