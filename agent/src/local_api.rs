//! The local API: a Unix socket speaking one JSON request and one JSON
//! response per connection (newline-terminated), for Puppet and scripts.
//! `ferrofab-agent status|attachments|attach|detach` are its clients.
//! The schema is versioned (`schema_version: 1`) and documented in
//! docs/agent.md.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::AgentError;

/// Version of the request and response documents.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest request accepted.
const MAX_REQUEST: usize = 64 * 1024;

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
    /// Only from the CLI: the agent's socket did not answer (agent not
    /// running, wrong socket path, or no answer in time).
    AgentUnreachable,
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

/// Binds the socket (replacing a stale one) and serves until shutdown.
pub fn serve<H: Handler>(
    path: &Path,
    handler: Arc<H>,
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
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, _)) => {
                        let h = handler.clone();
                        tokio::spawn(async move { serve_one(sock, h).await });
                    }
                    Err(e) => debug!(error = %e, "local API accept"),
                },
                _ = shutdown.changed() => break,
            }
        }
        let _ = std::fs::remove_file(&owned);
    }))
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

async fn serve_one<H: Handler>(sock: UnixStream, handler: Arc<H>) {
    let (rd, mut wr) = sock.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(rd.take(MAX_REQUEST as u64));
    let resp = match reader.read_line(&mut line).await {
        Ok(_) => Response::from_result(dispatch(&line, handler.as_ref()).await),
        Err(e) => Response::from_result(Err(ApiError::new(ErrorCode::BadRequest, e.to_string()))),
    };
    let mut text = serde_json::to_string(&resp).unwrap_or_else(|_| {
        "{\"schema_version\":1,\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"encoding failed\"}}".into()
    });
    text.push('\n');
    let _ = wr.write_all(text.as_bytes()).await;
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
        let task = serve(&path, Arc::new(Echo), rx).unwrap();
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
        assert!(serve(&path, Arc::new(Echo), watch::channel(false).1).is_err());
        let _ = tx.send(true);
        task.await.unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn wrong_schema_version_is_refused() {
        let r = dispatch(r#"{"schema_version":2,"command":"status"}"#, &Echo).await;
        assert_eq!(r.unwrap_err().code, ErrorCode::UnsupportedSchema);
    }
}
