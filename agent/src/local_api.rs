//! The local API: a Unix socket speaking one JSON request and one JSON
//! response per connection (newline-terminated), for Puppet and scripts.
//! `ferrofab-agent status|attachments|attach|detach` are its clients.
//! The schema is versioned (`schema_version: 1`) and documented in
//! docs/agent.md.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::LocalApiConfig;
use crate::error::AgentError;
use crate::metrics::LocalApiRefusals;

/// Version of the request and response documents.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest request line accepted, newline included. A named constant, not
/// a config key: every request of the schema fits in well under 1 KiB, so
/// the bound only has to stop a client from making the agent buffer an
/// endless line.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Longest wait an `attach` or `detach` may ask for (`timeout_seconds`);
/// larger values are clamped to it. An hour is far beyond any legitimate
/// attach, and bounding it keeps deadline arithmetic far from overflow
/// (`u64::MAX` seconds used to panic the worker adding it to an Instant).
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// A peer-given `timeout_seconds` as a duration, clamped to
/// [`MAX_TIMEOUT_SECONDS`].
pub fn clamp_timeout(seconds: u64) -> Duration {
    Duration::from_secs(seconds.min(MAX_TIMEOUT_SECONDS))
}

/// `now + timeout` without the overflow panic of `Instant + Duration`: a
/// deadline too far to represent becomes [`MAX_TIMEOUT_SECONDS`] from now.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(MAX_TIMEOUT_SECONDS)))
        .unwrap_or(now)
}

/// A request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Status,
    Attachments,
    Attach {
        volume: String,
        #[serde(default)]
        read_only: bool,
        /// `read-write`, `read-only` or `read-write-many`; absent: decided
        /// by `read_only`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_mode: Option<String>,
        #[serde(default = "default_timeout")]
        timeout_seconds: u64,
    },
    Detach {
        volume: String,
        #[serde(default = "default_timeout")]
        timeout_seconds: u64,
    },
}

fn default_timeout() -> u64 {
    60
}

/// The envelope of a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub schema_version: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// Machine-readable error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnsupportedSchema,
    NotWorkstation,
    ControllerUnreachable,
    ControllerRefused,
    Conflict,
    Timeout,
    Internal,
    /// `local_api.max_connections` connections are open: retry later.
    Busy,
    /// Only from the CLI: the agent's socket did not answer (agent not
    /// running, wrong socket path, or no answer in time).
    AgentUnreachable,
    /// Only from the CLI: the `--config` file (which names the socket) does
    /// not exist and no `--socket` was given. Not configured yet, so for a
    /// script the agent is as absent as with `agent_unreachable`; the CLI
    /// never guesses a socket, which could belong to another agent.
    ConfigMissing,
    /// Only from the CLI: the `--config` file exists but cannot be used.
    ConfigInvalid,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// A response: `ok` with `result`, or not with `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub schema_version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    fn from_result(r: Result<serde_json::Value, ApiError>) -> Self {
        match r {
            Ok(v) => Response {
                schema_version: SCHEMA_VERSION,
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Response {
                schema_version: SCHEMA_VERSION,
                ok: false,
                result: None,
                error: Some(e),
            },
        }
    }
}

/// What serves requests (the agent).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request,
    ) -> impl std::future::Future<Output = Result<serde_json::Value, ApiError>> + Send;
}

/// Bounds of the socket server and where it counts refusals.
#[derive(Debug, Clone, Default)]
pub struct ServeLimits {
    pub config: LocalApiConfig,
    pub refused: Arc<LocalApiRefusals>,
}

