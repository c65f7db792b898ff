//! What a reconcile step reports: a [`Problem`] (reason + message), the
//! [`PassOutcome`] of a pass, and status conditions. The bottom layer of
//! the agent: drivers, the backing-file module and the reconcilers all
//! speak it, and it imports nothing of the crate.

use ferrofab_proto::v1::{Condition, Severity};
use ferrofab_types::Reason;

/// Something a pass could not do, with a machine-readable reason (its
/// CamelCase string goes into conditions and logs) and a message for the
/// operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    pub message: String,
}

impl Problem {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// What one reconcile pass did, for metrics and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassOutcome {
    pub changes: usize,
    pub errors: usize,
}

impl PassOutcome {
    pub fn add(&mut self, other: PassOutcome) {
        self.changes += other.changes;
        self.errors += other.errors;
    }
}

/// A status condition stamped now (the shared builder, with the agent's rule
/// that a condition that does not hold is an Error: it is a fault on this
/// node, not progress).
pub fn condition(
    kind: &str,
    ok: bool,
    reason: impl AsRef<str>,
    message: impl Into<String>,
) -> Condition {
    let c = ferrofab_proto::condition::new(kind, ok, reason, message, now_ts());
    if ok {
        c
    } else {
        Condition {
            severity: Severity::Error as i32,
            ..c
        }
    }
}

/// The current time as a protobuf timestamp.
pub fn now_ts() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}
