//! Burst expiry as the workstation sees it: the controller puts each
//! volume's `expires_at` in the desired connections, and the agent shows
//! it in the local `status` and `attachments` output, logs one warning per
//! expiry once it is within `expiry_warning` of now (so a researcher at the
//! workstation learns before the volume is detached, not after), and
//! exports it as metrics. An extension moves `expires_at`; the next warning
//! is then for the new time.

use std::collections::HashMap;
use std::fmt::Write as _;

use ferrofab_proto::v1::Connection;
use tracing::warn;

use crate::status::LocalAttachment;

/// One exposed volume's expiry at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeExpiry {
    pub volume: String,
    pub attachment: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Seconds left (negative once past).
    pub remaining: i64,
    /// Within the warning window (or past).
    pub warning: bool,
}

/// The expiries of the desired connections that have one.
pub fn expiries(conns: &[Connection], now: i64, window_s: i64) -> Vec<VolumeExpiry> {
    let mut v: Vec<VolumeExpiry> = conns
        .iter()
        .filter_map(|c| {
            let at = c.expires_at.as_ref()?.seconds;
            let remaining = at.saturating_sub(now);
            Some(VolumeExpiry {
                volume: c.volume.clone(),
                attachment: c.attachment.clone(),
                expires_at: at,
                remaining,
                warning: remaining <= window_s,
            })
        })
        .collect();
    v.sort_by(|a, b| a.volume.cmp(&b.volume));
    v
}

/// Which expiries were already warned about, by attachment, so that each
/// is logged once (and again only after an extension moved it).
#[derive(Debug, Default)]
pub struct Warned {
    by_attachment: HashMap<String, i64>,
}

impl Warned {
    /// Logs a warning for each expiry newly inside the window; returns
    /// the volumes warned about now.
    pub fn check(&mut self, list: &[VolumeExpiry], now: i64) -> Vec<String> {
        self.by_attachment
            .retain(|a, _| list.iter().any(|e| &e.attachment == a));
        let mut out = Vec::new();
        for e in list.iter().filter(|e| e.warning) {
            if self.by_attachment.get(&e.attachment) == Some(&e.expires_at) {
                continue;
            }
            self.by_attachment
                .insert(e.attachment.clone(), e.expires_at);
            warn!(
                volume = %e.volume,
                attachment = %e.attachment,
                expires_at = %rfc3339(e.expires_at),
                "burst volume {} expires at {}: it will be detached then; save your work or ask an administrator to extend it (`ferrofab volume extend {} --by 7d`)",
                e.volume,
                when(e.expires_at, now),
                e.volume
            );
            out.push(e.volume.clone());
        }
        out
    }
}

/// Adds the expiry to the local API's attachments (by attachment name).
pub fn annotate(list: &mut [LocalAttachment], expiries: &[VolumeExpiry], now: i64) {
    for a in list.iter_mut() {
        if let Some(e) = expiries.iter().find(|e| e.attachment == a.attachment) {
            a.expires_at = Some(rfc3339(e.expires_at));
            a.expires_in = Some(relative(e.expires_at - now));
            a.expiry_warning = e.warning;
        }
    }
}

/// The per-volume expiry series.
pub fn render(list: &[VolumeExpiry], out: &mut String) {
    gauge(
        out,
        "ferrofab_agent_volume_expiry_timestamp_seconds",
        "When the exposed burst volume expires (Unix seconds); absent without an expiry.",
        list,
        |e| e.expires_at.to_string(),
    );
    gauge(
        out,
        "ferrofab_agent_volume_expiry_remaining_seconds",
        "Seconds until the exposed burst volume expires (negative once past).",
        list,
        |e| e.remaining.to_string(),
    );
    gauge(
        out,
        "ferrofab_agent_volume_expiry_warning",
        "1 when the exposed burst volume expires within the agent's expiry_warning window.",
        list,
        |e| u8::from(e.warning).to_string(),
    );
}

/// One gauge family with a series per volume.
fn gauge(
    out: &mut String,
    name: &str,
    help: &str,
    list: &[VolumeExpiry],
    value: impl Fn(&VolumeExpiry) -> String,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for e in list {
        let _ = writeln!(out, "{name}{{volume=\"{}\"}} {}", e.volume, value(e));
    }
}

/// RFC 3339 and relative times, as the controller and the CLI write them.
pub use ferrofab_proto::time::{relative, rfc3339, when};

/// Seconds since the Unix epoch now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(att: &str, vol: &str, at: Option<i64>) -> Connection {
        Connection {
            attachment: att.into(),
            volume: vol.into(),
            expires_at: at.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn warns_once_per_expiry_and_again_after_an_extension() {
        let day = 86_400;
        let t = 1_796_083_200; // 2026-12-01T00:00:00Z
        let conns = vec![conn("a-ws", "a", Some(t)), conn("b-ws", "b", None)];
        let mut w = Warned::default();
        // Two days ahead: outside a 24 h window.
        let l = expiries(&conns, t - 2 * day, day);
        assert_eq!(l.len(), 1);
        assert!(!l[0].warning);
        assert!(w.check(&l, t - 2 * day).is_empty());
        // Inside: one warning, then none.
        let l = expiries(&conns, t - 3600, day);
        assert!(l[0].warning);
        assert_eq!(w.check(&l, t - 3600), vec!["a".to_string()]);
        assert!(w.check(&expiries(&conns, t - 60, day), t - 60).is_empty());
        // Extended, and inside the window again later: warned again.
        let moved = vec![conn("a-ws", "a", Some(t + day / 2))];
        assert_eq!(w.check(&expiries(&moved, t, day), t), vec!["a".to_string()]);
    }

    #[test]
    fn metrics_and_local_view_read_the_same_expiry() {
        let t = 1_796_083_200;
        let l = expiries(&[conn("a-ws", "a", Some(t))], t - 13 * 3600, 86_400);
        let mut s = String::new();
        render(&l, &mut s);
        assert!(
            s.contains("ferrofab_agent_volume_expiry_timestamp_seconds{volume=\"a\"} 1796083200")
        );
        assert!(s.contains("ferrofab_agent_volume_expiry_remaining_seconds{volume=\"a\"} 46800"));
        assert!(s.contains("ferrofab_agent_volume_expiry_warning{volume=\"a\"} 1"));
        assert!(s.starts_with(
            "# HELP ferrofab_agent_volume_expiry_timestamp_seconds When the exposed burst volume expires (Unix seconds); absent without an expiry.\n# TYPE ferrofab_agent_volume_expiry_timestamp_seconds gauge\nferrofab_agent_volume_expiry_timestamp_seconds{volume=\"a\"} 1796083200\n# HELP ferrofab_agent_volume_expiry_remaining_seconds"
        ));
        let mut list = vec![LocalAttachment {
            attachment: "a-ws".into(),
            volume: "a".into(),
            ..Default::default()
        }];
        annotate(&mut list, &l, t - 13 * 3600);
        assert_eq!(list[0].expires_at.as_deref(), Some("2026-12-01T00:00:00Z"));
        assert_eq!(list[0].expires_in.as_deref(), Some("in 13h"));
        assert!(list[0].expiry_warning);
    }
}
