//! Building and setting status conditions, shared by the operations, the
//! report path and the background loops (so none of them imports another
//! for it).

use ferrofab_proto::v1::{Condition, Severity};

/// A condition of type `kind` set by the controller itself: severity Info
/// whatever its status (the controller's API reports facts, not faults).
pub fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: prost_types::Timestamp,
    generation: u64,
) -> Condition {
    Condition {
        severity: Severity::Info as i32,
        observed_generation: generation,
        ..ferrofab_proto::condition::new(kind, ok, reason, message, now)
    }
}

/// Sets a condition, keeping last_transition_time when the status holds.
pub use ferrofab_proto::condition::set as set_condition;
