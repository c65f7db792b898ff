//! Prometheus metrics on a plain HTTP port.
//!
//! Everything is per agent instance (no global registry), so several
//! agents can run in one process (`ferrofab dev`). The text format is
//! written directly: the per-volume series come from `Target::status()` at
//! scrape time, which a static registry would only duplicate.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::error::AgentError;

/// Upper bounds (seconds) of the reconcile-duration histogram.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// Counters the reconcile loop updates.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    bucket_counts: [AtomicU64; BUCKETS.len()],
    duration_micros: AtomicU64,
    /// Times the main loop woke up (pass, desired state, heartbeat, ...):
    /// an idle agent wakes a few times a minute, a busy loop millions.
    pub main_loop_wakeups: AtomicU64,
    /// Names in received desired states that are not one safe file name
    /// (exposure names, NQNs); the objects are refused.
    pub refused_names: AtomicU64,
    /// Local API connections turned away, by reason.
    pub local_api_refused: Arc<LocalApiRefusals>,
    /// The workstation data-path holder, shared with its driver.
    pub holder: Arc<HolderCounters>,
}

/// What the agent saw of its data-path holder.
#[derive(Debug, Default)]
pub struct HolderCounters {
    /// Holders this agent started (none ran, or an idle outdated one was
    /// replaced); more than one per host boot means holders die.
    pub starts: AtomicU64,
    /// Requests to the holder that got no answer (unreachable, timed out
    /// after `holder.request_timeout`, unreadable answer).
    pub request_failures: AtomicU64,
}

/// Local API connections or requests refused, by reason.
#[derive(Debug, Default)]
pub struct LocalApiRefusals {
    /// `local_api.max_connections` connections were already open.
    pub too_many_connections: AtomicU64,
    /// No complete request within `local_api.request_timeout`.
    pub request_timeout: AtomicU64,
    /// The request line was longer than the size bound.
    pub request_too_large: AtomicU64,
}

impl Metrics {
    /// Records one pass.
    pub fn observe_pass(&self, d: Duration, errors: usize) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        self.reconcile_errors
            .fetch_add(errors as u64, Ordering::Relaxed);
        self.duration_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.bucket_counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The agent's own series.
    pub fn render_core(&self, out: &mut String) {
        let n = self.reconciles.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP ferrofab_agent_reconcile_total Reconcile passes.\n# TYPE ferrofab_agent_reconcile_total counter\nferrofab_agent_reconcile_total {n}");
        let e = self.reconcile_errors.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP ferrofab_agent_reconcile_errors_total Objects that failed to converge, summed over passes.\n# TYPE ferrofab_agent_reconcile_errors_total counter\nferrofab_agent_reconcile_errors_total {e}");
        let _ = writeln!(out, "# HELP ferrofab_agent_reconcile_duration_seconds Duration of reconcile passes.\n# TYPE ferrofab_agent_reconcile_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let c = self.bucket_counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ferrofab_agent_reconcile_duration_seconds_bucket{{le=\"{b}\"}} {c}"
            );
        }
        let sum = self.duration_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "ferrofab_agent_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {n}\nferrofab_agent_reconcile_duration_seconds_sum {sum}\nferrofab_agent_reconcile_duration_seconds_count {n}");
        let w = self.main_loop_wakeups.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP ferrofab_agent_main_loop_wakeups_total Wake-ups of the agent's main loop (a few per minute when idle).\n# TYPE ferrofab_agent_main_loop_wakeups_total counter\nferrofab_agent_main_loop_wakeups_total {w}");
        let n = self.refused_names.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP ferrofab_agent_desired_state_refused_names_total Names from the controller refused as file names (not one safe path component).\n# TYPE ferrofab_agent_desired_state_refused_names_total counter\nferrofab_agent_desired_state_refused_names_total {n}");
        let h = &self.holder;
        let (starts, failures) = (
            h.starts.load(Ordering::Relaxed),
            h.request_failures.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP ferrofab_agent_holder_starts_total Data-path holders this agent started.\n# TYPE ferrofab_agent_holder_starts_total counter\nferrofab_agent_holder_starts_total {starts}");
        let _ = writeln!(out, "# HELP ferrofab_agent_holder_request_failures_total Requests to the data-path holder with no answer (unreachable, holder.request_timeout, unreadable).\n# TYPE ferrofab_agent_holder_request_failures_total counter\nferrofab_agent_holder_request_failures_total {failures}");
        let r = &self.local_api_refused;
        let _ = writeln!(out, "# HELP ferrofab_agent_local_api_refused_total Local API connections refused, by reason.\n# TYPE ferrofab_agent_local_api_refused_total counter");
        for (reason, c) in [
            ("too_many_connections", &r.too_many_connections),
            ("request_timeout", &r.request_timeout),
            ("request_too_large", &r.request_too_large),
        ] {
            let v = c.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ferrofab_agent_local_api_refused_total{{reason=\"{reason}\"}} {v}"
            );
        }
    }
}

