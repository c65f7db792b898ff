//! Harness for the agent's end-to-end tests (feature `agent`): a real
//! `ferrofab-controller` process (from [`crate::controller`]) and
//! `ferrofab-agent` processes enrolled through it, all on loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub use crate::controller::Controller;
pub use crate::data::{pattern, sha256_of, sha256_of_bytes, write_sync};
pub use crate::objects::{pool_at, tenant, volume, Admin, AdminExt};
pub use crate::process::{free_port, rss_mb_of};
pub use crate::wait::wait_until as wait_for;
pub use crate::MIB;
use crate::{client, controller, process};
use ferrofab_agent::{AgentConfig, PoolConfig, Provisioning};
use ferrofab_proto::v1::*;

/// The tokio runtime the tests drive the admin API with.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The `ferrofab` CLI binary, built once (it is another package).
pub fn cli_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| process::package_bin("ferrofab-cli", "ferrofab"))
        .clone()
}

/// The `ferrofab-agent` binary Cargo built for the running test.
pub fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| process::sibling_bin("ferrofab-agent"))
}

/// Fails loudly (never skips) when a tool the test needs, or FUSE, is
/// missing.
pub fn require_tool(tool: &str, package: &str) {
    process::require_tool(tool, package);
    assert!(
        Path::new("/dev/fuse").exists(),
        "this test needs /dev/fuse (FUSE exposure)"
    );
}

/// A controller with its config, store and PKI in `dir`, on a fixed port
/// so that a restart keeps the address the agents know.
pub fn start_controller(dir: &Path) -> Controller {
    start_controller_with_pki(dir, "")
}

/// [`start_controller`] with `extra_pki` appended to the `[pki]` table.
pub fn start_controller_with_pki(dir: &Path, extra_pki: &str) -> Controller {
    let mut opts = controller::Options::plain(free_port());
    opts.extra_pki = extra_pki.into();
    Controller::start_in(dir, opts)
}

/// Runs the `ferrofab` CLI as admin against `ctl`.
pub fn ferrofab(ctl: &Controller, args: &[&str]) -> Output {
    let cfg = ctl.dir.join("client.toml");
    if !cfg.exists() {
        client::write_client_toml(&cfg, ctl.port(), &ctl.dir.join("pki"), "admin");
    }
    Command::new(cli_bin())
        .args(args)
        .env("FERROFAB_CONFIG", &cfg)
        .env_remove("FERROFAB_ENDPOINT")
        .env("HOME", "/nonexistent")
        .output()
        .expect("run ferrofab")
}

