//! Rendering: aligned tables, JSON, YAML, and the small formatting helpers
//! (sizes, timestamps, enum names) the views share. A leaf: objects are
//! rendered by the `render` module, which builds on this and on the kinds.

use std::io::Write;

use serde_json::Value;

use crate::args::Format;
use crate::yaml;

/// `VOLUME_PHASE_READY` with prefix `VOLUME_PHASE_` → `ready`;
/// `BLOCK_DEVICE` → `block-device`; `UNSPECIFIED` → `-`.
pub fn enum_word(full: &str, prefix: &str) -> String {
    let short = full.strip_prefix(prefix).unwrap_or(full);
    if short == "UNSPECIFIED" {
        return "-".to_owned();
    }
    short.to_ascii_lowercase().replace('_', "-")
}

/// Approximate binary size for people, e.g. `3.9TiB`; exact sizes print
/// without a fraction (`4TiB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        // Truncate rather than round, so "3.99TiB left" never shows as 4.0.
        let truncated = (value * 10.0).floor() / 10.0;
        format!("{truncated:.1}{}", UNITS[unit])
    }
}

/// RFC 3339, UTC, whole seconds.
pub fn timestamp(t: &prost_types::Timestamp) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(t.seconds)
        .ok()
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_else(|| format!("@{}", t.seconds))
}

/// "in 13d", "2h ago": shared with the controller's and the agent's messages.
pub use ferrofab_proto::time::relative;

/// The EXPIRES cell: "in 13d", "-" without an expiry; once expired, what
/// the controller scheduled (`status.expiry_deletes_at`): "expired, kept
/// 6d" for a retained volume (its data stays that long), "expired,
/// deleted in 50m" for `delete`, or "expired 2h ago" before the
/// controller's expiry pass has run.
pub fn expires_cell(
    at: Option<&prost_types::Timestamp>,
    deletes_at: Option<&prost_types::Timestamp>,
    retain: bool,
    now_seconds: i64,
) -> String {
    match (at, deletes_at) {
        (None, _) => "-".into(),
        (Some(t), _) if t.seconds > now_seconds => relative(t.seconds - now_seconds),
        (Some(_), Some(d)) if retain => format!(
            "expired, kept {}",
            amount(d.seconds.saturating_sub(now_seconds).max(0))
        ),
        (Some(_), Some(d)) => format!(
            "expired, deleted {}",
            relative(d.seconds.saturating_sub(now_seconds).max(0))
        ),
        (Some(t), None) => format!("expired {}", relative(t.seconds - now_seconds)),
    }
}

/// The amount of a time difference without its direction ("6d").
fn amount(delta_seconds: i64) -> String {
    let r = relative(delta_seconds);
    r.strip_prefix("in ")
        .or_else(|| r.strip_suffix(" ago"))
        .unwrap_or(&r)
        .to_owned()
}

/// Seconds since the Unix epoch now, for relative times.
pub fn now_seconds() -> i64 {
    ferrofab_pki::validity::unix_seconds(std::time::SystemTime::now())
}

/// Lays out rows under a header, columns separated by two spaces; the
/// last column is not padded so lines carry no trailing blanks.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<pad$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders an arbitrary value as JSON or YAML (tables fall back to YAML,
/// which reads fine for small documents).
pub fn render_value(v: &Value, format: Format) -> String {
    match format {
        Format::Json => pretty_json(v),
        Format::Yaml | Format::Table | Format::Wide | Format::Name => yaml::to_string(v),
    }
}

fn pretty_json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    s.push('\n');
    s
}

/// Writes to stdout, ignoring a closed pipe (`ferrofab vol ls | head`).
pub fn print(s: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `s`, or `-` for an empty field, so table and describe columns never
/// show a blank.
pub fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_words() {
        assert_eq!(enum_word("VOLUME_PHASE_READY", "VOLUME_PHASE_"), "ready");
        assert_eq!(
            enum_word("BACKING_KIND_BLOCK_DEVICE", "BACKING_KIND_"),
            "block-device"
        );
        assert_eq!(enum_word("ACCESS_MODE_UNSPECIFIED", "ACCESS_MODE_"), "-");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1023), "1023B");
        assert_eq!(human_size(4 << 40), "4TiB");
        assert_eq!(human_size((4u64 << 40) - (100 << 30)), "3.9TiB");
        assert_eq!(human_size(1536 << 20), "1.5GiB");
    }

    #[test]
    fn timestamps() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        assert_eq!(timestamp(&t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn table_alignment() {
        let t = table(
            &["NAME", "SIZE"],
            &[
                vec!["a".into(), "1GiB".into()],
                vec!["longer-name".into(), "-".into()],
            ],
        );
        assert_eq!(t, "NAME         SIZE\na            1GiB\nlonger-name  -\n");
    }

    #[test]
    fn relative_times() {
        assert_eq!(relative(13 * 86_400 - 5), "in 13d");
        assert_eq!(relative(36 * 3600), "in 36h");
        assert_eq!(relative(-2 * 3600), "2h ago");
        assert_eq!(relative(-90), "90s ago");
        assert_eq!(relative(300), "in 5m");
        let at = prost_types::Timestamp {
            seconds: 1000,
            nanos: 0,
        };
        assert_eq!(
            expires_cell(Some(&at), None, true, 1000 - 13 * 86_400),
            "in 13d"
        );
        assert_eq!(
            expires_cell(Some(&at), None, true, 1000 + 7200),
            "expired 2h ago"
        );
        assert_eq!(expires_cell(None, None, true, 0), "-");
        let kept = prost_types::Timestamp {
            seconds: 1000 + 7 * 86_400,
            nanos: 0,
        };
        assert_eq!(
            expires_cell(Some(&at), Some(&kept), true, 1000 + 86_400),
            "expired, kept 6d"
        );
        let gone = prost_types::Timestamp {
            seconds: 1000 + 3600,
            nanos: 0,
        };
        assert_eq!(
            expires_cell(Some(&at), Some(&gone), false, 1000 + 600),
            "expired, deleted in 50m"
        );
    }
}
