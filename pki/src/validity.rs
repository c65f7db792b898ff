//! Certificate validity periods and the human duration syntax (`90d`, `1h30m`)
//! used by the CLI and the controller's configuration.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::PkiError;

/// How far `notBefore` is backdated, so a peer whose clock is a little behind
/// the CA's does not reject a certificate issued seconds ago.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

const DAY: u64 = 24 * 60 * 60;

/// Default lifetime of the CA certificate: ten years, because replacing the
/// CA means re-enrolling every node.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(3650 * DAY);
/// Default lifetime of the controller's server certificate.
pub const DEFAULT_SERVER_VALIDITY: Duration = Duration::from_secs(365 * DAY);
/// Default lifetime of admin and tenant client certificates.
pub const DEFAULT_CLIENT_VALIDITY: Duration = Duration::from_secs(365 * DAY);
/// Default lifetime of node certificates: short, because agents renew
/// automatically and a stolen node key should age out.
pub const DEFAULT_NODE_VALIDITY: Duration = Duration::from_secs(90 * DAY);
/// Default lifetime of a bootstrap token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);

/// Longest validity accepted, to keep dates well inside what X.509 and the
/// time library represent.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * DAY);

/// The `[notBefore, notAfter]` window of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: SystemTime,
    /// Last instant the certificate is valid.
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from a little before now (see [`CLOCK_SKEW`]) for `lifetime`.
    pub fn from_now(lifetime: Duration) -> Result<Self, PkiError> {
        Self::starting_at(SystemTime::now(), lifetime)
    }

    /// Valid from a little before `start` for `lifetime` after `start`.
    pub fn starting_at(start: SystemTime, lifetime: Duration) -> Result<Self, PkiError> {
        if lifetime.is_zero() {
            return Err(PkiError::InvalidValidity(
                "lifetime must be positive".into(),
            ));
        }
        if lifetime > MAX_LIFETIME {
            return Err(PkiError::InvalidValidity(
                "lifetime must be at most 100 years".into(),
            ));
        }
        let not_before = start.checked_sub(CLOCK_SKEW).unwrap_or(UNIX_EPOCH);
        let not_after = start
            .checked_add(lifetime)
            .ok_or_else(|| PkiError::InvalidValidity("end date out of range".into()))?;
        Self::between(not_before, not_after)
    }

    /// An explicit window; mostly for tests and re-issuing.
    pub fn between(not_before: SystemTime, not_after: SystemTime) -> Result<Self, PkiError> {
        if not_after <= not_before {
            return Err(PkiError::InvalidValidity(
                "notAfter must be later than notBefore".into(),
            ));
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// The two bounds in the representation rcgen wants.
    pub(crate) fn to_offset(self) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
        Ok((to_offset(self.not_before)?, to_offset(self.not_after)?))
    }
}

/// Converts without the panicking `From<SystemTime>` impl.
fn to_offset(t: SystemTime) -> Result<OffsetDateTime, PkiError> {
    let secs = unix_seconds(t);
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| PkiError::InvalidValidity(format!("date {secs} out of range")))
}

/// `2026-12-01T00:00:00Z (3d ago)`: a Unix time as people read it in
/// messages (RFC 3339 UTC plus the distance from now), never raw epoch
/// seconds.
pub fn describe_time(secs: i64) -> String {
    let at = match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => return format!("{secs} s after 1970-01-01T00:00:00Z"),
    };
    let delta = secs.saturating_sub(unix_seconds(SystemTime::now()));
    let d = format_duration(Duration::from_secs(delta.unsigned_abs()));
    if delta >= 0 {
        format!("{at} (in {d})")
    } else {
        format!("{at} ({d} ago)")
    }
}

/// Seconds since the Unix epoch, negative before it.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The instant `secs` seconds after (or before, if negative) the Unix epoch.
pub fn from_unix_seconds(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// Parses `30s`, `15m`, `1h`, `90d`, `2w`, `1y` and concatenations like
/// `1h30m`. A bare number is rejected: `--ttl 3600` is ambiguous to a reader.
pub fn parse_duration(input: &str) -> Result<Duration, PkiError> {
    let fail = |reason| PkiError::InvalidDuration {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(fail("empty"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(fail("expected a number"));
        }
        let (num, tail) = rest.split_at(digits);
        let n: u64 = num.parse().map_err(|_| fail("number too large"))?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(fail("missing unit (s, m, h, d, w or y)"));
        }
        let (unit, next) = tail.split_at(unit_len);
        let scale =
            unit_seconds(unit).ok_or_else(|| fail("unknown unit (use s, m, h, d, w or y)"))?;
        let part = n.checked_mul(scale).ok_or_else(|| fail("too large"))?;
        total = total.checked_add(part).ok_or_else(|| fail("too large"))?;
        rest = next;
    }
    if total == 0 {
        return Err(fail("must be positive"));
    }
    Ok(Duration::from_secs(total))
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => DAY,
        "w" => 7 * DAY,
        "y" => 365 * DAY,
        _ => return None,
    })
}

/// Formats a duration in the largest units that represent it exactly, e.g.
/// `90d` or `1h30m`; sub-second parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", DAY), ("h", 3600), ("m", 60), ("s", 1)] {
        let n = secs / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_messages_are_rfc3339_and_relative() {
        assert!(describe_time(1_796_083_200).starts_with("2026-12-01T00:00:00Z ("));
        let now = unix_seconds(SystemTime::now());
        let past = describe_time(now - 3 * 86_400);
        // ("3d ago", or "3d1s ago" when the second ticked in between)
        assert!(past.contains("Z (3d") && past.ends_with(" ago)"), "{past}");
        assert!(!past.contains(&(now - 3 * 86_400).to_string()), "{past}");
        let e = PkiError::Expired {
            what: "node.crt".into(),
            not_after: 1_796_083_200,
        };
        assert!(
            e.to_string()
                .starts_with("node.crt: certificate expired at 2026-12-01T00:00:00Z ("),
            "{e}"
        );
    }

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * DAY)
        );
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(14 * DAY));
    }

    #[test]
    fn rejects_bad_durations() {
        for s in [
            "",
            "10",
            "h",
            "1x",
            "0s",
            "1h-",
            "-1h",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["90d", "1h30m", "45s", "1d1s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn validity_backdates_and_checks_order() {
        let now = SystemTime::now();
        let v = Validity::starting_at(now, Duration::from_secs(60)).unwrap();
        assert_eq!(v.not_before, now - CLOCK_SKEW);
        assert!(Validity::between(now, now).is_err());
        assert!(Validity::from_now(Duration::ZERO).is_err());
        assert!(Validity::from_now(MAX_LIFETIME * 2).is_err());
    }

    #[test]
    fn unix_seconds_round_trip() {
        for s in [0, 1_700_000_000, -86_400] {
            assert_eq!(unix_seconds(from_unix_seconds(s)), s);
        }
    }
}
