//! The event deriver: turns changes of the objects into events
//! ([`crate::ops::events`]) by comparing a few facts of an object
//! (placement, export, size, attachment, readiness, warning conditions)
//! before and after each committed change of it.
//!
//! It follows the store's watch, so it sees every change in revision
//! order (nothing is sampled, a create followed at once by a grow gives
//! both events) and every way an object changes (the API, Apply, agents'
//! reports, the loops) yields the same events without a call at each
//! write site. It costs nothing while nothing changes. Refusals are not
//! changes of objects: the API records them
//! ([`crate::ops::events::refused`]).
//!
//! With several replicas on one etcd store every replica follows the
//! watch but only the leader records ([`crate::leader`]).
//!
//! On start, and after falling behind the watch hub, the cache's objects
//! are the baseline: a restart records nothing for objects that were
//! already there, and changes missed while behind leave no event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::{
    Attachment, AttachmentPhase, Condition, ConditionStatus, Kind, Node, Pool, Severity, Tenant,
    Volume,
};
use ferrofab_types::EventReason;
use prost::Message as _;

use crate::cache::Objects;
use crate::ops::events::{record, Record};
use crate::ops::Shared;
use crate::store::{Event, EventKind};

/// Pause before following the store again after the watch could not be
/// opened. A named constant: only a stopping store fails here.
const RETRY: Duration = Duration::from_secs(1);

/// What events are derived from, per object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pool: String,
    node: String,
    exported: bool,
    nqn: String,
    size_bytes: u64,
    expired: Option<(String, String)>,
    attached: bool,
    device: String,
    ready: Option<bool>,
    ready_why: String,
    /// Warning conditions not covered above: type → (reason, message).
    warnings: BTreeMap<String, (String, String)>,
}

type Key = (Kind, String);

