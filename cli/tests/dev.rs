//! `ferrofab dev` end to end: the real binary brings up a controller and
//! two agents, exposes a volume through FUSE, stops cleanly on SIGINT and
//! resumes its state on the next start.
//!
//! Needs root, /dev/fuse, `dd` and `umount`; missing ones fail the test
//! with the requirement named (never a silent skip).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ferrofab_testkit::data::pattern;
use ferrofab_testkit::process::require_tool;
use ferrofab_testkit::MIB;

const BIN: &str = env!("CARGO_BIN_EXE_ferrofab");
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn require_environment() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (ferrofab dev mounts FUSE)");
    assert!(
        Path::new("/dev/fuse").exists(),
        "this test needs /dev/fuse (FUSE)"
    );
    require_tool("dd", "coreutils");
    require_tool("umount", "mount");
}

/// A running `ferrofab dev --dir DIR`.
struct Dev {
    dir: PathBuf,
    child: Option<Child>,
    lines: Receiver<String>,
    stderr: PathBuf,
}

impl Dev {
    fn start(dir: &Path, run: u32) -> Self {
        let stderr = dir.with_extension(format!("stderr-{run}"));
        let log = std::fs::File::create(&stderr).expect("stderr file");
        let mut child = Command::new(BIN)
            .args(["dev", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn ferrofab dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            dir: dir.to_path_buf(),
            child: Some(child),
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The stdout lines up to and including the ready line.
    fn wait_ready(&self) -> Vec<String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line == "ferrofab dev: ready";
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no ready line within {READY_TIMEOUT:?}; stdout: {seen:?}; stderr:\n{}",
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "ferrofab dev exited before ready; stdout: {seen:?}; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    fn interrupt(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "kill -INT");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ferrofab dev did not stop within {STOP_TIMEOUT:?} of SIGINT; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dev {
    /// A failed assertion must not leave a process or a FUSE mount behind.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.dir.join("volumes")) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.join("volumes"))
                .status();
        }
    }
}

fn is_mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

fn dd(args: &[String]) {
    let out = Command::new("dd").args(args).output().expect("run dd");
    assert!(
        out.status.success(),
        "dd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Volume names and sizes from `ferrofab --config DIR/client.toml volume list -o json`.
fn volume_list(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("client.toml"))
        .args(["volume", "list", "-o", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("run ferrofab volume list");
    assert!(
        out.status.success(),
        "volume list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON volume list");
    let mut vols: Vec<(String, String)> = v
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                o["spec"]["size"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    vols.sort();
    vols
}

/// Start, write 4 MiB through the exposed file with dd and read it back,
/// list volumes with the written client.toml, SIGINT (exit 0, no mount
/// left); start again: same volumes, same data.
#[test]
fn dev_runs_stops_and_resumes() {
    require_environment();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let exposed = dir.join("volumes/demo-1");

    let mut dev = Dev::start(&dir, 1);
    let summary = dev.wait_ready();
    let text = summary.join("\n");
    assert!(text.contains(&exposed.display().to_string()), "{text}");
    assert!(text.contains("client.toml"), "{text}");
    // The agents' metrics are served (the dashboard's data-path panels).
    assert!(text.contains("agent metrics  http://127.0.0.1:"), "{text}");
    let len = std::fs::metadata(&exposed).expect("exposed file").len();
    assert_eq!(len, 1 << 30, "demo-1 is 1 GiB");

    let data = pattern(4 * MIB, 7);
    let src = tmp.path().join("in.bin");
    let back = tmp.path().join("out.bin");
    std::fs::write(&src, &data).expect("write input");
    dd(&[
        format!("if={}", src.display()),
        format!("of={}", exposed.display()),
        "bs=1M".into(),
        "count=4".into(),
        "conv=fsync".into(),
    ]);
    assert!(
        read_back(&exposed, &back) == data,
        "data read back through the exposure differs"
    );

    let want = vec![
        ("demo-1".to_owned(), "1GiB".to_owned()),
        ("demo-2".to_owned(), "2GiB".to_owned()),
    ];
    assert_eq!(volume_list(&dir), want);

    stop_cleanly(&mut dev, &dir);
    assert!(!exposed.exists(), "exposed file visible after stop");
    drop(dev);

    let mut dev = Dev::start(&dir, 2);
    dev.wait_ready();
    assert_eq!(volume_list(&dir), want);
    // A normal resume logs no warning.
    let log = dev.stderr();
    assert!(!log.contains("WARN"), "warnings on resume:\n{log}");
    let again = tmp.path().join("again.bin");
    assert!(
        read_back(&exposed, &again) == data,
        "data written before the restart is gone"
    );
    stop_cleanly(&mut dev, &dir);
}

/// The first 4 MiB of `exposed`, copied to `out` with dd.
fn read_back(exposed: &Path, out: &Path) -> Vec<u8> {
    dd(&[
        format!("if={}", exposed.display()),
        format!("of={}", out.display()),
        "bs=1M".into(),
        "count=4".into(),
    ]);
    std::fs::read(out).expect("read output")
}

/// SIGINT: `ferrofab dev` exits 0 and leaves no FUSE mount behind.
fn stop_cleanly(dev: &mut Dev, dir: &Path) {
    let st = dev.interrupt();
    assert!(
        st.success(),
        "exit status {st:?}; stderr:\n{}",
        dev.stderr()
    );
    assert!(!is_mounted(&dir.join("volumes")), "FUSE mount left behind");
}
