//! The leader campaign of one replica (see [`crate::leader`]).
//!
//! Each *term* grants a lease of `lease_ttl_seconds`, registers the replica
//! under `REPLICAS/name` bound to it, and then, every tick, renews the
//! lease and tries to take the leader key with one transaction: "if the
//! key does not exist, put it with my name and lease; else read it". The
//! key's create revision is the leader's fence ([`LeaderGuard`]).
//!
//! A term ends when a renewal fails or does not come back before the
//! lease would have run out as far as this replica can tell; the replica
//! then reports itself a follower at once and starts a new term with a new
//! lease. Stepping down locally is a courtesy: safety comes from the fence
//! on every singleton write, which holds even if this process is paused
//! for longer than the lease.

use std::time::Instant;

use etcd_client::PutOptions;

use super::*;
use crate::leader::{Replica, Role, CHANGES, IS_LEADER};
use crate::store::LeaderGuard;

/// Longest pause between two renewals (and leader-key checks); shorter
/// when a third of the TTL is shorter. Half a second keeps a takeover
/// within about one TTL of the old leader's last renewal at the cost of two
/// small etcd requests per replica per second.
const MAX_TICK: Duration = Duration::from_millis(500);

/// Pause before a new term after a failed one.
const RETRY: Duration = Duration::from_millis(500);

/// The keys beside the object prefix: `/ferrofab/v1/objects/` gives
/// `/ferrofab/v1/leader` and `/ferrofab/v1/replicas/`. Outside the prefix,
/// so neither the follower nor any watcher sees them.
pub(crate) fn control_keys(prefix: &str) -> (String, String) {
    let trimmed = prefix.trim_end_matches('/');
    let parent = match trimmed.rfind('/') {
        Some(i) => &trimmed[..=i],
        None => "/",
    };
    (format!("{parent}leader"), format!("{parent}replicas/"))
}

/// Shared between the campaign and [`EtcdStore::resign`]: the current
/// term's lease, and whether the replica has resigned for good.
#[derive(Default)]
pub(super) struct Term {
    pub(super) lease: std::sync::atomic::AtomicI64,
    pub(super) resigned: std::sync::atomic::AtomicBool,
}

impl Term {
    pub(super) fn resigned(&self) -> bool {
        self.resigned.load(Ordering::SeqCst)
    }
}

pub(super) struct Campaign {
    pub(super) term: Arc<Term>,
    pub(super) client: Client,
    pub(super) leader_key: String,
    pub(super) replicas: String,
    pub(super) replica: Replica,
    pub(super) ttl: Duration,
    pub(super) tx: watch::Sender<Role>,
}

impl Campaign {
    fn tick(&self) -> Duration {
        (self.ttl / 3).min(MAX_TICK)
    }

    fn set(&self, role: Role) {
        let was_leader = matches!(*self.tx.borrow(), Role::Leader(_));
        let leader = matches!(role, Role::Leader(_));
        if was_leader != leader {
            CHANGES.inc();
            IS_LEADER.set(i64::from(leader));
            if leader {
                info!(replica = %self.replica.name, key = %self.leader_key, "this replica is now the leader");
            } else {
                warn!(replica = %self.replica.name, "this replica is no longer the leader");
            }
        }
        self.tx.send_if_modified(|cur| {
            let changed = *cur != role;
            *cur = role;
            changed
        });
    }

    pub(super) async fn run(self) {
        loop {
            let e = self.term().await;
            if self.term.resigned() {
                self.set(Role::Follower { leader: None });
                info!(replica = %self.replica.name, "resigned from the leader campaign");
                return;
            }
            warn!(replica = %self.replica.name, error = %e, "leader campaign term ended; starting a new one");
            self.set(Role::Follower { leader: None });
            tokio::time::sleep(RETRY).await;
        }
    }

    /// One lease's life; returns why it ended.
    async fn term(&self) -> StoreError {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let granted = Instant::now();
        let lease = match self.client.lease_client().grant(ttl, None).await {
            Ok(l) => l.id(),
            Err(e) => return io(e),
        };
        self.term.lease.store(lease, Ordering::SeqCst);
        let mut valid_until = granted + self.ttl;
        let (mut keeper, mut renewals) = match self.client.lease_client().keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => return io(e),
        };
        let put = PutOptions::new().with_lease(lease);
        let me = format!("{}{}", self.replicas, self.replica.name);
        if let Err(e) = self
            .client
            .kv_client()
            .put(me, self.replica.endpoint.clone(), Some(put))
            .await
        {
            return io(e);
        }
        let mut tick = tokio::time::interval(self.tick());
        loop {
            tick.tick().await;
            if self.term.resigned() {
                return StoreError::Closed;
            }
            let left = valid_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return io("lease not renewed in time");
            }
            let step = async {
                let sent = Instant::now();
                keeper.keep_alive().await.map_err(io)?;
                let r = renewals
                    .message()
                    .await
                    .map_err(io)?
                    .ok_or_else(|| io("lease renewal stream ended"))?;
                if r.ttl() <= 0 {
                    return Err(io("lease expired"));
                }
                let secs = u64::try_from(r.ttl()).unwrap_or(0);
                Ok::<_, StoreError>(sent + Duration::from_secs(secs))
            };
            match tokio::time::timeout(left, step).await {
                Ok(Ok(until)) => valid_until = until,
                Ok(Err(e)) => return e,
                Err(_) => return io("lease renewal not answered before the lease ran out"),
            }
            let left = valid_until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.contend(lease)).await {
                Ok(Ok(role)) => self.set(role),
                Ok(Err(e)) => return e,
                Err(_) => return io("leader key check not answered before the lease ran out"),
            }
        }
    }

    /// Takes the leader key if free; says who holds it.
    async fn contend(&self, lease: i64) -> Result<Role, StoreError> {
        let key = self.leader_key.clone();
        let t = EtcdTxn::new()
            .when([EtcdCompare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                key.clone(),
                self.replica.name.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.client.kv_client().txn(t).await.map_err(io)?;
        if resp.succeeded() {
            let revision = rev(resp.header().map_or(0, |h| h.revision()));
            return Ok(Role::Leader(LeaderGuard {
                key,
                create_revision: revision,
            }));
        }
        let held = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        Ok(match held {
            Some(kv) if kv.lease() == lease => Role::Leader(LeaderGuard {
                key,
                create_revision: rev(kv.create_revision()),
            }),
            Some(kv) => Role::Follower {
                leader: Some(String::from_utf8_lossy(kv.value()).into_owned()),
            },
            None => Role::Follower { leader: None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::control_keys;

    #[test]
    fn control_keys_sit_beside_the_prefix() {
        assert_eq!(
            control_keys("/ferrofab/v1/objects/"),
            (
                "/ferrofab/v1/leader".into(),
                "/ferrofab/v1/replicas/".into()
            )
        );
        assert_eq!(control_keys("/x/"), ("/leader".into(), "/replicas/".into()));
    }
}
