//! The controller connection: mTLS channels, the desired-state watch with
//! reconnects (exponential backoff with jitter), status reports, and the
//! few admin calls a node may make for itself (attachments).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::admin_service_client::AdminServiceClient;
use ferrofab_proto::v1::agent_service_client::AgentServiceClient;
use ferrofab_proto::v1::{
    DesiredState, EnrollRequest, EnrollResponse, RenewRequest, ReportStatusRequest,
    WatchDesiredStateRequest,
};
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{debug, info, warn};

use crate::config::AgentConfig;
use crate::error::{rpc_error, AgentError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PING period on controller channels. A partition drops packets
/// without a reset, so without pings a watch stream would look alive for
/// as long as TCP keeps retransmitting (many minutes), and the agent would
/// neither reconnect nor notice it is cut off.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A PING unanswered this long closes the channel (and fails its calls).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the reconnect backoff, whatever the resync interval.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Longest server retry hint (`grpc-retry-pushback-ms` of a ReportStatus
/// refused by the controller's rate limit) the agent waits for before
/// sending its latest report again. The controller's hint is the time
/// until its token bucket holds one token (1/`report_rate_per_second`, 0.1
/// s by default); anything longer than the agent's own heartbeat (5 s)
/// would be no sooner than the next report anyway.
const MAX_REPORT_RETRY: Duration = Duration::from_secs(5);
/// Shortest wait before such a retry, so a zero hint cannot spin.
const MIN_REPORT_RETRY: Duration = Duration::from_millis(1);

/// Exponential backoff with "equal jitter": each delay is between half and
/// all of the current step, so a fleet of agents that lost the controller
/// at the same moment does not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            step: base,
        }
    }

    /// The next delay; doubles the step up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter)
    }

    pub fn reset(&mut self) {
        self.step = self.base;
    }
}

/// Builds channels to the controller under the node's identity.
#[derive(Clone)]
pub struct ControllerClient {
    endpoints: Vec<String>,
    /// Rebuilt from the files after the certificate is renewed.
    tls: Arc<std::sync::RwLock<ClientTlsConfig>>,
    files: TlsFiles,
    node: String,
    /// Longest pause between reconnect attempts (see [`reconnect_cap`]).
    reconnect_max: Duration,
}

/// The reconnect backoff is capped at a quarter of the resync interval (and
/// at [`RECONNECT_MAX`]): once a partition heals, the agent is back on the
/// controller, and converged, within one resync interval, the period in
/// which the operator expects drift to be repaired anyway. A quarter leaves
/// room for an attempt that was already timing out when the link came back
/// ([`CONNECT_TIMEOUT`]) and for the reconcile pass itself.
pub fn reconnect_cap(resync: Duration) -> Duration {
    (resync / 4).clamp(Duration::from_millis(500), RECONNECT_MAX)
}

/// Where the node's TLS material lives, for reloading after renewal.
#[derive(Clone, Debug)]
struct TlsFiles {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    server_name: Option<String>,
}

/// How often a connected agent checks whether its certificate is due for
/// renewal (it also checks at every (re)connect).
const RENEWAL_CHECK: Duration = Duration::from_secs(600);

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("endpoints", &self.endpoints)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl ControllerClient {
    /// Loads and checks the TLS files named in the config.
    pub fn new(cfg: &AgentConfig) -> Result<Self, AgentError> {
        let files = TlsFiles {
            ca: cfg.tls.ca.clone(),
            cert: cfg.tls.cert.clone(),
            key: cfg.tls.key.clone(),
            server_name: cfg.tls.server_name.clone(),
        };
        let tls = load_tls(&files, &cfg.node)?;
        Ok(ControllerClient {
            endpoints: cfg
                .controller_endpoint_order
                .arrange(&cfg.node, &cfg.controller_endpoints),
            tls: Arc::new(std::sync::RwLock::new(tls)),
            files,
            node: cfg.node.clone(),
            reconnect_max: reconnect_cap(cfg.resync()?),
        })
    }

    fn tls(&self) -> ClientTlsConfig {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Renews the node certificate through AgentService.Renew once it is in
    /// the last third of its lifetime, keeping the same key: only the
    /// certificate file is replaced, atomically, so an agent that crashes
    /// mid-way restarts with a matching key and certificate. Later
    /// connections use the new certificate.
    async fn renew_if_due(
        &self,
        agent: &mut AgentServiceClient<Channel>,
    ) -> Result<bool, AgentError> {
        let info = ferrofab_pki::CertInfo::load(&self.files.cert)?;
        if !info.needs_renewal() {
            return Ok(false);
        }
        let key_pem = std::fs::read_to_string(&self.files.key)
            .map_err(|e| AgentError::Other(format!("reading {}: {e}", self.files.key.display())))?;
        let identity = ferrofab_pki::Identity::node(&self.node)?;
        let csr_pem = ferrofab_pki::csr_for_key(&key_pem, &identity)?;
        let resp = agent
            .renew(RenewRequest { csr_pem })
            .await
            .map_err(|s| rpc_error("Renew", &s))?
            .into_inner();
        crate::cache::write_atomic(&self.files.cert, resp.certificate_pem.as_bytes(), 0o644)?;
        let fresh = load_tls(&self.files, &self.node)?;
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        info!(node = %self.node, "node certificate renewed");
        Ok(true)
    }

    async fn renew_logged(&self, agent: &mut AgentServiceClient<Channel>) {
        if let Err(e) = self.renew_if_due(agent).await {
            warn!(node = %self.node, error = %e, "certificate renewal failed; will retry");
        }
    }
}

/// Loads and checks the TLS files: the certificate must be this node's.
fn load_tls(files: &TlsFiles, node: &str) -> Result<ClientTlsConfig, AgentError> {
    {
        let pem = ferrofab_pki::load_client_tls(&files.ca, &files.cert, &files.key)?;
        let want = ferrofab_pki::Identity::node(node)?;
        if pem.identity != want {
            return Err(AgentError::Config {
                key: "tls.cert".into(),
                message: format!(
                    "certificate is for {}, but this node is {want}",
                    pem.identity
                ),
            });
        }
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pem.ca))
            .identity(Identity::from_pem(&pem.cert, &pem.key));
        if let Some(name) = &files.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }
}

