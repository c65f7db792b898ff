//! Default-suite topology: a controller, 2 storage agents and 3
//! workstation agents, each its own process (the real binaries) on
//! loopback, driven through the admin API and the agents' CLI.
//!
//! One test walks the whole life of a layout, phase by phase, so that the
//! six processes start once (the agents resync every 2 s).

use std::path::Path;
use std::time::{Duration, Instant};

use ferrofab_testkit::agent::*;

const CONVERGE: Duration = Duration::from_secs(60);

/// Not a test on its own: the writer process of the kill -9 phase (see
/// `ferrofab_testkit::agent::write_stream_main`).
#[test]
#[ignore = "helper process of two_storage_three_workstations"]
fn write_stream_helper() {
    write_stream_main();
}

/// Writes `len` pseudo-random bytes (from `seed`) at offset 0 of `path`,
/// fsyncs, and returns their sha256 as read back.
fn write_and_hash(path: &Path, len: usize, seed: u64) -> String {
    let data = pattern(len, seed);
    write_sync(path, &data);
    let got = sha256_of(path, len);
    assert_eq!(
        got,
        sha256_of_bytes(&data),
        "read-back of {}",
        path.display()
    );
    got
}

fn phase(name: &str, t0: Instant) {
    eprintln!("topology: {:>6.1}s {name}", t0.elapsed().as_secs_f64());
}

