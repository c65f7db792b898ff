//! Prometheus metrics and the plain-HTTP /metrics and /healthz endpoints
//! (kept off the mTLS port so scrapers need no client certificate).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::cache::Cache;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    api_latency: Family<Labels, Histogram>,
    objects: Family<Labels, Gauge>,
    pub agents: Gauge,
    pub watchers: Gauge,
    watch_lag: Histogram,
    refusals: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Records an API call's latency when dropped.
pub struct ApiTimer<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    start: Instant,
}

impl Drop for ApiTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .api_latency
            .get_or_create(&vec![("method".into(), self.method.into())])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Decrements a gauge when dropped (stream ended).
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferrofab_controller");
        let api_latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        let objects = Family::<Labels, Gauge>::default();
        let agents = Gauge::default();
        let watchers = Gauge::default();
        let watch_lag = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let refusals = Family::<Labels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Requests refused by a limit or validation rule, by limit",
            refusals.clone(),
        );
        registry.register(
            "api_latency_seconds",
            "gRPC call latency by method",
            api_latency.clone(),
        );
        registry.register("objects", "Objects in the store by kind", objects.clone());
        registry.register(
            "connected_agents",
            "Agents streaming their desired state",
            agents.clone(),
        );
        registry.register(
            "watch_streams",
            "Open AdminService watch streams",
            watchers.clone(),
        );
        registry.register(
            "watch_lag_revisions",
            "Revisions between the store head and an event when it is sent",
            watch_lag.clone(),
        );
        Self {
            registry,
            api_latency,
            objects,
            agents,
            watchers,
            watch_lag,
            refusals,
        }
    }

    /// Counts one request refused by the named limit (`object_limits`,
    /// `pool_path`, `node_identity`, `enroll_csr`).
    pub fn refused(&self, limit: &str) {
        self.refusals
            .get_or_create(&vec![("limit".into(), limit.into())])
            .inc();
    }

    pub fn api_timer(&self, method: &'static str) -> ApiTimer<'_> {
        ApiTimer {
            metrics: self,
            method,
            start: Instant::now(),
        }
    }

    /// Pair with a prior `watchers.inc()`.
    pub fn watch_guard(&self) -> GaugeGuard {
        GaugeGuard(self.watchers.clone())
    }

    pub fn agent_guard(&self) -> GaugeGuard {
        self.agents.inc();
        GaugeGuard(self.agents.clone())
    }

    pub fn observe_watch_lag(&self, event_rev: u64, head: u64) {
        self.watch_lag
            .observe(head.saturating_sub(event_rev) as f64);
    }

    fn refresh_objects(&self, cache: &Cache) {
        let o = cache.read();
        for (kind, n) in [
            ("node", o.nodes.len()),
            ("pool", o.pools.len()),
            ("volume", o.volumes.len()),
            ("attachment", o.attachments.len()),
            ("tenant", o.tenants.len()),
        ] {
            self.objects
                .get_or_create(&vec![("kind".into(), kind.into())])
                .set(n as i64);
        }
    }

    pub fn render(&self, cache: &Cache) -> String {
        self.refresh_objects(cache);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// Serves /metrics and /healthz until the process exits.
pub async fn serve_http(listener: TcpListener, metrics: Arc<Metrics>, cache: Arc<Cache>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                continue;
            }
        };
        let (m, c) = (metrics.clone(), cache.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (m, c) = (m.clone(), c.clone());
                async move {
                    Ok::<_, Infallible>(match req.uri().path() {
                        "/metrics" => respond(StatusCode::OK, m.render(&c)),
                        "/healthz" => respond(StatusCode::OK, "ok\n".into()),
                        _ => respond(StatusCode::NOT_FOUND, "not found\n".into()),
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

/// For log lines that want the bound address.
pub fn describe(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "disabled".into(), |a| a.to_string())
}
