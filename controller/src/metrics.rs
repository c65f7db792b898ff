//! Prometheus metrics and the plain-HTTP /metrics and /healthz endpoints
//! (kept off the mTLS port so scrapers need no client certificate).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

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

use crate::action::Action;
use crate::cache::Cache;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    api_latency: Family<Labels, Histogram>,
    objects: Family<Labels, Gauge>,
    pub agents: Gauge,
    pub watchers: Gauge,
    watch_lag: Histogram,
    /// Time from queueing a store transaction to its acknowledgement.
    store_latency: Histogram,
    refusals: Family<Labels, Counter>,
    /// Watch calls refused by `server.max_watches_per_identity`.
    pub watches_refused: Counter,
    /// Open gRPC connections (TCP accepted, TLS pending or done).
    pub connections: Gauge,
    /// Connections closed at accept by `server.max_connections`.
    pub connections_refused: Counter,
    /// Connections closed at accept by `server.max_connections_per_peer`.
    pub connections_refused_per_peer: Counter,
    /// Connections closed for not finishing TLS within the timeout.
    pub tls_handshake_timeouts: Counter,
    /// Connections whose TLS handshake failed (bad certificate, garbage).
    pub tls_handshake_failures: Counter,
    /// ReportStatus calls refused by the per-node rate limit.
    pub reports_throttled: Counter,
    /// Conditions of unknown types dropped from agents' reports.
    pub report_conditions_dropped: Counter,
    /// Condition reasons or messages cut to their limit.
    pub report_fields_truncated: Counter,
    /// ReportStatus calls that left the Node object as stored (heartbeat
    /// kept in memory only).
    pub reports_unpersisted: Counter,
    /// Event entries written (new or repeated).
    pub events_recorded: Counter,
    /// Event entries dropped past `events.max_events`, or lost to a store
    /// error.
    pub events_dropped: Counter,
    /// Pool and node gauges set from the cache at scrape time.
    cluster: crate::cluster_metrics::ClusterGauges,
    /// Data-path host keys (docs/security.md): rotations by trigger, and
    /// per workstation its key's generation and issue time (never more).
    pub auth_keys: AuthKeyMetrics,
}

/// The data-path key series: nothing about a key but its generation and
/// when it was issued.
#[derive(Default)]
pub struct AuthKeyMetrics {
    rotations: Family<Labels, Counter>,
    generation: Family<Labels, Gauge>,
    issued: Family<Labels, Gauge>,
}