#[test]
fn two_storage_three_workstations() {
    require_tool("umount", "mount");
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path();
    let rt = rt();
    let mut ctl = start_controller(base);
    let (mut s1, mut s2, ws1, ws2, ws3) = rt.block_on(async {
        let s1 = AgentProc::enroll_and_start(&ctl, base, "s1", "storage").await;
        let s2 = AgentProc::enroll_and_start(&ctl, base, "s2", "storage").await;
        let ws1 = AgentProc::enroll_and_start(&ctl, base, "ws1", "workstation").await;
        let ws2 = AgentProc::enroll_and_start(&ctl, base, "ws2", "workstation").await;
        let ws3 = AgentProc::enroll_and_start(&ctl, base, "ws3", "workstation").await;
        (s1, s2, ws1, ws2, ws3)
    });
    phase("6 processes up", t0);

    // Converge: every volume exported on its pool's node, three attached
    // on three workstations, each exposure writable.
    rt.block_on(layout_pools(
        &ctl,
        &["ws1", "ws2", "ws3"],
        &[("p1", &s1), ("p2", &s2)],
        &[
            ("alpha", "64MiB", "p1"),
            ("delta", "16MiB", "p1"),
            ("bravo", "64MiB", "p2"),
            ("charlie", "32MiB", "p2"),
        ],
    ));
    wait_exports_ready(&s1, &["alpha", "delta"], CONVERGE);
    wait_exports_ready(&s2, &["bravo", "charlie"], CONVERGE);
    assert!(
        export_status(&s1, "bravo").is_none(),
        "bravo lives on s2 only"
    );
    let alpha1 = attach(&ws1, "alpha");
    let bravo2 = attach(&ws2, "bravo");
    let charlie3 = attach(&ws3, "charlie");
    assert_eq!(alpha1, ws1.expose_dir().join("alpha"));
    let alpha_sum = write_and_hash(&alpha1, 4 * MIB, 1);
    let bravo_sum = write_and_hash(&bravo2, 2 * MIB, 2);
    let charlie_sum = write_and_hash(&charlie3, MIB, 3);
    phase("layout converged", t0);

    // Data follows the volume: detach from ws1, reattach on ws3.
    ws1.cli_json(&["detach", "alpha", "--json"]);
    assert!(!alpha1.exists(), "exposure must be gone after detach");
    let alpha3 = attach(&ws3, "alpha");
    assert_eq!(
        sha256_of(&alpha3, 4 * MIB),
        alpha_sum,
        "alpha after reattach"
    );
    phase("detach/reattach kept the data", t0);

    // Drift on s1: delta's backing file removed out of band is reported.
    std::fs::remove_file(backing_file_of(&s1, "delta")).expect("remove backing file");
    wait_for("BackingFileMissing on delta", CONVERGE, || {
        let e = export_status(&s1, "delta")?;
        (e["ready"] == false && e["reason"] == "BackingFileMissing").then_some(())
    });
    phase("backing file drift reported", t0);

    // A snapshot of s2's desired state from before volume "echo" exists:
    // restarting s2 from it later makes echo's export vanish out of band.
    let stale = base.join("s2-stale-desired-state.pb");
    let cache = s2.state_dir().join("desired-state.pb");
    std::fs::copy(&cache, &stale).expect("snapshot s2's cache");
    rt.block_on(create_volume(&ctl, "echo", "16MiB", "p2"));
    wait_exports_ready(&s2, &["echo"], CONVERGE);
    let echo1 = attach(&ws1, "echo");
    let echo_sum = write_and_hash(&echo1, MIB, 5);
    ws1.cli_json(&["detach", "echo", "--json"]);

    // Controller killed: the data path keeps serving.
    ctl.kill9();
    wait_connected(&[&s1, &s2, &ws1, &ws2, &ws3], false, CONVERGE);
    let alpha_sum = write_and_hash(&alpha3, 4 * MIB, 11);
    let bravo_sum2 = write_and_hash(&bravo2, 2 * MIB, 12);
    assert_ne!(bravo_sum, bravo_sum2);
    phase("controller down, data still served", t0);

    // Export drift while the controller is down: s2 restarts from the
    // stale cache, so echo's export is gone; the others are rebuilt and
    // their workstations reconnect.
    s2.stop();
    std::fs::copy(&stale, &cache).expect("put the stale cache back");
    s2.spawn();
    wait_exports_ready(&s2, &["bravo", "charlie"], CONVERGE);
    assert!(
        export_status(&s2, "echo").is_none(),
        "echo must be gone after the stale restart: {}",
        s2.status()
    );
    assert_eq!(
        sha256_of(&bravo2, 2 * MIB),
        bravo_sum2,
        "bravo after s2 restart"
    );
    assert_eq!(
        sha256_of(&charlie3, MIB),
        charlie_sum,
        "charlie after s2 restart"
    );
    phase("s2 restarted from a stale cache without echo", t0);

    // The controller returns: every agent resyncs and echo's export is
    // restored with its data.
    ctl.spawn();
    let back = Instant::now();
    wait_exports_ready(&s2, &["echo"], CONVERGE);
    eprintln!(
        "topology: echo restored {:.1}s after the controller restart",
        back.elapsed().as_secs_f64()
    );
    wait_connected(&[&s1, &s2, &ws1, &ws2, &ws3], true, CONVERGE);
    let echo2 = attach(&ws2, "echo");
    assert_eq!(sha256_of(&echo2, MIB), echo_sum, "echo after restore");
    phase("controller back, echo restored", t0);

    // Grow after the restart: the workstation's exposed file shows it.
    rt.block_on(grow(&ctl, "bravo", "128MiB"));
    wait_for("bravo grown on ws2", CONVERGE, || {
        (std::fs::metadata(&bravo2).ok()?.len() == 128 * MIB as u64).then_some(())
    });
    assert_eq!(sha256_of(&bravo2, 2 * MIB), bravo_sum2, "bravo after grow");
    phase("grow visible on ws2", t0);

    // kill -9 of s1 in the middle of a write stream on alpha (ws3):
    // after s1 restarts the stream completes with every ack on disk.
    let mut stream = WriteStream::start(&alpha3);
    stream.wait_acked(200);
    s1.kill9();
    std::thread::sleep(Duration::from_millis(500));
    s1.spawn();
    stream.finish_and_verify(|| s1.log());
    assert_ne!(
        sha256_of(&alpha3, 4 * MIB),
        alpha_sum,
        "the stream overwrote alpha"
    );
    phase("s1 kill -9 during the write stream: nothing lost", t0);

    drop((ws1, ws2, ws3, s1, s2));
}