impl ControllerClient {
    /// The first endpoint that accepts a connection, in this node's order
    /// (`controller_endpoint_order`).
    pub async fn channel(&self) -> Result<Channel, AgentError> {
        let mut last = None;
        for url in &self.endpoints {
            match connect(url, Some(self.tls())).await {
                Ok(ch) => return Ok(ch),
                Err(e) => {
                    debug!(%url, error = %e, "endpoint unreachable");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| AgentError::Other("no controller endpoint configured".into())))
    }

    pub async fn admin(&self) -> Result<AdminServiceClient<Channel>, AgentError> {
        Ok(AdminServiceClient::new(self.channel().await?)
            .max_decoding_message_size(ferrofab_proto::MAX_MESSAGE_BYTES))
    }

    /// Watches the desired state until shutdown, reconnecting forever.
    /// Snapshots go to `desired`; every new value of `reports` is sent.
    pub async fn run(
        self,
        desired: watch::Sender<Option<DesiredState>>,
        mut reports: watch::Receiver<Option<ReportStatusRequest>>,
        connected: Arc<AtomicBool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(500), self.reconnect_max);
        loop {
            let res = self
                .session(
                    &desired,
                    &mut reports,
                    &connected,
                    &mut backoff,
                    &mut shutdown,
                )
                .await;
            connected.store(false, Ordering::Release);
            if *shutdown.borrow() {
                return;
            }
            match res {
                Ok(()) => info!(node = %self.node, "desired-state stream ended; reconnecting"),
                Err(e) => {
                    warn!(node = %self.node, error = %e, "controller unreachable; data path keeps serving")
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One connection: watch + reports until the stream or the channel fails.
    async fn session(
        &self,
        desired: &watch::Sender<Option<DesiredState>>,
        reports: &mut watch::Receiver<Option<ReportStatusRequest>>,
        connected: &AtomicBool,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), AgentError> {
        let ch = self.channel().await?;
        let mut agent = AgentServiceClient::new(ch)
            .max_decoding_message_size(ferrofab_proto::MAX_MESSAGE_BYTES);
        // Resume from what we have: a replica whose cache is behind waits
        // for it instead of sending an older desired state.
        let after_revision = desired.borrow().as_ref().map_or(0, |d| d.revision);
        let mut stream = agent
            .watch_desired_state(WatchDesiredStateRequest {
                node: self.node.clone(),
                after_revision,
            })
            .await
            .map_err(|s| rpc_error("WatchDesiredState", &s))?
            .into_inner();
        connected.store(true, Ordering::Release);
        backoff.reset();
        info!(node = %self.node, "watching desired state");
        self.renew_logged(&mut agent).await;
        let mut renewal = tokio::time::interval(RENEWAL_CHECK);
        renewal.tick().await;
        // The controller may have restarted: tell it what we have now.
        let latest = reports.borrow_and_update().clone();
        // When the controller's rate limit refused the latest report, when
        // to send it again (its retry hint): the report may carry what
        // another node waits for (a storage node admitting a host), so it
        // must not wait for the next report, up to a heartbeat away.
        let mut retry_at = send_report(&mut agent, latest).await;
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(ds)) => {
                        debug!(revision = ds.revision, "desired state received");
                        let _ = desired.send(Some(ds));
                    }
                    Ok(None) => return Ok(()),
                    Err(s) => return Err(rpc_error("WatchDesiredState", &s)),
                },
                r = reports.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    let latest = reports.borrow_and_update().clone();
                    retry_at = send_report(&mut agent, latest).await;
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                    if retry_at.is_some() =>
                {
                    let latest = reports.borrow_and_update().clone();
                    retry_at = send_report(&mut agent, latest).await;
                }
                _ = renewal.tick() => self.renew_logged(&mut agent).await,
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

/// Sends `r`; when the controller refused it with a retry hint (its rate
/// limit), returns when to send the latest report again.
async fn send_report(
    agent: &mut AgentServiceClient<Channel>,
    r: Option<ReportStatusRequest>,
) -> Option<tokio::time::Instant> {
    let r = r?;
    let s = agent.report_status(r).await.err()?;
    match retry_hint(&s) {
        Some(d) => {
            warn!(error = %s.message(), code = ?s.code(), retry_ms = d.as_millis() as u64,
                "ReportStatus refused; retried after the controller's hint");
            Some(tokio::time::Instant::now() + d)
        }
        None => {
            warn!(error = %s.message(), code = ?s.code(), "ReportStatus failed; retried with the next report");
            None
        }
    }
}

/// The controller's retry hint of a throttled call: RESOURCE_EXHAUSTED
/// with gRPC's `grpc-retry-pushback-ms` trailer, bounded to
/// [`MIN_REPORT_RETRY`, `MAX_REPORT_RETRY`]. Other failures have none.
fn retry_hint(s: &tonic::Status) -> Option<Duration> {
    if s.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let ms: u64 = s
        .metadata()
        .get("grpc-retry-pushback-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms).clamp(MIN_REPORT_RETRY, MAX_REPORT_RETRY))
}

/// Normalises `host:port` to `https://host:port`.
pub fn endpoint_url(addr: &str) -> String {
    if addr.starts_with("https://") || addr.starts_with("http://") {
        addr.to_string()
    } else {
        format!("https://{addr}")
    }
}

async fn connect(url: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, AgentError> {
    let fail = |message: String| AgentError::Connect {
        endpoint: url.to_string(),
        message,
    };
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| fail(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).map_err(|e| fail(flatten(&e)))?;
    }
    ep.connect().await.map_err(|e| fail(flatten(&e)))
}

/// tonic hides the useful part of transport errors in the source chain.
fn flatten(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// AgentService.Enroll over TLS without a client certificate.
pub async fn enroll(
    endpoint: &str,
    ca_pem: &[u8],
    server_name: Option<&str>,
    req: EnrollRequest,
) -> Result<EnrollResponse, AgentError> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(n) = server_name {
        tls = tls.domain_name(n.to_string());
    }
    let ch = connect(&endpoint_url(endpoint), Some(tls)).await?;
    AgentServiceClient::new(ch)
        .enroll(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| rpc_error("Enroll", &s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[5] >= Duration::from_millis(400) && d[5] <= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn reconnect_cap_is_a_quarter_of_the_resync_within_bounds() {
        assert_eq!(
            reconnect_cap(Duration::from_secs(10)),
            Duration::from_millis(2500)
        );
        assert_eq!(
            reconnect_cap(Duration::from_secs(30)),
            Duration::from_millis(7500)
        );
        assert_eq!(reconnect_cap(Duration::from_secs(3600)), RECONNECT_MAX);
        assert_eq!(
            reconnect_cap(Duration::from_millis(200)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn endpoint_urls_are_normalised() {
        assert_eq!(endpoint_url("127.0.0.1:7443"), "https://127.0.0.1:7443");
        assert_eq!(endpoint_url("https://c:1"), "https://c:1");
    }

    fn throttled(ms: &str) -> tonic::Status {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("grpc-retry-pushback-ms", ms.parse().expect("ascii"));
        tonic::Status::with_metadata(tonic::Code::ResourceExhausted, "slow down", md)
    }

    #[test]
    fn a_throttled_report_follows_the_controllers_retry_hint_within_bounds() {
        assert_eq!(
            retry_hint(&throttled("100")),
            Some(Duration::from_millis(100))
        );
        assert_eq!(retry_hint(&throttled("0")), Some(MIN_REPORT_RETRY));
        assert_eq!(retry_hint(&throttled("3600000")), Some(MAX_REPORT_RETRY));
        // No hint, an unreadable one, or another failure: the next report.
        assert_eq!(retry_hint(&throttled("soon")), None);
        assert_eq!(
            retry_hint(&tonic::Status::resource_exhausted("no trailer")),
            None
        );
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("grpc-retry-pushback-ms", "100".parse().expect("ascii"));
        let other = tonic::Status::with_metadata(tonic::Code::Unavailable, "down", md);
        assert_eq!(retry_hint(&other), None);
    }
}