/// Per-volume data-path series of a storage node, from the target.
pub fn render_target(st: &ferrofab_nvmeof_target::TargetStatus, out: &mut String) {
    render_target_named(st, &ExportNames::new(), out);
}

/// Volume and pool name of each export, by subsystem NQN.
pub type ExportNames = std::collections::HashMap<String, (String, String)>;

/// `nqn="...",volume="NAME",pool="POOL"` (volume and pool from the desired
/// state, empty for an export the agent no longer knows), so dashboards
/// can show and group by names. Every series has all three labels.
fn export_labels(nqn: &str, volumes: &ExportNames) -> String {
    let (v, p) = volumes
        .get(nqn)
        .map_or(("", ""), |(v, p)| (v.as_str(), p.as_str()));
    format!("nqn=\"{nqn}\",volume=\"{v}\",pool=\"{p}\"")
}

/// `ferrofab_build_info{component,version,commit,build_date} 1`: the same
/// series name the controller exports.
pub fn render_build_info(component: &str, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP ferrofab_build_info Build of this binary (value is always 1)\n# TYPE ferrofab_build_info gauge\nferrofab_build_info{{component=\"{component}\",version=\"{}\",commit=\"{}\",build_date=\"{}\"}} 1",
        ferrofab_buildinfo::VERSION,
        ferrofab_buildinfo::COMMIT,
        ferrofab_buildinfo::BUILD_DATE
    );
}

/// [`render_target`] with volume and pool names by subsystem NQN.
pub fn render_target_named(
    st: &ferrofab_nvmeof_target::TargetStatus,
    volumes: &ExportNames,
    out: &mut String,
) {
    let series: [(&str, &str, &str); 6] = [
        ("reads", "counter", "Read commands served."),
        ("writes", "counter", "Write commands served."),
        ("read_bytes", "counter", "Bytes read."),
        ("write_bytes", "counter", "Bytes written."),
        ("errors", "counter", "Commands that failed in the backend."),
        ("busy_seconds", "counter", "Time spent in backend I/O; divide its rate by the rate of reads+writes for the mean latency."),
    ];
    for (name, kind, help) in series {
        let _ = writeln!(out, "# HELP ferrofab_agent_volume_{name}_total {help}\n# TYPE ferrofab_agent_volume_{name}_total {kind}");
        for s in &st.subsystems {
            for ns in &s.namespaces {
                let v = match name {
                    "reads" => ns.stats.reads as f64,
                    "writes" => ns.stats.writes as f64,
                    "read_bytes" => ns.stats.read_bytes as f64,
                    "write_bytes" => ns.stats.write_bytes as f64,
                    "errors" => ns.stats.errors as f64,
                    _ => ns.stats.busy_ns as f64 / 1e9,
                };
                let _ = writeln!(
                    out,
                    "ferrofab_agent_volume_{name}_total{{{}}} {v}",
                    export_labels(&s.nqn, volumes)
                );
            }
        }
    }
    let _ = writeln!(out, "# HELP ferrofab_agent_target_commands_refused_length_total NVMe commands refused because a length in them was over MDTS or disagreed with their SGL (built-in target).\n# TYPE ferrofab_agent_target_commands_refused_length_total counter\nferrofab_agent_target_commands_refused_length_total {}", st.commands_refused_length);
    let _ = writeln!(out, "# HELP ferrofab_agent_target_commands_refused_write_protected_total Write-class NVMe commands refused to read-only hosts (built-in target).\n# TYPE ferrofab_agent_target_commands_refused_write_protected_total counter\nferrofab_agent_target_commands_refused_write_protected_total {}", st.commands_refused_write_protected);
    if let Some(c) = &st.connections {
        render_target_connections(c, out);
    }
    let _ = writeln!(out, "# HELP ferrofab_agent_volume_connected_hosts NVMe controllers connected to the volume's subsystem.\n# TYPE ferrofab_agent_volume_connected_hosts gauge");
    for s in &st.subsystems {
        let _ = writeln!(
            out,
            "ferrofab_agent_volume_connected_hosts{{{}}} {}",
            export_labels(&s.nqn, volumes),
            s.controllers.len()
        );
    }
}

