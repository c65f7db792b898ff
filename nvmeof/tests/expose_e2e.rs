//! `ferrofab-nvmeof connect` end to end: the real binaries as separate
//! processes (`serve` from a TOML file, `connect`, `disconnect`, `bench`)
//! on loopback, and the namespace used through its exposed file with the
//! ordinary tools: dd, losetup, mkfs.ext4, mount, e2fsck.
//!
//! Needs root, /dev/fuse and the tools of Debian packages `coreutils`,
//! `util-linux`, `mount`, `e2fsprogs` and `fuse3`. A missing one fails the
//! test naming the package; nothing is skipped.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferrofab_testkit::wait::poll;

const BIN: &str = env!("CARGO_BIN_EXE_ferrofab-nvmeof");
const MIB: u64 = 1 << 20;
/// How often a wait here looks again.
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------- helpers

/// Fail loudly if a tool is missing, naming the package to install.
fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "required tool `{tool}` is missing: apt-get install {package}"
    );
}

fn require_root_and_fuse() {
    assert_eq!(
        // SAFETY: geteuid cannot fail and touches no memory of ours.
        unsafe { libc::geteuid() },
        0,
        "these tests must run as root"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the kernel needs FUSE (modprobe fuse)"
    );
    require("fusermount3", "fuse3");
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a shell command line; its trimmed stdout.
fn sh(line: &str) -> String {
    let out = run(Command::new("sh").arg("-c").arg(line));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sha256(path: &Path) -> String {
    let line = sh(&format!("sha256sum '{}'", path.display()));
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A port nobody uses right now, below the kernel's ephemeral range.
///
/// Why not bind port 0: that hands out an ephemeral port, and the many
/// outgoing connections of the other tests (and of an initiator
/// reconnecting while its target is down) draw their source ports from the
/// same range, so the port could be taken before `serve` binds it, or
/// while it is restarting.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(12000, 65535);
    let span = low - 10000;
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = 10000 + (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 101)) % span;
        let port = port as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {low}");
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn pattern_file(path: &Path, len: u64, seed: u64) {
    let mut s = seed | 1;
    let mut f = std::io::BufWriter::new(File::create(path).expect("create pattern"));
    for _ in 0..len / 8 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        f.write_all(&s.to_le_bytes()).expect("write pattern");
    }
    f.flush().expect("flush pattern");
}

/// Bytes a running process has written so far (`wchar` in /proc/PID/io);
/// None once it has exited.
fn bytes_written(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child, which we have not reaped yet.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Wait for a child to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    poll(limit, POLL, || child.try_wait().ok().flatten())
}

/// Whether anything is mounted at or below `path`.
fn mounted_under(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(mp).starts_with(path))
}

// ---------------------------------------------------------------- serve

/// `ferrofab-nvmeof serve` on a free loopback port with one namespace,
/// configured from a TOML file so a test can edit it and send SIGHUP.
struct Serve {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    nqn: String,
    starts: u32,
}

