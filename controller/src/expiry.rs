//! Burst volumes: a volume with `spec.expires_at` is flagged with a Warning
//! condition `Expiring` ahead of time; what happens once `expires_at` has
//! passed depends on `spec.expiry_action`:
//!
//! * `retain` (the default): the volume is detached at once (its
//!   attachments are deleted, so the workstations disconnect and the
//!   storage node revokes their hosts) and its data kept for
//!   `expiry.retain_grace_seconds`. An administrator's `volume extend`
//!   within that time brings it back (attach it again); after it, the
//!   volume is deleted.
//! * `delete`: detached and deleted once `expires_at + expiry.grace_seconds`
//!   has passed.
//!
//! The state is shown as a condition `Expired` (reason `Retained` or
//! `DeletionScheduled`) and as `status.expiry_deletes_at`. Messages carry
//! RFC 3339 times with the relative time as of the last pass; each pass
//! rewrites a message whose relative part has changed, so it never reads
//! "in 7d" six days later. Time comes from the injectable clock so tests can
//! drive it.
//!
//! This module holds the rules (pure functions of a volume and a time);
//! the pass that acts on them is `loops::expiry`.

use ferrofab_proto::v1::{Condition, ConditionStatus, ExpiryAction, Severity, Volume};

use crate::clock::when;
use crate::conditions::set_condition;
use crate::config::ExpiryConfig;
use crate::error::ApiError;
use crate::resource::Object;

/// Condition type shown ahead of expiry.
pub const EXPIRING: &str = "Expiring";
/// Condition type shown once expires_at has passed.
pub const EXPIRED: &str = "Expired";

/// The expiry settings in seconds, as the reconciler uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Before expires_at: from when the `Expiring` warning shows.
    pub warn: i64,
    /// After expires_at: when a `delete` volume is detached and deleted.
    pub grace: i64,
    /// After expires_at: how long a `retain` volume's data is kept.
    pub retain_grace: i64,
}

impl From<&ExpiryConfig> for Windows {
    fn from(c: &ExpiryConfig) -> Self {
        let s = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Windows {
            warn: s(c.warn_seconds),
            grace: s(c.grace_seconds),
            retain_grace: s(c.retain_grace_seconds),
        }
    }
}

/// The effective action: unspecified (and unknown values) mean retain,
/// the safe one.
pub fn action(v: &Volume) -> ExpiryAction {
    match v
        .spec
        .as_ref()
        .and_then(|s| ExpiryAction::try_from(s.expiry_action).ok())
    {
        Some(ExpiryAction::Delete) => ExpiryAction::Delete,
        _ => ExpiryAction::Retain,
    }
}

/// The word users type for an action (`--expiry-action`, layouts,
/// Terraform).
pub fn action_word(a: ExpiryAction) -> &'static str {
    match a {
        ExpiryAction::Delete => "delete",
        _ => "retain",
    }
}

/// What the expiry of one volume asks for at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No expiry, or not yet within the warning window.
    Quiet,
    /// Within the warning window before expires_at.
    Warn { expires: i64, deletes: i64 },
    /// Past expires_at, data kept until `deletes`: detach now.
    Retained { expires: i64, deletes: i64 },
    /// Past expires_at, deleted (and detached) at `deletes`.
    DeletionScheduled { expires: i64, deletes: i64 },
    /// Past the deletion time: detach and delete.
    Reap,
}

/// The expiry state of `v` at `now`. A volume being deleted is left alone.
pub fn state(v: &Volume, now: i64, w: Windows) -> State {
    let Some(exp) = v.spec.as_ref().and_then(|s| s.expires_at.as_ref()) else {
        return State::Quiet;
    };
    if v.metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp.is_some())
    {
        return State::Quiet;
    }
    let expires = exp.seconds;
    let act = action(v);
    let deletes = expires.saturating_add(match act {
        ExpiryAction::Delete => w.grace,
        _ => w.retain_grace,
    });
    if now >= deletes {
        State::Reap
    } else if now >= expires {
        match act {
            ExpiryAction::Delete => State::DeletionScheduled { expires, deletes },
            _ => State::Retained { expires, deletes },
        }
    } else if now >= expires.saturating_sub(w.warn) {
        State::Warn { expires, deletes }
    } else {
        State::Quiet
    }
}

