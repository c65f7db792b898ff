//! Node liveness. Agents heartbeat through ReportStatus, which sets the
//! node's `Ready` condition True and records the time in memory
//! (`report::ReportGate`); the stored `status.last_heartbeat` is
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
//!
//! This module holds the rules; the loop that applies them is
//! `loops::heartbeat`.

use ferrofab_proto::v1::{Condition, ConditionStatus, Node};

/// Condition type agents' heartbeats keep True.
pub const READY: &str = "Ready";
/// Reason of a Ready=False set by this module.
pub const REASON_NO_HEARTBEAT: &str = "NoHeartbeat";

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
/// `report::ReportGate`); the stored `last_heartbeat` is refreshed
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
