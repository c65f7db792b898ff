//! Node liveness. Agents heartbeat through ReportStatus, which sets the
//! node's `Ready` condition True and records the time in memory
//! ([`crate::report::ReportGate`]); the stored `status.last_heartbeat` is
//! refreshed only with other changes or every
//! `nodes.heartbeat_persist_interval_seconds`, so that heartbeats do not
//! rewrite the Node durably each time. This loop
//! flips `Ready` to False, reason `NoHeartbeat`, once a node has been silent
//! for the configured timeout, so `ferrofab node list` shows a dead agent
//! instead of a stale "Ready", and placement stops choosing pools on it.
//!
//! A node that has never reported is left alone: layouts are commonly
//! applied before the machines' agents are enrolled, and refusing to place
//! on them then would make that order impossible.

use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::condition::{self, ConditionType, Reason};
use ferrofab_proto::v1::{Condition, ConditionStatus, Node};
use tracing::{info, warn};

use crate::api::Shared;
use crate::error::ApiError;

/// Condition type agents' heartbeats keep True.
pub const READY: &str = ConditionType::Ready.as_str();
/// Reason of a Ready=False set by this module.
pub const REASON_NO_HEARTBEAT: &str = Reason::NoHeartbeat.as_str();

fn ready_condition(n: &Node) -> Option<&Condition> {
    n.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == READY)
}

/// Why the node must be marked NotReady now, if it must: it reported once,
/// has been silent for `timeout_s` or more, and is not already marked.
/// `heard` is the in-memory time of its last report (see
/// [`crate::report::ReportGate`]); the stored `last_heartbeat` is refreshed
/// only now and then, so the later of the two counts.
pub fn stale_message(n: &Node, heard: Option<i64>, now: i64, timeout_s: i64) -> Option<String> {
    let stored = n
        .status
        .as_ref()?
        .last_heartbeat
        .as_ref()
        .map(|t| t.seconds);
    let last = stored.max(heard)?;
    let silent = now - last;
    if silent < timeout_s {
        return None;
    }
    let already = ready_condition(n).is_some_and(|c| c.status == ConditionStatus::False as i32);
    (!already).then(|| format!("no heartbeat for {silent}s (timeout {timeout_s}s)"))
}

/// Why a node must not receive new work, if it must not: its Ready
/// condition is False. Unknown or absent (never reported) does not count.
pub fn not_ready(n: &Node) -> Option<String> {
    ready_condition(n)
        .filter(|c| c.status == ConditionStatus::False as i32)
        .map(|c| format!("{}: {}", c.reason, c.message))
}

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
        let at = prost_types::Timestamp {
            seconds: now,
            nanos: 0,
        };
        condition::set(
            &mut st.conditions,
            Condition {
                observed_generation: st.observed_generation,
                ..condition::new(READY, false, REASON_NO_HEARTBEAT, msg.clone(), at)
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

/// Runs [`check`] every `interval` until the process exits.
pub async fn run(s: Arc<Shared>, interval: Duration, timeout: Duration) {
    let timeout_s = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
    seed(&s);
    info!(timeout_s, "node heartbeat monitor started");
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if let Err(e) = check(&s, timeout_s).await {
            warn!(error = %e, "heartbeat pass failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::NodeStatus;

    fn node(last: Option<i64>, ready: Option<ConditionStatus>) -> Node {
        Node {
            status: Some(NodeStatus {
                last_heartbeat: last.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                conditions: ready
                    .map(|st| Condition {
                        r#type: READY.into(),
                        status: st as i32,
                        reason: "X".into(),
                        message: "m".into(),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn stale_only_after_timeout_and_only_once() {
        let n = node(Some(100), Some(ConditionStatus::True));
        assert_eq!(stale_message(&n, None, 144, 45), None);
        let msg = stale_message(&n, None, 150, 45).expect("stale");
        assert_eq!(msg, "no heartbeat for 50s (timeout 45s)");
        let marked = node(Some(100), Some(ConditionStatus::False));
        assert_eq!(stale_message(&marked, None, 500, 45), None);
    }

    #[test]
    fn in_memory_heartbeat_counts_over_the_stored_one() {
        let n = node(Some(100), Some(ConditionStatus::True));
        assert_eq!(stale_message(&n, Some(140), 150, 45), None, "heard at 140");
        let msg = stale_message(&n, Some(140), 190, 45).expect("stale");
        assert_eq!(msg, "no heartbeat for 50s (timeout 45s)");
        assert!(
            stale_message(&n, Some(90), 150, 45).is_some(),
            "stored is later"
        );
    }

    #[test]
    fn never_reported_nodes_are_left_alone() {
        assert_eq!(stale_message(&node(None, None), None, 10_000, 45), None);
        assert_eq!(not_ready(&node(None, None)), None);
        assert!(not_ready(&node(Some(1), Some(ConditionStatus::False))).is_some());
        assert!(not_ready(&node(Some(1), Some(ConditionStatus::True))).is_none());
    }
}
