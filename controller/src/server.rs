//! Wiring: TLS material, store, cache, services, listeners. Everything that
//! can be wrong with the environment is checked here, before serving, with
//! a message naming the file or setting at fault.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::{
    admin_service_server::AdminServiceServer, agent_service_server::AgentServiceServer,
    debug_service_server::DebugServiceServer, TransportOptions,
};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tracing::info;

use crate::api::{admin::Admin, agent::Agent, debug::Debug, Shared};
use crate::cache::Cache;
use crate::clock::Clock;
use crate::config::{ClockKind, Config};
use crate::loops::{expiry, heartbeat};
use crate::metrics::{self, Metrics};
use crate::ops::enroll::Signer;
use crate::placement::Allocator;
use crate::planner::Defaults;
use crate::store::SharedStore;
use crate::{listener, store};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Signer(#[from] crate::ops::enroll::SignerError),
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

/// TLS material from the `pki init` directory. `ferrofab-pki` checks the
/// files exist, parse, belong together, chain to `ca.crt` and are in date,
/// so a bad setup fails here with the file named instead of as an opaque
/// handshake error on the first client.
pub(crate) fn tls_config(cfg: &Config) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let pem = ferrofab_pki::load_server_tls(&cfg.pki.dir).map_err(|e| {
        ServerError::Tls(format!(
            "TLS material in pki.dir {}: {e}",
            cfg.pki.dir.display()
        ))
    })?;
    // Optional at the TLS layer only so that AgentService.Enroll (token
    // authenticated) works for nodes without a certificate yet; a presented
    // certificate is still verified against the CA, and every other RPC
    // refuses callers without one.
    listener::server_config(&pem.cert, &pem.key, &pem.client_ca, cfg.pki.enrollment).map_err(|e| {
        ServerError::Tls(format!(
            "TLS setup from pki.dir {} failed: {e}",
            cfg.pki.dir.display()
        ))
    })
}

/// TLS of the HTTP/JSON API port: the same server certificate.
fn api_tls_config(cfg: &Config) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let pem = ferrofab_pki::load_server_tls(&cfg.pki.dir).map_err(|e| {
        ServerError::Tls(format!(
            "TLS material in pki.dir {}: {e}",
            cfg.pki.dir.display()
        ))
    })?;
    crate::http::tls_config(&pem).map_err(|e| {
        ServerError::Tls(format!(
            "HTTP API TLS setup from pki.dir {} failed: {e}",
            cfg.pki.dir.display()
        ))
    })
}

pub(crate) fn signer(cfg: &Config) -> Result<Option<Signer>, ServerError> {
    if !cfg.pki.enrollment {
        return Ok(None);
    }
    let validity = cfg
        .pki
        .node_validity()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    Ok(Some(Signer::load(&cfg.pki.dir, validity)?))
}

pub(crate) fn clock(cfg: &Config, flags: &Flags) -> Result<Clock, ServerError> {
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

/// How this replica names itself in the leader campaign: the configured
/// `store.etcd.replica_name`, else the host name and the gRPC port.
fn replica(cfg: &Config, grpc: SocketAddr) -> crate::leader::Replica {
    let name = cfg.store.etcd.replica_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "controller".into());
        format!("{host}:{}", grpc.port())
    });
    crate::leader::Replica {
        name,
        endpoint: grpc.to_string(),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// The addresses the controller serves on, once bound (ports may be 0 in
/// the config).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    /// Plain-HTTP metrics and health (`http_listen`).
    pub http: Option<SocketAddr>,
    /// The HTTPS JSON API and dashboard (`[http_api] listen`).
    pub api: Option<SocketAddr>,
}

/// Runs the controller until SIGINT/SIGTERM. Prints one line
/// `ferrofab-controller ready grpc=ADDR http=ADDR api=ADDR` to stdout once
/// serving (tests and supervisors wait for it).
pub async fn run(cfg: Config, flags: Flags) -> Result<(), ServerError> {
    run_until(cfg, flags, shutdown(), |b| {
        println!(
            "ferrofab-controller ready grpc={} http={} api={}",
            b.grpc,
            metrics::describe(b.http),
            metrics::describe(b.api)
        );
        // The unit is Type=notify: `systemctl start` returns once serving.
        if let Err(e) = ferrofab_buildinfo::sdnotify::notify_ready() {
            tracing::warn!(error = %e, "cannot notify systemd that the controller is ready");
        }
    })
    .await
}