/// Binds the socket (replacing a stale one) and serves until shutdown.
///
/// At most `max_connections` connections are served at once (more are
/// answered `busy` and closed), and a connection must deliver its request
/// line within `request_timeout`: an idle or trickling client cannot hold
/// a task and a descriptor for ever.
pub fn serve<H: Handler>(
    path: &Path,
    handler: Arc<H>,
    limits: ServeLimits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| AgentError::io(format!("creating {}", dir.display()), e))?;
    }
    remove_stale(path)?;
    let listener = UnixListener::bind(path)
        .map_err(|e| AgentError::io(format!("binding local API socket {}", path.display()), e))?;
    set_mode(path, 0o660);
    info!(socket = %path.display(), "local API listening");
    let owned = path.to_path_buf();
    let slots = Arc::new(Semaphore::new(limits.config.max_connections));
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, _)) => admit(sock, &handler, &slots, &limits),
                    Err(e) => {
                        // Out of descriptors and the like: back off rather
                        // than spin on an accept that fails at once.
                        debug!(error = %e, "local API accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        let _ = std::fs::remove_file(&owned);
    }))
}

/// Serves `sock` in its own task if a connection slot is free; otherwise
/// answers `busy` without blocking and closes it.
fn admit<H: Handler>(
    sock: UnixStream,
    handler: &Arc<H>,
    slots: &Arc<Semaphore>,
    limits: &ServeLimits,
) {
    match slots.clone().try_acquire_owned() {
        Ok(permit) => {
            let h = handler.clone();
            let timeout = limits.config.request_timeout();
            let refused = limits.refused.clone();
            tokio::spawn(
                async move {
                    serve_one(sock, h, timeout, &refused).await;
                    drop(permit);
                }
                .instrument(info_span!("local_api")),
            );
        }
        Err(_) => {
            count(&limits.refused.too_many_connections);
            let max = limits.config.max_connections;
            // debug, not warn: a flood of refusals must not flood the log
            // too; the metric counts them.
            debug!(
                max_connections = max,
                "local API: connection refused, too many open (local_api.max_connections)"
            );
            let err = ApiError::new(
                ErrorCode::Busy,
                format!("the agent already serves {max} local API connections (local_api.max_connections); retry later"),
            );
            // Best effort and non-blocking: a fresh socket's buffer takes
            // one short line, and a refused peer gets no more than that.
            let _ = sock.try_write(response_line(&Response::from_result(Err(err))).as_bytes());
        }
    }
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A socket file nobody answers on is left over from a crash: remove it.
/// One that answers belongs to a running agent: refuse.
fn remove_stale(path: &Path) -> Result<(), AgentError> {
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(AgentError::LocalApi(format!(
            "{} is in use by another running agent",
            path.display()
        )));
    }
    std::fs::remove_file(path)
        .map_err(|e| AgentError::io(format!("removing stale socket {}", path.display()), e))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        warn!(error = %e, "chmod of the local API socket");
    }
}

/// Why a request line could not be read.
#[derive(Debug)]
enum ReadFailure {
    TimedOut,
    TooLarge,
    Io(std::io::Error),
}

/// Reads one request line: at most [`MAX_REQUEST`] bytes, within `timeout`.
async fn read_request(
    rd: tokio::net::unix::OwnedReadHalf,
    timeout: Duration,
) -> Result<String, ReadFailure> {
    let mut line = String::new();
    let mut reader = BufReader::new(rd.take(MAX_REQUEST as u64));
    match tokio::time::timeout(timeout, reader.read_line(&mut line)).await {
        Err(_) => Err(ReadFailure::TimedOut),
        Ok(Err(e)) => Err(ReadFailure::Io(e)),
        Ok(Ok(n)) if n >= MAX_REQUEST && !line.ends_with('\n') => Err(ReadFailure::TooLarge),
        Ok(Ok(_)) => Ok(line),
    }
}

