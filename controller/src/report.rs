//! Intake of agents' status reports (ReportStatus). A report is the node's
//! own word about itself, and a buggy or hostile node must not be able to
//! grow the objects everyone lists, nor write the store as fast as it can
//! send. So, per report:
//!
//! - only condition types the controller knows are kept; others are
//!   dropped (and counted) rather than refusing the report, so an agent of
//!   a newer version with a condition this controller does not know still
//!   heartbeats and reports its exports;
//! - the node's agent-owned conditions are *replaced* by the reported set,
//!   not merged into it, so a condition that stops being reported (a fixed
//!   `DataPath` problem) goes away;
//! - reasons and messages are cut to a fixed length;
//! - the number of exports and connections is bounded;
//! - each node has a token bucket of reports;
//! - liveness (the heartbeat) lives in memory: a report that changes
//!   nothing else does not rewrite the Node, and the stored
//!   `last_heartbeat` is refreshed only every
//!   `nodes.heartbeat_persist_interval_seconds`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrofab_proto::v1::{
    Condition, ConditionStatus, ExportStatus, NodeStatus, ReportStatusRequest, Severity,
    VolumePhase, VolumeStatus,
};

use crate::conditions::set_condition;
use crate::config::NodesConfig;
use crate::error::ApiError;

/// Condition types an agent may report on its Node (see the agent's
/// `status::node_conditions`). `Ready` is the controller's own.
pub const NODE_CONDITIONS: &[&str] = &["ConfigApplied", "DataListeners", "DataPath", "Certificate"];
/// Condition types an agent may report for one of its exports.
pub const EXPORT_CONDITIONS: &[&str] = &["Exported"];
/// Condition types an agent may report for one of its connections.
pub const CONNECTION_CONDITIONS: &[&str] = &["Connected"];

/// Longest condition reason kept (CamelCase words; a fixed constant
/// because no legitimate reason comes near it).
pub const MAX_REASON_BYTES: usize = 128;
/// Longest condition message kept: enough for a few joined error lines;
/// a fixed constant because the message is for humans in `node list`.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest `agent_version` kept.
pub const MAX_AGENT_VERSION_BYTES: usize = 128;
/// Longest device path accepted in a connection report (Linux PATH_MAX).
pub const MAX_DEVICE_PATH_BYTES: usize = 4096;

/// Condition type the controller keeps True while a node reports.
const READY: &str = crate::heartbeat::READY;

/// What sanitising a list of reported conditions did.
#[derive(Debug, Default, PartialEq)]
pub struct Sanitized {
    pub conditions: Vec<Condition>,
    /// Conditions of unknown types, and repeats of a type.
    pub dropped: u64,
    /// Reasons or messages cut to their limit.
    pub truncated: u64,
}

/// `s` cut to at most `max` bytes at a character boundary, with "…"
/// marking the cut. Returns whether it was cut.
fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mark = "…";
    let mut end = max.saturating_sub(mark.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(mark);
    true
}

