//! The workstation data path outlives the agent (issue #15, part 1):
//! ext4 on a loop device on an exposed file, mounted, with a stream of
//! fsync'd writes running, through a kill -9 of the agent, a graceful
//! restart, an upgrade (another build of the binary on the same state)
//! and a kill -9 of the storage agent. The stream must see no I/O error,
//! the filesystem must check clean, every acknowledged block must read
//! back, and the loop device must still refer to the live file. The
//! longest write+fsync during each restart is printed (the I/O pause).
//!
//! Needs root, /dev/fuse, loop devices, e2fsprogs (like the exposure
//! tests).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrofab_testkit::agent::*;

/// Blocks the stream cycles over (16 MiB of 4 KiB blocks).
const SPAN_BLOCKS: u64 = 4096;

/// Not a test on its own: the writer process (`FF_FS_STREAM` = file in
/// the mounted ext4, `FF_FS_STOP` = stop file). Prints `ack SEQ MICROS`
/// after each write+fsync, MICROS being how long that pair took; an I/O
/// error makes it fail.
#[test]
#[ignore = "helper process of workstation_data_path_survives_agent_restarts"]
fn fs_stream_helper() {
    let (Some(path), Some(stop)) = (
        std::env::var_os("FF_FS_STREAM"),
        std::env::var_os("FF_FS_STOP"),
    ) else {
        return;
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .expect("open stream file");
    let mut out = std::io::stdout().lock();
    let mut seq = 0u64;
    while !Path::new(&stop).exists() {
        let t0 = Instant::now();
        f.write_all_at(&stream_stamp(seq), (seq % SPAN_BLOCKS) * STREAM_BS as u64)
            .expect("write");
        f.sync_data().expect("fsync");
        let us = t0.elapsed().as_micros();
        writeln!(out, "ack {seq} {us}").expect("stdout");
        out.flush().expect("flush");
        seq += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Acks seen so far: (sequence, latency in µs, when it arrived).
type Acks = Arc<Mutex<Vec<(u64, u64, Instant)>>>;

struct FsStream {
    child: std::process::Child,
    acks: Acks,
    reader: Option<std::thread::JoinHandle<()>>,
    stop: PathBuf,
}

impl FsStream {
    fn start(file: &Path, stop: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "fs_stream_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FF_FS_STREAM", file)
            .env("FF_FS_STOP", stop)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let acks: Acks = Arc::default();
        let out = child.stdout.take().expect("stdout");
        let a = acks.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let mut w = line.split_whitespace();
                if w.next() != Some("ack") {
                    continue;
                }
                let seq = w.next().and_then(|s| s.parse().ok()).expect("seq");
                let us = w.next().and_then(|s| s.parse().ok()).expect("micros");
                a.lock().unwrap().push((seq, us, Instant::now()));
            }
        });
        FsStream {
            child,
            acks,
            reader: Some(reader),
            stop: stop.to_path_buf(),
        }
    }

    fn count(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits for `n` more acks (the stream is alive after a restart).
    fn wait_more(&self, n: usize, what: &str) {
        let target = self.count() + n;
        wait_for(what, Duration::from_secs(90), || {
            (self.count() >= target).then_some(())
        });
    }

    /// The longest write+fsync among acks that arrived after `since`.
    fn max_latency_since(&self, since: Instant) -> Duration {
        let us = self
            .acks
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, t)| *t >= since)
            .map(|(_, us, _)| *us)
            .max()
            .unwrap_or(0);
        Duration::from_micros(us)
    }

    /// Stops the stream; asserts it ended without an error. Returns the
    /// last sequence acknowledged at each block offset.
    fn finish(mut self) -> BTreeMap<u64, u64> {
        std::fs::write(&self.stop, b"").expect("stop file");
        let st = self.child.wait().expect("writer exit");
        if let Some(r) = self.reader.take() {
            r.join().expect("reader");
        }
        assert!(
            st.success(),
            "the write stream failed (I/O error) after {} acks",
            self.count()
        );
        let mut last = BTreeMap::new();
        for (seq, _, _) in self.acks.lock().unwrap().iter() {
            last.insert(seq % SPAN_BLOCKS, *seq);
        }
        last
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The loop device's backing file as the kernel reports it (a replaced
/// FUSE file shows as "... (deleted)").
fn loop_backing(dev: &str) -> String {
    let name = dev.trim_start_matches("/dev/");
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .expect("loop backing_file")
        .trim()
        .to_string()
}

/// pid of the running holder of `ws`.
fn holder_pid(ws: &AgentProc) -> u64 {
    let out = Command::new(agent_bin())
        .args(["holder", "status", "--state-dir"])
        .arg(ws.state_dir())
        .output()
        .expect("holder status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["holder"]["pid"].as_u64().expect("pid")
}

/// The restarted agent adopted the running holder (started none).
fn assert_adopted(ws: &AgentProc) {
    let m = ws.metrics();
    assert!(
        m.contains("ferrofab_agent_holder_starts_total 0"),
        "the restarted agent started a holder:\n{m}"
    );
}

/// Cleans up the loop device and mount even when the test fails.
struct LoopMount {
    dev: String,
    mnt: PathBuf,
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn workstation_data_path_survives_agent_restarts() {
    for (tool, pkg) in [
        ("losetup", "mount"),
        ("mkfs.ext4", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("umount", "mount"),
    ] {
        require_tool(tool, pkg);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let ctl = start_controller(tmp.path());
    let (mut s1, [mut ws]) =
        rt.block_on(s1_and_workstations(&ctl, ["ws1"], &[("scratch", "64MiB")]));
    let file = attach(&ws, "scratch");
    let holder = holder_pid(&ws);
    let dev = sh("losetup", &["-f", "--show", file.to_str().expect("utf-8")]);
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let lm = LoopMount {
        dev: dev.clone(),
        mnt: mnt.clone(),
    };
    sh("mkfs.ext4", &["-q", "-F", &dev]);
    sh("mount", &[&dev, mnt.to_str().expect("utf-8")]);
    let live = loop_backing(&dev);
    assert!(!live.contains("(deleted)"), "{live}");

    let stream = FsStream::start(&mnt.join("stream.dat"), &tmp.path().join("stop"));
    stream.wait_more(20, "the stream to start");
    // The same window with no restart at all: what the figures below
    // compare with (the agent is not in the data path, so restarts of it
    // should not stand out from this).
    let t = Instant::now();
    stream.wait_more(100, "the stream to run");
    let mut pauses = vec![("no restart (baseline)", stream.max_latency_since(t))];

    // (a) kill -9 of the agent, then a restart.
    let t = Instant::now();
    ws.kill9();
    std::thread::sleep(Duration::from_millis(500));
    ws.spawn();
    wait_connected(&[&ws], true, Duration::from_secs(60));
    stream.wait_more(100, "the stream after kill -9");
    assert_adopted(&ws);
    pauses.push(("agent kill -9 + restart", stream.max_latency_since(t)));

    // (b) a graceful restart (SIGTERM, start).
    let t = Instant::now();
    ws.stop();
    ws.spawn();
    wait_connected(&[&ws], true, Duration::from_secs(60));
    stream.wait_more(100, "the stream after a graceful restart");
    assert_adopted(&ws);
    pauses.push(("agent graceful restart", stream.max_latency_since(t)));

    // (c) an upgrade: another copy of the binary (new path and mtime)
    // reporting another version, started on the same state.
    let t = Instant::now();
    let v2 = tmp.path().join("ferrofab-agent-v2");
    std::fs::copy(agent_bin(), &v2).expect("copy binary");
    ws.stop();
    ws.bin = v2;
    ws.env = vec![(
        "FERROFAB_AGENT_VERSION_OVERRIDE".into(),
        "ferrofab-agent 99.0.0-upgrade".into(),
    )];
    ws.spawn();
    wait_connected(&[&ws], true, Duration::from_secs(60));
    stream.wait_more(100, "the stream after an upgrade");
    assert_adopted(&ws);
    pauses.push(("agent upgrade (new binary)", stream.max_latency_since(t)));
    assert!(
        ws.log().contains("99.0.0-upgrade"),
        "the upgraded agent did not adopt the holder:\n{}",
        ws.log()
    );

    // (d) the storage side: kill -9 of the storage agent within ctrl-loss.
    let t = Instant::now();
    s1.kill9();
    std::thread::sleep(Duration::from_millis(500));
    s1.spawn();
    stream.wait_more(100, "the stream after the storage agent's kill -9");
    pauses.push((
        "storage agent kill -9 + restart",
        stream.max_latency_since(t),
    ));

    // One holder served all along, and the loop device still refers to
    // the live file.
    assert_eq!(holder_pid(&ws), holder, "the holder was replaced");
    assert_eq!(loop_backing(&dev), live, "loop device lost its file");
    let last = stream.finish();
    assert!(!last.is_empty());

    // Unmount, check, remount and read every acknowledged block back
    // from the device (not from the page cache of the old mount).
    sh("umount", &[mnt.to_str().expect("utf-8")]);
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n", &dev])
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "e2fsck -f -n: {}\n{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    sh("mount", &["-o", "ro", &dev, mnt.to_str().expect("utf-8")]);
    let f = std::fs::File::open(mnt.join("stream.dat")).expect("open stream file");
    for (block, seq) in &last {
        let mut buf = vec![0u8; STREAM_BS];
        f.read_exact_at(&mut buf, block * STREAM_BS as u64)
            .expect("read back");
        assert!(
            buf == stream_stamp(*seq),
            "block {block} (write {seq}) does not read back"
        );
    }
    drop(f);
    drop(lm);
    for (what, d) in &pauses {
        println!(
            "I/O pause (max write+fsync) during {what}: {} ms",
            d.as_millis()
        );
    }
    drop((ws, s1));
}
