//! Time as the controller sees it. Injectable so that tests can drive burst
//! expiry deterministically (`clock = "manual"` plus the debug service).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// RFC 3339 and relative times: one implementation for controller, agent
/// and CLI.
pub use ferrofab_proto::time::{relative, rfc3339, when};

#[derive(Debug, Clone)]
pub enum Clock {
    System,
    /// Starts at the real time; moves only when advanced.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual() -> Self {
        Self::Manual(Arc::new(AtomicI64::new(system_now())))
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        match self {
            Self::System => system_now(),
            Self::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    pub fn now_ts(&self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.now(),
            nanos: 0,
        }
    }

    /// Moves a manual clock forward; returns false for the system clock.
    pub fn advance(&self, secs: i64) -> bool {
        match self {
            Self::System => false,
            Self::Manual(t) => {
                t.fetch_add(secs, Ordering::SeqCst);
                true
            }
        }
    }
}

fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod human_tests {
    use super::*;

    #[test]
    fn times_read_as_rfc3339_and_relative() {
        assert_eq!(rfc3339(1_796_083_200), "2026-12-01T00:00:00Z");
        assert_eq!(
            when(1_796_083_200, 1_796_083_200 - 13 * 86_400),
            "2026-12-01T00:00:00Z (in 13d)"
        );
        assert_eq!(relative(-7200), "2h ago");
        assert_eq!(relative(36 * 3600), "in 36h");
        assert_eq!(relative(59), "in 59s");
    }
}
