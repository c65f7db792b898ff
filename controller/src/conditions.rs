//! Building and setting status conditions, shared by the operations, the
//! report path and the background loops (so none of them imports another
//! for it).

use ferrofab_proto::v1::{Condition, ConditionStatus, Severity};

/// A condition of type `kind` set by the controller itself (severity Info).
pub fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: prost_types::Timestamp,
    generation: u64,
) -> Condition {
    Condition {
        r#type: kind.into(),
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        } as i32,
        reason: reason.into(),
        message,
        last_transition_time: Some(now),
        severity: Severity::Info as i32,
        observed_generation: generation,
    }
}

/// Sets a condition, keeping last_transition_time when the status holds.
pub fn set_condition(conds: &mut Vec<Condition>, mut c: Condition) {
    if let Some(old) = conds.iter_mut().find(|o| o.r#type == c.r#type) {
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time;
        }
        *old = c;
    } else {
        conds.push(c);
    }
}
