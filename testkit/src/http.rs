//! A small HTTPS client for the controller's HTTP/JSON API (feature
//! `http`): JSON requests with a client certificate or a bearer token,
//! and reading server-sent events, over hyper and rustls (what the
//! controller itself is built on, so the tests add no HTTP stack).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::pki::Cred;

/// How the client authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    Cert(Cred),
    Token(String),
}

/// One API caller.
#[derive(Clone)]
pub struct HttpClient {
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

/// A response: status and JSON body (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// `error.message` of a refusal.
    pub fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl HttpClient {
    /// A client of the API at `addr` (host:port) trusting `ca_pem`.
    pub fn new(addr: &str, ca_pem: &str, auth: Auth) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.expect("CA pem")).expect("CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let (cfg, token) = match auth {
            Auth::Cert(c) => {
                let chain = CertificateDer::pem_slice_iter(c.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert");
                let key = PrivateKeyDer::from_pem_slice(c.key.as_bytes()).expect("key");
                (
                    b.with_client_auth_cert(chain, key).expect("client auth"),
                    None,
                )
            }
            Auth::Token(t) => (b.with_no_client_auth(), Some(t)),
            Auth::None => (b.with_no_client_auth(), None),
        };
        Self {
            addr: addr.to_string(),
            tls: Arc::new(cfg),
            token,
        }
    }

    /// One HTTP/1.1 connection over TLS.
    async fn connect(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let tcp = TcpStream::connect(&self.addr).await.expect("connect");
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(self.tls.clone())
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        sender
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        let mut sender = self.connect().await;
        sender
            .send_request(request(method, path, body, headers, self.token.as_deref()))
            .await
    }

    /// One request; the whole JSON answer, or the transport's error (a
    /// server that refuses a body early may close before it is written).
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let resp = self
            .send(method, path, body, &[])
            .await
            .map_err(|e| e.to_string())?;
        reply(resp).await
    }

    /// A request with a body of any content type, as given.
    pub async fn raw(&self, method: &str, path: &str, content_type: &str, body: &str) -> Reply {
        let mut sender = self.connect().await;
        let mut req = request(
            method,
            path,
            None,
            &[("content-type", content_type)],
            self.token.as_deref(),
        );
        *req.body_mut() = Full::new(Bytes::from(body.to_string()));
        reply(sender.send_request(req).await.expect("response"))
            .await
            .expect("body")
    }

    /// One request; the whole JSON answer.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.try_call(method, path, body)
            .await
            .expect("HTTP request")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.call("PATCH", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None).await
    }

    /// Opens a watch (`path` with `watch=true`) and reads server-sent
    /// events until `enough` says so or `limit` passes. Returns the status
    /// and the events as (event, id, data).
    pub async fn watch(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        limit: Duration,
        mut enough: impl FnMut(&[SseEvent]) -> bool,
    ) -> (u16, Vec<SseEvent>) {
        let resp = self.send("GET", path, None, headers).await.expect("watch");
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut text = String::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while !enough(&events) {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(f))) => f,
                _ => break,
            };
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    if let Some(e) = SseEvent::parse(&block) {
                        events.push(e);
                    }
                }
            }
        }
        (status, events)
    }
}

/// One kept-alive connection (HTTP/1.1), for measuring requests without
/// a TCP and TLS handshake each, as a gRPC channel is measured.
pub struct Session {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    token: Option<String>,
}

impl HttpClient {
    /// Opens a connection that [`Session::call`] reuses.
    pub async fn session(&self) -> Session {
        Session {
            sender: self.connect().await,
            token: self.token.clone(),
        }
    }
}

impl Session {
    /// One request on the kept-alive connection.
    pub async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.sender.ready().await.expect("connection ready");
        let req = request(method, path, body, &[], self.token.as_deref());
        let resp = self.sender.send_request(req).await.expect("response");
        reply(resp).await.expect("response body")
    }
}

/// The status and the JSON body (Null when empty or not JSON).
async fn reply(resp: hyper::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

/// A request with the bearer token (if any), extra headers and a JSON body.
fn request(
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
    token: Option<&str>,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(b).expect("json"))
        }
        None => Bytes::new(),
    };
    req.body(Full::new(bytes)).expect("request")
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl SseEvent {
    fn parse(block: &str) -> Option<Self> {
        let mut e = SseEvent::default();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                e.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                e.id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if e.event.is_empty() && data.is_empty() {
            return None; // a keep-alive comment
        }
        e.data = serde_json::from_str(&data).unwrap_or(Value::Null);
        Some(e)
    }
}