/// The condition (and deletion time) a state shows, worded for `name`.
fn shown(name: &str, act: ExpiryAction, st: &State, now: i64) -> Option<(Condition, Option<i64>)> {
    let (kind, reason, message, deletes_at) = match *st {
        State::Quiet | State::Reap => return None,
        State::Warn { expires, deletes } => {
            let then = match act {
                ExpiryAction::Delete => format!(
                    "it will be detached and deleted at {} unless extended",
                    when(deletes, now)
                ),
                _ => format!(
                    "it will be detached then, its data kept until {} unless extended",
                    when(deletes, now)
                ),
            };
            (
                EXPIRING,
                "BurstAllocationExpiring",
                format!("burst volume expires at {}; {then}", when(expires, now)),
                None,
            )
        }
        State::Retained { expires, deletes } => (
            EXPIRED,
            "Retained",
            format!(
                "expired at {}: detached, data kept until {}; `ferrofab volume extend {name} --by 7d` brings it back (then attach it again)",
                when(expires, now),
                when(deletes, now)
            ),
            Some(deletes),
        ),
        State::DeletionScheduled { expires, deletes } => (
            EXPIRED,
            "DeletionScheduled",
            format!(
                "expired at {}: it will be detached and deleted at {} unless extended",
                when(expires, now),
                when(deletes, now)
            ),
            Some(deletes),
        ),
    };
    Some((
        Condition {
            r#type: kind.into(),
            status: ConditionStatus::True as i32,
            reason: reason.into(),
            message,
            last_transition_time: Some(prost_types::Timestamp {
                seconds: now,
                nanos: 0,
            }),
            severity: Severity::Warning as i32,
            observed_generation: 0,
        },
        deletes_at,
    ))
}

/// Brings the expiry part of `v`'s status in line with `st`: at most one
/// of the `Expiring`/`Expired` conditions, and `expiry_deletes_at`.
/// Returns whether anything changed (so that an unchanged volume is not
/// written).
pub fn apply_state(v: &mut Volume, st: &State, now: i64) -> bool {
    let generation = v.metadata.as_ref().map_or(0, |m| m.generation);
    let want = shown(v.name(), action(v), st, now);
    let status = v.status.get_or_insert_with(Default::default);
    let before = (status.conditions.clone(), status.expiry_deletes_at);
    let keep = want.as_ref().map(|(c, _)| c.r#type.clone());
    status.conditions.retain(|c| {
        (c.r#type != EXPIRING && c.r#type != EXPIRED) || Some(&c.r#type) == keep.as_ref()
    });
    let deletes_at = match want {
        Some((mut c, deletes_at)) => {
            c.observed_generation = generation;
            let same = status.conditions.iter().any(|o| {
                o.r#type == c.r#type
                    && o.reason == c.reason
                    && o.message == c.message
                    && o.status == c.status
                    && o.observed_generation == c.observed_generation
            });
            if !same {
                set_condition(&mut status.conditions, c);
            }
            deletes_at
        }
        None => None,
    };
    status.expiry_deletes_at =
        deletes_at.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 });
    (status.conditions.clone(), status.expiry_deletes_at) != before
}

