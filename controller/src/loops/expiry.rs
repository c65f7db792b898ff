//! The expiry loop: one pass over every burst volume (see
//! [`crate::expiry`] for the rules), detaching and deleting through the
//! same operations the API uses, plus the collection of expired bootstrap
//! tokens.

use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::Volume;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::expiry::{apply_state, state, State, Windows, EXPIRED, EXPIRING};
use crate::identity::Identity;
use crate::ops::{self, Shared};
use crate::resource::Object;

async fn refresh(s: &Shared, name: &str, w: Windows) -> Result<(), ApiError> {
    let now = s.clock.now();
    s.modify::<Volume>(name, |v, _| {
        let st = state(v, now, w);
        apply_state(v, &st, now)
    })
    .await?;
    Ok(())
}

/// Deletes the volume's attachments (the workstations disconnect, then
/// the storage node revokes their hosts). Returns whether any remain
/// (a detach waits for the workstation to confirm).
async fn detach(s: &Shared, name: &str) -> Result<bool, ApiError> {
    let attachments: Vec<(String, bool)> = {
        let objs = s.cache.read();
        objs.attachments_of(name)
            .map(|a| {
                let deleting = a
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp.is_some());
                (a.name().to_string(), deleting)
            })
            .collect()
    };
    for (a, deleting) in &attachments {
        if *deleting {
            continue;
        }
        let d = ops::Delete {
            name: a.clone(),
            resource_version: 0,
        };
        ops::attachment::delete(s, &Identity::Admin, &d).await?;
        info!(volume = name, attachment = %a, "expired burst volume detached");
    }
    let objs = s.cache.read();
    let any = objs.attachments_of(name).next().is_some();
    Ok(any)
}

async fn reap(s: &Shared, name: &str) -> Result<(), ApiError> {
    if detach(s, name).await? {
        // Detach in progress: the workstation must confirm first.
        return Ok(());
    }
    let d = ops::Delete {
        name: name.to_string(),
        resource_version: 0,
    };
    ops::volume::delete(s, &Identity::Admin, &d).await?;
    info!(volume = name, "expired burst volume deleted");
    Ok(())
}

/// Whether the volume's shown expiry state may be stale: it has an
/// expiry, or still shows one (an extension removed it). A volume being
/// deleted is left to the deletion.
fn concerned(v: &Volume) -> bool {
    if v.metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp.is_some())
    {
        return false;
    }
    v.spec.as_ref().is_some_and(|s| s.expires_at.is_some())
        || v.status.as_ref().is_some_and(|s| {
            s.expiry_deletes_at.is_some()
                || s.conditions
                    .iter()
                    .any(|c| c.r#type == EXPIRING || c.r#type == EXPIRED)
        })
}

/// One pass over every burst volume.
pub async fn reconcile(s: &Arc<Shared>) -> Result<(), ApiError> {
    let now = s.clock.now();
    let w = Windows::from(&s.expiry);
    let work: Vec<(String, State)> = {
        let objs = s.cache.read();
        objs.volumes
            .values()
            .filter(|v| concerned(v))
            .map(|v| (v.name().to_string(), state(v, now, w)))
            .collect()
    };
    for (name, st) in work {
        match st {
            State::Reap => reap(s, &name).await?,
            State::Retained { .. } => {
                detach(s, &name).await?;
                refresh(s, &name, w).await?;
            }
            _ => refresh(s, &name, w).await?,
        }
    }
    Ok(())
}

/// Runs [`reconcile`] periodically while this replica leads.
pub async fn run(s: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        super::as_leader(&s, || pass(&s)).await;
    }
}

/// One expiry and token-collection pass (the leader's; see [`super::as_leader`]).
async fn pass(s: &Arc<Shared>) {
    if let Err(e) = reconcile(s).await {
        warn!(error = %e, "expiry pass failed");
    }
    match ops::enroll::collect_tokens(s).await {
        Ok(0) => {}
        Ok(n) => info!(removed = n, "expired bootstrap token records removed"),
        Err(e) => warn!(error = %e, "token collection failed"),
    }
}
