//! The status writes of an agent's ReportStatus: the node's own status and
//! conditions, each export's readiness into its volume, each connection
//! into its attachment, and the end of a move's fence once the reports
//! prove the previous holder gone (see [`crate::access`]). What a report
//! may carry, and how it is bounded, is [`crate::report`]'s.

use std::collections::HashMap;

use ferrofab_proto::v1::*;
use tracing::{debug, info, warn};

use super::Shared;
use crate::access;
use crate::conditions::{condition, set_condition};
use crate::error::ApiError;
use crate::report;
use crate::resource::Object;

/// A condition the controller derives from a report: Warning when false,
/// for no particular generation.
fn cond(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: prost_types::Timestamp,
) -> Condition {
    let severity = if ok {
        Severity::Info
    } else {
        Severity::Warning
    };
    Condition {
        severity: severity as i32,
        ..condition(kind, ok, reason, message, now, 0)
    }
}

/// Applies node `r.node`'s report. The caller must be that node: the
/// adapter checked it (with the rate limit) before the report was decoded
/// any further.
pub async fn report(s: &Shared, r: ReportStatusRequest) -> Result<ReportStatusResponse, ApiError> {
    report::check_bounds(&r, s.reports.max_entries)
        .inspect_err(|_| s.metrics.refused("report_size"))?;
    let now = s.clock.now_ts();
    let status = r.node_status.clone().unwrap_or_default();
    let agent_conditions = sanitized(s, &status.conditions, report::NODE_CONDITIONS, now);
    if status.agent_version.len() > report::MAX_AGENT_VERSION_BYTES {
        s.metrics.report_fields_truncated.inc();
    }
    let mut written = false;
    s.modify::<Node>(&r.node, |n, _| {
        let generation = n.metadata.as_ref().map_or(0, |m| m.generation);
        let next = report::next_node_status(
            n.status.as_ref(),
            &status,
            agent_conditions.clone(),
            generation,
            now,
            s.reports.persist_every_s,
        );
        n.status = Some(next.status);
        written = next.write;
        next.write
    })
    .await?
    .ok_or_else(|| ApiError::not_found("node", &r.node))?;
    if !written {
        s.metrics.reports_unpersisted.inc();
    }
    apply_exports(s, &r.node, &r.exports, now).await?;
    fence_moves(s, &r.node, &r.exports, r.desired_revision).await?;
    release_moves(s, &r.node, &r.connections, r.desired_revision, now).await?;
    apply_connections(s, &r.node, &r.connections, now).await?;
    Ok(ReportStatusResponse {
        revision: s.cache.revision(),
    })
}

/// The reported conditions of known types, bounded; what was dropped
/// or cut is counted.
///
/// Transition times are `now` (kept from the stored condition when its
/// status did not change, by `set_condition` or `next_node_status`).
fn sanitized(
    s: &Shared,
    given: &[Condition],
    known: &[&str],
    now: prost_types::Timestamp,
) -> Vec<Condition> {
    let mut out = report::sanitize(given, known);
    for c in &mut out.conditions {
        c.last_transition_time = Some(now);
    }
    if out.dropped > 0 {
        s.metrics.report_conditions_dropped.inc_by(out.dropped);
        debug!(
            dropped = out.dropped,
            "unknown condition types dropped from a report"
        );
    }
    s.metrics.report_fields_truncated.inc_by(out.truncated);
    out.conditions
}

/// Export readiness, the generation it was confirmed for and the
/// agent's conditions into volume status; removal of deleted volumes
/// whose export is gone; workstations become eligible to connect.
async fn apply_exports(
    s: &Shared,
    node: &str,
    reports: &[ExportStatus],
    now: prost_types::Timestamp,
) -> Result<(), ApiError> {
    let by_volume: HashMap<&str, &ExportStatus> =
        reports.iter().map(|e| (e.volume.as_str(), e)).collect();
    let mine: Vec<(String, bool)> = {
        let objs = s.cache.read();
        objs.volumes_on(node)
            .map(|v| {
                let deleting = v
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp.is_some());
                (v.name().to_string(), deleting)
            })
            .collect()
    };
    for (name, deleting) in mine {
        let rep = by_volume.get(name.as_str());
        if deleting {
            if rep.is_none() {
                let rv = s
                    .get::<Volume>(&name)?
                    .metadata
                    .map_or(0, |m| m.resource_version);
                s.remove::<Volume>(&name, rv).await?;
                info!(volume = %name, %node, "export removed; volume deleted");
            }
            continue;
        }
        let rep = rep.map(|e| {
            let conds = sanitized(s, &e.conditions, report::EXPORT_CONDITIONS, now);
            report::ExportReport::new(e, conds)
        });
        set_export_status(s, &name, node, rep.as_ref(), now).await?;
    }
    Ok(())
}

