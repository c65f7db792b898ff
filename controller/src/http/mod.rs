//! The HTTP/JSON API (`[http_api]`): resource-oriented routes under `/v1`
//! over HTTPS, the OpenAPI document at `/v1/openapi.json` and the
//! dashboard at `/ui`.
//!
//! One code path with gRPC: every handler names the caller, takes the
//! request apart and calls the same [`crate::ops`] function the gRPC
//! adapter calls, so validation, authorization, placement and the error
//! (its message names the field) are the same; only the encoding differs
//! (JSON, and an HTTP status for the error, see [`error`]).
//!
//! Callers authenticate with a client certificate (the same ones as gRPC)
//! or a bearer API token ([`crate::ops::apitoken`]).

mod actions;
mod auth;
pub mod error;
pub mod events;
mod kinds;
pub mod openapi;
mod ui;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::config::HttpApiConfig;
use crate::identity::Identity;
use crate::listener;
use crate::ops::Shared;

/// What every handler shares.
#[derive(Clone)]
pub struct Http {
    pub s: Arc<Shared>,
    pub cfg: HttpApiConfig,
    /// Open watch streams over HTTP (`http_api.max_watches`).
    pub watches: Arc<Semaphore>,
    /// `/v1/events` (a stub until controller events are wired, see
    /// [`events`]).
    pub events: Option<Arc<dyn events::EventFeed>>,
}

impl Http {
    pub fn new(s: Arc<Shared>, cfg: HttpApiConfig) -> Self {
        Self {
            watches: Arc::new(Semaphore::new(cfg.max_watches)),
            events: events::feed(&s),
            s,
            cfg,
        }
    }
}

/// The identity of the connection's verified client certificate, if it
/// presented one (API-token callers need none).
#[derive(Clone, Debug)]
pub struct Peer(pub Option<Identity>);

/// The routes: the API, its document and (when enabled) the dashboard.
pub fn router(state: Http) -> Router {
    let mut r = Router::new()
        .merge(kinds::routes())
        .merge(actions::routes())
        .route(
            "/v1/openapi.json",
            axum::routing::get(openapi::serve_document),
        )
        .route("/v1/whoami", axum::routing::get(whoami))
        .route("/v1/events", axum::routing::get(events::list));
    if state.cfg.dashboard {
        r = r.merge(ui::routes());
    }
    r.fallback(error::not_found_route).with_state(state)
}

/// `GET /v1/whoami`: the identity the request authenticated as (what a
/// client, or the dashboard, may then expect to see and do).
/// `features` says which optional parts this controller serves to this
/// caller (events are admin only, so a tenant's dashboard hides the page).
async fn whoami(
    axum::extract::State(h): axum::extract::State<Http>,
    auth::Caller(id): auth::Caller,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "identity": id.to_string(),
        "features": { "events": h.events.is_some() && id == crate::identity::Identity::Admin },
    }))
}

/// The rustls configuration of the HTTPS port: the gRPC port's, with
/// HTTP/1.1 (browsers, curl, server-sent events) and client certificates
/// optional at the handshake (token callers have none; a presented one is
/// still verified against the CA).
pub fn tls_config(pem: &ferrofab_pki::ServerTlsPem) -> Result<Arc<rustls::ServerConfig>, String> {
    let base = listener::server_config(&pem.cert, &pem.key, &pem.client_ca, true)?;
    let mut cfg = (*base).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves the API on `l` until the server stops; connections go through
/// the same accept loop as gRPC's (connection caps, handshake deadline).
pub async fn serve(
    l: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: listener::Limits,
    state: Http,
) {
    use tokio_stream::StreamExt as _;
    let app = router(state.clone());
    let mut incoming = listener::incoming(l, tls, limits, state.s.metrics.clone());
    // Stops accepting with the rest of the server (watch streams end by
    // themselves on the same signal, see `api::watch`).
    let mut stopping = state.s.stopping.clone();
    loop {
        let conn = tokio::select! {
            c = incoming.next() => c,
            _ = stopping.wait_for(|s| *s) => None,
        };
        let Some(conn) = conn else { break };
        let Ok(tls) = conn else { continue };
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| Identity::from_cert_der(leaf).ok());
        let app = app.clone().layer(axum::Extension(Peer(peer)));
        tokio::spawn(async move {
            let svc = TowerToHyperService::new(app);
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                debug!(error = %e, "HTTP API connection ended");
            }
        });
    }
}

/// For the ready line and logs.
pub fn describe(addr: Option<SocketAddr>) -> String {
    crate::metrics::describe(addr)
}