/// Keeps the first condition of each type in `known`, with its reason and
/// message bounded and its status and severity made valid enum values.
/// Transition times are the controller's (see [`stamp`]), not the
/// agent's, so they are cleared here.
pub fn sanitize(given: &[Condition], known: &[&str]) -> Sanitized {
    let mut out = Sanitized::default();
    for c in given {
        let dup = out.conditions.iter().any(|k| k.r#type == c.r#type);
        if dup || !known.contains(&c.r#type.as_str()) {
            out.dropped += 1;
            continue;
        }
        let mut c = c.clone();
        out.truncated += u64::from(truncate(&mut c.reason, MAX_REASON_BYTES));
        out.truncated += u64::from(truncate(&mut c.message, MAX_MESSAGE_BYTES));
        if ConditionStatus::try_from(c.status).is_err() {
            c.status = ConditionStatus::Unknown as i32;
        }
        if Severity::try_from(c.severity).is_err() {
            c.severity = Severity::Info as i32;
        }
        c.last_transition_time = None;
        c.observed_generation = 0;
        out.conditions.push(c);
    }
    out
}

/// Gives each condition its transition time: the old one when the status
/// did not change, else `now`.
fn stamp(conds: &mut [Condition], old: &[Condition], now: prost_types::Timestamp) {
    for c in conds {
        let prev = old
            .iter()
            .find(|o| o.r#type == c.r#type && o.status == c.status);
        c.last_transition_time = Some(prev.and_then(|o| o.last_transition_time).unwrap_or(now));
    }
}

/// Refuses a report listing more exports or connections than allowed, or
/// a device path no system has.
pub fn check_bounds(r: &ReportStatusRequest, max_entries: usize) -> Result<(), ApiError> {
    for (field, n) in [
        ("exports", r.exports.len()),
        ("connections", r.connections.len()),
    ] {
        if n > max_entries {
            return Err(ApiError::invalid(
                field,
                format!(
                    "{n} entries in one report; at most {max_entries} (nodes.max_report_entries)"
                ),
            ));
        }
    }
    if let Some((i, c)) = r
        .connections
        .iter()
        .enumerate()
        .find(|(_, c)| c.device_path.len() > MAX_DEVICE_PATH_BYTES)
    {
        return Err(ApiError::invalid(
            &format!("connections[{i}].device_path"),
            format!(
                "{} bytes; at most {MAX_DEVICE_PATH_BYTES}",
                c.device_path.len()
            ),
        ));
    }
    Ok(())
}

/// The Node status after a report, and whether it must be written.
#[derive(Debug, PartialEq)]
pub struct NodeUpdate {
    pub status: NodeStatus,
    pub write: bool,
}

/// Computes the node's status from its stored one and a sanitised report.
/// Written when anything but the heartbeat and the capacity figures
/// changed, or when the stored heartbeat is `persist_every_s` old; the
/// capacity figures (informational, changed by every write on the node's
/// filesystems) ride along then.
pub fn next_node_status(
    cur: Option<&NodeStatus>,
    reported: &NodeStatus,
    agent_conditions: Vec<Condition>,
    generation: u64,
    now: prost_types::Timestamp,
    persist_every_s: i64,
) -> NodeUpdate {
    let old = cur.cloned().unwrap_or_default();
    let mut conditions = vec![Condition {
        r#type: READY.into(),
        status: ConditionStatus::True as i32,
        reason: "AgentReporting".into(),
        message: "agent reported status".into(),
        last_transition_time: None,
        severity: Severity::Info as i32,
        observed_generation: 0,
    }];
    conditions.extend(agent_conditions);
    stamp(&mut conditions, &old.conditions, now);
    let mut agent_version = reported.agent_version.clone();
    truncate(&mut agent_version, MAX_AGENT_VERSION_BYTES);
    let significant = cur.is_none()
        || old.conditions != conditions
        || old.agent_version != agent_version
        || old.observed_generation != generation
        || old.dhchap_capable != reported.dhchap_capable
        || old.dhchap_unidirectional != reported.dhchap_unidirectional
        || old.reports_allowed_hosts != reported.reports_allowed_hosts;
    let heartbeat_due = old
        .last_heartbeat
        .as_ref()
        .is_none_or(|t| now.seconds.saturating_sub(t.seconds) >= persist_every_s);
    let write = significant || heartbeat_due;
    let status = NodeStatus {
        observed_generation: generation,
        conditions,
        last_heartbeat: if write { Some(now) } else { old.last_heartbeat },
        agent_version,
        capacity_bytes: if write {
            reported.capacity_bytes
        } else {
            old.capacity_bytes
        },
        free_bytes: if write {
            reported.free_bytes
        } else {
            old.free_bytes
        },
        dhchap_capable: reported.dhchap_capable,
        dhchap_unidirectional: reported.dhchap_unidirectional,
        reports_allowed_hosts: reported.reports_allowed_hosts,
    };
    NodeUpdate { status, write }
}

/// What a storage node said about one volume's export, its conditions
/// already sanitised.
#[derive(Debug, Default, Clone)]
pub struct ExportReport {
    pub ready: bool,
    /// The volume generation the agent checked the export against.
    pub generation: u64,
    pub conditions: Vec<Condition>,
}

impl ExportReport {
    pub fn new(e: &ExportStatus, conditions: Vec<Condition>) -> Self {
        Self {
            ready: e.ready,
            generation: e.generation,
            conditions,
        }
    }
}

/// The volume status after a report about its export on `node`, or `None`
/// when the report changes nothing (the common case: no store write).
///
/// `observed_generation` advances to `generation` only when the export is
/// ready *for* that generation: a ready report about an older one (sent
/// before the agent saw the resize) says nothing about the new size. The
/// agent's conditions are refreshed on every report that changes them, so
/// the `Exported` message follows the size and the hosts. This is a status
/// write: it never touches the spec or the generation.
pub fn next_volume_status(
    cur: &VolumeStatus,
    generation: u64,
    node: &str,
    rep: Option<&ExportReport>,
    now: prost_types::Timestamp,
) -> Option<VolumeStatus> {
    let mut st = cur.clone();
    let ready = rep.is_some_and(|r| r.ready);
    let reported_gen = rep.map_or(0, |r| r.generation);
    if ready != cur.export_ready {
        st.export_ready = ready;
        st.phase = if ready {
            VolumePhase::Ready
        } else {
            VolumePhase::Placed
        } as i32;
        set_condition(&mut st.conditions, exported(ready, node, now));
    }
    if ready && reported_gen >= generation && cur.observed_generation < generation {
        st.observed_generation = generation;
    }
    for c in rep.map_or(&[][..], |r| r.conditions.as_slice()) {
        let mut c = c.clone();
        c.observed_generation = reported_gen;
        c.last_transition_time = Some(now);
        set_condition(&mut st.conditions, c);
    }
    (st != *cur).then_some(st)
}

/// The controller's own `Exported` condition, which the agent's (more
/// detailed) one replaces when the report carries it.
fn exported(ready: bool, node: &str, now: prost_types::Timestamp) -> Condition {
    let (status, reason, message, severity) = if ready {
        (
            ConditionStatus::True,
            "ExportReady",
            format!("node {node} serves the export"),
            Severity::Info,
        )
    } else {
        (
            ConditionStatus::False,
            "ExportNotReady",
            format!("node {node} does not report the export ready"),
            Severity::Warning,
        )
    };
    Condition {
        r#type: "Exported".into(),
        status: status as i32,
        reason: reason.into(),
        message,
        last_transition_time: Some(now),
        severity: severity as i32,
        observed_generation: 0,
    }
}

/// A node's report allowance.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Revision of the last desired-state snapshot sent to the node on
    /// its own watch ([`ReportGate::sent`]).
    sent: u64,
    /// The last snapshot revision a report answered without a token.
    answered: u64,
}

/// Refusal of a report for going over the node's rate.
#[derive(Debug, thiserror::Error)]
#[error(
    "node {node} sent ReportStatus faster than nodes.report_rate_per_second = {rate} \
     (burst nodes.report_burst = {burst}); retry in {} ms",
    retry_after.as_millis()
)]
pub struct Throttled {
    pub node: String,
    pub rate: f64,
    pub burst: u32,
    pub retry_after: Duration,
}

