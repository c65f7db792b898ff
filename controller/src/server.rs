//! Wiring: TLS material, store, cache, services, listeners. Everything that
//! can be wrong with the environment is checked here, before serving, with
//! a message naming the file or setting at fault.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::{
    admin_service_server::AdminServiceServer, agent_service_server::AgentServiceServer,
    debug_service_server::DebugServiceServer, TransportOptions,
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity as TlsIdentity, Server, ServerTlsConfig};
use tracing::info;
use x509_parser::pem::Pem;

use crate::api::{admin::Admin, agent::Agent, debug::Debug, Shared};
use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::{ClockKind, Config};
use crate::enroll::Signer;
use crate::metrics::{self, Metrics};
use crate::placement::Allocator;
use crate::planner::Defaults;
use crate::store::{redb::RedbStore, SharedStore};
use crate::{expiry, store};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Signer(#[from] crate::enroll::SignerError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(String),
}

/// Options from the command line (not the config file).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// Serve DebugService (requires `clock = "manual"`).
    pub enable_debug_service: bool,
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path)
        .map_err(|e| ServerError::Tls(format!("cannot read {what} {}: {e}", path.display())))
}

/// Checks that `pem` holds at least one certificate, each currently valid.
fn check_certs(what: &str, path: &Path, pem: &[u8]) -> Result<(), ServerError> {
    let bad = |why: String| ServerError::Tls(format!("bad {what} {}: {why}", path.display()));
    let mut n = 0;
    for item in Pem::iter_from_buffer(pem) {
        let p = item.map_err(|e| bad(format!("not PEM: {e}")))?;
        if p.label != "CERTIFICATE" {
            continue;
        }
        let cert = p
            .parse_x509()
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        if !cert.validity().is_valid() {
            return Err(bad(format!(
                "certificate {} is not valid now (valid {} to {})",
                cert.subject(),
                cert.validity().not_before,
                cert.validity().not_after
            )));
        }
        n += 1;
    }
    if n == 0 {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(())
}

fn check_key(path: &Path, pem: &[u8]) -> Result<(), ServerError> {
    let has_key = Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .any(|p| p.label.ends_with("PRIVATE KEY"));
    if has_key {
        Ok(())
    } else {
        Err(ServerError::Tls(format!(
            "bad TLS key {}: no PRIVATE KEY block found",
            path.display()
        )))
    }
}

fn tls_config(cfg: &Config) -> Result<ServerTlsConfig, ServerError> {
    let cert = read_pem("TLS certificate", &cfg.tls.cert)?;
    let key = read_pem("TLS key", &cfg.tls.key)?;
    let ca = read_pem("client CA", &cfg.tls.client_ca)?;
    check_certs("TLS certificate", &cfg.tls.cert, &cert)?;
    check_key(&cfg.tls.key, &key)?;
    check_certs("client CA", &cfg.tls.client_ca, &ca)?;
    // Optional at the TLS layer only so that AgentService.Enroll (token
    // authenticated) works for nodes without a certificate yet; a presented
    // certificate is still verified against the CA, and every other RPC
    // refuses callers without one.
    Ok(ServerTlsConfig::new()
        .identity(TlsIdentity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(cfg.enrollment.is_some()))
}

fn clock(cfg: &Config, flags: &Flags) -> Result<Clock, ServerError> {
    match (cfg.clock, flags.enable_debug_service) {
        (ClockKind::System, false) => Ok(Clock::System),
        (ClockKind::Manual, true) => Ok(Clock::manual()),
        (ClockKind::System, true) => Err(ServerError::Config(
            "--enable-debug-service requires clock = \"manual\" in the config (test-only)".into(),
        )),
        (ClockKind::Manual, false) => Err(ServerError::Config(
            "clock = \"manual\" is test-only and requires --enable-debug-service".into(),
        )),
    }
}

fn defaults(cfg: &Config) -> Defaults {
    let t = &cfg.transport;
    Defaults {
        transport: TransportOptions {
            header_digest: t.header_digest,
            data_digest: t.data_digest,
            nr_io_queues: t.nr_io_queues,
            queue_size: t.queue_size,
            ctrl_loss_tmo: t.ctrl_loss_tmo,
        },
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Runs the controller until SIGINT/SIGTERM. Prints one line
/// `ferrofab-controller ready grpc=ADDR http=ADDR` to stdout once serving
/// (tests and supervisors wait for it; ports may be 0 in the config).
pub async fn run(cfg: Config, flags: Flags) -> Result<(), ServerError> {
    let clock = clock(&cfg, &flags)?;
    let tls = tls_config(&cfg)?;
    let signer = match &cfg.enrollment {
        Some(e) => Some(Signer::load(&e.ca_cert, &e.ca_key, e.cert_validity_days)?),
        None => None,
    };
    let store: SharedStore = Arc::new(RedbStore::open(&cfg.store_path)?);
    let cache = Cache::start(store.clone())?;
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared {
        store,
        cache: cache.clone(),
        allocator: Arc::new(Allocator::default()),
        clock,
        signer,
        metrics: metrics.clone(),
        defaults: defaults(&cfg),
        expiry: cfg.expiry.clone(),
    });
    let grpc = bind(cfg.listen).await?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(|e| ServerError::Serve(e.to_string()))?;
    let http_addr = match cfg.http_listen {
        Some(a) => {
            let l = bind(a).await?;
            let addr = l.local_addr().ok();
            tokio::spawn(metrics::serve_http(l, metrics.clone(), cache.clone()));
            addr
        }
        None => None,
    };
    tokio::spawn(expiry::run(
        shared.clone(),
        Duration::from_secs(cfg.expiry.interval_seconds),
    ));

    let max = cfg.max_message_bytes;
    let admin = AdminServiceServer::new(Admin { s: shared.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let agent = AgentServiceServer::new(Agent { s: shared.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let debug = flags
        .enable_debug_service
        .then(|| DebugServiceServer::new(Debug { s: shared.clone() }));
    let router = Server::builder()
        .tls_config(tls)
        .map_err(|e| ServerError::Tls(format!("TLS setup failed: {e}")))?
        .add_service(admin)
        .add_service(agent)
        .add_optional_service(debug);
    info!(grpc = %grpc_addr, http = %metrics::describe(http_addr), debug = flags.enable_debug_service, "serving");
    println!(
        "ferrofab-controller ready grpc={grpc_addr} http={}",
        metrics::describe(http_addr)
    );
    router
        // No Nagle: small unary replies would otherwise wait for the
        // client's delayed ACK (~40 ms per call).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            shutdown(),
        )
        .await
        .map_err(|e| ServerError::Serve(e.to_string()))
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    info!("shutting down");
}