/// Runs the controller until `stop` completes, calling `ready` with the
/// bound gRPC and HTTP addresses once serving. For embedders (`ferrofab
/// dev`) that own the signals and the process's stdout.
pub async fn run_until(
    cfg: Config,
    flags: Flags,
    stop: impl std::future::Future<Output = ()> + Send,
    ready: impl FnOnce(Bound) + Send,
) -> Result<(), ServerError> {
    let clock = clock(&cfg, &flags)?;
    let tls = tls_config(&cfg)?;
    let api_tls = match cfg.http_api.listen {
        Some(_) => Some(api_tls_config(&cfg)?),
        None => None,
    };
    let signer = signer(&cfg)?;
    let store: SharedStore = store::open(&cfg.store, &cfg.store_path)?;
    let cache = Cache::start(store.clone())?;
    let metrics = Arc::new(Metrics::new());
    let grpc = bind(cfg.listen).await?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(|e| ServerError::Serve(e.to_string()))?;
    let leadership = store.campaign(replica(&cfg, grpc_addr));
    if leadership.role() == crate::leader::Role::Single {
        crate::leader::IS_LEADER.set(1);
    }
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let (require_auth, require_source) =
        crate::keys::require_policy(&store, &cache, cfg.auth.require)
            .await
            .map_err(|e| ServerError::Config(format!("[auth] require: {e}")))?;
    let shared = Arc::new(Shared {
        store,
        store_backend: cfg.store.backend,
        cache: cache.clone(),
        allocator: Arc::new(Allocator::default()),
        clock,
        signer,
        metrics: metrics.clone(),
        defaults: defaults(&cfg),
        expiry: cfg.expiry.clone(),
        limits: cfg
            .objects
            .clone()
            .with_message_limit(cfg.max_message_bytes),
        desired_state_interval: Duration::from_millis(cfg.nodes.desired_state_interval_ms),
        stopping,
        watches: crate::store::watch::WatchLimiter::new(cfg.server.max_watches_per_identity),
        reports: crate::report::ReportGate::new(&cfg.nodes),
        capacity_gate: Arc::default(),
        keys: Some(Arc::new(
            crate::keyring::Keys::open(&cfg.pki.dir, require_auth)
                .map_err(|e| ServerError::Config(e.to_string()))?
                .with_require_source(require_source),
        )),
        events: cfg.events.clone(),
        leadership,
    });
    let http_addr = match cfg.http_listen {
        Some(a) => {
            let l = bind(a).await?;
            let addr = l.local_addr().ok();
            tokio::spawn(metrics::serve_http(l, metrics.clone(), cache.clone()));
            addr
        }
        None => None,
    };
    let limits = listener::Limits {
        max_connections: cfg.server.max_connections,
        max_connections_per_peer: cfg.server.max_connections_per_peer,
        handshake_timeout: Duration::from_millis(cfg.server.tls_handshake_timeout_ms),
    };
    let api_addr = match (cfg.http_api.listen, api_tls) {
        (Some(a), Some(tls)) => {
            let l = bind(a).await?;
            let addr = l.local_addr().ok();
            let state = crate::http::Http::new(shared.clone(), cfg.http_api.clone());
            tokio::spawn(crate::http::serve(l, tls, limits, state));
            addr
        }
        _ => None,
    };
    tokio::spawn(expiry::run(
        shared.clone(),
        Duration::from_secs(cfg.expiry.interval_seconds),
    ));
    let rotate_every = cfg
        .auth
        .rotate_every()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    match crate::keys::load_key_metrics(&shared) {
        Ok(n) => tracing::debug!(held = n, "host key metrics loaded"),
        Err(e) => {
            tracing::warn!(error = %e, "host key metrics not loaded from the store; rotations and reports set them again")
        }
    }
    tokio::spawn(crate::keys::run_housekeeping(shared.clone(), rotate_every));
    tokio::spawn(crate::loops::events::run(shared.clone()));
    tokio::spawn(heartbeat::run(
        shared.clone(),
        Duration::from_secs(cfg.nodes.check_interval_seconds),
        Duration::from_secs(cfg.nodes.heartbeat_timeout_seconds),
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
        .layer(crate::api::timing::TimingLayer::new(shared.metrics.clone()))
        // A partitioned agent's watch stream would otherwise stay open until
        // TCP gives up (many minutes); PINGs end it within ~20 s so the
        // watch task and its metrics go away with the agent.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(admin)
        .add_service(agent)
        .add_optional_service(debug);
    info!(grpc = %grpc_addr, http = %metrics::describe(http_addr), api = %metrics::describe(api_addr), debug = flags.enable_debug_service, "serving");
    ready(Bound {
        grpc: grpc_addr,
        http: http_addr,
        api: api_addr,
    });
    let stop = async move {
        stop.await;
        let _ = stop_tx.send(true);
    };
    let served = router
        .serve_with_incoming_shutdown(listener::incoming(grpc, tls, limits, metrics), stop)
        .await
        .map_err(|e| ServerError::Serve(e.to_string()));
    // A graceful stop hands the singletons over at once (etcd).
    let store = shared.store.clone();
    let _ = tokio::task::spawn_blocking(move || store.resign()).await;
    served
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