/// Writes the volume status a report implies, when it differs from the
/// stored one (see [`report::next_volume_status`]).
async fn set_export_status(
    s: &Shared,
    name: &str,
    node: &str,
    rep: Option<&report::ExportReport>,
    now: prost_types::Timestamp,
) -> Result<(), ApiError> {
    let mut became_ready = false;
    s.modify::<Volume>(name, |v, _| {
        became_ready = false;
        let generation = v.metadata.as_ref().map_or(0, |m| m.generation);
        let cur = v.status.clone().unwrap_or_default();
        let Some(next) = report::next_volume_status(&cur, generation, node, rep, now) else {
            return false;
        };
        became_ready = next.export_ready && !cur.export_ready;
        if next.observed_generation != cur.observed_generation {
            debug!(volume = %name, generation = next.observed_generation, "spec change observed");
        }
        v.status = Some(next);
        true
    })
    .await?;
    if became_ready {
        let pending: Vec<String> = {
            let objs = s.cache.read();
            objs.attachments_of(name)
                .filter(|a| {
                    a.status
                        .as_ref()
                        .is_none_or(|st| st.phase == AttachmentPhase::Pending as i32)
                })
                .map(|a| a.name().to_string())
                .collect()
        };
        for a in pending {
            s.modify::<Attachment>(&a, |att, _| {
                let st = att.status.get_or_insert_with(Default::default);
                st.phase = AttachmentPhase::Connecting as i32;
                true
            })
            .await?;
        }
    }
    Ok(())
}

/// Records, on each attachment of a volume this storage node serves, that
/// the node reported the attachment's host allowed on the export
/// (`status.admitted_host`): the planner hands the workstation its
/// connection only then (see `planner::admitted`). One write per
/// attachment and host, never undone by a report. Called after the
/// report is applied and the host keys it says the target holds are
/// noted, so the connection is handed out with its key.
pub async fn admit_hosts(s: &Shared, node: &str, reports: &[ExportStatus]) -> Result<(), ApiError> {
    let admit: Vec<(String, String)> = {
        let objs = s.cache.read();
        reports
            .iter()
            .filter(|e| {
                objs.volumes
                    .get(&e.volume)
                    .and_then(|v| v.status.as_ref())
                    .is_some_and(|st| st.node == node)
            })
            .flat_map(|e| objs.attachments_of(&e.volume).map(move |a| (e, a)))
            .filter_map(|(e, a)| {
                let host = access::host_of(&objs, &a.spec.as_ref()?.node)?;
                let recorded = a.status.as_ref().map_or("", |st| st.admitted_host.as_str());
                (recorded != host && e.allowed_hosts.iter().any(|h| h == host))
                    .then(|| (a.name().to_string(), host.to_string()))
            })
            .collect()
    };
    for (name, host) in admit {
        s.modify::<Attachment>(&name, |att, objs| {
            // Moved meanwhile: the report spoke for another host.
            let now_host = att
                .spec
                .as_ref()
                .and_then(|sp| access::host_of(objs, &sp.node));
            if now_host != Some(host.as_str()) {
                return false;
            }
            let st = att.status.get_or_insert_with(Default::default);
            if st.admitted_host == host {
                return false;
            }
            st.admitted_host = host.clone();
            true
        })
        .await?;
        debug!(attachment = %name, %node, %host, "host admitted on the export");
    }
    Ok(())
}

/// Completes the fence of moved attachments whose volume this storage
/// node serves, once its report proves the previous holder's host
/// revoked and disconnected (see [`crate::access::fence_done`]).
async fn fence_moves(
    s: &Shared,
    node: &str,
    reports: &[ExportStatus],
    desired_revision: u64,
) -> Result<(), ApiError> {
    let done: Vec<(String, String)> = {
        let objs = s.cache.read();
        // Only the storage node serving a volume speaks for its export.
        let serves = |e: &&ExportStatus| {
            objs.volumes
                .get(&e.volume)
                .and_then(|v| v.status.as_ref())
                .is_some_and(|st| st.node == node)
        };
        reports
            .iter()
            .filter(serves)
            .flat_map(|e| objs.attachments_of(&e.volume).map(move |a| (e, a)))
            .filter_map(|(e, a)| {
                let st = a.status.as_ref()?;
                if st.moved_from_node.is_empty() || !st.moved_from_released {
                    return None;
                }
                let old = access::host_of(&objs, &st.moved_from_node);
                access::fence_done(
                    desired_revision,
                    st.fence_revision,
                    old,
                    &e.allowed_hosts,
                    &e.connected_hosts,
                )
                .then(|| (a.name().to_string(), st.moved_from_node.clone()))
            })
            .collect()
    };
    for (name, from) in done {
        s.modify::<Attachment>(&name, |att, _| {
            let Some(st) = att.status.as_mut() else {
                return false;
            };
            if st.moved_from_node != from || !st.moved_from_released {
                return false;
            }
            st.moved_from_node.clear();
            st.moved_from_released = false;
            st.fence_revision = 0;
            st.move_revision = 0;
            true
        })
        .await?;
        info!(attachment = %name, %from, "move fenced: previous host revoked and disconnected");
    }
    Ok(())
}

