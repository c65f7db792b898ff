//! Burst volumes: a volume with `spec.expires_at` is flagged with a Warning
//! condition `Expiring` ahead of time, and once `expires_at + grace` has
//! passed its attachments are detached and the volume deleted. Time comes
//! from the injectable clock so tests can drive it.

use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::{
    Condition, ConditionStatus, DeleteAttachmentRequest, DeleteVolumeRequest, Severity, Volume,
};
use tracing::{info, warn};

use crate::api::admin::{set_condition, Admin};
use crate::api::Shared;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::Resource;

/// What to do with one burst volume now.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Nothing,
    Warn { expires: i64, deadline: i64 },
    Reap,
}

fn due(v: &Volume, now: i64, warn_s: i64, grace_s: i64) -> Due {
    let Some(exp) = v.spec.as_ref().and_then(|s| s.expires_at.as_ref()) else {
        return Due::Nothing;
    };
    if v.metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp.is_some())
    {
        return Due::Nothing;
    }
    let deadline = exp.seconds + grace_s;
    if now >= deadline {
        Due::Reap
    } else if now >= exp.seconds - warn_s {
        Due::Warn {
            expires: exp.seconds,
            deadline,
        }
    } else {
        Due::Nothing
    }
}

fn has_warning(v: &Volume) -> bool {
    v.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Expiring" && c.status == ConditionStatus::True as i32)
    })
}

async fn warn_volume(s: &Shared, name: &str, expires: i64, deadline: i64) -> Result<(), ApiError> {
    let now = s.clock.now_ts();
    s.modify::<Volume>(name, |v, _| {
        if has_warning(v) {
            return false;
        }
        let generation = v.metadata.as_ref().map_or(0, |m| m.generation);
        let st = v.status.get_or_insert_with(Default::default);
        set_condition(
            &mut st.conditions,
            Condition {
                r#type: "Expiring".into(),
                status: ConditionStatus::True as i32,
                reason: "BurstAllocationExpiring".into(),
                message: format!(
                    "burst volume expires at {}; it will be detached and deleted at {} unless expires_at is extended",
                    crate::clock::when(expires, now.seconds),
                    crate::clock::when(deadline, now.seconds)
                ),
                last_transition_time: Some(now),
                severity: Severity::Warning as i32,
                observed_generation: generation,
            },
        );
        true
    })
    .await?;
    Ok(())
}

async fn reap(admin: &Admin, name: &str) -> Result<(), ApiError> {
    let attachments: Vec<String> = {
        let objs = admin.s.cache.read();
        objs.attachments_of(name)
            .map(|a| a.name().to_string())
            .collect()
    };
    for a in &attachments {
        admin
            .delete_attachment_inner(
                &Identity::Admin,
                DeleteAttachmentRequest {
                    name: a.clone(),
                    resource_version: 0,
                },
            )
            .await?;
    }
    let still_attached = {
        let objs = admin.s.cache.read();
        let any = objs.attachments_of(name).next().is_some();
        any
    };
    if still_attached {
        // Detach in progress: the workstation must confirm first.
        return Ok(());
    }
    admin
        .delete_volume_inner(
            &Identity::Admin,
            DeleteVolumeRequest {
                name: name.to_string(),
                resource_version: 0,
            },
        )
        .await?;
    info!(volume = name, "expired burst volume deleted");
    Ok(())
}

/// One pass over every burst volume.
pub async fn reconcile(s: &Arc<Shared>) -> Result<(), ApiError> {
    let now = s.clock.now();
    let warn_s = s.expiry.warn_seconds as i64;
    let grace_s = s.expiry.grace_seconds as i64;
    let work: Vec<(String, Due)> = {
        let objs = s.cache.read();
        objs.volumes
            .values()
            .map(|v| (v.name().to_string(), due(v, now, warn_s, grace_s)))
            .filter(|(_, d)| *d != Due::Nothing)
            .collect()
    };
    let admin = Admin { s: s.clone() };
    for (name, d) in work {
        match d {
            Due::Warn { expires, deadline } => warn_volume(s, &name, expires, deadline).await?,
            Due::Reap => reap(&admin, &name).await?,
            Due::Nothing => {}
        }
    }
    Ok(())
}

/// Runs [`reconcile`] periodically.
pub async fn run(s: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if let Err(e) = reconcile(&s).await {
            warn!(error = %e, "expiry pass failed");
        }
        match crate::enroll::collect_tokens(&s).await {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "expired bootstrap token records removed"),
            Err(e) => warn!(error = %e, "token collection failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::VolumeSpec;

    #[test]
    fn warns_then_reaps() {
        let v = Volume {
            spec: Some(VolumeSpec {
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(due(&v, 500, 100, 50), Due::Nothing);
        assert_eq!(
            due(&v, 950, 100, 50),
            Due::Warn {
                expires: 1000,
                deadline: 1050
            }
        );
        assert_eq!(
            due(&v, 1049, 100, 50),
            Due::Warn {
                expires: 1000,
                deadline: 1050
            }
        );
        assert_eq!(due(&v, 1050, 100, 50), Due::Reap);
    }
}
