//! Building and updating status conditions: one definition for the
//! controller and the agent, which both write conditions that clients read.
//!
//! The words (types and reasons) are `ferrofab_types::condition`'s enums;
//! the builders take anything `AsRef<str>`, so a reason not (yet) in the
//! enums still works and reads the same on the wire.

use prost_types::Timestamp;

use crate::v1::{Condition, ConditionStatus, Severity};

pub use ferrofab_types::condition::{ConditionType, Reason};

/// A condition of type `kind` that holds (`ok`) or not, stamped `at`.
///
/// Severity is Info when it holds and Warning when it does not, and
/// `observed_generation` is 0; a caller with another policy overrides the
/// field (`Condition { severity: …, ..condition::new(…) }`), so the rule
/// each caller follows stays visible where it writes the condition.
pub fn new(
    kind: impl AsRef<str>,
    ok: bool,
    reason: impl AsRef<str>,
    message: impl Into<String>,
    at: impl Into<Option<Timestamp>>,
) -> Condition {
    let (status, severity) = if ok {
        (ConditionStatus::True, Severity::Info)
    } else {
        (ConditionStatus::False, Severity::Warning)
    };
    Condition {
        r#type: kind.as_ref().to_owned(),
        status: status as i32,
        reason: reason.as_ref().to_owned(),
        message: message.into(),
        last_transition_time: at.into(),
        severity: severity as i32,
        observed_generation: 0,
    }
}

/// Sets `c` in `conds` (replacing the condition of the same type), keeping
/// the old `last_transition_time` while the status holds: the time says
/// when the status last *changed*, not when it was last written.
pub fn set(conds: &mut Vec<Condition>, mut c: Condition) {
    if let Some(old) = conds.iter_mut().find(|o| o.r#type == c.r#type) {
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time;
        }
        *old = c;
    } else {
        conds.push(c);
    }
}

/// The condition of type `kind`, if present.
pub fn find(conds: &[Condition], kind: impl AsRef<str>) -> Option<&Condition> {
    conds.iter().find(|c| c.r#type == kind.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn new_fills_status_and_severity() {
        let c = new(ConditionType::Connected, false, Reason::Moving, "m", ts(5));
        assert_eq!(c.r#type, "Connected");
        assert_eq!(c.reason, "Moving");
        assert_eq!(c.status(), ConditionStatus::False);
        assert_eq!(c.severity(), Severity::Warning);
        assert_eq!(c.last_transition_time, Some(ts(5)));
        let c = new("Exported", true, "ExportReady", String::from("ok"), None);
        assert_eq!(c.status(), ConditionStatus::True);
        assert_eq!(c.severity(), Severity::Info);
        assert_eq!(c.last_transition_time, None);
    }

    #[test]
    fn set_keeps_the_transition_time_while_the_status_holds() {
        let mut conds = vec![new(
            ConditionType::Ready,
            true,
            Reason::AgentReporting,
            "",
            ts(1),
        )];
        set(
            &mut conds,
            new(
                ConditionType::Ready,
                true,
                Reason::AgentReporting,
                "again",
                ts(9),
            ),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].message, "again");
        assert_eq!(conds[0].last_transition_time, Some(ts(1)));
        set(
            &mut conds,
            new(ConditionType::Ready, false, Reason::NoHeartbeat, "", ts(20)),
        );
        assert_eq!(conds[0].last_transition_time, Some(ts(20)));
        set(
            &mut conds,
            new(ConditionType::Placed, true, Reason::PlacedOnPool, "", ts(3)),
        );
        assert_eq!(conds.len(), 2);
        assert_eq!(
            find(&conds, ConditionType::Placed).map(|c| c.reason.as_str()),
            Some("PlacedOnPool")
        );
        assert!(find(&conds, "Expired").is_none());
    }
}