/// A `ferrofab-agent run` process.
pub struct AgentProc {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub data_port: u16,
    pub metrics_port: u16,
    /// The agent binary `spawn` runs (a copy stands for an upgrade).
    pub bin: PathBuf,
    /// Extra environment for `spawn`.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl AgentProc {
    /// Enrolls `name` (CLI `enroll`), completes its config and starts it.
    pub async fn enroll_and_start(ctl: &Controller, base: &Path, name: &str, roles: &str) -> Self {
        let dir = base.join(name);
        std::fs::create_dir_all(dir.join("pool")).expect("mkdir");
        let data_port = free_port();
        let token = ctl.admin().await.bootstrap_token(name).await;
        let config = dir.join("etc/agent.toml");
        let out = Command::new(agent_bin())
            .args([
                "enroll",
                "--token",
                &token,
                "--controller",
                &ctl.addr,
                "--node",
                name,
            ])
            .arg("--ca")
            .arg(ctl.ca())
            .args(["--roles", roles])
            .args(["--data-address", &format!("127.0.0.1:{data_port}")])
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .output()
            .expect("run enroll");
        assert!(
            out.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key_mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("etc/node.key"))
                .expect("key")
                .permissions(),
        );
        assert_eq!(key_mode & 0o777, 0o600, "node key must be 0600");
        let metrics_port = free_port();
        let mut cfg = AgentConfig::load(&config).expect("enrolled config");
        cfg.pools.insert(
            "p1".into(),
            PoolConfig {
                path: dir.join("pool"),
                provisioning: Provisioning::Thin,
            },
        );
        cfg.expose_dir = dir.join("volumes");
        cfg.api_socket = dir.join("agent.sock");
        cfg.resync_interval = "2s".into();
        cfg.metrics_listen = Some(format!("127.0.0.1:{metrics_port}").parse().expect("addr"));
        std::fs::write(&config, cfg.to_toml().expect("toml")).expect("write config");
        Self::start(name, dir, config, data_port, metrics_port)
    }

    /// Starts `ferrofab-agent run` for an enrolled node's `config`.
    pub fn start(
        name: &str,
        dir: PathBuf,
        config: PathBuf,
        data_port: u16,
        metrics_port: u16,
    ) -> Self {
        let mut a = AgentProc {
            name: name.into(),
            dir,
            config,
            data_port,
            metrics_port,
            bin: agent_bin().into(),
            env: Vec::new(),
            child: None,
        };
        a.spawn();
        a
    }

    pub fn pool_dir(&self) -> PathBuf {
        self.dir.join("pool")
    }

    pub fn expose_dir(&self) -> PathBuf {
        self.dir.join("volumes")
    }

    /// The agent's state directory (desired-state cache, host identity).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn spawn(&mut self) {
        let log = process::log_file(&self.dir.join("agent.log"));
        let mut child = Command::new(&self.bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("FERROFAB_LOG", "info,ferrofab_nvmeof=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        process::read_ready_line(&mut child, &format!("agent {}", self.name), || self.log());
        self.child = Some(child);
    }

    /// Resident memory of the agent process in MiB (0 if not running).
    pub fn rss_mb(&self) -> f64 {
        self.child.as_ref().map_or(0.0, |c| rss_mb_of(c.id()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// SIGKILL: no clean shutdown at all.
    pub fn kill9(&mut self) {
        process::kill9(&mut self.child);
    }

    /// SIGTERM and wait (a workstation's holder keeps its exposures).
    pub fn stop(&mut self) {
        process::terminate(
            &mut self.child,
            Duration::from_secs(20),
            Duration::from_millis(100),
        );
    }

    /// Runs `ferrofab-agent ARGS --socket S`; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(agent_bin())
            .args(args)
            .arg("--socket")
            .arg(self.dir.join("agent.sock"))
            .output()
            .expect("run agent cli");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `cli` expecting success and JSON on stdout.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let (code, out, err) = self.cli(args);
        assert_eq!(
            code,
            0,
            "ferrofab-agent {args:?} failed: {err}\nlog:\n{}",
            self.log()
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
    }

    pub fn status(&self) -> serde_json::Value {
        self.cli_json(&["status", "--json"])
    }

    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}

impl Drop for AgentProc {
    /// Stops the agent and then its data-path holder (which outlives the
    /// agent by design), so no mount or process is left behind.
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new(agent_bin())
            .args(["holder", "stop", "--timeout", "20s", "--state-dir"])
            .arg(self.state_dir())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.expose_dir())
            .stderr(Stdio::null())
            .status();
    }
}

/// The usual cluster beside the controller (in `ctl.dir`): storage agent
/// s1, then workstation agents `workstations` (enrolled and started in
/// that order), then [`layout`] allowing all of them, with `vols` on s1.
pub async fn s1_and_workstations<const N: usize>(
    ctl: &Controller,
    workstations: [&str; N],
    vols: &[(&str, &str)],
) -> (AgentProc, [AgentProc; N]) {
    s1_and_workstations_allowing(ctl, workstations, &workstations, vols).await
}

/// [`s1_and_workstations`] with tenant `lab` allowing only `allowed`.
pub async fn s1_and_workstations_allowing<const N: usize>(
    ctl: &Controller,
    workstations: [&str; N],
    allowed: &[&str],
    vols: &[(&str, &str)],
) -> (AgentProc, [AgentProc; N]) {
    let s1 = AgentProc::enroll_and_start(ctl, &ctl.dir, "s1", "storage").await;
    let mut wss = Vec::new();
    for w in workstations {
        wss.push(AgentProc::enroll_and_start(ctl, &ctl.dir, w, "workstation").await);
    }
    layout(ctl, &s1, allowed, vols).await;
    let Ok(wss) = wss.try_into() else {
        unreachable!("one agent per workstation name")
    };
    (s1, wss)
}

/// Creates tenant `lab` (allowing `workstations`), pool `p1` on `storage`
/// and volume `name` of `size`.
pub async fn layout(
    ctl: &Controller,
    storage: &AgentProc,
    workstations: &[&str],
    vols: &[(&str, &str)],
) {
    let vols: Vec<(&str, &str, &str)> = vols.iter().map(|(n, s)| (*n, *s, "p1")).collect();
    layout_pools(ctl, workstations, &[("p1", storage)], &vols).await;
}

/// Creates tenant `lab` (allowing `workstations`), one pool per
/// `(pool, storage agent)` on that agent's pool directory, and volumes
/// `(name, size, pool)`.
pub async fn layout_pools(
    ctl: &Controller,
    workstations: &[&str],
    pools: &[(&str, &AgentProc)],
    vols: &[(&str, &str, &str)],
) {
    let mut admin = ctl.admin().await;
    admin
        .create(tenant("lab", "", 0, workstations))
        .await
        .expect("tenant");
    for (name, storage) in pools {
        admin
            .create(pool_at(
                name,
                &storage.name,
                &storage.pool_dir(),
                "10GiB",
                &[],
            ))
            .await
            .expect("pool");
    }
    for (name, size, pool) in vols {
        create_volume(ctl, name, size, pool).await;
    }
}

/// Creates volume `name` of tenant `lab` in `pool`.
pub async fn create_volume(ctl: &Controller, name: &str, size: &str, pool: &str) {
    ctl.admin()
        .await
        .create(volume(name, "lab", size, pool))
        .await
        .unwrap_or_else(|e| panic!("creating volume {name}: {e}"));
}

/// Sets volume `name`'s size to `size` through the API (a grow).
pub async fn grow(ctl: &Controller, name: &str, size: &str) {
    let mut admin = ctl.admin().await;
    let mut v = admin.get::<Volume>(name).await.expect("get volume");
    v.spec.as_mut().expect("spec").size = size.into();
    admin.update(v).await.expect("grow");
}

/// `ferrofab-agent attach VOLUME` on `ws` (waits for Ready); the exposed path.
pub fn attach(ws: &AgentProc, volume: &str) -> PathBuf {
    let v = ws.cli_json(&["attach", volume, "--timeout", "90s", "--json"]);
    assert_eq!(v["schema_version"], 1, "{v}");
    PathBuf::from(v["path"].as_str().expect("path"))
}

/// The backing file of `volume` in `storage`'s pool, found through the
/// agent's ownership marker next to it.
pub fn backing_file_of(storage: &AgentProc, volume: &str) -> PathBuf {
    let quoted = format!("\"{volume}\"");
    std::fs::read_dir(storage.pool_dir())
        .expect("pool dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .find(|p| {
            std::fs::read_to_string(format!("{}.ferrofab-owner", p.display()))
                .unwrap_or_default()
                .contains(&quoted)
        })
        .unwrap_or_else(|| panic!("no backing file with ownership marker for {volume}"))
}