impl Serve {
    fn start(name: &str, size_mib: u64) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Serve {
            child: None,
            dir,
            port: free_port(),
            nqn: format!("nqn.2026-11.io.ferrofab:{name}"),
            starts: 0,
        };
        s.write_config(size_mib);
        s.spawn();
        s
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("serve.toml")
    }

    fn log(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("serve-{n}.log"))
    }

    /// The target's sleeping poll mode leaves the two vCPUs to the tests.
    fn write_config(&self, size_mib: u64) {
        let toml = format!(
            "[target]\npoll_mode = \"interrupt\"\n\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
             [[subsystem]]\nnqn = \"{nqn}\"\nallow_any_host = true\n\n\
             [[subsystem.namespace]]\nnsid = 1\npath = \"{img}\"\nsize = \"{size_mib}MiB\"\n",
            port = self.port,
            nqn = self.nqn,
            img = self.dir.path().join("ns1.img").display(),
        );
        fs::write(self.config(), toml).expect("write config");
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.log(self.starts);
        let out = File::create(&log).expect("serve log");
        let err = out.try_clone().expect("clone log");
        let child = Command::new(BIN)
            .args(["serve", "--no-watch", "-c"])
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn serve");
        self.child = Some(child);
        let ready = poll(Duration::from_secs(20), POLL, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("serve exited with {status}:\n{}", self.logs());
            }
            let text = fs::read_to_string(&log).unwrap_or_default();
            text.contains("ready, serving").then_some(())
        });
        assert!(ready.is_some(), "serve did not start:\n{}", self.logs());
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("serve is running")
    }

    /// kill -9 and start it again on the same port and configuration.
    fn crash_and_restart(&mut self, down_for: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::thread::sleep(down_for);
        self.spawn();
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| fs::read_to_string(self.log(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGTERM);
            if wait_exit(&mut c, Duration::from_secs(5)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

// ---------------------------------------------------------------- connect

/// `ferrofab-nvmeof connect` exposing into a private directory.
struct Connect {
    child: Option<Child>,
    dir: tempfile::TempDir,
    nqn: String,
}

impl Connect {
    fn start(serve: &Serve, extra: &[&str]) -> Connect {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = File::create(dir.path().join("connect.log")).expect("log");
        let err = log.try_clone().expect("clone log");
        let p = |n: &str| dir.path().join(n);
        let child = Command::new(BIN)
            .args(["connect", "-a", "127.0.0.1", "-s", &serve.port.to_string()])
            .args(["-n", &serve.nqn, "--name", "vol"])
            .args(["--ctrl-loss-tmo", "60", "--reconnect-delay", "0.2"])
            .arg("--expose-dir")
            .arg(p("volumes"))
            .arg("--run-dir")
            .arg(p("run"))
            .arg("--hostnqn-file")
            .arg(p("hostnqn"))
            .arg("--hostid-file")
            .arg(p("hostid"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn connect");
        let c = Connect {
            child: Some(child),
            dir,
            nqn: serve.nqn.clone(),
        };
        let up = poll(Duration::from_secs(10), POLL, || {
            fs::metadata(c.file()).ok().filter(|m| m.len() > 0)
        });
        assert!(up.is_some(), "the file did not appear:\n{}", c.logs());
        c
    }

    fn volumes(&self) -> PathBuf {
        self.dir.path().join("volumes")
    }

    /// The exposed file of namespace 1.
    fn file(&self) -> PathBuf {
        self.volumes().join("vol")
    }

    fn logs(&self) -> String {
        fs::read_to_string(self.dir.path().join("connect.log")).unwrap_or_default()
    }

    /// `disconnect -n NQN` must end the connect process cleanly, with the
    /// file and its mount gone.
    fn disconnect(self) {
        let logs = self.disconnect_any();
        assert!(logs.contains("files removed"), "{logs}");
    }

    /// Like `disconnect`, but the files may have been detached lazily
    /// (still open); returns the connect log.
    fn disconnect_any(mut self) -> String {
        let out = Command::new(BIN)
            .args([
                "disconnect",
                "-n",
                &self.nqn,
                "--timeout",
                "20",
                "--run-dir",
            ])
            .arg(self.dir.path().join("run"))
            .output()
            .expect("run disconnect");
        assert!(
            out.status.success(),
            "disconnect failed: {}\nconnect log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let mut child = self.child.take().expect("connect running");
        let status = wait_exit(&mut child, Duration::from_secs(10)).expect("connect exited");
        assert!(status.success(), "connect failed:\n{}", self.logs());
        assert!(
            fs::symlink_metadata(self.file()).is_err(),
            "file left behind"
        );
        assert!(
            !mounted_under(&self.volumes()),
            "mount left behind under {}",
            self.volumes().display()
        );
        self.logs()
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGTERM);
            if wait_exit(&mut c, Duration::from_secs(15)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

// ---------------------------------------------------------------- guards

/// A loop device, detached on drop even if the test failed.
struct LoopDev(String);

impl LoopDev {
    fn attach(file: &Path) -> LoopDev {
        LoopDev(sh(&format!("losetup --find --show '{}'", file.display())))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

/// A mounted filesystem, unmounted on drop even if the test failed.
struct Mounted(PathBuf);

impl Mounted {
    fn mount(dev: &str, at: &Path, opts: &str) -> Mounted {
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", opts, dev])
            .arg(at));
        Mounted(at.to_path_buf())
    }

    fn unmount(self) {
        run(Command::new("umount").arg(&self.0));
        std::mem::forget(self);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

// ---------------------------------------------------------------- tests

/// dd into the exposed file (aligned, then unaligned) and back out; the
/// bytes must be the same.
#[test]
fn dd_in_and_out_of_the_exposed_file() {
    require_root_and_fuse();
    require("dd", "coreutils");
    require("sha256sum", "coreutils");
    let serve = Serve::start("dd", 64);
    let conn = Connect::start(&serve, &[]);
    assert_eq!(fs::metadata(conn.file()).expect("stat").len(), 64 * MIB);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let back = work.path().join("back");
    pattern_file(&src, 8 * MIB, 1);
    let f = conn.file();
    let f = f.display();
    let s = src.display();
    let b = back.display();
    // Whole blocks, several FUSE requests each.
    sh(&format!(
        "dd if='{s}' of='{f}' bs=1M conv=fsync status=none"
    ));
    sh(&format!("dd if='{f}' of='{b}' bs=1M count=8 status=none"));
    assert_eq!(sha256(&src), sha256(&back), "aligned round trip");
    // Odd sizes at an odd offset: read-modify-write in the FUSE layer.
    sh(&format!(
        "dd if='{s}' of='{f}' bs=3001 seek=7 count=2000 conv=notrunc,fsync status=none"
    ));
    sh(&format!(
        "dd if='{f}' of='{b}' bs=3001 skip=7 count=2000 status=none"
    ));
    let part = work.path().join("part");
    sh(&format!(
        "head -c {} '{s}' > '{}'",
        3001 * 2000,
        part.display()
    ));
    assert_eq!(sha256(&part), sha256(&back), "unaligned round trip");
    conn.disconnect();
}

/// ext4 on a loop device on the exposed file: mkfs, mount, write, umount,
/// e2fsck clean, and the data still there on a second mount.
#[test]
fn ext4_on_a_loop_device_on_the_exposed_file() {
    require_root_and_fuse();
    require("losetup", "util-linux");
    require("mount", "mount");
    require("mkfs.ext4", "e2fsprogs");
    require("e2fsck", "e2fsprogs");
    require("sha256sum", "coreutils");
    let serve = Serve::start("ext4", 128);
    let conn = Connect::start(&serve, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let mnt = work.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    {
        let lo = LoopDev::attach(&conn.file());
        run(Command::new("mkfs.ext4").args(["-q", "-F", &lo.0]));
        let m = Mounted::mount(&lo.0, &mnt, "rw");
        pattern_file(&mnt.join("data"), 6 * MIB, 2);
        for i in 0..50 {
            fs::write(mnt.join(format!("small-{i}")), format!("file {i}\n")).expect("small");
        }
        sh("sync");
        let sum = sha256(&mnt.join("data"));
        m.unmount();
        run(Command::new("e2fsck").args(["-fn", &lo.0]));
        let m = Mounted::mount(&lo.0, &mnt, "ro");
        assert_eq!(sha256(&mnt.join("data")), sum);
        assert_eq!(
            fs::read_to_string(mnt.join("small-49")).expect("read"),
            "file 49\n"
        );
        m.unmount();
    }
    conn.disconnect();
}

/// kill -9 of the target in the middle of a verified random-write stream
/// from `bench`: the initiator reconnects to the restarted target, re-sends
/// what was in flight, and the final read-back finds every write.
#[test]
fn bench_verify_survives_a_target_restart() {
    let mut serve = Serve::start("restart-bench", 64);
    let work = tempfile::tempdir().expect("tempdir");
    let err_path = work.path().join("bench.err");
    let mut bench = Command::new(BIN)
        .args(["bench", "-a", "127.0.0.1", "-s", &serve.port.to_string()])
        .args(["-n", &serve.nqn, "--pattern", "randwrite", "--bs", "4k"])
        .args(["--qd", "8", "--time", "6s", "--verify", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&err_path).expect("bench log"))
        .spawn()
        .expect("spawn bench");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        bench.try_wait().expect("try_wait").is_none(),
        "bench ended before the restart"
    );
    serve.crash_and_restart(Duration::from_millis(300));
    let out = bench.wait_with_output().expect("bench output");
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        out.status.success(),
        "bench failed: {stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("reconnected"),
        "no reconnect seen: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
    let verify = &report["verify"];
    assert_eq!(verify["failures"], 0, "{report:#}");
    assert!(verify["first_bad"].is_null(), "{report:#}");
    assert!(
        verify["blocks_checked"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    assert!(
        report["write"]["ops"].as_u64().unwrap_or(0) > 100,
        "{report:#}"
    );
}

/// The same through the exposed file: a dd of a pattern runs while the
/// target is killed and restarted; the Namespace behind the file rides
/// through the reconnect and the bytes read back are the bytes written.
#[test]
fn dd_through_the_file_survives_a_target_restart() {
    require_root_and_fuse();
    require("dd", "coreutils");
    require("sha256sum", "coreutils");
    let mut serve = Serve::start("restart-dd", 64);
    let conn = Connect::start(&serve, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    let back = work.path().join("back");
    pattern_file(&src, 32 * MIB, 3);
    // Small synchronous writes keep dd busy across the restart.
    let mut dd = Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", conn.file().display()))
        .args(["bs=4k", "oflag=dsync", "status=none"])
        .spawn()
        .expect("spawn dd");
    // Kill the target once dd is well into the file, not before or after.
    let into = poll(Duration::from_secs(20), POLL, || {
        let written = bytes_written(dd.id())?;
        (written >= 2 * MIB).then_some(written)
    });
    serve.crash_and_restart(Duration::from_millis(500));
    let status = wait_exit(&mut dd, Duration::from_secs(30)).expect("dd finished");
    assert!(status.success(), "dd failed:\n{}", conn.logs());
    let into = into.expect("dd made no progress");
    assert!(into < 32 * MIB, "dd finished before the restart");
    sh(&format!(
        "dd if='{}' of='{}' bs=1M count=32 status=none",
        conn.file().display(),
        back.display()
    ));
    assert_eq!(sha256(&src), sha256(&back), "data after the restart");
    let logs = conn.logs();
    assert!(logs.contains("reconnected"), "no reconnect seen:\n{logs}");
    conn.disconnect();
}

/// Growing the namespace in the serve config and sending SIGHUP shows up as
/// the exposed file's new size within seconds, and the new space works.
#[test]
fn online_grow_shows_in_the_file_size() {
    require_root_and_fuse();
    require("dd", "coreutils");
    let serve = Serve::start("grow", 32);
    let conn = Connect::start(&serve, &[]);
    assert_eq!(fs::metadata(conn.file()).expect("stat").len(), 32 * MIB);
    serve.write_config(48);
    signal(serve.child(), libc::SIGHUP);
    let grown = poll(Duration::from_secs(5), POLL, || {
        let len = fs::metadata(conn.file()).ok()?.len();
        (len == 48 * MIB).then_some(len)
    });
    assert!(
        grown.is_some(),
        "size still {:?} after 5 s\nserve:\n{}\nconnect:\n{}",
        fs::metadata(conn.file()).map(|m| m.len()),
        serve.logs(),
        conn.logs()
    );
    // The new tail is usable.
    sh(&format!(
        "dd if=/dev/zero of='{}' bs=1M seek=47 count=1 conv=notrunc,fsync status=none",
        conn.file().display()
    ));
    assert!(conn.logs().contains("resized to"), "{}", conn.logs());
    conn.disconnect();
}

/// With the target gone for good, a reader blocked on the file (its request
/// waits for a reconnect that never comes) must not hang `disconnect`:
/// teardown disconnects the controller after a grace period, the reader
/// gets an error, and the file and mount are still cleaned up.
#[test]
fn disconnect_while_the_target_is_down() {
    require_root_and_fuse();
    require("dd", "coreutils");
    let mut serve = Serve::start("down", 32);
    let conn = Connect::start(&serve, &[]);
    if let Some(mut c) = serve.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut dd = Command::new("dd")
        .arg(format!("if={}", conn.file().display()))
        .args(["of=/dev/null", "bs=1M", "count=4", "status=none"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dd");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        dd.try_wait().expect("try_wait").is_none(),
        "dd should wait for the reconnect"
    );
    let start = Instant::now();
    let logs = conn.disconnect_any();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(logs.contains("detached lazily"), "{logs}");
    let status = wait_exit(&mut dd, Duration::from_secs(10)).expect("dd ended");
    assert!(!status.success(), "dd cannot have read from a dead target");
}