impl From<Throttled> for tonic::Status {
    /// RESOURCE_EXHAUSTED with the delay both in the message and in the
    /// `grpc-retry-pushback-ms` trailer (gRPC's server pushback).
    fn from(t: Throttled) -> Self {
        let mut md = tonic::metadata::MetadataMap::new();
        let ms = t.retry_after.as_millis().max(1).to_string();
        if let Ok(v) = ms.parse() {
            md.insert("grpc-retry-pushback-ms", v);
        }
        tonic::Status::with_metadata(tonic::Code::ResourceExhausted, t.to_string(), md)
    }
}

/// Buckets idle longer than this are forgotten when the map is pruned
/// (a full bucket and no bucket are the same).
const BUCKET_IDLE: Duration = Duration::from_secs(600);
/// Prune the bucket map once it holds this many nodes.
const PRUNE_AT: usize = 4096;

/// Per-node report rate limits and in-memory liveness.
#[derive(Debug)]
pub struct ReportGate {
    rate: f64,
    burst: u32,
    pub max_entries: usize,
    pub persist_every_s: i64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Node → clock seconds of its last accepted or throttled report.
    seen: Mutex<HashMap<String, i64>>,
}

impl ReportGate {
    pub fn new(cfg: &NodesConfig) -> Self {
        Self {
            rate: cfg.report_rate_per_second,
            burst: cfg.report_burst,
            max_entries: cfg.max_report_entries,
            persist_every_s: i64::try_from(cfg.heartbeat_persist_interval_seconds)
                .unwrap_or(i64::MAX),
            buckets: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records that the desired-state snapshot of `revision` was sent to
    /// `node` on its own watch, at `at`: the node's first report that
    /// answers it is admitted without a token ([`ReportGate::admit`]).
    pub fn sent(&self, node: &str, revision: u64, at: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let b = self.bucket(&mut buckets, node, at);
        b.sent = b.sent.max(revision);
    }

    fn bucket<'a>(
        &self,
        buckets: &'a mut HashMap<String, Bucket>,
        node: &str,
        at: Instant,
    ) -> &'a mut Bucket {
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| at.saturating_duration_since(b.at) < BUCKET_IDLE);
        }
        buckets.entry(node.to_string()).or_insert(Bucket {
            tokens: f64::from(self.burst),
            at,
            sent: 0,
            answered: 0,
        })
    }

    /// Admits a report of `node` at `at` that applied the desired state of
    /// `desired_revision`, or says how long to wait.
    ///
    /// The first report answering the latest snapshot the controller sent
    /// the node is admitted without a token: it is what other nodes may
    /// be waiting for (a storage node admitting a workstation's host, a
    /// workstation's disconnect that lets a detach finish), and there is
    /// at most one per snapshot, whose pace the controller sets itself
    /// (`nodes.desired_state_interval_ms`). Every other report (heartbeats,
    /// retries, a second answer, a revision never sent) takes a token.
    pub fn admit(&self, node: &str, desired_revision: u64, at: Instant) -> Result<(), Throttled> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let rate = self.rate;
        let burst = f64::from(self.burst);
        let b = self.bucket(&mut buckets, node, at);
        let elapsed = at.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = at;
        if desired_revision > b.answered && desired_revision == b.sent {
            b.answered = desired_revision;
            return Ok(());
        }
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - b.tokens) / rate;
        Err(Throttled {
            node: node.to_string(),
            rate: self.rate,
            burst: self.burst,
            retry_after: Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(1)),
        })
    }

    /// Records that `node` was heard from at clock second `now`.
    pub fn heard(&self, node: &str, now: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get_mut(node) {
            Some(t) => *t = (*t).max(now),
            None => {
                seen.insert(node.to_string(), now);
            }
        }
    }

    /// Clock seconds of the last report from `node` since start-up.
    pub fn last_heard(&self, node: &str) -> Option<i64> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(kind: &str, ok: bool, msg: &str) -> Condition {
        Condition {
            r#type: kind.into(),
            status: if ok {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            } as i32,
            reason: "R".into(),
            message: msg.into(),
            last_transition_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn ts(seconds: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn unknown_and_repeated_types_are_dropped_and_fields_cut() {
        let mut given: Vec<Condition> = (0..10_000)
            .map(|i| c(&format!("Junk{i}"), true, "x"))
            .collect();
        given.push(c("DataPath", false, &"é".repeat(5000)));
        given.push(c("DataPath", true, "again"));
        given.push(c("Ready", true, "agents may not set Ready"));
        let s = sanitize(&given, NODE_CONDITIONS);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.dropped, 10_002);
        assert_eq!(s.truncated, 1);
        let m = &s.conditions[0].message;
        assert!(
            m.len() <= MAX_MESSAGE_BYTES && m.ends_with('…'),
            "{}",
            m.len()
        );
        assert_eq!(s.conditions[0].last_transition_time, None);
    }

    #[test]
    fn reported_set_replaces_the_previous_one() {
        let first = next_node_status(
            None,
            &NodeStatus::default(),
            vec![c("DataPath", false, "no module")],
            1,
            ts(100),
            15,
        );
        assert!(first.write);
        let types: Vec<_> = first
            .status
            .conditions
            .iter()
            .map(|c| c.r#type.as_str())
            .collect();
        assert_eq!(types, ["Ready", "DataPath"]);
        let fixed = next_node_status(
            Some(&first.status),
            &NodeStatus::default(),
            vec![c("ConfigApplied", true, "ok")],
            1,
            ts(101),
            15,
        );
        assert!(fixed.write);
        let types: Vec<_> = fixed
            .status
            .conditions
            .iter()
            .map(|c| c.r#type.as_str())
            .collect();
        assert_eq!(
            types,
            ["Ready", "ConfigApplied"],
            "DataPath no longer reported"
        );
    }

    #[test]
    fn heartbeat_only_reports_are_not_written_until_the_persist_interval() {
        let reported = NodeStatus {
            agent_version: "1".into(),
            free_bytes: 10,
            ..Default::default()
        };
        let conds = || vec![c("ConfigApplied", true, "ok")];
        let first = next_node_status(None, &reported, conds(), 1, ts(100), 15);
        assert!(first.write);
        let mut busier = reported.clone();
        busier.free_bytes = 9;
        let again = next_node_status(Some(&first.status), &busier, conds(), 1, ts(110), 15);
        assert!(!again.write, "only the heartbeat and free bytes changed");
        assert_eq!(again.status, first.status);
        let due = next_node_status(Some(&first.status), &busier, conds(), 1, ts(115), 15);
        assert!(due.write);
        assert_eq!(due.status.free_bytes, 9);
        assert_eq!(due.status.last_heartbeat, Some(ts(115)));
        let ready = &due.status.conditions[0];
        assert_eq!(ready.last_transition_time, Some(ts(100)), "no transition");
        let flipped = next_node_status(
            Some(&due.status),
            &busier,
            vec![c("ConfigApplied", false, "restart")],
            1,
            ts(116),
            15,
        );
        assert!(flipped.write, "a condition changed");
        assert_eq!(
            flipped.status.conditions[1].last_transition_time,
            Some(ts(116))
        );
    }

    fn exported(msg: &str) -> Vec<Condition> {
        let mut c = c("Exported", true, msg);
        c.last_transition_time = None;
        vec![c]
    }

    fn ready_for(generation: u64, msg: &str) -> ExportReport {
        ExportReport {
            ready: true,
            generation,
            conditions: exported(msg),
        }
    }

    #[test]
    fn observed_generation_follows_only_reports_for_the_current_generation() {
        let placed = VolumeStatus {
            observed_generation: 1,
            ..Default::default()
        };
        let first = next_volume_status(&placed, 1, "s1", Some(&ready_for(1, "1 MiB")), ts(10))
            .expect("became ready");
        assert!(first.export_ready);
        assert_eq!(first.phase, VolumePhase::Ready as i32);
        assert_eq!(first.observed_generation, 1);
        assert_eq!(
            next_volume_status(&first, 1, "s1", Some(&ready_for(1, "1 MiB")), ts(11)),
            None,
            "the same report again writes nothing"
        );
        // Resized: generation 2. The agent has not seen it yet.
        let stale = next_volume_status(&first, 2, "s1", Some(&ready_for(1, "1 MiB")), ts(12));
        assert_eq!(stale, None, "a report about generation 1 observes nothing");
        let grown = next_volume_status(&first, 2, "s1", Some(&ready_for(2, "4 MiB")), ts(13))
            .expect("generation 2 confirmed");
        assert_eq!(grown.observed_generation, 2);
        let e = grown.conditions.iter().find(|c| c.r#type == "Exported");
        let e = e.expect("Exported");
        assert_eq!(e.message, "4 MiB", "the message follows the new size");
        assert_eq!(e.observed_generation, 2);
        assert_eq!(
            e.last_transition_time,
            Some(ts(10)),
            "status held: no transition"
        );
    }

    #[test]
    fn a_changed_message_is_written_without_a_generation_change() {
        let cur = next_volume_status(
            &VolumeStatus::default(),
            1,
            "s1",
            Some(&ready_for(1, "0 connected")),
            ts(10),
        )
        .expect("ready");
        let next = next_volume_status(&cur, 1, "s1", Some(&ready_for(1, "1 connected")), ts(11))
            .expect("message changed");
        assert_eq!(next.conditions[0].message, "1 connected");
    }

    #[test]
    fn a_lost_export_is_not_ready_and_keeps_controller_conditions() {
        let mut cur = next_volume_status(
            &VolumeStatus::default(),
            1,
            "s1",
            Some(&ready_for(1, "ok")),
            ts(10),
        )
        .expect("ready");
        cur.conditions.push(c("Placed", true, "on pool p"));
        let lost = next_volume_status(&cur, 2, "s1", None, ts(11)).expect("lost");
        assert!(!lost.export_ready);
        assert_eq!(lost.phase, VolumePhase::Placed as i32);
        assert_eq!(
            lost.observed_generation, 1,
            "nothing confirmed generation 2"
        );
        let types: Vec<_> = lost.conditions.iter().map(|c| c.r#type.as_str()).collect();
        assert_eq!(types, ["Exported", "Placed"]);
        assert_eq!(lost.conditions[0].status, ConditionStatus::False as i32);
    }

    #[test]
    fn token_bucket_allows_bursts_and_the_rate_then_refuses_with_a_delay() {
        let gate = ReportGate::new(&NodesConfig {
            report_rate_per_second: 2.0,
            report_burst: 5,
            ..Default::default()
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            gate.admit("n1", 0, t0).expect("burst");
        }
        let e = gate.admit("n1", 0, t0).expect_err("over the burst");
        assert_eq!(e.retry_after, Duration::from_millis(500));
        assert!(
            e.to_string().contains("nodes.report_rate_per_second = 2"),
            "{e}"
        );
        gate.admit("n2", 0, t0)
            .expect("other nodes have their own bucket");
        gate.admit("n1", 0, t0 + Duration::from_millis(500))
            .expect("refilled");
        let st: tonic::Status = gate
            .admit("n1", 0, t0 + Duration::from_millis(500))
            .expect_err("empty")
            .into();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            st.metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()),
            Some("500")
        );
    }

    /// One answer per snapshot sent goes past an empty bucket (a storage
    /// node's admission must not wait for a refill); a second answer of
    /// the same snapshot, an older one, or a revision never sent does not.
    #[test]
    fn the_first_answer_to_a_sent_snapshot_needs_no_token() {
        let gate = ReportGate::new(&NodesConfig {
            report_rate_per_second: 1.0,
            report_burst: 1,
            ..Default::default()
        });
        let t0 = Instant::now();
        gate.admit("n", 0, t0).expect("burst");
        gate.admit("n", 7, t0)
            .expect_err("revision 7 was never sent");
        gate.sent("n", 7, t0);
        gate.admit("n", 7, t0).expect("answers the snapshot sent");
        gate.admit("n", 7, t0)
            .expect_err("a second answer takes a token");
        gate.sent("n", 9, t0);
        gate.admit("n", 8, t0).expect_err("not the latest snapshot");
        gate.admit("n", 9, t0).expect("answers the latest snapshot");
        gate.admit("m", 9, t0).expect("burst of another node");
        gate.admit("m", 9, t0)
            .expect_err("a snapshot sent to n is not one sent to m");
        let later = t0 + Duration::from_secs(1);
        gate.admit("n", 9, later).expect("refilled");
    }

    #[test]
    fn the_agents_own_rate_fits_the_default_budget() {
        // The agent reports every 5 s (agent::HEARTBEAT) and after each
        // reconcile pass; passes follow desired-state snapshots, at most one
        // per desired_state_interval_ms (100 ms). A minute of a snapshot
        // every 100 ms plus heartbeats must pass.
        let gate = ReportGate::new(&NodesConfig::default());
        let t0 = Instant::now();
        for i in 0..600u64 {
            gate.admit("n", 0, t0 + Duration::from_millis(100 * i))
                .unwrap_or_else(|e| panic!("report {i}: {e}"));
            if i % 50 == 0 {
                gate.admit("n", 0, t0 + Duration::from_millis(100 * i))
                    .expect("heartbeat");
            }
        }
    }

    #[test]
    fn bounds_name_the_field() {
        let r = ReportStatusRequest {
            exports: vec![Default::default(); 3],
            ..Default::default()
        };
        let e = check_bounds(&r, 2).expect_err("too many");
        assert!(
            e.to_string().contains("exports") && e.to_string().contains("nodes.max_report_entries")
        );
        let r = ReportStatusRequest {
            connections: vec![ferrofab_proto::v1::ConnectionStatus {
                device_path: "x".repeat(MAX_DEVICE_PATH_BYTES + 1),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = check_bounds(&r, 2).expect_err("long path");
        assert!(e.to_string().contains("connections[0].device_path"), "{e}");
    }
}
