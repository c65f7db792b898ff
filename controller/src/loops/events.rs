//! The event deriver: turns changes of the objects into events
//! ([`crate::ops::events`]) by comparing a few facts of every object
//! (placement, export, size, attachment, readiness, warning conditions)
//! before and after each batch of store changes.
//!
//! Deriving from the cache rather than from each write path means every
//! way an object changes (the API, Apply, agents' reports, the loops)
//! yields the same events without a call at each site. Changes are taken
//! at most once per [`DERIVE_INTERVAL`], so a burst of writes costs one
//! pass; a fact that flips and flips back within one interval leaves no
//! event. Refusals are not changes of objects: the API records them
//! ([`crate::ops::events::refused`]).
//!
//! On start the current objects are the baseline: a restart records
//! nothing for objects that were already there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::{AttachmentPhase, Condition, ConditionStatus, Kind, Severity};
use ferrofab_types::EventReason;

use crate::cache::Objects;
use crate::ops::events::{record, Record};
use crate::ops::Shared;

/// Least time between two passes. A named constant: one second keeps
/// `ferrofab events --watch` prompt while a busy cluster pays one pass
/// per second at most.
pub const DERIVE_INTERVAL: Duration = Duration::from_secs(1);

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

/// The facts of every object in the cache.
pub fn facts(o: &Objects) -> BTreeMap<Key, Facts> {
    let mut out = BTreeMap::new();
    for (name, n) in &o.nodes {
        let st = n.status.clone().unwrap_or_default();
        let ready = condition(&st.conditions, "Ready");
        out.insert(
            (Kind::Node, name.clone()),
            Facts {
                ready: ready.map(|c| c.status() == ConditionStatus::True),
                ready_why: ready.map_or_else(String::new, why),
                warnings: warnings(&st.conditions, &["Ready"]),
                ..Default::default()
            },
        );
    }
    for (name, v) in &o.volumes {
        let st = v.status.clone().unwrap_or_default();
        let expired = condition(&st.conditions, crate::expiry::EXPIRED)
            .filter(|c| c.status() == ConditionStatus::True)
            .map(|c| (c.reason.clone(), c.message.clone()));
        out.insert(
            (Kind::Volume, name.clone()),
            Facts {
                pool: st.pool.clone(),
                node: st.node.clone(),
                exported: st.export_ready,
                nqn: st.subsystem_nqn.clone(),
                size_bytes: st.size_bytes,
                expired,
                warnings: warnings(&st.conditions, &[crate::expiry::EXPIRED]),
                ..Default::default()
            },
        );
    }
    for (name, a) in &o.attachments {
        let st = a.status.clone().unwrap_or_default();
        out.insert(
            (Kind::Attachment, name.clone()),
            Facts {
                node: a.spec.as_ref().map_or_else(String::new, |s| s.node.clone()),
                attached: st.phase() == AttachmentPhase::Attached,
                device: st.device_path.clone(),
                warnings: warnings(&st.conditions, &[]),
                ..Default::default()
            },
        );
    }
    for (name, p) in &o.pools {
        let st = p.status.clone().unwrap_or_default();
        out.insert(
            (Kind::Pool, name.clone()),
            Facts {
                warnings: warnings(&st.conditions, &[]),
                ..Default::default()
            },
        );
    }
    for (name, t) in &o.tenants {
        let st = t.status.clone().unwrap_or_default();
        out.insert(
            (Kind::Tenant, name.clone()),
            Facts {
                warnings: warnings(&st.conditions, &[]),
                ..Default::default()
            },
        );
    }
    out
}

fn why(c: &Condition) -> String {
    match (c.reason.is_empty(), c.message.is_empty()) {
        (_, true) => c.reason.clone(),
        (true, false) => c.message.clone(),
        (false, false) => format!("{}: {}", c.reason, c.message),
    }
}

/// The events between two sets of facts, in a stable order.
pub fn diff(before: &BTreeMap<Key, Facts>, after: &BTreeMap<Key, Facts>) -> Vec<Record> {
    let mut out = Vec::new();
    for ((kind, name), new) in after {
        match before.get(&(*kind, name.clone())) {
            None => {
                out.push(Record::info(
                    *kind,
                    name,
                    EventReason::Created.as_str(),
                    created(*kind, new),
                ));
                changes(*kind, name, &Facts::default(), new, &mut out);
            }
            Some(old) if old != new => changes(*kind, name, old, new, &mut out),
            Some(_) => {}
        }
    }
    for (kind, name) in before.keys() {
        if !after.contains_key(&(*kind, name.clone())) {
            out.push(Record::info(
                *kind,
                name,
                EventReason::Deleted.as_str(),
                "deleted",
            ));
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

/// Runs until the controller stops.
pub async fn run(s: Arc<Shared>) {
    let mut changed = s.cache.subscribe();
    let mut stopping = s.stopping.clone();
    let mut before = facts(&s.cache.read());
    loop {
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = stopping.changed() => return,
        }
        tokio::time::sleep(DERIVE_INTERVAL).await;
        changed.borrow_and_update();
        let after = facts(&s.cache.read());
        for r in diff(&before, &after) {
            record(&s, r).await;
        }
        before = after;
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
