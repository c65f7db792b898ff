//! `ferrofab-controller backup` / `restore` through the real binary: a
//! migration redb → etcd → redb keeps every object and the PKI files, a
//! non-empty store is refused without --force, and a wrong key is refused.

mod etcd_harness;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use etcd_harness::Etcd;
use ferrofab_controller::store::etcd::{EtcdConfig, EtcdStore};
use ferrofab_controller::store::redb::RedbStore;
use ferrofab_controller::store::{Store, Txn};

fn config(dir: &Path, etcd: Option<&str>) -> PathBuf {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\nstore_path = \"{}\"\n[pki]\ndir = \"{}\"\n",
        dir.join("store.redb").display(),
        dir.join("pki").display()
    );
    if let Some(url) = etcd {
        text.push_str(&format!(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"{url}\"]\n"
        ));
    }
    let p = dir.join("controller.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn run(cfg: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrofab-controller"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run ferrofab-controller");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A path as a command-line argument.
fn arg(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn dump(s: &dyn Store) -> Vec<(String, Vec<u8>)> {
    let (kvs, _) = s.list("").expect("list");
    kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_redb_to_etcd_and_back() {
    let work = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        work.path().join("a"),
        work.path().join("b"),
        work.path().join("c"),
    );
    for d in [&a, &b, &c] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    // Source: a redb store with a few objects and a PKI directory.
    let want = {
        let s = RedbStore::open(&a.join("store.redb")).expect("open");
        let t = Txn::new()
            .put("volumes/db", b"vol".to_vec())
            .put("nodes/n1", b"node".to_vec())
            .put("tenants/lab", vec![0, 255, 7]);
        s.txn(t).await.expect("reply").expect("commit");
        dump(&s)
    };
    std::fs::create_dir_all(a.join("pki")).expect("mkdir");
    std::fs::write(a.join("pki/ca.crt"), "CERT").expect("write");
    std::fs::write(a.join("pki/ca.key"), "KEY").expect("write");
    std::fs::set_permissions(a.join("pki/ca.key"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let key = work.path().join("backup.key");
    std::fs::write(&key, [42u8; 32]).expect("key");
    let pass = work.path().join("pass");
    std::fs::write(&pass, "a long passphrase\n").expect("pass");

    let bk1 = work.path().join("one.ffbackup");
    let (ok, out) = run(
        &config(&a, None),
        &["backup", "--out", arg(&bk1), "--key-file", arg(&key)],
    );
    assert!(ok, "backup from redb: {out}");
    assert!(out.contains("3 objects"), "{out}");
    assert_eq!(mode(&bk1), 0o600, "the backup file is private");
    let raw = std::fs::read(&bk1).expect("read");
    assert!(
        !raw.windows(3).any(|w| w == b"KEY"),
        "the CA key is not in clear"
    );

    // Into etcd.
    let etcd = Etcd::start();
    let cfg_b = config(&b, Some(&etcd.client_url));
    let (ok, out) = run(
        &cfg_b,
        &["restore", "--from", arg(&bk1), "--key-file", arg(&key)],
    );
    assert!(ok, "restore into etcd: {out}");
    {
        let s = EtcdStore::open(&EtcdConfig {
            endpoints: vec![etcd.client_url.clone()],
            ..EtcdConfig::default()
        })
        .expect("open etcd");
        assert_eq!(dump(&s), want, "every object arrived in etcd");
    }
    assert_eq!(
        std::fs::read_to_string(b.join("pki/ca.key")).expect("key"),
        "KEY"
    );
    assert_eq!(mode(&b.join("pki/ca.key")), 0o600, "modes are kept");

    // A second restore into the now non-empty store is refused...
    let (ok, out) = run(
        &cfg_b,
        &["restore", "--from", arg(&bk1), "--key-file", arg(&key)],
    );
    assert!(
        !ok && out.contains("non-empty") && out.contains("--force"),
        "{out}"
    );
    // ...unless forced.
    let (ok, out) = run(
        &cfg_b,
        &[
            "restore",
            "--force",
            "--from",
            arg(&bk1),
            "--key-file",
            arg(&key),
        ],
    );
    assert!(ok, "forced restore: {out}");

    // And back: etcd → a fresh redb, this time with a passphrase.
    let bk2 = work.path().join("two.ffbackup");
    let (ok, out) = run(
        &cfg_b,
        &[
            "backup",
            "--out",
            arg(&bk2),
            "--passphrase-file",
            arg(&pass),
        ],
    );
    assert!(ok, "backup from etcd: {out}");
    let cfg_c = config(&c, None);
    let (ok, out) = run(
        &cfg_c,
        &["restore", "--from", arg(&bk2), "--key-file", arg(&key)],
    );
    assert!(
        !ok && out.contains("--passphrase-file"),
        "the wrong kind of key is named: {out}"
    );
    let (ok, out) = run(
        &cfg_c,
        &[
            "restore",
            "--from",
            arg(&bk2),
            "--passphrase-file",
            arg(&pass),
        ],
    );
    assert!(ok, "restore into redb: {out}");
    let s = RedbStore::open(&c.join("store.redb")).expect("open");
    assert_eq!(dump(&s), want, "every object came back to redb");
    assert_eq!(
        std::fs::read_to_string(c.join("pki/ca.crt")).expect("crt"),
        "CERT"
    );
}