impl AuthKeyMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "host_key_rotations",
            "Workstation host key rotations, by trigger (manual, periodic)",
            m.rotations.clone(),
        );
        r.register(
            "host_key_generation",
            "Generation of each workstation's current host key, by node",
            m.generation.clone(),
        );
        r.register(
            "host_key_issued_timestamp_seconds",
            "When each workstation's current host key was issued (unix seconds; its age is time() minus this), by node",
            m.issued.clone(),
        );
        m
    }

    /// One rotation, `trigger` being `manual` or `periodic`.
    pub fn rotated(&self, trigger: &str) {
        self.rotations
            .get_or_create(&vec![("trigger".into(), trigger.into())])
            .inc();
    }

    /// `node`'s current host key.
    pub fn set_host_key(&self, node: &str, generation: u64, issued_at: i64) {
        let labels = vec![("node".into(), node.to_string())];
        self.generation
            .get_or_create(&labels)
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.issued.get_or_create(&labels).set(issued_at);
    }

    /// `node`'s host key is gone (the node was deleted).
    pub fn remove_host_key(&self, node: &str) {
        let labels = vec![("node".into(), node.to_string())];
        self.generation.remove(&labels);
        self.issued.remove(&labels);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
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
        let mut root = Registry::default();
        crate::cluster_metrics::register_build_info(&mut root, "controller");
        let registry = root.sub_registry_with_prefix("ferrofab_controller");
        let api_latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        let objects = Family::<Labels, Gauge>::default();
        let agents = Gauge::default();
        let watchers = Gauge::default();
        let watch_lag = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let refusals = Family::<Labels, Counter>::default();
        let store_latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        register_control_plane(registry, &store_latency);
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
        registry.register(
            "store_etcd_relists",
            "Full re-lists of the etcd prefix after etcd compacted past the watch",
            crate::store::etcd::RELISTS.clone(),
        );
        registry.register(
            "store_etcd_watch_stalls",
            "etcd watches re-opened because a committed write did not come through them in time",
            crate::store::etcd::WATCH_STALLS.clone(),
        );
        registry.register(
            "store_etcd_errors",
            "etcd requests that failed or timed out (store.etcd.timeout_ms)",
            crate::store::etcd::ERRORS.clone(),
        );
        let counters = Counters::register(registry);
        let cluster = crate::cluster_metrics::ClusterGauges::register(registry);
        let auth_keys = AuthKeyMetrics::register(registry);
        Self {
            auth_keys,
            registry: root,
            cluster,
            api_latency,
            objects,
            agents,
            watchers,
            watch_lag,
            store_latency,
            refusals,
            watches_refused: counters.watches_refused,
            connections: counters.connections,
            connections_refused: counters.connections_refused,
            connections_refused_per_peer: counters.connections_refused_per_peer,
            tls_handshake_timeouts: counters.tls_handshake_timeouts,
            tls_handshake_failures: counters.tls_handshake_failures,
            reports_throttled: counters.reports_throttled,
            report_conditions_dropped: counters.report_conditions_dropped,
            report_fields_truncated: counters.report_fields_truncated,
            reports_unpersisted: counters.reports_unpersisted,
            events_recorded: counters.events_recorded,
            events_dropped: counters.events_dropped,
        }
    }

    /// Counts one request refused by the named limit (`object_limits`,
    /// `pool_path`, `node_identity`, `enroll_csr`).
    pub fn refused(&self, limit: &str) {
        self.refusals
            .get_or_create(&vec![("limit".into(), limit.into())])
            .inc();
    }

    /// Records one API call's latency under its RPC name (see
    /// `api::timing`, the layer that calls this).
    pub fn observe_api(&self, action: Action, elapsed: std::time::Duration) {
        self.api_latency
            .get_or_create(&vec![("method".into(), action.as_str().into())])
            .observe(elapsed.as_secs_f64());
    }

    /// Pair with a prior `watchers.inc()`.
    pub fn watch_guard(&self) -> GaugeGuard {
        GaugeGuard(self.watchers.clone())
    }

    pub fn agent_guard(&self) -> GaugeGuard {
        self.agents.inc();
        GaugeGuard(self.agents.clone())
    }

    /// One store transaction's time to acknowledgement (durable and seen
    /// by the cache's source).
    pub fn store_latency(&self, elapsed: std::time::Duration) {
        self.store_latency.observe(elapsed.as_secs_f64());
    }

    pub fn observe_watch_lag(&self, event_rev: u64, head: u64) {
        self.watch_lag
            .observe(head.saturating_sub(event_rev) as f64);
    }

    fn refresh_objects(&self, cache: &Cache) {
        let o = cache.read();
        self.cluster.refresh(&o);
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
        let _scrape = self.cluster.scrape_guard();
        self.refresh_objects(cache);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The process series go before OpenMetrics' closing `# EOF`.
        let mut process = String::new();
        ferrofab_buildinfo::process::render_self(true, &mut process);
        match out.rfind("# EOF") {
            Some(at) => out.insert_str(at, &process),
            None => out.push_str(&process),
        }
        out
    }
}