async fn serve_one<H: Handler>(
    sock: UnixStream,
    handler: Arc<H>,
    timeout: Duration,
    refused: &LocalApiRefusals,
) {
    let (rd, mut wr) = sock.into_split();
    let result = match read_request(rd, timeout).await {
        Ok(line) => dispatch(&line, handler.as_ref()).await,
        Err(ReadFailure::TimedOut) => {
            count(&refused.request_timeout);
            debug!(
                timeout_s = timeout.as_secs_f64(),
                "local API: no request in time"
            );
            Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "no complete request line within {:?} (local_api.request_timeout)",
                    timeout
                ),
            ))
        }
        Err(ReadFailure::TooLarge) => {
            count(&refused.request_too_large);
            Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "request line longer than {}",
                    ferrofab_nvmeof_wire::units::format_size(MAX_REQUEST as u64)
                ),
            ))
        }
        Err(ReadFailure::Io(e)) => Err(ApiError::new(ErrorCode::BadRequest, e.to_string())),
    };
    let text = response_line(&Response::from_result(result));
    // A client that does not read its answer must not hold the task.
    let _ = tokio::time::timeout(timeout, wr.write_all(text.as_bytes())).await;
}

/// The response as one newline-terminated JSON line.
fn response_line(resp: &Response) -> String {
    let mut text = serde_json::to_string(resp).unwrap_or_else(|_| {
        "{\"schema_version\":1,\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"encoding failed\"}}".into()
    });
    text.push('\n');
    text
}

async fn dispatch<H: Handler>(line: &str, h: &H) -> Result<serde_json::Value, ApiError> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid JSON: {e}")))?;
    let version = v.get("schema_version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(SCHEMA_VERSION)) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedSchema,
            format!("schema_version must be {SCHEMA_VERSION}, got {version:?}"),
        ));
    }
    let env: RequestEnvelope = serde_json::from_value(v)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    h.handle(env.request).await
}

