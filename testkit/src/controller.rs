//! A real `ferrofab-controller` process over mTLS on loopback, with typed
//! clients: the controller's own suite, the agent's and the CLI's start
//! it the same way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use ferrofab_pki::Identity;
use ferrofab_proto::v1::admin_service_client::AdminServiceClient;
use ferrofab_proto::v1::agent_service_client::AgentServiceClient;
use ferrofab_proto::v1::debug_service_client::DebugServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsIdentity};

use crate::pki::{Cred, TestPki};
use crate::process;

/// The controller binary: `$FERROFAB_CONTROLLER_BIN` when set, else the
/// one cargo built for this test run, else `cargo build` of it (see
/// [`process::package_bin`]); looked up once per test binary.
pub fn controller_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FERROFAB_CONTROLLER_BIN") {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "FERROFAB_CONTROLLER_BIN={} is not a file",
                p.display()
            );
            return p;
        }
        process::package_bin("ferrofab-controller", "ferrofab-controller")
    })
    .clone()
}

/// What a spawned controller's config holds beyond the store and PKI.
#[derive(Clone)]
pub struct Options {
    /// The gRPC port; 0 lets the kernel choose (a restart then moves it,
    /// so suites that restart under running agents fix one).
    pub port: u16,
    /// The controller suite's settings: an HTTP listener, 1 MiB message
    /// limit and expiry timings that never fire during a test.
    pub suite_settings: bool,
    /// The debug service's manual clock (`--enable-debug-service`).
    pub manual_clock: bool,
    /// Appended to the `[pki]` table.
    pub extra_pki: String,
    /// Appended at the end of the config.
    pub extra_toml: String,
}

impl Default for Options {
    /// The controller suite's settings on any port.
    fn default() -> Self {
        Self {
            port: 0,
            suite_settings: true,
            manual_clock: false,
            extra_pki: String::new(),
            extra_toml: String::new(),
        }
    }
}

impl Options {
    /// The suite's settings with the debug service's manual clock, and
    /// `extra_toml` appended.
    pub fn manual_clock(extra_toml: &str) -> Self {
        Self {
            manual_clock: true,
            extra_toml: extra_toml.into(),
            ..Self::default()
        }
    }

    /// Only a listener, the store and the PKI: the controller's defaults
    /// for everything else (the agent and CLI suites).
    pub fn plain(port: u16) -> Self {
        Self {
            port,
            suite_settings: false,
            ..Self::default()
        }
    }
}

/// A running controller process with its `pki init` directory.
pub struct Controller {
    pub dir: PathBuf,
    pub pki: TestPki,
    /// The gRPC address from the ready line.
    pub addr: String,
    /// The HTTP address from the ready line (empty without one).
    pub http: String,
    /// The HTTPS JSON API's address (`[http_api]`; empty without one).
    pub api: String,
    child: Option<Child>,
    opts: Options,
    _tmp: Option<tempfile::TempDir>,
}

impl Controller {
    /// The controller suite's controller in a temp dir of its own.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// The scenario most controller tests start from: a controller with
    /// `opts`, its admin client, and [`crate::objects::basic_layout`].
    pub async fn with_basic_layout(opts: Options) -> (Self, crate::objects::Admin) {
        let ctl = Self::start_with(opts);
        let mut admin = ctl.admin().await;
        crate::objects::basic_layout(&mut admin).await;
        (ctl, admin)
    }

    /// A controller with `opts` in a temp dir of its own.
    pub fn start_with(opts: Options) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = Self::start_in(tmp.path(), opts);
        c._tmp = Some(tmp);
        c
    }

    /// A controller whose config, store and `pki/` live in `dir`. A
    /// `pki/` that holds a CA already is used as it is; otherwise it is
    /// made with an admin certificate (`pki/admin.crt`, for the CLI).
    pub fn start_in(dir: &Path, opts: Options) -> Self {
        let pki_dir = dir.join("pki");
        let pki = if pki_dir.join("ca.crt").exists() {
            TestPki::load(&pki_dir)
        } else {
            crate::pki::init_dir(&pki_dir, &[Identity::Admin])
        };
        std::fs::write(dir.join("controller.toml"), config_text(dir, &opts))
            .expect("write controller.toml");
        let mut c = Self {
            dir: dir.to_path_buf(),
            pki,
            addr: String::new(),
            http: String::new(),
            api: String::new(),
            child: None,
            opts,
            _tmp: None,
        };
        c.spawn();
        c
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("controller.toml")
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    /// The command line that runs this controller.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(controller_bin());
        cmd.arg("--config").arg(self.config_path());
        if self.opts.manual_clock {
            cmd.arg("--enable-debug-service");
        }
        cmd
    }

    /// Starts the process and waits for its ready line.
    pub fn spawn(&mut self) {
        let log = process::log_file(&self.dir.join("controller.log"));
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn controller");
        let line = process::read_ready_line(&mut child, "controller", || self.log());
        self.addr = process::ready_field(&line, "grpc").unwrap_or_default();
        self.http = process::ready_field(&line, "http").unwrap_or_default();
        self.api = process::ready_field(&line, "api")
            .filter(|a| a != "disabled")
            .unwrap_or_default();
        self.child = Some(child);
    }

    /// The gRPC port.
    pub fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap_or_default()
    }

    /// The CA certificate file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// The controller's process id (for RSS measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the process in MiB (0 if not running).
    pub fn rss_mb(&self) -> f64 {
        self.pid().map_or(0.0, process::rss_mb_of)
    }

    /// SIGTERM, then waits up to `limit` for the process to exit. Returns
    /// its exit status, or `None` if it was still running (it is then
    /// killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        process::terminate(&mut self.child, limit, Duration::from_millis(50))
    }

    /// SIGKILL: no graceful shutdown, like a power cut of the process.
    pub fn kill9(&mut self) {
        process::kill9(&mut self.child);
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
            .identity(TlsIdentity::from_pem(&cred.cert, &cred.key))
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

/// The controller.toml for `dir` and `opts`.
fn config_text(dir: &Path, opts: &Options) -> String {
    let d = dir.display();
    let mut t = format!("listen = \"127.0.0.1:{}\"\n", opts.port);
    if opts.suite_settings {
        t.push_str("http_listen = \"127.0.0.1:0\"\n");
    }
    t.push_str(&format!("store_path = \"{d}/store.redb\"\n"));
    if opts.suite_settings {
        t.push_str("max_message_bytes = 1048576\n");
    }
    if opts.manual_clock {
        t.push_str("clock = \"manual\"\n");
    }
    t.push_str(&format!("\n[pki]\ndir = \"{d}/pki\"\n{}\n", opts.extra_pki));
    if opts.suite_settings {
        t.push_str("[expiry]\ngrace_seconds = 600\nwarn_seconds = 3600\ninterval_seconds = 3600\n");
    }
    t.push_str(&opts.extra_toml);
    t.push('\n');
    t
}
