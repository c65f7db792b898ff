//! Time as the controller sees it. Injectable so that tests can drive burst
//! expiry deterministically (`clock = "manual"` plus the debug service).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A Unix time as RFC 3339 UTC (`2026-12-01T00:00:00Z`): what people and
/// the CLI's `--expires-at` read, unlike epoch seconds.
pub fn rfc3339(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} s after 1970-01-01T00:00:00Z"),
    }
}

/// A time difference as a person reads it ("in 13d", "2h ago"); the unit
/// is the largest that leaves at least two of it, rounded. The CLI's
/// EXPIRES column reads the same way.
pub fn relative(delta_seconds: i64) -> String {
    let a = delta_seconds.unsigned_abs();
    let amount = if a >= 2 * 86_400 {
        format!("{}d", (a + 43_200) / 86_400)
    } else if a >= 2 * 3600 {
        format!("{}h", (a + 1800) / 3600)
    } else if a >= 120 {
        format!("{}m", (a + 30) / 60)
    } else {
        format!("{a}s")
    };
    if delta_seconds >= 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// `2026-12-01T00:00:00Z (in 13d)`, relative to `now`, for messages.
pub fn when(secs: i64, now: i64) -> String {
    format!("{} ({})", rfc3339(secs), relative(secs - now))
}

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