/// Client side: sends one request and returns the response.
pub async fn call(path: &Path, req: Request, timeout: Duration) -> Result<Response, AgentError> {
    let fut = async {
        let mut sock = UnixStream::connect(path).await.map_err(|e| {
            AgentError::LocalApi(format!(
                "cannot reach the agent at {} (is ferrofab-agent running?): {e}",
                path.display()
            ))
        })?;
        let env = RequestEnvelope {
            schema_version: SCHEMA_VERSION,
            request: req,
        };
        let mut text =
            serde_json::to_string(&env).map_err(|e| AgentError::LocalApi(e.to_string()))?;
        text.push('\n');
        sock.write_all(text.as_bytes())
            .await
            .map_err(|e| AgentError::LocalApi(e.to_string()))?;
        let mut line = String::new();
        BufReader::new(sock)
            .read_line(&mut line)
            .await
            .map_err(|e| AgentError::LocalApi(e.to_string()))?;
        serde_json::from_str::<Response>(&line)
            .map_err(|e| AgentError::LocalApi(format!("bad response: {e}")))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| AgentError::LocalApi(format!("no answer within {}s", timeout.as_secs())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Handler for Echo {
        async fn handle(&self, req: Request) -> Result<serde_json::Value, ApiError> {
            match req {
                Request::Status => Ok(serde_json::json!({"schema_version": 1, "node": "n"})),
                _ => Err(ApiError::new(ErrorCode::Conflict, "no")),
            }
        }
    }

    #[test]
    fn request_schema_is_stable() {
        let env = RequestEnvelope {
            schema_version: 1,
            request: Request::Attach {
                volume: "v".into(),
                read_only: true,
                access_mode: None,
                timeout_seconds: 5,
            },
        };
        let v = serde_json::to_value(&env).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"schema_version":1,"command":"attach","volume":"v","read_only":true,"timeout_seconds":5})
        );
        let r: RequestEnvelope =
            serde_json::from_str(r#"{"schema_version":1,"command":"detach","volume":"v"}"#)
                .unwrap();
        assert_eq!(
            r.request,
            Request::Detach {
                volume: "v".into(),
                timeout_seconds: 60
            }
        );
    }

    #[tokio::test]
    async fn round_trip_over_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let (tx, rx) = watch::channel(false);
        let task = serve(&path, Arc::new(Echo), ServeLimits::default(), rx).unwrap();
        let r = call(&path, Request::Status, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(r.ok);
        assert_eq!(r.result.unwrap()["node"], "n");
        let r = call(&path, Request::Attachments, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.error.unwrap().code, ErrorCode::Conflict);
        // A second agent on the same socket is refused.
        assert!(serve(
            &path,
            Arc::new(Echo),
            ServeLimits::default(),
            watch::channel(false).1
        )
        .is_err());
        let _ = tx.send(true);
        task.await.unwrap();
        assert!(!path.exists());
    }

    /// Serves `Echo` with `limits` in a fresh directory.
    fn echo_server(
        limits: ServeLimits,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let (tx, rx) = watch::channel(false);
        let task = serve(&path, Arc::new(Echo), limits, rx).unwrap();
        (dir, path, tx, task)
    }

    /// Reads the one response line the server sends, then expects EOF.
    async fn response_of(sock: UnixStream) -> Response {
        let mut r = BufReader::new(sock);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        // Closed after the answer (a reset when the server left part of
        // an oversized request unread).
        let mut rest = Vec::new();
        if r.read_to_end(&mut rest).await.is_ok() {
            assert!(rest.is_empty(), "connection not closed after the answer");
        }
        serde_json::from_str(&line).unwrap()
    }

    fn error_of(r: &Response) -> &ApiError {
        assert!(!r.ok, "{r:?}");
        r.error.as_ref().unwrap()
    }

    /// An idle connection used to be held for ever; it is answered and
    /// closed after `request_timeout` (virtual time: no real wait).
    #[tokio::test(start_paused = true)]
    async fn idle_connections_time_out() {
        let limits = ServeLimits::default();
        let refused = limits.refused.clone();
        let (_dir, path, tx, task) = echo_server(limits);
        let idle = UnixStream::connect(&path).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let r = response_of(idle).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
        let e = error_of(&r);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            e.message.contains("local_api.request_timeout"),
            "{}",
            e.message
        );
        assert_eq!(refused.request_timeout.load(Ordering::Relaxed), 1);
        let _ = tx.send(true);
        task.await.unwrap();
    }

    /// Beyond `max_connections` a client is answered `busy` at once; the
    /// slots free again when the held connections end.
    #[tokio::test(start_paused = true)]
    async fn connections_beyond_the_cap_are_refused() {
        let limits = ServeLimits {
            config: LocalApiConfig {
                max_connections: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let refused = limits.refused.clone();
        let (_dir, path, tx, task) = echo_server(limits);
        let held = [
            UnixStream::connect(&path).await.unwrap(),
            UnixStream::connect(&path).await.unwrap(),
        ];
        let third = UnixStream::connect(&path).await.unwrap();
        let r = response_of(third).await;
        let e = error_of(&r);
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(
            e.message.contains("local_api.max_connections"),
            "{}",
            e.message
        );
        assert_eq!(refused.too_many_connections.load(Ordering::Relaxed), 1);
        // The held connections time out and free their slots.
        for s in held {
            let _ = response_of(s).await;
        }
        let r = call(&path, Request::Status, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(r.ok, "{r:?}");
        let _ = tx.send(true);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_requests_are_refused() {
        let limits = ServeLimits::default();
        let refused = limits.refused.clone();
        let (_dir, path, tx, task) = echo_server(limits);
        let mut sock = UnixStream::connect(&path).await.unwrap();
        let big = vec![b' '; MAX_REQUEST + 10];
        sock.write_all(&big).await.unwrap();
        let r = response_of(sock).await;
        let e = error_of(&r);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("longer than 64KiB"), "{}", e.message);
        assert_eq!(refused.request_too_large.load(Ordering::Relaxed), 1);
        let _ = tx.send(true);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_schema_version_is_refused() {
        let r = dispatch(r#"{"schema_version":2,"command":"status"}"#, &Echo).await;
        assert_eq!(r.unwrap_err().code, ErrorCode::UnsupportedSchema);
    }
}
