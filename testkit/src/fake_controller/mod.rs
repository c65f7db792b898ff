//! The CLI's test harness (feature `fake-controller`): a PKI in a temp dir,
//! the fake controller on a loopback port with mutual TLS, and a helper to
//! run the `ferrofab` binary.

pub mod fake;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::client::write_client_toml;
use ferrofab_pki::Identity;
use ferrofab_proto::v1::admin_service_server::AdminServiceServer;
use tonic::transport::{Certificate, Identity as TlsIdentity, Server, ServerTlsConfig};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub fake: fake::Fake,
    _runtime: tokio::runtime::Runtime,
}

impl Harness {
    /// PKI, admin certificate, fake controller and a client.toml for it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let ids = [Identity::Admin, Identity::tenant("neuro").unwrap()];
        crate::pki::init_dir(&pki, &ids);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let fake = fake::Fake::default();
        let addr = runtime.block_on(serve(&pki, fake.clone()));
        let port = addr.port().to_string();
        let config = write_client_toml(
            &dir.path().join("client.toml"),
            &port,
            Path::new("pki"),
            "admin",
        );
        Self {
            dir,
            config,
            fake,
            _runtime: runtime,
        }
    }

    /// A client.toml that authenticates as `stem` (e.g. `tenant-neuro`).
    pub fn config_as(&self, stem: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let path = self.dir.path().join(format!("{stem}.toml"));
        std::fs::write(&path, text.replace("admin.", &format!("{stem}."))).unwrap();
        path
    }

    /// Runs `ferrofab ARGS` with this harness's config and no stdin.
    pub fn run(&self, args: &[&str]) -> Output {
        ferrofab(args, Some(&self.config), None)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

async fn serve(pki: &Path, fake: fake::Fake) -> SocketAddr {
    let pem = ferrofab_pki::load_server_tls(pki).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(TlsIdentity::from_pem(&pem.cert, &pem.key))
        .client_ca_root(Certificate::from_pem(&pem.client_ca));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(AdminServiceServer::new(fake))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    addr
}

/// Runs the binary with a clean environment for its own variables.
pub fn ferrofab(args: &[&str], config: Option<&Path>, stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(crate::process::sibling_bin("ferrofab"));
    cmd.args(args)
        .env_remove("FERROFAB_CONFIG")
        .env_remove("FERROFAB_ENDPOINT")
        .env_remove("RUST_LOG")
        .env("HOME", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(c) = config {
        cmd.env("FERROFAB_CONFIG", c);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().unwrap();
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\nstdout: {}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

/// Asserts failure with exit 1 and a single `ferrofab: ` line; returns it.
pub fn fails(o: &Output) -> String {
    fails_with(o, 1)
}

/// Asserts failure with exit `code` (3: not found) and a single
/// `ferrofab: ` line; returns it.
pub fn fails_with(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got {err:?}");
    assert!(lines[0].starts_with("ferrofab: "), "{err}");
    lines[0].trim_start_matches("ferrofab: ").to_owned()
}
