//! Shared harness for the controller's integration tests: spawns the built
//! controller binary over mTLS on loopback and connects typed clients.
//! Certificates come from `ferrofab-pki`, exactly as `ferrofab pki init` and
//! `ferrofab pki issue` make them in production.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use ferrofab_pki::{Ca, InitOptions, PkiDir, Validity};
use ferrofab_proto::v1::admin_service_client::AdminServiceClient;
use ferrofab_proto::v1::agent_service_client::AgentServiceClient;
use ferrofab_proto::v1::debug_service_client::DebugServiceClient;
use ferrofab_proto::v1::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const DAY: Duration = Duration::from_secs(86_400);

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Cred {
    pub cert: String,
    pub key: String,
}

/// A CA that issues client certificates for the tests.
pub struct TestPki {
    pub ca_cert: String,
    ca: Ca,
}

impl TestPki {
    /// A CA of its own, unrelated to any controller (for "unknown CA" tests).
    pub fn new(_name: &str) -> Self {
        let ca = Ca::generate(Validity::from_now(DAY).expect("validity")).expect("CA");
        Self::from_ca(ca)
    }

    /// The CA of a `pki init` directory.
    pub fn load(dir: &Path) -> Self {
        Self::from_ca(PkiDir::new(dir).load_ca().expect("load CA"))
    }

    fn from_ca(ca: Ca) -> Self {
        Self {
            ca_cert: ca.cert_pem().to_string(),
            ca,
        }
    }

    fn issue(&self, identity: &str, validity: Validity) -> Cred {
        let id = identity.parse().expect("test identity");
        let c = self.ca.issue(&id, validity).expect("issue");
        Cred {
            cert: c.cert_pem,
            key: c.key_pem,
        }
    }

    pub fn client(&self, identity: &str) -> Cred {
        self.issue(identity, Validity::from_now(DAY).expect("validity"))
    }

    pub fn expired_client(&self, identity: &str) -> Cred {
        let now = SystemTime::now();
        let v = Validity::between(now - 30 * DAY, now - DAY).expect("validity");
        self.issue(identity, v)
    }
}

/// Extra knobs for a spawned controller.
#[derive(Default, Clone)]
pub struct Options {
    pub manual_clock: bool,
    pub extra_toml: String,
}

/// A running controller process.
pub struct Controller {
    pub dir: PathBuf,
    pub pki: TestPki,
    pub addr: String,
    pub http: String,
    child: Option<Child>,
    opts: Options,
    _tmp: Option<tempfile::TempDir>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferrofab-controller")
}

impl Controller {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        ferrofab_pki::init(&dir.join("pki"), &InitOptions::default()).expect("pki init");
        let pki = TestPki::load(&dir.join("pki"));
        write_setup(&dir, &opts);
        let mut c = Self {
            dir,
            pki,
            addr: String::new(),
            http: String::new(),
            child: None,
            opts,
            _tmp: Some(tmp),
        };
        c.spawn();
        c
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("controller.toml")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(self.config_path());
        if self.opts.manual_clock {
            cmd.arg("--enable-debug-service");
        }
        cmd
    }

    /// Starts the process and waits for its ready line.
    pub fn spawn(&mut self) {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn controller");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        assert!(line.contains("ready"), "controller did not start: {line:?}");
        for word in line.split_whitespace() {
            if let Some(a) = word.strip_prefix("grpc=") {
                self.addr = a.to_string();
            }
            if let Some(a) = word.strip_prefix("http=") {
                self.http = a.to_string();
            }
        }
        self.child = Some(child);
    }

    /// The controller's process id (for RSS measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits up to `limit` for the process to exit. Returns
    /// its exit status, or `None` if it was still running (it is then
    /// killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map(|s| s.success());
        assert!(matches!(sent, Ok(true)), "kill -TERM failed: {sent:?}");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILL: no graceful shutdown, like a power cut of the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn channel(&self, cred: &Cred) -> Channel {
        self.channel_with(cred, &self.pki.ca_cert)
            .await
            .expect("connect")
    }

    pub async fn channel_with(
        &self,
        cred: &Cred,
        server_ca: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(server_ca))
            .identity(Identity::from_pem(&cred.cert, &cred.key))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{}", self.addr))
            .expect("uri")
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    /// A channel presenting no client certificate (enrollment).
    pub async fn anonymous_channel(&self) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pki.ca_cert))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{}", self.addr))
            .expect("uri")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn admin_as(&self, cn: &str) -> AdminServiceClient<Channel> {
        let ch = self.channel(&self.pki.client(cn)).await;
        AdminServiceClient::new(ch).max_decoding_message_size(64 << 20)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        self.admin_as("admin").await
    }

    pub async fn agent_as(&self, cn: &str) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.channel(&self.pki.client(cn)).await)
    }

    pub async fn debug(&self) -> DebugServiceClient<Channel> {
        DebugServiceClient::new(self.channel(&self.pki.client("admin")).await)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

fn write_setup(dir: &Path, opts: &Options) {
    let clock = if opts.manual_clock {
        "clock = \"manual\"\n"
    } else {
        ""
    };
    let cfg = format!(
        r#"listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
store_path = "{d}/store.redb"
max_message_bytes = 1048576
{clock}
[pki]
dir = "{d}/pki"

[expiry]
grace_seconds = 600
warn_seconds = 3600
interval_seconds = 3600
{extra}
"#,
        d = dir.display(),
        extra = opts.extra_toml
    );
    write(&dir.join("controller.toml"), &cfg);
}

// ------------------------------------------------------------ builders

pub fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        ..Default::default()
    })
}

