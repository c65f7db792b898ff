//! Leadership of the singletons. Several controller replicas may share one
//! etcd store; every replica serves reads, watches, agents' streams and
//! writes, but the periodic loops that act on time rather than on a
//! request (burst expiry and token collection, NotReady marking, key
//! rotation) run on one replica only: the leader.
//!
//! The leader holds a key bound to an etcd lease (see
//! `store::etcd::elect`); while it runs a singleton pass, every write the
//! pass makes carries a [`LeaderGuard`] (a task-local read by
//! `Shared::commit`), and the etcd transaction compares the leader key's
//! create revision. A leader that was paused or cut off from etcd long
//! enough for its lease to expire finds that compare failing, whatever it
//! still believes: it cannot act after a new leader took over.
//!
//! The embedded redb store is one process, so that process is always the
//! leader and its writes carry no guard.
//!
//! What does not need the leader, and why:
//! * finalizer removal follows an agent's report and is a compare-and-swap
//!   on the object, so the replica holding the agent's stream does it;
//! * enrollment signing: each replica holds the same CA (the PKI directory
//!   is part of the deployment), certificate serials are random, and the
//!   Node write that admits the certificate is a compare-and-swap, so two
//!   replicas enrolling the same node cannot both win.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

pub use crate::store::LeaderGuard;

/// Leadership changes seen by this replica (won or lost), for `/metrics`
/// (`ferrofab_controller_leader_changes_total`).
pub static CHANGES: LazyLock<Counter> = LazyLock::new(Counter::default);
/// 1 while this replica is the leader (`ferrofab_controller_leader`).
pub static IS_LEADER: LazyLock<Gauge> = LazyLock::new(Gauge::default);

/// How this replica names itself to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Unique among the replicas (`store.etcd.replica_name`).
    pub name: String,
    /// Where clients reach it (shown by `ferrofab status`).
    pub endpoint: String,
}

/// What this replica knows about the leadership right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The only process (redb): runs the singletons without a guard.
    Single,
    /// The elected leader; its singleton writes carry the guard.
    Leader(LeaderGuard),
    /// Another replica (named, if known) leads, or nobody does yet.
    Follower { leader: Option<String> },
}

/// The receiving end of the campaign (cheap to clone).
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<Role>,
    /// This replica's name (empty for the single-process store).
    name: String,
}

impl Leadership {
    /// The single-process leadership of the embedded store.
    pub fn always() -> Self {
        // Nobody changes it: the receiver keeps the value after the sender
        // is gone ([`Self::changed`] then reports no more changes).
        let (_, rx) = watch::channel(Role::Single);
        Self {
            rx,
            name: String::new(),
        }
    }

    /// A leadership fed by the campaign of replica `name`.
    pub fn from_channel(rx: watch::Receiver<Role>, name: String) -> Self {
        Self { rx, name }
    }

    /// This replica's name (empty for the single-process store).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.rx.borrow().clone()
    }

    /// `Some(guard)` if this replica may run the singletons now (the guard
    /// is `None` for the single-process store).
    pub fn acting(&self) -> Option<Option<LeaderGuard>> {
        match self.role() {
            Role::Single => Some(None),
            Role::Leader(g) => Some(Some(g)),
            Role::Follower { .. } => None,
        }
    }

    /// Resolves on the next change of role.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

tokio::task_local! {
    static GUARD: Option<LeaderGuard>;
}

/// Runs `fut` (one singleton pass) with every store write it makes
/// conditional on `guard`.
pub async fn fenced<F: std::future::Future>(guard: Option<LeaderGuard>, fut: F) -> F::Output {
    GUARD.scope(guard, fut).await
}

/// The guard of the singleton pass this task runs, if any.
pub fn current_guard() -> Option<LeaderGuard> {
    GUARD.try_with(Clone::clone).ok().flatten()
}

/// One registered replica, as `ferrofab status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaView {
    pub name: String,
    pub endpoint: String,
    pub leader: bool,
}

/// One etcd member's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberView {
    pub endpoint: String,
    /// "ok" or what failed.
    pub health: String,
    pub leader: bool,
}

/// The control plane as the store sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub replicas: Vec<ReplicaView>,
    pub leader: Option<String>,
    pub members: Vec<MemberView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_guard_is_seen_only_inside_the_fenced_pass() {
        let g = LeaderGuard {
            key: "/l".into(),
            create_revision: 7,
        };
        assert_eq!(current_guard(), None);
        let inside = fenced(Some(g.clone()), async { current_guard() }).await;
        assert_eq!(inside, Some(g));
        assert_eq!(current_guard(), None);
        assert_eq!(Leadership::always().acting(), Some(None));
    }
}