/// Releases the previous holder's host of attachments moved away from
/// workstation `node` once it no longer lists them, in a report made
/// against a desired state at least as new as the move. "Listed but not
/// connected" is not enough: a reconnecting workstation reports that
/// while a filesystem is still mounted on the device.
async fn release_moves(
    s: &Shared,
    node: &str,
    reports: &[ConnectionStatus],
    desired_revision: u64,
    now: prost_types::Timestamp,
) -> Result<(), ApiError> {
    let gone: Vec<String> = {
        let objs = s.cache.read();
        objs.attachments_moving_from(node)
            .filter(|a| {
                a.status.as_ref().is_some_and(|st| {
                    !st.moved_from_released
                        && st.move_revision != 0
                        && desired_revision >= st.move_revision
                })
            })
            .filter(|a| !reports.iter().any(|c| c.attachment == a.name()))
            .map(|a| a.name().to_string())
            .collect()
    };
    for name in gone {
        let released = s
            .modify::<Attachment>(&name, |att, _| {
                let Some(st) = att.status.as_mut() else {
                    return false;
                };
                if st.moved_from_node != node || st.moved_from_released {
                    return false;
                }
                st.moved_from_released = true;
                let msg = format!(
                    "moving from {node}: disconnected there; revoking its host on the storage node"
                );
                set_condition(
                    &mut st.conditions,
                    cond("Connected", false, "Moving", msg, now),
                );
                true
            })
            .await?;
        if let Some(a) = released {
            let rv = a.metadata.as_ref().map_or(0, |m| m.resource_version);
            crate::ops::attachment::stamp_fence(s, &name, rv).await?;
        }
        info!(attachment = %name, %node, "moved attachment disconnected from its previous node");
    }
    Ok(())
}

/// Connection state into attachment status; removal of detaching
/// attachments once the workstation no longer reports them connected
/// (which is what finally revokes the host on the export).
async fn apply_connections(
    s: &Shared,
    node: &str,
    reports: &[ConnectionStatus],
    now: prost_types::Timestamp,
) -> Result<(), ApiError> {
    let by_att: HashMap<&str, &ConnectionStatus> =
        reports.iter().map(|c| (c.attachment.as_str(), c)).collect();
    let mine: Vec<Attachment> = {
        let objs = s.cache.read();
        objs.attachments_for(node).cloned().collect()
    };
    for a in mine {
        let name = a.name().to_string();
        let rep = by_att.get(name.as_str());
        let connected = rep.is_some_and(|c| c.connected);
        let deleting = a
            .metadata
            .as_ref()
            .is_some_and(|m| m.deletion_timestamp.is_some());
        // A move's previous holder may still be connected: the object
        // (and with it that host) goes only once it was released.
        let fenced = a
            .status
            .as_ref()
            .is_some_and(|st| !st.moved_from_node.is_empty() && !st.moved_from_released);
        if deleting {
            if !connected && !fenced {
                let rv = a.metadata.as_ref().map_or(0, |m| m.resource_version);
                match s.remove::<Attachment>(&name, rv).await {
                    Ok(()) | Err(ApiError::NotFound { .. }) => {}
                    Err(ApiError::Conflict { .. }) => {
                        warn!(attachment = %name, "changed while detaching; retried on next report")
                    }
                    Err(e) => return Err(e),
                }
            }
            continue;
        }
        let phase = a.status.as_ref().map_or(0, |s| s.phase);
        let want = if connected {
            AttachmentPhase::Attached as i32
        } else if phase == AttachmentPhase::Attached as i32 {
            AttachmentPhase::Connecting as i32
        } else {
            phase
        };
        let device = rep.map(|c| c.device_path.clone()).unwrap_or_default();
        let cur_device = a
            .status
            .as_ref()
            .map(|s| s.device_path.clone())
            .unwrap_or_default();
        // The exposed size follows the workstation's report (0 while
        // not connected: nothing is exposed then).
        let size = rep.filter(|_| connected).map_or(0, |c| c.size_bytes);
        let cur_size = a.status.as_ref().map_or(0, |s| s.size_bytes);
        // Attachment specs are immutable today, so this only matters
        // if that changes: a connection reported for the attachment is
        // the attachment's current generation carried out.
        let generation = a.metadata.as_ref().map_or(0, |m| m.generation);
        let behind = connected
            && a.status
                .as_ref()
                .is_none_or(|s| s.observed_generation < generation);
        if want != phase || device != cur_device || size != cur_size || behind {
            let extra = rep
                .map(|c| sanitized(s, &c.conditions, report::CONNECTION_CONDITIONS, now))
                .unwrap_or_default();
            s.modify::<Attachment>(&name, |att, _| {
                let st = att.status.get_or_insert_with(Default::default);
                st.phase = want;
                st.device_path = device.clone();
                st.size_bytes = size;
                if connected {
                    st.observed_generation = st.observed_generation.max(generation);
                }
                let msg = if connected {
                    format!("connected on {node} as {device}")
                } else {
                    format!("{node} reports no connection")
                };
                set_condition(
                    &mut st.conditions,
                    cond(
                        "Connected",
                        connected,
                        if connected {
                            "HostConnected"
                        } else {
                            "HostNotConnected"
                        },
                        msg,
                        now,
                    ),
                );
                for c in &extra {
                    set_condition(&mut st.conditions, c.clone());
                }
                true
            })
            .await?;
        }
    }
    Ok(())
}
