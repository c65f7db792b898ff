//! Declarative Apply: compares a whole layout with the store, reports a
//! field-level diff and performs it through the very per-kind operations
//! the typed RPCs call (`ops::any`, which dispatches to
//! `ops::volume::create` and the like), so validation, immutability, placement, quotas and
//! authorization are one code path: a refusal carries the typed RPC's
//! status code and message, prefixed with the step.
//!
//! All or nothing: the plan runs, step by step, against a private fork of
//! the store ([`crate::staging`]), where every step sees what the earlier
//! ones did. Only when every step passed is the fork's net effect written
//! to the store, as one transaction guarded by the revision of every key
//! it touches; a dry run is the same run with the fork discarded, so it
//! refuses exactly what the apply would.
//!
//! Prune deletes stored objects absent from the layout only for the kinds
//! the layout names (a file with one volume never deletes a pool), and
//! nodes only when asked for explicitly: a node is machinery, not
//! something a layout file of volumes should make disappear. A prune that
//! would leave a reference dangling is refused by the delete's own check
//! (a pool still used by a volume, a volume still attached).

use std::collections::{BTreeMap, BTreeSet};

use ferrofab_proto::v1::{
    watch_event::Object, ApplyRequest, ApplyResponse, DiffAction, FieldChange, Kind, ObjectDiff,
};

use crate::cache::{Cache, Stored};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::ops::{self, Shared};
use crate::resource::owned_fields;
use crate::staging::Fork;
use crate::store::TxnResult;

/// One planned step.
struct Step {
    diff: ObjectDiff,
    object: Option<Object>,
}

fn field_changes(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<FieldChange> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| FieldChange {
            path: k.clone(),
            old_value: old.get(k).cloned().unwrap_or_default(),
            new_value: new.get(k).cloned().unwrap_or_default(),
        })
        .collect()
}

fn plan_kind<R: Stored>(
    admin: &Shared,
    wanted: &[R],
    steps: &mut Vec<Step>,
) -> Result<(), ApiError> {
    let objs = admin.cache.read();
    let mut seen = BTreeSet::new();
    for w in wanted {
        let name = w.name().to_string();
        if !seen.insert(name.clone()) {
            return Err(ApiError::invalid(
                "layout",
                format!(
                    "{} {name:?} appears twice",
                    crate::resource::kind_name(R::KIND)
                ),
            ));
        }
        let new = owned_fields(w);
        let (action, changes) = match R::map(&objs).get(&name) {
            None => (DiffAction::Created, field_changes(&BTreeMap::new(), &new)),
            Some(cur) => {
                let ch = field_changes(&owned_fields(cur), &new);
                if ch.is_empty() {
                    (DiffAction::Unchanged, ch)
                } else {
                    (DiffAction::Updated, ch)
                }
            }
        };
        steps.push(Step {
            diff: ObjectDiff {
                kind: R::KIND as i32,
                name,
                action: action as i32,
                changes,
            },
            object: Some(w.clone().into_event_object()),
        });
    }
    Ok(())
}

fn plan_prune<R: Stored>(admin: &Shared, wanted: &[R], steps: &mut Vec<Step>) {
    let keep: BTreeSet<&str> = wanted.iter().map(|w| w.name()).collect();
    let objs = admin.cache.read();
    for (name, cur) in R::map(&objs) {
        if !keep.contains(name.as_str()) {
            steps.push(Step {
                diff: ObjectDiff {
                    kind: R::KIND as i32,
                    name: name.clone(),
                    action: DiffAction::Deleted as i32,
                    changes: field_changes(&owned_fields(cur), &BTreeMap::new()),
                },
                object: None,
            });
        }
    }
}

async fn execute(admin: &Shared, id: &Identity, step: Step, dry_run: bool) -> Result<(), ApiError> {
    let action = DiffAction::try_from(step.diff.action).unwrap_or(DiffAction::Unspecified);
    let kind = Kind::try_from(step.diff.kind).unwrap_or(Kind::Unspecified);
    let failed = |e: ApiError| ApiError::Step {
        context: format!(
            "apply refused at {} {:?}, nothing was changed",
            crate::resource::kind_name(kind),
            step.diff.name
        ),
        source: Box::new(e),
    };
    match (action, step.object) {
        (DiffAction::Created, Some(o)) => ops::any::create(admin, id, o, dry_run)
            .await
            .map_err(failed),
        (DiffAction::Updated, Some(o)) => ops::any::update(admin, id, o, dry_run)
            .await
            .map_err(failed),
        (DiffAction::Deleted, _) => ops::any::delete(admin, id, kind, &step.diff.name, dry_run)
            .await
            .map_err(failed),
        _ => Ok(()),
    }
}