pub fn meta_labels(name: &str, labels: &[(&str, &str)]) -> Option<ObjectMeta> {
    let mut m = ObjectMeta {
        name: name.into(),
        ..Default::default()
    };
    for (k, v) in labels {
        m.labels.insert((*k).into(), (*v).into());
    }
    Some(m)
}

pub fn tenant(name: &str, quota: &str, volumes: u32, nodes: &[&str]) -> Tenant {
    Tenant {
        metadata: meta(name),
        spec: Some(TenantSpec {
            capacity_quota: quota.into(),
            volume_quota: volumes,
            allowed_nodes: nodes.iter().map(|s| s.to_string()).collect(),
        }),
        status: None,
    }
}

pub fn storage_node(name: &str, port: u32) -> Node {
    Node {
        metadata: meta(name),
        spec: Some(NodeSpec {
            roles: vec![NodeRole::Storage as i32],
            data_addresses: vec![DataAddress {
                address: "127.0.0.1".into(),
                port,
                transport: "tcp".into(),
            }],
            host_nqn: format!("nqn.2014-08.org.nvmexpress:uuid:{name}"),
        }),
        status: None,
    }
}

pub fn workstation(name: &str) -> Node {
    Node {
        metadata: meta(name),
        spec: Some(NodeSpec {
            roles: vec![NodeRole::Workstation as i32],
            data_addresses: vec![],
            host_nqn: format!("nqn.2014-08.org.nvmexpress:uuid:{name}"),
        }),
        status: None,
    }
}

pub fn pool(name: &str, node: &str, capacity: &str, labels: &[(&str, &str)]) -> Pool {
    Pool {
        metadata: meta_labels(name, labels),
        spec: Some(PoolSpec {
            node: node.into(),
            backing: Some(PoolBacking {
                kind: BackingKind::Directory as i32,
                path: format!("/srv/ferrofab/{name}"),
            }),
            capacity: capacity.into(),
            overcommit_ratio: 0.0,
            namespace_limit: 0,
            reclaim_policy: ReclaimPolicy::Delete as i32,
        }),
        status: None,
    }
}

pub fn volume(name: &str, tenant: &str, size: &str, pool: &str) -> Volume {
    Volume {
        metadata: meta(name),
        spec: Some(VolumeSpec {
            tenant: tenant.into(),
            size: size.into(),
            pool: pool.into(),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn volume_sel(name: &str, tenant: &str, size: &str, sel: &[(&str, &str)]) -> Volume {
    let mut v = volume(name, tenant, size, "");
    let mut s = LabelSelector::default();
    for (k, val) in sel {
        s.match_labels.insert((*k).into(), (*val).into());
    }
    v.spec.as_mut().expect("spec").pool_selector = Some(s);
    v
}

pub fn attachment(name: &str, volume: &str, node: &str) -> Attachment {
    Attachment {
        metadata: meta(name),
        spec: Some(AttachmentSpec {
            volume: volume.into(),
            node: node.into(),
            mode: AccessMode::ReadWrite as i32,
        }),
        status: None,
    }
}

/// Creates tenant "lab" (allowing ws1), storage node s1, workstation ws1
/// and pool p1 (100GiB, tier=fast) on s1.
pub async fn basic_layout(c: &mut AdminServiceClient<Channel>) {
    c.create_tenant(CreateTenantRequest {
        tenant: Some(tenant("lab", "", 0, &["ws1"])),
    })
    .await
    .expect("tenant");
    c.create_node(CreateNodeRequest {
        node: Some(storage_node("s1", 4420)),
    })
    .await
    .expect("s1");
    c.create_node(CreateNodeRequest {
        node: Some(workstation("ws1")),
    })
    .await
    .expect("ws1");
    c.create_pool(CreatePoolRequest {
        pool: Some(pool("p1", "s1", "100GiB", &[("tier", "fast")])),
    })
    .await
    .expect("p1");
}

pub fn rv<T: HasMeta>(o: &T) -> u64 {
    o.meta().resource_version
}

pub trait HasMeta {
    fn meta(&self) -> &ObjectMeta;
}

macro_rules! has_meta {
    ($($t:ty),*) => {$(
        impl HasMeta for $t {
            fn meta(&self) -> &ObjectMeta {
                self.metadata.as_ref().expect("metadata")
            }
        }
    )*};
}
has_meta!(Node, Pool, Volume, Attachment, Tenant);
