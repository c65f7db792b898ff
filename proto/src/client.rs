//! Connecting an AdminService client over mTLS, shared by the CLI and the
//! Terraform provider so both pick endpoints, limits and TLS the same way.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::failover::{Failover, Replica};
use crate::v1::admin_service_client::AdminServiceClient;

/// The admin API client: its calls fail over between the configured
/// controller replicas (see [`crate::failover`]).
pub type Admin = AdminServiceClient<Failover>;

/// How long to wait for each endpoint to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// PEM material for mutual TLS (already loaded and checked by the caller).
#[derive(Clone)]
pub struct TlsPem {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// Overrides the name checked in the server certificate.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no controller endpoint configured")]
    NoEndpoint,
    #[error("invalid endpoint {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: String },
    #[error("cannot reach the controller at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("cannot reach any controller endpoint ({each})")]
    NoneReachable { each: String },
}

/// Connects to the first reachable endpoint, in the order given, and
/// keeps the others (connected when first needed) to fail over to.
/// `request_timeout` bounds each call made on the returned client (each
/// attempt on one replica).
pub async fn connect(
    endpoints: &[String],
    tls: Option<&TlsPem>,
    request_timeout: Option<Duration>,
) -> Result<Admin, ConnectError> {
    let tls = tls.map(|p| {
        let mut t = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&p.ca))
            .identity(Identity::from_pem(&p.cert, &p.key));
        if let Some(name) = &p.server_name {
            t = t.domain_name(name.clone());
        }
        t
    });
    if endpoints.is_empty() {
        return Err(ConnectError::NoEndpoint);
    }
    let mut replicas = Vec::with_capacity(endpoints.len());
    let mut start = None;
    let mut unreachable = Vec::new();
    let mut last_err = ConnectError::NoEndpoint;
    for url in endpoints {
        let ep = match endpoint(url, tls.clone(), request_timeout) {
            Ok(ep) => ep,
            Err(e) => {
                tracing::info!(%url, error = %e, "endpoint skipped");
                unreachable.push(e.to_string());
                last_err = e;
                continue;
            }
        };
        let channel = if start.is_some() {
            ep.connect_lazy()
        } else {
            match ep.connect().await {
                Ok(ch) => {
                    tracing::debug!(%url, "connected");
                    start = Some(replicas.len());
                    ch
                }
                Err(e) => {
                    let reason = flatten_source(&e);
                    tracing::info!(%url, error = %reason, "endpoint unreachable");
                    unreachable.push(format!("{url}: {reason}"));
                    last_err = ConnectError::Unreachable {
                        url: url.clone(),
                        reason,
                    };
                    // Kept: it may be back by the time the others fail.
                    ep.connect_lazy()
                }
            }
        };
        replicas.push(Replica {
            url: url.clone(),
            channel,
        });
    }
    let Some(start) = start else {
        return Err(if unreachable.len() > 1 {
            ConnectError::NoneReachable {
                each: unreachable.join("; "),
            }
        } else {
            last_err
        });
    };
    Ok(AdminServiceClient::new(Failover::new(replicas, start))
        .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::MAX_MESSAGE_BYTES))
}

fn endpoint(
    url: &str,
    tls: Option<ClientTlsConfig>,
    request_timeout: Option<Duration>,
) -> Result<Endpoint, ConnectError> {
    let invalid = |reason: String| ConnectError::InvalidEndpoint {
        url: url.to_owned(),
        reason,
    };
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(t) = request_timeout {
        ep = ep.timeout(t);
    }
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls)
            .map_err(|e| invalid(flatten_source(&e)))?;
    }
    Ok(ep)
}

/// tonic's transport errors hide the useful part (connection refused,
/// certificate unknown) in their source chain; join it into one line.
pub fn flatten_source(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// What a gRPC code means for a controller call, in words, for messages
/// where the server gave none or as a summary next to the server's text.
pub fn code_text(code: Code) -> &'static str {
    match code {
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "not authenticated (is a client certificate configured?)",
        Code::Unavailable => "controller unavailable",
        Code::DeadlineExceeded => "timed out",
        Code::Aborted => "changed concurrently; retry",
        Code::Unimplemented => "not supported by this controller",
        Code::ResourceExhausted => "refused: over quota or capacity",
        Code::InvalidArgument => "invalid",
        Code::FailedPrecondition => "refused",
        _ => "request failed",
    }
}
