//! Declarative Apply: compares a whole layout with the store, reports a
//! field-level diff and performs it through the very per-kind operations
//! the typed RPCs call (`Admin::create_*_inner`, `update_*_inner`,
//! `delete_*`), so validation, immutability, placement, quotas and
//! authorization are one code path: a refusal carries the typed RPC's
//! status code and message, prefixed with the step.
//!
//! A dry run runs every step through the same operations without writing.
//! A step whose checks read an object that an earlier step of the same
//! layout creates, changes or deletes cannot be judged against the store
//! (the pool of a node the layout adds, a volume under a quota the layout
//! raises); such steps are checked when the layout is applied.

use std::collections::{BTreeMap, BTreeSet};

use ferrofab_proto::v1::{
    watch_event::Object, ApplyRequest, ApplyResponse, DiffAction, FieldChange, Kind, ObjectDiff,
    Volume,
};

use crate::api::admin::Admin;
use crate::cache::{Objects, Stored};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::{owned_fields, Resource};

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
    admin: &Admin,
    wanted: &[R],
    steps: &mut Vec<Step>,
) -> Result<(), ApiError> {
    let objs = admin.s.cache.read();
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

fn plan_prune<R: Stored>(admin: &Admin, wanted: &[R], steps: &mut Vec<Step>) {
    let keep: BTreeSet<&str> = wanted.iter().map(|w| w.name()).collect();
    let objs = admin.s.cache.read();
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

/// What a step's checks read besides its own object, as (kind, name);
/// an empty name stands for every object of the kind (a volume placed by
/// selector may land on any pool).
fn references(objs: &Objects, layout_volumes: &[Volume], obj: &Object) -> Vec<(Kind, String)> {
    match obj {
        Object::Tenant(_) | Object::Node(_) => Vec::new(),
        Object::Pool(p) => {
            vec![(Kind::Node, p.spec.clone().unwrap_or_default().node)]
        }
        Object::Volume(v) => {
            let spec = v.spec.clone().unwrap_or_default();
            vec![(Kind::Tenant, spec.tenant), (Kind::Pool, spec.pool)]
        }
        Object::Attachment(a) => {
            let spec = a.spec.clone().unwrap_or_default();
            let tenant = layout_volumes
                .iter()
                .find(|v| v.name() == spec.volume)
                .or_else(|| objs.volumes.get(&spec.volume))
                .and_then(|v| v.spec.as_ref())
                .map(|s| s.tenant.clone())
                .unwrap_or_default();
            vec![
                (Kind::Volume, spec.volume),
                (Kind::Node, spec.node),
                (Kind::Tenant, tenant),
            ]
        }
    }
}

/// Kinds whose objects may keep an object of `kind` from being deleted.
fn referrers(kind: Kind) -> &'static [Kind] {
    match kind {
        Kind::Node => &[Kind::Pool, Kind::Attachment],
        Kind::Pool | Kind::Tenant => &[Kind::Volume],
        Kind::Volume => &[Kind::Attachment],
        Kind::Attachment | Kind::Unspecified => &[],
    }
}

/// Which steps a dry run can judge against the store; see the module docs.
fn checkable(admin: &Admin, steps: &[Step], layout_volumes: &[Volume]) -> Vec<bool> {
    let changed: BTreeSet<(i32, &str)> = steps
        .iter()
        .filter(|s| s.diff.action != DiffAction::Unchanged as i32)
        .map(|s| (s.diff.kind, s.diff.name.as_str()))
        .collect();
    let deleted_kinds: BTreeSet<i32> = steps
        .iter()
        .filter(|s| s.diff.action == DiffAction::Deleted as i32)
        .map(|s| s.diff.kind)
        .collect();
    let objs = admin.s.cache.read();
    steps
        .iter()
        .map(|s| match (&s.object, DiffAction::try_from(s.diff.action)) {
            (_, Ok(DiffAction::Unchanged)) => false,
            (_, Ok(DiffAction::Deleted)) => {
                let kind = Kind::try_from(s.diff.kind).unwrap_or(Kind::Unspecified);
                !referrers(kind)
                    .iter()
                    .any(|k| deleted_kinds.contains(&(*k as i32)))
            }
            (Some(o), _) => references(&objs, layout_volumes, o)
                .iter()
                .all(|(k, name)| {
                    let kind = *k as i32;
                    if name.is_empty() {
                        !changed.iter().any(|(ck, _)| *ck == kind)
                    } else {
                        !changed.contains(&(kind, name.as_str()))
                    }
                }),
            (None, _) => false,
        })
        .collect()
}

async fn execute(admin: &Admin, id: &Identity, step: Step, dry_run: bool) -> Result<(), ApiError> {
    let action = DiffAction::try_from(step.diff.action).unwrap_or(DiffAction::Unspecified);
    let kind = Kind::try_from(step.diff.kind).unwrap_or(Kind::Unspecified);
    let failed = |e: ApiError| ApiError::Step {
        context: format!(
            "apply stopped at {} {:?}",
            crate::resource::kind_name(kind),
            step.diff.name
        ),
        source: Box::new(e),
    };
    match (action, step.object) {
        (DiffAction::Created, Some(o)) => admin.apply_create(id, o, dry_run).await.map_err(failed),
        (DiffAction::Updated, Some(o)) => admin.apply_update(id, o, dry_run).await.map_err(failed),
        (DiffAction::Deleted, _) => admin
            .apply_delete(id, kind, &step.diff.name, dry_run)
            .await
            .map_err(failed),
        _ => Ok(()),
    }
}

/// See the module docs. Creates and updates run in dependency order
/// (tenants, nodes, pools, volumes, attachments); prunes in reverse.
pub async fn apply(
    admin: &Admin,
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
        plan_prune(admin, &l.attachments, &mut steps);
        plan_prune(admin, &l.volumes, &mut steps);
        plan_prune(admin, &l.pools, &mut steps);
        plan_prune(admin, &l.nodes, &mut steps);
        plan_prune(admin, &l.tenants, &mut steps);
    }
    let diffs: Vec<ObjectDiff> = steps.iter().map(|s| s.diff.clone()).collect();
    if req.dry_run {
        let judge = checkable(admin, &steps, &l.volumes);
        for (step, check) in steps.into_iter().zip(judge) {
            if check {
                execute(admin, id, step, true).await?;
            }
        }
        return Ok(ApplyResponse {
            diffs,
            revision: 0,
            dry_run: true,
        });
    }
    for step in steps {
        execute(admin, id, step, false).await?;
    }
    Ok(ApplyResponse {
        diffs,
        revision: admin.s.cache.revision(),
        dry_run: false,
    })
}