/// The export entry of `volume` in `storage`'s local status, if listed.
pub fn export_status(storage: &AgentProc, volume: &str) -> Option<serde_json::Value> {
    storage.status()["exports"]
        .as_array()?
        .iter()
        .find(|e| e["volume"] == volume)
        .cloned()
}

/// Waits until every one of `volumes` is exported and ready on `storage`.
pub fn wait_exports_ready(storage: &AgentProc, volumes: &[&str], timeout: Duration) {
    wait_for(
        &format!("exports {volumes:?} ready on {}", storage.name),
        timeout,
        || {
            volumes
                .iter()
                .all(|v| export_status(storage, v).is_some_and(|e| e["ready"] == true))
                .then_some(())
        },
    );
}

/// Waits until the controller link of every agent is `up` (or down).
pub fn wait_connected(agents: &[&AgentProc], up: bool, timeout: Duration) {
    wait_for(
        &format!("controller_connected == {up} on every agent"),
        timeout,
        || {
            agents
                .iter()
                .all(|a| a.status()["controller_connected"] == up)
                .then_some(())
        },
    );
}

/// Blocks written by the write stream (`STREAM_BS` bytes each).
pub const STREAM_BLOCKS: u64 = 1500;
pub const STREAM_BS: usize = 4096;

/// Block `i` of the write stream: its number, then pseudo-random bytes.
pub fn stream_stamp(i: u64) -> Vec<u8> {
    let mut b = pattern(STREAM_BS, 1000 + i);
    b[..8].copy_from_slice(&i.to_le_bytes());
    b
}

