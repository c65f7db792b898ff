//! The node liveness loop: marks a silent node NotReady (see
//! [`crate::heartbeat`] for the rule and why a never-reporting node is left
//! alone).

use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::{Condition, ConditionStatus, Node, Severity};
use tracing::{info, warn};

use crate::conditions::set_condition;
use crate::error::ApiError;
use crate::heartbeat::{stale_message, READY, REASON_NO_HEARTBEAT};
use crate::ops::Shared;

async fn mark(s: &Shared, name: &str, timeout_s: i64) -> Result<(), ApiError> {
    let now = s.clock.now();
    let mut why = None;
    s.modify::<Node>(name, |n, _| {
        // Re-checked on the current object: a report may have just arrived.
        let heard = s.reports.last_heard(name);
        let Some(msg) = stale_message(n, heard, now, timeout_s) else {
            return false;
        };
        let st = n.status.get_or_insert_with(Default::default);
        set_condition(
            &mut st.conditions,
            Condition {
                r#type: READY.into(),
                status: ConditionStatus::False as i32,
                reason: REASON_NO_HEARTBEAT.into(),
                message: msg.clone(),
                last_transition_time: Some(prost_types::Timestamp {
                    seconds: now,
                    nanos: 0,
                }),
                severity: Severity::Warning as i32,
                observed_generation: st.observed_generation,
            },
        );
        why = Some(msg);
        true
    })
    .await?;
    if let Some(msg) = why {
        warn!(node = %name, reason = %msg, "node marked NotReady");
    }
    Ok(())
}

/// One pass over all nodes.
pub async fn check(s: &Shared, timeout_s: i64) -> Result<(), ApiError> {
    let now = s.clock.now();
    let stale: Vec<String> = s
        .cache
        .read()
        .nodes
        .iter()
        .filter(|(name, n)| stale_message(n, s.reports.last_heard(name), now, timeout_s).is_some())
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        mark(s, &name, timeout_s).await?;
    }
    Ok(())
}

/// Liveness is kept in memory, so a restarted controller has heard from
/// no one: it counts every node that has reported before as heard from
/// now, giving each agent a full timeout to reconnect instead of marking
/// every node NotReady on the first pass after a long downtime.
pub fn seed(s: &Shared) {
    let now = s.clock.now();
    let reported: Vec<String> = s
        .cache
        .read()
        .nodes
        .iter()
        .filter(|(_, n)| {
            n.status
                .as_ref()
                .is_some_and(|st| st.last_heartbeat.is_some())
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in reported {
        s.reports.heard(&name, now);
    }
}

/// Runs [`check`] every `interval` while this replica leads.
pub async fn run(s: Arc<Shared>, interval: Duration, timeout: Duration) {
    let timeout_s = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
    info!(timeout_s, "node heartbeat monitor started");
    let mut tick = tokio::time::interval(interval);
    let mut leading = false;
    loop {
        tick.tick().await;
        // A replica that just became the leader has heard only from the
        // agents streaming to it; the others report to other replicas,
        // which persist `last_heartbeat` at least every
        // nodes.heartbeat_persist_interval_seconds. Seeding gives every
        // node one full timeout before this leader judges it.
        let now_leading = s.leadership.acting().is_some();
        if now_leading && !leading {
            seed(&s);
        }
        leading = now_leading;
        let r = super::as_leader(&s, || check(&s, timeout_s)).await;
        if let Some(Err(e)) = r {
            warn!(error = %e, "heartbeat pass failed");
        }
    }
}
