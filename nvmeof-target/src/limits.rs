//! Admission control for TCP connections: a global cap, a cap per peer
//! address, and the counters the agent exports as metrics.
//!
//! Every connection costs a thread and its buffers before the peer has
//! proven anything (ICReq and Connect come later), so an unauthenticated
//! peer must not be able to open them without bound. The caps are checked
//! at accept time, before the thread is spawned; a refused connection is
//! closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::sync::lock;

/// Why a connection was refused at accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` connections are open already.
    Global { limit: u32 },
    /// This peer address has `max_connections_per_peer` open already.
    PerPeer { limit: u32 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Global { limit } => {
                write!(f, "the target has max_connections = {limit} open")
            }
            Refusal::PerPeer { limit } => write!(
                f,
                "this peer address has max_connections_per_peer = {limit} open"
            ),
        }
    }
}

/// Connection counters, read by [`super::Target::status`].
#[derive(Debug, Default)]
pub(crate) struct ConnCounters {
    pub accepted: AtomicU64,
    pub refused_global: AtomicU64,
    pub refused_per_peer: AtomicU64,
    pub icreq_timeouts: AtomicU64,
    pub connect_timeouts: AtomicU64,
    pub auth_successes: AtomicU64,
    pub auth_failures: AtomicU64,
    pub auth_refused_connects: AtomicU64,
    pub auth_required_rejections: AtomicU64,
}

/// A copy of the connection counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionStats {
    /// Connections open now (admitted and not yet closed).
    pub open: u64,
    pub accepted: u64,
    /// Refused because `max_connections` were open.
    pub refused_global: u64,
    /// Refused because `max_connections_per_peer` were open from the
    /// same address.
    pub refused_per_peer: u64,
    /// Closed because no ICReq came within `icreq_timeout_ms`.
    pub icreq_timeouts: u64,
    /// Closed because no Connect came within `connect_timeout_ms` of the
    /// ICResp.
    pub connect_timeouts: u64,
    /// DH-HMAC-CHAP transactions that succeeded (every queue of every
    /// association authenticates, and again on re-authentication).
    pub auth_successes: u64,
    /// DH-HMAC-CHAP transactions that ended in AUTH_Failure1/2 (wrong
    /// key, nothing in common, malformed messages).
    pub auth_failures: u64,
    /// Connects refused because the subsystem requires authentication
    /// and the host has no key.
    pub auth_refused_connects: u64,
    /// Commands refused with Authentication Required on a queue that had
    /// not authenticated.
    pub auth_required_rejections: u64,
}

/// Counts open connections in total and per peer address.
#[derive(Debug)]
pub(crate) struct ConnGate {
    max_total: u32,
    max_per_peer: u32,
    open: Mutex<OpenConns>,
    pub counters: ConnCounters,
}

#[derive(Debug, Default)]
struct OpenConns {
    total: u32,
    per_peer: HashMap<IpAddr, u32>,
}

impl ConnGate {
    pub fn new(max_total: u32, max_per_peer: u32) -> ConnGate {
        ConnGate {
            max_total,
            max_per_peer,
            open: Mutex::default(),
            counters: ConnCounters::default(),
        }
    }

    /// Admit a connection from `peer`, or say which cap it hit. The
    /// permit gives the slot back when dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnPermit, Refusal> {
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            self.counters.refused_global.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Global {
                limit: self.max_total,
            });
        }
        let n = open.per_peer.entry(peer).or_insert(0);
        if *n >= self.max_per_peer {
            self.counters
                .refused_per_peer
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerPeer {
                limit: self.max_per_peer,
            });
        }
        *n += 1;
        open.total += 1;
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(ConnPermit {
            gate: self.clone(),
            peer,
        })
    }

    fn release(&self, peer: IpAddr) {
        let mut open = lock(&self.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Forget the address so the map holds only peers that
                // have connections now.
                open.per_peer.remove(&peer);
            }
        }
    }

    pub fn stats(&self) -> ConnectionStats {
        let c = &self.counters;
        ConnectionStats {
            open: u64::from(lock(&self.open).total),
            accepted: c.accepted.load(Ordering::Relaxed),
            refused_global: c.refused_global.load(Ordering::Relaxed),
            refused_per_peer: c.refused_per_peer.load(Ordering::Relaxed),
            icreq_timeouts: c.icreq_timeouts.load(Ordering::Relaxed),
            connect_timeouts: c.connect_timeouts.load(Ordering::Relaxed),
            auth_successes: c.auth_successes.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            auth_refused_connects: c.auth_refused_connects.load(Ordering::Relaxed),
            auth_required_rejections: c.auth_required_rejections.load(Ordering::Relaxed),
        }
    }
}

/// One admitted connection's slot.
#[derive(Debug)]
pub(crate) struct ConnPermit {
    gate: Arc<ConnGate>,
    peer: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.gate.release(self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_peer_and_frees_slots() {
        let gate = Arc::new(ConnGate::new(3, 2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = gate.admit(a).unwrap();
        let _p2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::PerPeer { limit: 2 });
        let _p3 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).unwrap_err(), Refusal::Global { limit: 3 });
        drop(p1);
        let _p4 = gate.admit(a).unwrap();
        let s = gate.stats();
        assert_eq!(s.open, 3);
        assert_eq!(s.accepted, 4);
        assert_eq!(s.refused_global, 1);
        assert_eq!(s.refused_per_peer, 1);
        assert!(Refusal::PerPeer { limit: 2 }
            .to_string()
            .contains("max_connections_per_peer = 2"));
    }
}
