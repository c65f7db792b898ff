//! A real etcd for tests: Debian's `etcd-server` started on loopback with a
//! temporary data directory and free ports. A missing binary fails the test
//! with a clear message; it is never skipped.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub client_url: String,
    pub addr: SocketAddr,
    tls: Option<Tls>,
}

/// Files for an etcd serving mTLS: its server certificate and key, the CA
/// it trusts for clients, and a client certificate the tests use.
#[derive(Clone)]
pub struct Tls {
    pub ca_file: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Tls {
    fn options(&self) -> etcd_client::ConnectOptions {
        let read = |p: &PathBuf| std::fs::read(p).expect("read TLS file");
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca_file)))
            .identity(etcd_client::Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ));
        etcd_client::ConnectOptions::new().with_tls(tls)
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn etcd_binary() -> String {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "the etcd binary is missing: these tests need a real etcd; \
         install Debian's package with `apt-get install -y etcd-server` \
         (./tests/run installs it)"
    );
}

impl Etcd {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir)
    }

    /// Starts (or restarts) etcd on the data directory `dir`.
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        Self::launch(dir, None)
    }

    /// An etcd that serves https only and requires client certificates.
    pub fn start_tls(tls: Tls) -> Self {
        Self::launch(tempfile::tempdir().expect("tempdir"), Some(tls))
    }

    fn launch(dir: tempfile::TempDir, tls: Option<Tls>) -> Self {
        let bin = etcd_binary();
        let client = free_port();
        let peer = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
        let mut cmd = Command::new(bin);
        if let Some(t) = &tls {
            cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                .arg(format!("--key-file={}", t.server_key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca_file.display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=t={peer_url}"))
            .arg("--max-txn-ops=10000")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let addr: SocketAddr = format!("127.0.0.1:{client}").parse().expect("addr");
        let e = Self {
            child,
            dir,
            client_url,
            addr,
            tls,
        };
        e.wait_ready();
        e
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(self.addr).is_ok() {
                // The port accepts before the member has elected itself;
                // a client call is the real readiness check.
                let url = self.client_url.clone();
                let opts = self.tls.as_ref().map(Tls::options);
                // On a thread of its own: the caller may be async.
                let probe = std::thread::spawn(move || {
                    rt().block_on(async move {
                        match etcd_client::Client::connect([url], opts).await {
                            Ok(mut c) => c.get("ready-probe", None).await.is_ok(),
                            Err(_) => false,
                        }
                    })
                });
                let ok = probe.join().unwrap_or(false);
                if ok {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        panic!("etcd did not become ready in 30 s; its log:\n{log}");
    }

    /// Stops etcd (SIGKILL) and hands back its data directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    pub async fn client(&self) -> etcd_client::Client {
        let opts = self.tls.as_ref().map(Tls::options);
        etcd_client::Client::connect([self.client_url.clone()], opts)
            .await
            .expect("connect to test etcd")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A TCP proxy in front of etcd whose link can be cut (every connection
/// dropped, new ones refused) and restored: a partition between one
/// controller and etcd.
pub struct Proxy {
    pub url: String,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (c2, conns2) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                if c2.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                conns2.lock().expect("conns").push(h);
            }
        });
        Self {
            url,
            cut,
            conns,
            accept,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self.conns.lock().expect("conns").drain(..) {
            h.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.conns.lock().expect("conns").drain(..) {
            h.abort();
        }
    }
}