/// Refuses a new attachment to a volume past its expires_at: a retained
/// volume is detached on every pass, and one scheduled for deletion is
/// about to go. The message says how to bring it back.
pub fn check_attachable(v: &Volume, now: i64) -> Result<(), ApiError> {
    let Some(exp) = v.spec.as_ref().and_then(|s| s.expires_at.as_ref()) else {
        return Ok(());
    };
    if exp.seconds > now {
        return Ok(());
    }
    let kept = v
        .status
        .as_ref()
        .and_then(|s| s.expiry_deletes_at.as_ref())
        .map_or(String::new(), |d| {
            format!(
                "; {} {}",
                match action(v) {
                    ExpiryAction::Delete => "it will be deleted at",
                    _ => "its data is kept until",
                },
                when(d.seconds, now)
            )
        });
    Err(ApiError::FailedPrecondition(format!(
        "volume {:?} expired at {}{kept}; an administrator can extend it first (`ferrofab volume extend {} --by 7d`)",
        v.name(),
        when(exp.seconds, now),
        v.name()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::{ObjectMeta, VolumeSpec};

    const W: Windows = Windows {
        warn: 100,
        grace: 50,
        retain_grace: 500,
    };

    fn burst(action: ExpiryAction) -> Volume {
        Volume {
            metadata: Some(ObjectMeta {
                name: "scratch".into(),
                generation: 3,
                ..Default::default()
            }),
            spec: Some(VolumeSpec {
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1000,
                    nanos: 0,
                }),
                expiry_action: action as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn delete_warns_then_schedules_then_reaps() {
        let v = burst(ExpiryAction::Delete);
        assert_eq!(state(&v, 500, W), State::Quiet);
        let scheduled = State::DeletionScheduled {
            expires: 1000,
            deletes: 1050,
        };
        assert_eq!(
            state(&v, 950, W),
            State::Warn {
                expires: 1000,
                deletes: 1050
            }
        );
        assert_eq!(state(&v, 1000, W), scheduled);
        assert_eq!(state(&v, 1049, W), scheduled);
        assert_eq!(state(&v, 1050, W), State::Reap);
    }

    #[test]
    fn unspecified_action_retains_for_the_retain_grace() {
        let v = burst(ExpiryAction::Unspecified);
        assert_eq!(action(&v), ExpiryAction::Retain);
        assert_eq!(
            state(&v, 1000, W),
            State::Retained {
                expires: 1000,
                deletes: 1500
            }
        );
        assert_eq!(state(&v, 1499, W).clone(), state(&v, 1200, W));
        assert_eq!(state(&v, 1500, W), State::Reap);
    }

    fn step(v: &mut Volume, now: i64, w: Windows) -> bool {
        let st = state(v, now, w);
        apply_state(v, &st, now)
    }

    fn cond<'a>(v: &'a Volume, kind: &str) -> Option<&'a Condition> {
        v.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.r#type == kind)
    }

    #[test]
    fn status_reads_with_rfc3339_and_relative_times() {
        let t = 1_796_083_200; // 2026-12-01T00:00:00Z
        let w = Windows {
            warn: 86_400,
            grace: 3600,
            retain_grace: 7 * 86_400,
        };
        let mut v = burst(ExpiryAction::Retain);
        v.spec.as_mut().unwrap().expires_at = Some(prost_types::Timestamp {
            seconds: t,
            nanos: 0,
        });
        let now = t + 3600;
        assert!(step(&mut v, now, w));
        let c = cond(&v, EXPIRED).expect("expired");
        assert_eq!(c.reason, "Retained");
        assert_eq!(c.observed_generation, 3);
        assert!(
            c.message
                .contains("expired at 2026-12-01T00:00:00Z (60m ago)"),
            "{}",
            c.message
        );
        assert!(
            c.message
                .contains("data kept until 2026-12-08T00:00:00Z (in 7d)"),
            "{}",
            c.message
        );
        assert_eq!(
            v.status.as_ref().unwrap().expiry_deletes_at,
            Some(prost_types::Timestamp {
                seconds: t + 7 * 86_400,
                nanos: 0
            })
        );
        // Same rendering: nothing to write.
        assert!(!step(&mut v, now + 1, w));
        // A day later the relative part moved: rewritten, transition kept.
        let later = now + 86_400;
        assert!(step(&mut v, later, w));
        let c = cond(&v, EXPIRED).expect("expired");
        assert!(c.message.contains("(in 6d)"), "{}", c.message);
        assert_eq!(c.last_transition_time.as_ref().unwrap().seconds, now);
        // Extended: every trace of expiry goes.
        v.spec.as_mut().unwrap().expires_at = Some(prost_types::Timestamp {
            seconds: later + 30 * 86_400,
            nanos: 0,
        });
        assert!(step(&mut v, later, w));
        assert!(cond(&v, EXPIRED).is_none() && cond(&v, EXPIRING).is_none());
        assert_eq!(v.status.as_ref().unwrap().expiry_deletes_at, None);
        assert!(!v
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.message.contains(&t.to_string())));
    }

    #[test]
    fn expired_volumes_refuse_new_attachments_with_a_way_out() {
        let v = burst(ExpiryAction::Retain);
        assert!(check_attachable(&v, 999).is_ok());
        let e = check_attachable(&v, 1010).expect_err("expired").to_string();
        assert!(e.contains("volume extend scratch --by"), "{e}");
        assert!(e.contains("1970-01-01T00:16:40Z (10s ago)"), "{e}");
    }
}
