//! End-to-end, real controller and agents (issue 13, items 3 and 4): a
//! second read-write attachment is refused naming the holder, a read-only
//! attachment cannot write on its workstation, and `ferrofab volume move`
//! moves a volume between workstations with its data, refusing to leave a
//! node that is down unless forced.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ferrofab_testkit::agent::*;

const CONVERGE: Duration = Duration::from_secs(60);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(ctl: &Controller, args: &[&str]) -> String {
    let o = ferrofab(ctl, args);
    assert!(o.status.success(), "ferrofab {args:?} failed: {}", text(&o));
    text(&o)
}

fn fails(ctl: &Controller, args: &[&str]) -> String {
    let o = ferrofab(ctl, args);
    assert!(
        !o.status.success(),
        "ferrofab {args:?} succeeded: {}",
        text(&o)
    );
    text(&o)
}

fn wait_exposed(path: &Path) {
    wait_for(&format!("{} exposed", path.display()), CONVERGE, || {
        path.exists().then_some(())
    });
}

fn wait_gone(path: &Path) {
    wait_for(&format!("{} gone", path.display()), CONVERGE, || {
        (!path.exists()).then_some(())
    });
}

#[test]
fn exclusive_attachments_read_only_exposure_and_volume_move() {
    require_tool("umount", "mount");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    // NotReady after 3 s without a report, so the "old node is down" step
    // does not wait the default 45 s.
    let ctl = start_controller_with_pki(
        tmp.path(),
        "[nodes]\nheartbeat_timeout_seconds = 3\ncheck_interval_seconds = 1\n",
    );
    let (s1, [ws1, mut ws2]) = rt.block_on(s1_and_workstations(
        &ctl,
        ["ws1", "ws2"],
        &[("scratch", "16MiB"), ("shared", "16MiB")],
    ));
    wait_exports_ready(&s1, &["scratch", "shared"], CONVERGE);

    // Read-write on ws2; a second writer on ws1 is refused, naming it.
    ok(
        &ctl,
        &[
            "attachment",
            "create",
            "scratch-ws2",
            "--volume",
            "scratch",
            "--node",
            "ws2",
        ],
    );
    let on_ws2 = ws2.expose_dir().join("scratch");
    wait_exposed(&on_ws2);
    let err = fails(
        &ctl,
        &[
            "attachment",
            "create",
            "scratch-ws1",
            "--volume",
            "scratch",
            "--node",
            "ws1",
            "--access-mode",
            "rw",
        ],
    );
    assert!(
        err.contains(
            "volume \"scratch\" is attached read-write to node \"ws2\" (attachment \"scratch-ws2\"); \
             detach it first or run: ferrofab volume move scratch --to ws1"
        ),
        "{err}"
    );
    let list = ok(&ctl, &["attachment", "list"]);
    assert!(list.contains("read-write"), "{list}");

    // Read-only on two nodes: readable, and writes fail on the workstation
    // (EROFS at open; the storage node would refuse them too).
    ok(
        &ctl,
        &[
            "attachment",
            "create",
            "shared-ws1",
            "--volume",
            "shared",
            "--node",
            "ws1",
            "--access-mode",
            "ro",
        ],
    );
    ok(
        &ctl,
        &[
            "attachment",
            "create",
            "shared-ws2",
            "--volume",
            "shared",
            "--node",
            "ws2",
            "--access-mode",
            "ro",
        ],
    );
    let ro = ws1.expose_dir().join("shared");
    wait_exposed(&ro);
    wait_exposed(&ws2.expose_dir().join("shared"));
    let mode = std::fs::metadata(&ro).expect("stat").permissions();
    assert!(
        mode.readonly(),
        "no write bits on a read-only exposure: {mode:?}"
    );
    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(&ro)
        .expect_err("opening a read-only exposure for writing");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert_eq!(sha256_of(&ro, 4096).len(), 64, "reads work");
    let list = ok(&ctl, &["attachment", "list"]);
    assert!(list.contains("read-only"), "{list}");

    // Move with the data: written on ws2, read back on ws1.
    let data = pattern(2 * MIB, 42);
    write_sync(&on_ws2, &data);
    let out = ok(
        &ctl,
        &[
            "volume",
            "move",
            "scratch",
            "--to",
            "ws1",
            "--timeout",
            "60s",
        ],
    );
    eprintln!("volume move:\n{out}");
    assert!(out.contains("detaching from ws2"), "{out}");
    assert!(out.contains("host revoked on storage node s1"), "{out}");
    assert!(out.contains("attached on ws1"), "{out}");
    let on_ws1 = ws1.expose_dir().join("scratch");
    wait_exposed(&on_ws1);
    wait_gone(&on_ws2);
    assert_eq!(
        sha256_of(&on_ws1, data.len()),
        sha256_of_bytes(&data),
        "data moved"
    );

    // Back to ws2, then ws2 goes down: moving away is refused without
    // --force (it may still be writing), and fenced with it.
    ok(
        &ctl,
        &[
            "volume",
            "move",
            "scratch",
            "--to",
            "ws2",
            "--timeout",
            "60s",
        ],
    );
    wait_exposed(&on_ws2);
    assert_eq!(sha256_of(&on_ws2, data.len()), sha256_of_bytes(&data));
    ws2.kill9();
    wait_for("ws2 NotReady", CONVERGE, || {
        let o = ok(&ctl, &["node", "get", "ws2"]);
        o.contains("NoHeartbeat").then_some(())
    });
    let err = fails(&ctl, &["volume", "move", "scratch", "--to", "ws1"]);
    assert!(
        err.contains("ws2 is not ready (last heartbeat")
            && err.contains("it may still be writing. Re-run with --force to fence it"),
        "{err}"
    );
    let out = ok(
        &ctl,
        &[
            "volume",
            "move",
            "scratch",
            "--to",
            "ws1",
            "--force",
            "--timeout",
            "60s",
        ],
    );
    eprintln!("volume move --force:\n{out}");
    assert!(out.contains("fencing ws2"), "{out}");
    assert!(out.contains("attached on ws1"), "{out}");
    wait_exposed(&on_ws1);
    assert_eq!(
        sha256_of(&on_ws1, data.len()),
        sha256_of_bytes(&data),
        "data after the forced move"
    );
}
