//! TCP listeners: accept connections and give each its own thread.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use super::conn::Conn;
use super::limits::Refusal;
use super::TargetInner;

/// What a listener is for. Both kinds accept Connects to any subsystem and
/// to the discovery NQN; the kind decides whether discovery log entries
/// point hosts at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    Io,
    Discovery,
}

/// A bound listener.
#[derive(Debug)]
pub struct ListenerState {
    pub bound: SocketAddr,
    pub kind: ListenerKind,
    pub portid: u16,
    /// Address to put in discovery log entries instead of the bound one
    /// (for hosts that reach the target through NAT).
    pub advertise: Option<String>,
    stop: AtomicBool,
}

impl ListenerState {
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Bind `addr` and start accepting. Returns the listener's state; the
/// accept thread runs until [`ListenerState::stop`].
pub(crate) fn spawn(
    target: Arc<TargetInner>,
    addr: SocketAddr,
    kind: ListenerKind,
    portid: u16,
    advertise: Option<String>,
) -> io::Result<Arc<ListenerState>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let state = Arc::new(ListenerState {
        bound: listener.local_addr()?,
        kind,
        portid,
        advertise,
        stop: AtomicBool::new(false),
    });
    let st = state.clone();
    thread::Builder::new()
        .name(format!("nvmeof-listen-{}", state.bound.port()))
        .spawn(move || accept_loop(target, listener, st))?;
    Ok(state)
}

fn accept_loop(target: Arc<TargetInner>, listener: TcpListener, state: Arc<ListenerState>) {
    tracing::debug!(addr = %state.bound, "listening");
    while !state.stop.load(Ordering::Acquire) && !target.stopping() {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = start_connection(&target, stream, peer) {
                    tracing::warn!(%peer, error = %e, "could not start connection");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&listener),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors and the like: back off rather
                // than spin, and keep serving.
                tracing::warn!(addr = %state.bound, error = %e, "accept failed");
                thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    tracing::debug!(addr = %state.bound, "listener stopped");
}

/// Log a refusal: the first one, then one in every 1000, so a flood does
/// not flood the log too (the metrics count every one).
fn log_refusal(target: &TargetInner, peer: SocketAddr, refusal: Refusal) {
    let stats = target.gate.stats();
    let refused = stats.refused_global + stats.refused_per_peer;
    if refused % 1000 == 1 {
        tracing::warn!(%peer, refused_so_far = refused, "connection refused: {refusal}");
    } else {
        tracing::debug!(%peer, "connection refused: {refusal}");
    }
}

/// Wait for a connection, waking regularly to notice a stop request.
fn wait_readable(listener: &TcpListener) {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, bounded timeout.
    unsafe {
        libc::poll(&mut pfd, 1, 200);
    }
}

/// Admit the connection under the caps and give it a thread. A refused
/// connection is closed at once: before ICReq there is no PDU that could
/// carry a reason, so the reason goes to the log and the metrics.
fn start_connection(
    target: &Arc<TargetInner>,
    stream: TcpStream,
    peer: SocketAddr,
) -> io::Result<()> {
    let permit = match target.gate.admit(peer.ip()) {
        Ok(p) => p,
        Err(refusal) => {
            log_refusal(target, peer, refusal);
            return Ok(());
        }
    };
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let local = stream.local_addr()?;
    let conn = Conn::new(target.clone(), stream, peer, local).with_permit(permit);
    thread::Builder::new()
        .name(format!("nvmeof-conn-{}", peer.port()))
        .spawn(move || conn.run())?;
    Ok(())
}