fn warnings(conds: &[Condition], skip: &[&str]) -> BTreeMap<String, (String, String)> {
    conds
        .iter()
        .filter(|c| matches!(c.severity(), Severity::Warning | Severity::Error))
        .filter(|c| !skip.contains(&c.r#type.as_str()) && !c.reason.is_empty())
        .map(|c| (c.r#type.clone(), (c.reason.clone(), c.message.clone())))
        .collect()
}

fn condition<'a>(conds: &'a [Condition], t: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.r#type == t)
}

fn node_facts(n: &Node) -> Facts {
    let st = n.status.clone().unwrap_or_default();
    let ready = condition(&st.conditions, "Ready");
    Facts {
        ready: ready.map(|c| c.status() == ConditionStatus::True),
        ready_why: ready.map_or_else(String::new, why),
        warnings: warnings(&st.conditions, &["Ready"]),
        ..Default::default()
    }
}

fn volume_facts(v: &Volume) -> Facts {
    let st = v.status.clone().unwrap_or_default();
    let expired = condition(&st.conditions, crate::expiry::EXPIRED)
        .filter(|c| c.status() == ConditionStatus::True)
        .map(|c| (c.reason.clone(), c.message.clone()));
    Facts {
        pool: st.pool.clone(),
        node: st.node.clone(),
        exported: st.export_ready,
        nqn: st.subsystem_nqn.clone(),
        size_bytes: st.size_bytes,
        expired,
        warnings: warnings(&st.conditions, &[crate::expiry::EXPIRED]),
        ..Default::default()
    }
}

fn attachment_facts(a: &Attachment) -> Facts {
    let st = a.status.clone().unwrap_or_default();
    Facts {
        node: a.spec.as_ref().map_or_else(String::new, |s| s.node.clone()),
        attached: st.phase() == AttachmentPhase::Attached,
        device: st.device_path.clone(),
        warnings: warnings(&st.conditions, &[]),
        ..Default::default()
    }
}

fn only_warnings(conds: &[Condition]) -> Facts {
    Facts {
        warnings: warnings(conds, &[]),
        ..Default::default()
    }
}

/// The facts of every object in the cache (the baseline).
pub fn facts(o: &Objects) -> BTreeMap<Key, Facts> {
    let mut out = BTreeMap::new();
    for (name, n) in &o.nodes {
        out.insert((Kind::Node, name.clone()), node_facts(n));
    }
    for (name, v) in &o.volumes {
        out.insert((Kind::Volume, name.clone()), volume_facts(v));
    }
    for (name, a) in &o.attachments {
        out.insert((Kind::Attachment, name.clone()), attachment_facts(a));
    }
    for (name, p) in &o.pools {
        let st = p.status.clone().unwrap_or_default();
        out.insert((Kind::Pool, name.clone()), only_warnings(&st.conditions));
    }
    for (name, t) in &o.tenants {
        let st = t.status.clone().unwrap_or_default();
        out.insert((Kind::Tenant, name.clone()), only_warnings(&st.conditions));
    }
    out
}

/// The object a store key names and its facts after the change (`None`
/// when deleted); `None` for keys that are not objects (events, tokens).
fn changed_facts(ev: &Event) -> Option<(Key, Option<Facts>)> {
    let (prefix, name) = ev.kv.key.split_once('/')?;
    let kind = match prefix {
        "nodes" => Kind::Node,
        "pools" => Kind::Pool,
        "volumes" => Kind::Volume,
        "attachments" => Kind::Attachment,
        "tenants" => Kind::Tenant,
        _ => return None,
    };
    let key = (kind, name.to_owned());
    if ev.kind == EventKind::Delete {
        return Some((key, None));
    }
    let bytes = ev.kv.value.as_slice();
    let facts = match kind {
        Kind::Node => node_facts(&Node::decode(bytes).ok()?),
        Kind::Volume => volume_facts(&Volume::decode(bytes).ok()?),
        Kind::Attachment => attachment_facts(&Attachment::decode(bytes).ok()?),
        Kind::Pool => only_warnings(
            &Pool::decode(bytes)
                .ok()?
                .status
                .unwrap_or_default()
                .conditions,
        ),
        Kind::Tenant => only_warnings(
            &Tenant::decode(bytes)
                .ok()?
                .status
                .unwrap_or_default()
                .conditions,
        ),
        Kind::Unspecified => return None,
    };
    Some((key, Some(facts)))
}

fn why(c: &Condition) -> String {
    match (c.reason.is_empty(), c.message.is_empty()) {
        (_, true) => c.reason.clone(),
        (true, false) => c.message.clone(),
        (false, false) => format!("{}: {}", c.reason, c.message),
    }
}

/// The events of one object's change from `old` to `new` (`None`:
/// absent).
pub fn diff_one(kind: Kind, name: &str, old: Option<&Facts>, new: Option<&Facts>) -> Vec<Record> {
    let mut out = Vec::new();
    match (old, new) {
        (None, Some(new)) => {
            let reason = EventReason::Created.as_str();
            out.push(Record::info(kind, name, reason, created(kind, new)));
            changes(kind, name, &Facts::default(), new, &mut out);
        }
        (Some(old), Some(new)) if old != new => changes(kind, name, old, new, &mut out),
        (Some(_), None) => {
            let reason = EventReason::Deleted.as_str();
            out.push(Record::info(kind, name, reason, "deleted"));
        }
        _ => {}
    }
    out
}

/// The events between two sets of facts, in a stable order.
pub fn diff(before: &BTreeMap<Key, Facts>, after: &BTreeMap<Key, Facts>) -> Vec<Record> {
    let mut out = Vec::new();
    for ((kind, name), new) in after {
        out.extend(diff_one(
            *kind,
            name,
            before.get(&(*kind, name.clone())),
            Some(new),
        ));
    }
    for ((kind, name), old) in before {
        if !after.contains_key(&(*kind, name.clone())) {
            out.extend(diff_one(*kind, name, Some(old), None));
        }
    }
    out
}

fn created(kind: Kind, f: &Facts) -> String {
    match kind {
        Kind::Attachment if !f.node.is_empty() => format!("created for node/{}", f.node),
        _ => "created".into(),
    }
}

fn changes(kind: Kind, name: &str, old: &Facts, new: &Facts, out: &mut Vec<Record>) {
    use EventReason as E;
    let info = |r: EventReason, m: String| Record::info(kind, name, r.as_str(), m);
    let warn = |r: EventReason, m: String| Record::warning(kind, name, r.as_str(), m);
    if new.pool != old.pool && !new.pool.is_empty() {
        out.push(info(
            E::Placed,
            format!("placed on pool/{} on node/{}", new.pool, new.node),
        ));
    }
    if new.exported && !old.exported {
        out.push(info(
            E::Exported,
            format!("exported as {} on node/{}", new.nqn, new.node),
        ));
    }
    if old.size_bytes > 0 && new.size_bytes > old.size_bytes {
        out.push(info(
            E::Grown,
            format!(
                "grown from {} to {}",
                ferrofab_types::format_size(old.size_bytes),
                ferrofab_types::format_size(new.size_bytes)
            ),
        ));
    }
    if let (Some((reason, msg)), None) = (&new.expired, &old.expired) {
        out.push(warn(E::Expired, format!("{reason}: {msg}")));
    }
    if new.attached && !old.attached {
        let at = if new.device.is_empty() {
            String::new()
        } else {
            format!(" at {}", new.device)
        };
        out.push(info(
            E::Attached,
            format!("attached on node/{}{at}", new.node),
        ));
    }
    if old.attached && !new.attached {
        out.push(info(
            E::Detached,
            format!("detached from node/{}", new.node),
        ));
    }
    match (old.ready, new.ready) {
        (Some(true), Some(false)) | (None, Some(false)) if kind == Kind::Node => {
            out.push(warn(E::NodeNotReady, new.ready_why.clone()));
        }
        (Some(false), Some(true)) if kind == Kind::Node => {
            out.push(info(E::NodeReady, new.ready_why.clone()));
        }
        _ => {}
    }
    for (t, (reason, msg)) in &new.warnings {
        if old.warnings.get(t).map(|(r, _)| r) != Some(reason) {
            let text = if msg.is_empty() {
                t.clone()
            } else {
                format!("{t}: {msg}")
            };
            // The condition's own reason (a `Reason`, or an agent's,
            // bounded when it was reported).
            out.push(Record::warning(kind, name, reason, text));
        }
    }
}

/// Applies one store change: records its events, updates the facts.
async fn step(s: &Shared, known: &mut BTreeMap<Key, Facts>, ev: &Event) {
    let Some((key, new)) = changed_facts(ev) else {
        return;
    };
    let old = known.get(&key);
    // Every replica follows the watch (so a new leader starts from current
    // facts), but only the one running the singletons records: otherwise
    // each replica on a shared etcd store would count every repeat again.
    if s.leadership.acting().is_some() {
        for r in diff_one(key.0, &key.1, old, new.as_ref()) {
            record(s, r).await;
        }
    }
    match new {
        Some(f) => known.insert(key, f),
        None => known.remove(&key),
    };
}

/// Runs until the controller stops.
pub async fn run(s: Arc<Shared>) {
    let mut stopping = s.stopping.clone();
    loop {
        let (mut known, from) = {
            let o = s.cache.read();
            (facts(&o), o.revision)
        };
        let mut stream = match s.store.watch("", from) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "events: cannot follow the store; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        for ev in std::mem::take(&mut stream.backlog) {
            step(&s, &mut known, &ev).await;
        }
        loop {
            let ev = tokio::select! {
                ev = stream.live.recv() => ev,
                _ = stopping.changed() => return,
            };
            let Some(ev) = ev else { break };
            step(&s, &mut known, &ev).await;
        }
        if !stream.lagged.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        tracing::info!("events: fell behind the store's watch; starting again from the cache");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(pool: &str, exported: bool, size: u64) -> Facts {
        Facts {
            pool: pool.into(),
            node: if pool.is_empty() { "" } else { "s1" }.into(),
            exported,
            nqn: "nqn.x".into(),
            size_bytes: size,
            ..Default::default()
        }
    }

    fn reasons(v: &[Record]) -> Vec<&str> {
        v.iter().map(|r| r.reason.as_str()).collect()
    }

    #[test]
    fn transitions_become_events() {
        let k = (Kind::Volume, "a".to_owned());
        let mut before = BTreeMap::new();
        let mut after = BTreeMap::from([(k.clone(), vol("p", false, 1 << 30))]);
        assert_eq!(reasons(&diff(&before, &after)), ["Created", "Placed"]);
        before = after.clone();
        after.insert(k.clone(), vol("p", true, 2 << 30));
        let ev = diff(&before, &after);
        assert_eq!(reasons(&ev), ["Exported", "Grown"]);
        assert_eq!(ev[1].message, "grown from 1GiB to 2GiB");
        assert_eq!(diff(&after, &after), vec![]);
        assert_eq!(reasons(&diff(&after, &BTreeMap::new())), ["Deleted"]);

        let n = (Kind::Node, "ws".to_owned());
        let up = Facts {
            ready: Some(true),
            ..Default::default()
        };
        let down = Facts {
            ready: Some(false),
            ready_why: "NoHeartbeat: silent for 60s".into(),
            ..Default::default()
        };
        let ev = diff(
            &BTreeMap::from([(n.clone(), up)]),
            &BTreeMap::from([(n, down)]),
        );
        assert_eq!(reasons(&ev), ["NodeNotReady"]);
        assert_eq!(ev[0].severity, Severity::Warning);
    }
}
