//! Declarative Apply: compares a whole layout with the store, reports a
//! field-level diff and (unless dry_run) performs it through the same write
//! paths as the typed RPCs, so validation, placement, quotas and
//! authorization are identical.

use std::collections::{BTreeMap, BTreeSet};

use ferrofab_proto::v1::{
    watch_event::Object, ApplyRequest, ApplyResponse, DiffAction, FieldChange, Kind, ObjectDiff,
};

use crate::api::admin::Admin;
use crate::cache::Stored;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::owned_fields;

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

async fn execute(admin: &Admin, id: &Identity, step: Step) -> Result<(), ApiError> {
    let action = DiffAction::try_from(step.diff.action).unwrap_or(DiffAction::Unspecified);
    let kind = Kind::try_from(step.diff.kind).unwrap_or(Kind::Unspecified);
    let failed = |e: ApiError| {
        ApiError::FailedPrecondition(format!(
            "apply stopped at {} {:?}: {e}",
            crate::resource::kind_name(kind),
            step.diff.name
        ))
    };
    match (action, step.object) {
        (DiffAction::Created, Some(o)) => admin.apply_create(id, o).await.map_err(failed),
        (DiffAction::Updated, Some(o)) => admin.apply_update(id, o).await.map_err(failed),
        (DiffAction::Deleted, _) => admin
            .apply_delete(id, kind, &step.diff.name)
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
        return Ok(ApplyResponse {
            diffs,
            revision: 0,
            dry_run: true,
        });
    }
    for step in steps {
        execute(admin, id, step).await?;
    }
    Ok(ApplyResponse {
        diffs,
        revision: admin.s.cache.revision(),
        dry_run: false,
    })
}