/// The hardening limits' metrics (issue 12), registered in one place.
struct Counters {
    watches_refused: Counter,
    connections: Gauge,
    connections_refused: Counter,
    connections_refused_per_peer: Counter,
    tls_handshake_timeouts: Counter,
    tls_handshake_failures: Counter,
    reports_throttled: Counter,
    report_conditions_dropped: Counter,
    report_fields_truncated: Counter,
    reports_unpersisted: Counter,
    events_recorded: Counter,
    events_dropped: Counter,
}

impl Counters {
    fn register(r: &mut Registry) -> Self {
        let c = Self {
            watches_refused: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            connections_refused_per_peer: Counter::default(),
            tls_handshake_timeouts: Counter::default(),
            tls_handshake_failures: Counter::default(),
            reports_throttled: Counter::default(),
            report_conditions_dropped: Counter::default(),
            report_fields_truncated: Counter::default(),
            reports_unpersisted: Counter::default(),
            events_recorded: Counter::default(),
            events_dropped: Counter::default(),
        };
        r.register(
            "watch_refused",
            "Watch calls refused by server.max_watches_per_identity",
            c.watches_refused.clone(),
        );
        r.register(
            "grpc_connections",
            "Open gRPC connections, TLS handshake pending or done",
            c.connections.clone(),
        );
        r.register(
            "grpc_connections_refused",
            "Connections closed at accept by server.max_connections",
            c.connections_refused.clone(),
        );
        r.register(
            "grpc_connections_refused_per_peer",
            "Connections closed at accept by server.max_connections_per_peer",
            c.connections_refused_per_peer.clone(),
        );
        r.register(
            "tls_handshake_timeouts",
            "Connections closed for not completing TLS within server.tls_handshake_timeout_ms",
            c.tls_handshake_timeouts.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "Connections whose TLS handshake failed",
            c.tls_handshake_failures.clone(),
        );
        r.register(
            "report_status_throttled",
            "ReportStatus calls refused by the per-node rate limit (nodes.report_rate_per_second)",
            c.reports_throttled.clone(),
        );
        r.register(
            "report_conditions_dropped",
            "Conditions of types the controller does not know, dropped from agents' reports",
            c.report_conditions_dropped.clone(),
        );
        r.register(
            "report_fields_truncated",
            "Condition reasons or messages from agents cut to their length limit",
            c.report_fields_truncated.clone(),
        );
        r.register(
            "report_status_unpersisted",
            "ReportStatus calls that changed nothing durable (heartbeat kept in memory)",
            c.reports_unpersisted.clone(),
        );
        r.register(
            "events_recorded",
            "Event entries written, new or repeated (ferrofab events)",
            c.events_recorded.clone(),
        );
        r.register(
            "events_dropped",
            "Event entries dropped past events.max_events or lost to a store error",
            c.events_dropped.clone(),
        );
        c
    }
}

/// `prometheus-client` writes OpenMetrics text (`# EOF`, `_total`
/// counters), so that is what the body is declared as; Prometheus then
/// parses it with the matching parser and keeps the metric types.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond_as(status, "text/plain; charset=utf-8", body)
}

fn respond_as(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
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
                        "/metrics" => {
                            respond_as(StatusCode::OK, METRICS_CONTENT_TYPE, m.render(&c))
                        }
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
/// The replicated control plane's metrics (see [`crate::leader`]).
fn register_control_plane(registry: &mut Registry, store_latency: &Histogram) {
    registry.register(
        "store_txn_latency_seconds",
        "Store transaction time from queueing to acknowledgement",
        store_latency.clone(),
    );
    registry.register(
        "leader_changes",
        "Times this replica won or lost the singletons' leadership",
        crate::leader::CHANGES.clone(),
    );
    registry.register(
        "leader",
        "1 while this replica runs the singletons (always 1 with redb)",
        crate::leader::IS_LEADER.clone(),
    );
    registry.register(
        "store_etcd_not_leader",
        "Singleton writes refused because this replica had lost the leadership",
        crate::store::etcd::NOT_LEADER.clone(),
    );
}

pub fn describe(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "disabled".into(), |a| a.to_string())
}