/// The built-in target's connection admission series (absent for the
/// kernel target, which keeps no such counters).
pub fn render_target_connections(c: &ferrofab_nvmeof_target::ConnectionStats, out: &mut String) {
    render_gauge(
        "ferrofab_agent_target_connections",
        "TCP connections open on the built-in target (max_connections caps them).",
        c.open,
        out,
    );
    let _ = writeln!(out, "# HELP ferrofab_agent_target_connections_refused_total Connections closed at accept because a cap was reached.\n# TYPE ferrofab_agent_target_connections_refused_total counter");
    for (limit, v) in [
        ("max_connections", c.refused_global),
        ("max_connections_per_peer", c.refused_per_peer),
    ] {
        let _ = writeln!(
            out,
            "ferrofab_agent_target_connections_refused_total{{limit=\"{limit}\"}} {v}"
        );
    }
    let _ = writeln!(out, "# HELP ferrofab_agent_target_connection_timeouts_total Connections closed because the host did not send ICReq or Connect in time.\n# TYPE ferrofab_agent_target_connection_timeouts_total counter");
    for (stage, v) in [("icreq", c.icreq_timeouts), ("connect", c.connect_timeouts)] {
        let _ = writeln!(
            out,
            "ferrofab_agent_target_connection_timeouts_total{{stage=\"{stage}\"}} {v}"
        );
    }
    let _ = writeln!(out, "# HELP ferrofab_agent_target_auth_total DH-HMAC-CHAP in-band authentication outcomes on the built-in target (refused_connect: no key where the subsystem requires one; rejected_command: a command before the queue authenticated).\n# TYPE ferrofab_agent_target_auth_total counter");
    for (result, v) in [
        ("success", c.auth_successes),
        ("failure", c.auth_failures),
        ("refused_connect", c.auth_refused_connects),
        ("rejected_command", c.auth_required_rejections),
    ] {
        let _ = writeln!(
            out,
            "ferrofab_agent_target_auth_total{{result=\"{result}\"}} {v}"
        );
    }
}

/// One attachment's state series.
pub struct ConnectionSeries {
    pub volume: String,
    pub pool: String,
    pub attachment: String,
    /// One of [`crate::status::STATES`].
    pub state: &'static str,
    /// Why it is not live (empty when it is).
    pub reason: String,
}

/// Connection state series of a workstation: 1 for the current state, in
/// the words `ferrofab-agent status` and `attachments` use.
pub fn render_connections(conns: &[ConnectionSeries], out: &mut String) {
    let _ = writeln!(out, "# HELP ferrofab_agent_connection_state State of each attachment on this workstation (1 = current; pending or live, reason when not live).\n# TYPE ferrofab_agent_connection_state gauge");
    for c in conns {
        let _ = writeln!(
            out,
            "ferrofab_agent_connection_state{{volume=\"{}\",pool=\"{}\",attachment=\"{}\",state=\"{}\",reason=\"{}\"}} 1",
            c.volume, c.pool, c.attachment, c.state, c.reason
        );
    }
}

