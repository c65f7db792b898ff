//! The gRPC listener: accepts TCP connections, holds them to a cap, and
//! performs the TLS handshake itself with a deadline before tonic sees the
//! connection. tonic's built-in TLS would wait for a ClientHello forever
//! and accept any number of sockets, so a peer that opens thousands of
//! connections and sends nothing would hold them (and their memory and
//! file descriptors) for as long as it likes.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// TCP keepalive on accepted sockets: a vanished peer's connection (and
/// its slot under the cap) is reclaimed even if HTTP/2 pings are stuck.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Established connections waiting for tonic to pick them up.
const READY_QUEUE: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Listener limits from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub handshake_timeout: Duration,
}

/// The rustls configuration of the gRPC port: the server chain and key,
/// client certificates verified against `client_ca` (optional at the
/// handshake when enrollment needs certificate-less callers; every RPC but
/// Enroll then refuses them), HTTP/2 only.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    client_auth_optional: bool,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("server key: {e}"))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem) {
        let ca = ca.map_err(|e| format!("client CA: {e}"))?;
        roots.add(ca).map_err(|e| format!("client CA: {e}"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone());
    let verifier = if client_auth_optional {
        verifier.allow_unauthenticated()
    } else {
        verifier
    }
    .build()
    .map_err(|e| format!("client certificate verifier: {e}"))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("server certificate and key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Open connections, in total and per peer address.
#[derive(Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
enum Refused {
    Total,
    PerPeer,
}

/// One slot under `max_connections` and `max_connections_per_peer`, freed
/// when the connection is dropped (closed by either side, handshake failed
/// or timed out).
struct Slot {
    open: Arc<Mutex<Open>>,
    peer: IpAddr,
    metrics: Arc<Metrics>,
}

impl Slot {
    /// A slot if both caps leave room for one more connection from `peer`.
    fn take(
        open: &Arc<Mutex<Open>>,
        peer: IpAddr,
        limits: &Limits,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, Refused> {
        {
            let mut o = open.lock().unwrap_or_else(PoisonError::into_inner);
            if o.total >= limits.max_connections {
                return Err(Refused::Total);
            }
            let mine = o.per_peer.entry(peer).or_insert(0);
            if *mine >= limits.max_connections_per_peer {
                return Err(Refused::PerPeer);
            }
            *mine += 1;
            o.total += 1;
        }
        metrics.connections.inc();
        Ok(Self {
            open: open.clone(),
            peer,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut o = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            o.total = o.total.saturating_sub(1);
            // Entries go with their last connection: the map never holds
            // more peers than there are open connections.
            if let Some(n) = o.per_peer.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    o.per_peer.remove(&self.peer);
                }
            }
        }
        self.metrics.connections.dec();
    }
}

/// An accepted TCP connection holding its slot. tonic reads the peer
/// address through [`Connected`], exactly as for a bare `TcpStream`, so
/// `Request::peer_certs` keeps working behind the TLS layer.
pub struct Conn {
    tcp: TcpStream,
    _slot: Slot,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.tcp.local_addr().ok(),
            remote_addr: self.tcp.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// What tonic serves: connections whose TLS handshake completed in time.
pub type Incoming = ReceiverStream<Result<TlsStream<Conn>, io::Error>>;

/// Starts accepting on `listener`. The accept loop ends when tonic drops
/// the returned stream (server shutdown).
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> Incoming {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        limits,
        metrics,
        tx,
    ));
    ReceiverStream::new(rx)
}

type Ready = mpsc::Sender<Result<TlsStream<Conn>, io::Error>>;

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    metrics: Arc<Metrics>,
    ready: Ready,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = ready.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "gRPC accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let slot = match Slot::take(&open, peer.ip(), &limits, &metrics) {
            Ok(slot) => slot,
            Err(Refused::Total) => {
                metrics.connections_refused.inc();
                debug!(%peer, max = limits.max_connections, "connection refused: server.max_connections reached");
                continue;
            }
            Err(Refused::PerPeer) => {
                metrics.connections_refused_per_peer.inc();
                debug!(%peer, max = limits.max_connections_per_peer,
                    "connection refused: server.max_connections_per_peer reached");
                continue;
            }
        };
        tune(&tcp);
        let conn = Conn { tcp, _slot: slot };
        tokio::spawn(handshake(
            acceptor.clone(),
            conn,
            limits.handshake_timeout,
            metrics.clone(),
            ready.clone(),
        ));
    }
}

/// No Nagle (small unary replies would wait for the client's delayed ACK,
/// ~40 ms a call) and TCP keepalive.
fn tune(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka);
}

async fn handshake(
    acceptor: TlsAcceptor,
    conn: Conn,
    timeout: Duration,
    metrics: Arc<Metrics>,
    ready: Ready,
) {
    let peer = conn.tcp.peer_addr().ok();
    match tokio::time::timeout(timeout, acceptor.accept(conn)).await {
        Ok(Ok(tls)) => {
            let _ = ready.send(Ok(tls)).await;
        }
        Ok(Err(e)) => {
            metrics.tls_handshake_failures.inc();
            debug!(?peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics.tls_handshake_timeouts.inc();
            debug!(
                ?peer,
                timeout_ms = timeout.as_millis() as u64,
                "TLS handshake timed out (server.tls_handshake_timeout_ms)"
            );
        }
    }
}
