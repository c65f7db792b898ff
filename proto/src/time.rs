//! How times read in messages, status and CLI output: RFC 3339 and
//! relative ("in 13d"), never raw epoch seconds. Shared by the controller,
//! the agent and the CLI (which all speak this crate's API) so that they
//! read alike.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_rfc3339_and_relative() {
        assert_eq!(rfc3339(1_764_547_200), "2025-12-01T00:00:00Z");
        assert_eq!(relative(36 * 3600), "in 36h");
        assert_eq!(relative(-3 * 86_400), "3d ago");
        assert_eq!(relative(90), "in 90s");
        assert_eq!(
            when(1_764_547_200 + 600, 1_764_547_200),
            "2025-12-01T00:10:00Z (in 10m)"
        );
    }
}