/// A gauge line with HELP and TYPE.
pub fn render_gauge(name: &str, help: &str, v: u64, out: &mut String) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// Serves `GET /metrics` (and `/healthz`) until shutdown. `render`
/// produces the body at scrape time.
pub async fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AgentError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| AgentError::io(format!("metrics listener on {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| AgentError::io("metrics listener address", e))?;
    info!(addr = %bound, "metrics listening");
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, _)) => {
                        let render = render.clone();
                        tokio::spawn(async move { handle(sock, render).await });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off rather
                        // than spin on an accept that fails at once.
                        debug!(error = %e, "metrics accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok((bound, task))
}

async fn handle(mut sock: tokio::net::TcpStream, render: Arc<dyn Fn() -> String + Send + Sync>) {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf[len..])).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => len += n,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = match path {
        "/metrics" => {
            let body = tokio::task::spawn_blocking(move || render())
                .await
                .unwrap_or_default();
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_pass(Duration::from_millis(2), 0);
        m.observe_pass(Duration::from_millis(200), 1);
        let mut s = String::new();
        m.render_core(&mut s);
        assert!(s.contains("ferrofab_agent_reconcile_total 2"), "{s}");
        assert!(s.contains("ferrofab_agent_reconcile_errors_total 1"));
        assert!(s.contains("le=\"0.005\"} 1"));
        assert!(s.contains("le=\"0.5\"} 2"));
        assert!(s.contains("le=\"+Inf\"} 2"));
    }

    #[test]
    fn export_series_carry_the_volume_name_and_build_info_is_exported() {
        let st = ferrofab_nvmeof_target::TargetStatus {
            listeners: vec![],
            subsystems: vec![],
            genctr: 0,
            commands_refused_length: 0,
            commands_refused_write_protected: 0,
            connections: None,
        };
        let names: ExportNames = [(
            "nqn.x:volume:1".to_owned(),
            ("scratch".to_owned(), "fast".to_owned()),
        )]
        .into();
        assert_eq!(
            export_labels("nqn.x:volume:1", &names),
            "nqn=\"nqn.x:volume:1\",volume=\"scratch\",pool=\"fast\""
        );
        assert_eq!(
            export_labels("nqn.other", &names),
            "nqn=\"nqn.other\",volume=\"\",pool=\"\""
        );
        let mut c = String::new();
        render_connections(
            &[ConnectionSeries {
                volume: "scratch".into(),
                pool: "fast".into(),
                attachment: "a1".into(),
                state: crate::status::STATE_PENDING,
                reason: "HostNotConnected".into(),
            }],
            &mut c,
        );
        assert!(
            c.contains("ferrofab_agent_connection_state{volume=\"scratch\",pool=\"fast\",attachment=\"a1\",state=\"pending\",reason=\"HostNotConnected\"} 1"),
            "{c}"
        );
        let mut s = String::new();
        render_target_named(&st, &names, &mut s);
        render_build_info("agent", &mut s);
        assert!(
            s.contains("ferrofab_build_info{component=\"agent\",version=\""),
            "{s}"
        );
    }

    #[test]
    fn target_length_refusals_are_exported() {
        let st = ferrofab_nvmeof_target::TargetStatus {
            listeners: vec![],
            subsystems: vec![],
            genctr: 0,
            commands_refused_length: 3,
            commands_refused_write_protected: 2,
            connections: None,
        };
        let mut s = String::new();
        render_target(&st, &mut s);
        assert!(
            s.contains("ferrofab_agent_target_commands_refused_length_total 3")
                && s.contains("ferrofab_agent_target_commands_refused_write_protected_total 2"),
            "{s}"
        );
    }

    #[test]
    fn target_connection_counters_are_exported() {
        let st = ferrofab_nvmeof_target::TargetStatus {
            listeners: vec![],
            subsystems: vec![],
            genctr: 0,
            commands_refused_length: 0,
            commands_refused_write_protected: 0,
            connections: Some(ferrofab_nvmeof_target::ConnectionStats {
                open: 3,
                accepted: 10,
                refused_global: 4,
                refused_per_peer: 5,
                icreq_timeouts: 6,
                connect_timeouts: 7,
                auth_successes: 8,
                auth_failures: 9,
                auth_refused_connects: 1,
                auth_required_rejections: 2,
            }),
        };
        let mut s = String::new();
        render_target(&st, &mut s);
        assert!(s.contains("ferrofab_agent_target_connections 3"), "{s}");
        assert!(s.contains(
            "ferrofab_agent_target_connections_refused_total{limit=\"max_connections\"} 4"
        ));
        assert!(s.contains(
            "ferrofab_agent_target_connections_refused_total{limit=\"max_connections_per_peer\"} 5"
        ));
        assert!(s.contains("ferrofab_agent_target_connection_timeouts_total{stage=\"icreq\"} 6"));
        assert!(s.contains("ferrofab_agent_target_connection_timeouts_total{stage=\"connect\"} 7"));
        assert!(s.contains("ferrofab_agent_target_auth_total{result=\"success\"} 8"));
        assert!(s.contains("ferrofab_agent_target_auth_total{result=\"failure\"} 9"));
        assert!(s.contains("ferrofab_agent_target_auth_total{result=\"refused_connect\"} 1"));
        assert!(s.contains("ferrofab_agent_target_auth_total{result=\"rejected_command\"} 2"));
        // The kernel target keeps no such counters: no series at all.
        let mut k = String::new();
        render_target(
            &ferrofab_nvmeof_target::TargetStatus {
                connections: None,
                ..st
            },
            &mut k,
        );
        assert!(!k.contains("ferrofab_agent_target_connections"), "{k}");
    }
}