/// Body of a test binary's ignored `write_stream_helper` test: writes the
/// stamped blocks to `FF_STREAM_PATH` with an fsync each and prints
/// "ack N" once block N is durable. Without the variable it does nothing.
pub fn write_stream_main() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let Some(path) = std::env::var_os("FF_STREAM_PATH") else {
        return;
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open exposed file");
    let mut out = std::io::stdout().lock();
    for i in 0..STREAM_BLOCKS {
        f.write_all_at(&stream_stamp(i), i * STREAM_BS as u64)
            .expect("write");
        f.sync_data().expect("fsync");
        writeln!(out, "ack {i}").expect("stdout");
        out.flush().expect("flush");
    }
}

/// A write stream running in another process (the test binary's
/// `write_stream_helper`): this process must not hold the exposed file
/// open while it forks a restarted agent (a forked child closing its copy
/// of the descriptor sends FUSE a FLUSH, which waits for the storage node
/// that is being restarted).
pub struct WriteStream {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    path: PathBuf,
    /// Blocks acknowledged so far.
    pub acked: u64,
}

impl WriteStream {
    pub fn start(path: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "write_stream_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FF_STREAM_PATH", path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        WriteStream {
            child,
            lines,
            path: path.to_path_buf(),
            acked: 0,
        }
    }

    fn next_ack(&mut self) -> Option<u64> {
        for line in self.lines.by_ref() {
            if let Some(i) = line.expect("writer output").strip_prefix("ack ") {
                self.acked = i.parse::<u64>().expect("ack number") + 1;
                return Some(self.acked);
            }
        }
        None
    }

    /// Reads acks until `n` blocks are durable.
    pub fn wait_acked(&mut self, n: u64) {
        while self.acked < n {
            assert!(
                self.next_ack().is_some(),
                "write stream ended after {} acks",
                self.acked
            );
        }
    }

    /// Lets the stream finish; asserts it succeeded with every block
    /// acknowledged and that every acknowledged block reads back.
    /// `log` is shown when it failed.
    pub fn finish_and_verify(mut self, log: impl Fn() -> String) {
        use std::os::unix::fs::FileExt;
        while self.next_ack().is_some() {}
        let st = self.child.wait().expect("writer exit");
        assert!(
            st.success(),
            "write stream failed after {} acks; storage log:\n{}",
            self.acked,
            log()
        );
        assert_eq!(self.acked, STREAM_BLOCKS);
        let f = std::fs::File::open(&self.path).expect("open");
        for i in 0..STREAM_BLOCKS {
            let mut buf = vec![0u8; STREAM_BS];
            f.read_exact_at(&mut buf, i * STREAM_BS as u64)
                .expect("read back");
            assert!(
                buf == stream_stamp(i),
                "acknowledged block {i} lost or damaged"
            );
        }
    }
}
