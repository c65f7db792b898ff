//! Processes under test: the binaries of the workspace, spawned and
//! awaited until they print their ready line.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A loopback port free right now (for a listener that must keep its
/// address across restarts, which port 0 would not).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Reads the first line `child` prints on its piped stdout (every ferrofab
/// daemon prints `ready ...` once it listens) and returns it; panics
/// naming `what` and showing `log()` when the line is not a ready line.
pub fn read_ready_line(child: &mut Child, what: &str, log: impl FnOnce() -> String) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read ready line");
    if !line.contains("ready") {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not start: {line:?}; log:\n{}", log());
    }
    line
}

/// The value of `key=` in a ready line (`grpc=`, `http=`).
pub fn ready_field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

/// `path` opened for appending (created if missing): a daemon's stderr
/// goes to a file, never to a pipe nobody drains (a full pipe would block
/// it), and a restart adds to the same log.
pub fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

/// SIGKILL and reap: no graceful shutdown, like a power cut.
pub fn kill9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// SIGTERM (through kill(1): the kit has no unsafe code), then waits up to
/// `limit` for the exit, polling every `poll`. Returns the exit status, or
/// `None` if it was still running (it is then killed).
pub fn terminate(child: &mut Option<Child>, limit: Duration, poll: Duration) -> Option<ExitStatus> {
    let mut c = child.take()?;
    let sent = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .map(|s| s.success());
    assert!(matches!(sent, Ok(true)), "kill -TERM failed: {sent:?}");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        std::thread::sleep(poll);
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// VmRSS of process `pid` in MiB (0 when unreadable).
pub fn rss_mb_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Fails loudly (never skips) when a tool the test needs is missing from
/// PATH; names the Debian package that has it.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "this test needs `{tool}` (Debian package {package})");
}

/// Prefixes of the variables cargo sets for a test run of a package.
/// Passed on to a nested `cargo build`, they describe the wrong package
/// and make build scripts that track them (ring's) rebuild for every test
/// binary in turn.
const INHERITED_FROM_CARGO: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// The binary `bin` of the package under test, as Cargo built it for the
/// running test: it sits in the profile directory, beside the `deps/`
/// folder of the test binary (where `CARGO_BIN_EXE_<bin>` points; the kit
/// is a library, so it cannot read that variable at compile time).
pub fn sibling_bin(bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile_dir.join(bin)
}

/// Builds binary `bin` of workspace package `package` into the running
/// test's target directory and profile (a binary of another package has
/// no `CARGO_BIN_EXE_*`), and returns its path. A no-op when it is built
/// already; never stale when only one package's tests run.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", &target_dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if INHERITED_FROM_CARGO.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(k.as_ref());
        }
    }
    // A bench target (run with --bench) shares its dependencies'
    // artifacts with the `bench` profile, a release test with `release`.
    if std::env::args().any(|a| a == "--bench") {
        cmd.args(["--profile", "bench"]);
    } else if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    let st = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo build for {bin}: {e}"));
    assert!(
        st.success(),
        "`cargo build -p {package} --bin {bin}` failed; this test needs it"
    );
    let path = profile_dir.join(bin);
    assert!(path.is_file(), "no {bin} binary at {}", path.display());
    path
}

/// The binary `bin` of workspace package `package`: the one cargo built
/// for this test run when the test belongs to that package (cargo sets
/// `CARGO_BIN_EXE_<bin>` for it), else built by [`workspace_bin`].
pub fn package_bin(package: &str, bin: &str) -> PathBuf {
    match std::env::var_os(format!("CARGO_BIN_EXE_{bin}")) {
        Some(p) => PathBuf::from(p),
        None => workspace_bin(package, bin),
    }
}

/// Whether the peer has closed `s` (end of file or reset), waiting up to
/// `limit` for a read. Bytes the peer sent first count as "not closed".
pub fn closed_by_peer(s: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).expect("read timeout");
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}
