//! Time as the controller sees it. Injectable so that tests can drive burst
//! expiry deterministically (`clock = "manual"` plus the debug service).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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