/// Kind-filtered prune, see the module docs.
fn plan_prune_kind<R: Stored>(admin: &Shared, wanted: &[R], steps: &mut Vec<Step>) {
    if !wanted.is_empty() {
        plan_prune(admin, wanted, steps);
    }
}

/// The shared state over a private fork of the store; see [`crate::staging`].
fn fork(admin: &Shared) -> Result<(Shared, std::sync::Arc<Fork>), ApiError> {
    let s = admin;
    let fork = Fork::snapshot(&s.store)?;
    let cache = Cache::start_fork(fork.clone())?;
    let shared = Shared {
        store: fork.clone(),
        store_backend: s.store_backend,
        cache,
        allocator: std::sync::Arc::new(crate::placement::Allocator::default()),
        clock: s.clock.clone(),
        signer: None,
        metrics: s.metrics.clone(),
        defaults: s.defaults.clone(),
        expiry: s.expiry.clone(),
        // The rehearsal must refuse exactly what the real write path
        // refuses, so it carries the same object limits.
        limits: s.limits.clone(),
        desired_state_interval: s.desired_state_interval,
        stopping: s.stopping.clone(),
        // Nothing watches or reports through the fork.
        watches: s.watches.clone(),
        reports: crate::report::ReportGate::new(&crate::config::NodesConfig::default()),
        // The fork's own gate: the rehearsal runs while the real one is
        // held exclusively by this apply.
        capacity_gate: std::sync::Arc::default(),
        // The rehearsal writes only to the fork: no guard to carry.
        leadership: crate::leader::Leadership::always(),
        keys: None,
        // Events recorded in the fork are discarded with it.
        events: s.events.clone(),
    };
    Ok((shared, fork))
}

/// Ends the fork's cache follower however the rehearsal ends, including
/// when the caller goes away mid-plan and the future is dropped.
struct CloseOnDrop(std::sync::Arc<Fork>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs every step on a fork; returns the fork when all passed.
async fn rehearse(
    admin: &Shared,
    id: &Identity,
    steps: Vec<Step>,
) -> Result<std::sync::Arc<Fork>, ApiError> {
    let (staged, fork) = fork(admin)?;
    let _close = CloseOnDrop(fork.clone());
    for step in steps {
        execute(&staged, id, step, false).await?;
    }
    Ok(fork)
}

/// See the module docs. Creates and updates run in dependency order
/// (tenants, nodes, pools, volumes, attachments); prunes in reverse.
pub async fn apply(
    admin: &Shared,
    id: &Identity,
    req: ApplyRequest,
) -> Result<ApplyResponse, ApiError> {
    let l = req.layout.unwrap_or_default();
    let mut steps = Vec::new();
    plan_kind(admin, &l.tenants, &mut steps)?;
    plan_kind(admin, &l.nodes, &mut steps)?;
    plan_kind(admin, &l.pools, &mut steps)?;
    plan_kind(admin, &l.volumes, &mut steps)?;
    plan_kind(admin, &l.attachments, &mut steps)?;
    if req.prune {
        plan_prune_kind(admin, &l.attachments, &mut steps);
        plan_prune_kind(admin, &l.volumes, &mut steps);
        plan_prune_kind(admin, &l.pools, &mut steps);
        if req.prune_nodes {
            plan_prune(admin, &l.nodes, &mut steps);
        }
        plan_prune_kind(admin, &l.tenants, &mut steps);
    }
    let diffs: Vec<ObjectDiff> = steps.iter().map(|s| s.diff.clone()).collect();
    // No typed capacity-deciding write may land between the rehearsal and
    // the commit (see `Shared::capacity_gate`).
    let _capacity = admin.capacity_gate.write().await;
    let fork = rehearse(admin, id, steps).await?;
    if req.dry_run {
        return Ok(ApplyResponse {
            diffs,
            revision: 0,
            dry_run: true,
        });
    }
    let txn = fork.net_txn();
    if txn.ops.is_empty() {
        return Ok(ApplyResponse {
            diffs,
            revision: admin.cache.revision(),
            dry_run: false,
        });
    }
    let guards = txn.compares.clone();
    match admin.commit(txn).await? {
        TxnResult::Committed { revision } => Ok(ApplyResponse {
            diffs,
            revision,
            dry_run: false,
        }),
        TxnResult::CompareFailed { key, actual } => {
            let given = guards
                .iter()
                .map(|crate::store::Compare::ModRevision { key: k, equals }| (k, *equals))
                .find(|(k, _)| **k == key)
                .map_or(0, |(_, e)| e);
            Err(ApiError::Step {
                context: "apply aborted, nothing was changed (apply again)".into(),
                source: Box::new(ApiError::Conflict {
                    kind: "stored key",
                    name: key,
                    current: actual,
                    given,
                }),
            })
        }
    }
}
