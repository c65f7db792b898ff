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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Builds the controller binary once (it is another package) and returns
/// its path in this test's target directory.
pub fn controller_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "ferrofab-controller",
            "--bin",
            "ferrofab-controller",
        ])
        .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let st = cmd
            .status()
            .expect("running cargo build for the controller");
        assert!(st.success(), "building ferrofab-controller failed");
        let bin = profile_dir.join("ferrofab-controller");
        assert!(bin.is_file(), "no controller binary at {}", bin.display());
        bin
    })
    .clone()
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
        let mut a = AgentProc {
            name: name.into(),
            dir,
            config,
            data_port,
            metrics_port,
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

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("log file");
        let mut child = Command::new(agent_bin())
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("FERROFAB_LOG", "info,ferrofab_nvmeof=warn")
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

    /// SIGTERM and wait (unmounts the exposure cleanly).
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
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.expose_dir())
            .stderr(Stdio::null())
            .status();
    }
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
    let mut admin = ctl.admin().await;
    admin
        .create_tenant(CreateTenantRequest {
            tenant: Some(tenant("lab", workstations)),
        })
        .await
        .expect("tenant");
    admin
        .create_pool(CreatePoolRequest {
            pool: Some(pool("p1", &storage.name, &storage.pool_dir())),
        })
        .await
        .expect("pool");
    for (name, size) in vols {
        admin
            .create_volume(CreateVolumeRequest {
                volume: Some(volume(name, "lab", size, "p1")),
                ..Default::default()
            })
            .await
            .expect("volume");
    }
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
