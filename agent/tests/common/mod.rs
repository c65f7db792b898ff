//! Harness for the agent's end-to-end tests: a real `ferrofab-controller`
//! process with certificates from `ferrofab-pki`, and `ferrofab-agent`
//! processes enrolled through it, all on loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrofab_agent::{AgentConfig, PoolConfig, Provisioning};
use ferrofab_proto::v1::admin_service_client::AdminServiceClient;
use ferrofab_proto::v1::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const MIB: usize = 1 << 20;

/// The tokio runtime the tests drive the admin API with.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Prefixes of the variables cargo sets for a test run of this package.
const INHERITED_FROM_CARGO: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// Builds the controller binary once (it is another package) and returns
/// its path in this test's target directory.
pub fn controller_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("ferrofab-controller", "ferrofab-controller"))
        .clone()
}

/// The `ferrofab` CLI binary, built once like [`controller_bin`].
pub fn cli_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("ferrofab-cli", "ferrofab"))
        .clone()
}

/// Builds binary `bin` of workspace package `package` into this test's
/// target directory and profile, and returns its path.
fn workspace_bin(package: &str, bin: &str) -> PathBuf {
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
    // Variables cargo set for this test process describe this test
    // target; passed on, they make build scripts that track them
    // (ring's) rebuild for every test binary in turn.
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
    assert!(st.success(), "building {bin} failed");
    let path = profile_dir.join(bin);
    assert!(path.is_file(), "no {bin} binary at {}", path.display());
    path
}

pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferrofab-agent")
}

/// Fails loudly (never skips) when a tool the test needs is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "this test needs `{tool}` (Debian package {package})");
    assert!(
        Path::new("/dev/fuse").exists(),
        "this test needs /dev/fuse (FUSE exposure)"
    );
}

/// A running controller with its PKI directory.
pub struct Controller {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Controller {
    pub fn start(dir: &Path) -> Self {
        Self::start_with_pki(dir, "")
    }

    /// `extra_pki` is appended to the config's `[pki]` table.
    pub fn start_with_pki(dir: &Path, extra_pki: &str) -> Self {
        let pki = dir.join("pki");
        ferrofab_pki::init(&pki, &ferrofab_pki::InitOptions::default()).expect("pki init");
        let ca = ferrofab_pki::PkiDir::new(&pki).load_ca().expect("ca");
        ferrofab_pki::issue_to_dir(
            &ca,
            &ferrofab_pki::Identity::Admin,
            ferrofab_pki::Validity::from_now(Duration::from_secs(86400)).expect("validity"),
            &pki,
            false,
        )
        .expect("admin cert");
        let port = free_port();
        let cfg = format!(
            "listen = \"127.0.0.1:{port}\"\nstore_path = \"{d}/store.redb\"\n\
             [pki]\ndir = \"{p}\"\n{extra_pki}",
            d = dir.display(),
            p = pki.display()
        );
        std::fs::write(dir.join("controller.toml"), cfg).expect("write config");
        let mut c = Controller {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        c.spawn();
        c
    }

    pub fn spawn(&mut self) {
        let mut child = Command::new(controller_bin())
            .arg("--config")
            .arg(self.dir.join("controller.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn controller");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        assert!(line.contains("ready"), "controller did not start: {line:?}");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Resident memory of the controller process in MiB (0 if not running).
    pub fn rss_mb(&self) -> f64 {
        self.child.as_ref().map_or(0.0, |c| rss_mb_of(c.id()))
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        let pki = self.dir.join("pki");
        let read = |n: &str| std::fs::read(pki.join(n)).expect("pki file");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.crt")))
            .identity(Identity::from_pem(read("admin.crt"), read("admin.key")))
            .domain_name("localhost");
        let ch = Channel::from_shared(format!("https://127.0.0.1:{}", self.port))
            .expect("uri")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect to controller");
        AdminServiceClient::new(ch)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
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
        let token = ctl
            .admin()
            .await
            .create_bootstrap_token(CreateBootstrapTokenRequest {
                node: name.into(),
                ttl_seconds: 600,
            })
            .await
            .expect("token")
            .into_inner()
            .token;
        let config = dir.join("etc/agent.toml");
        let out = Command::new(agent_bin())
            .args([
                "enroll",
                "--token",
                &token,
                "--controller",
                &ctl.addr(),
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("log file");
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
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        assert!(
            line.contains("ready"),
            "agent {} did not start: {line:?}; log:\n{}",
            self.name,
            self.log()
        );
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (a workstation's holder keeps its exposures).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
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

/// VmRSS of process `pid` in MiB (0 when unreadable).
pub fn rss_mb_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Polls `f` until it returns `Some` or `timeout` passes (then panics with `what`).
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn tenant(name: &str, nodes: &[&str]) -> Tenant {
    Tenant {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(TenantSpec {
            allowed_nodes: nodes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn pool(name: &str, node: &str, path: &Path) -> Pool {
    Pool {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(PoolSpec {
            node: node.into(),
            backing: Some(PoolBacking {
                kind: BackingKind::Directory as i32,
                path: path.display().to_string(),
            }),
            capacity: "10GiB".into(),
            reclaim_policy: ReclaimPolicy::Delete as i32,
            ..Default::default()
        }),
        status: None,
    }
}

pub fn volume(name: &str, tenant: &str, size: &str, pool: &str) -> Volume {
    Volume {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(VolumeSpec {
            tenant: tenant.into(),
            size: size.into(),
            pool: pool.into(),
            ..Default::default()
        }),
        status: None,
    }
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
        .create_tenant(CreateTenantRequest {
            tenant: Some(tenant("lab", workstations)),
        })
        .await
        .expect("tenant");
    for (name, storage) in pools {
        admin
            .create_pool(CreatePoolRequest {
                pool: Some(pool(name, &storage.name, &storage.pool_dir())),
            })
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
        .create_volume(CreateVolumeRequest {
            volume: Some(volume(name, "lab", size, pool)),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating volume {name}: {e}"));
}

/// Sets volume `name`'s size to `size` through the API (a grow).
pub async fn grow(ctl: &Controller, name: &str, size: &str) {
    let mut admin = ctl.admin().await;
    let mut v = admin
        .get_volume(GetVolumeRequest { name: name.into() })
        .await
        .expect("get volume")
        .into_inner();
    v.spec.as_mut().expect("spec").size = size.into();
    admin
        .update_volume(UpdateVolumeRequest {
            volume: Some(v),
            ..Default::default()
        })
        .await
        .expect("grow");
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

/// sha256 of `len` bytes at the start of `path`.
pub fn sha256_of(path: &Path, len: usize) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).expect("read");
    hex::encode(sha2::Sha256::digest(&buf))
}

/// Writes `data` at offset 0 of `path` and fsyncs.
pub fn write_sync(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open rw");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256_of_bytes(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
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
