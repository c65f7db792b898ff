//! `ferrofab status`: the whole cluster on one screen, like `ceph -s`.
//!
//! Built only from the List RPCs every client already uses (all pages) and
//! GetServerInfo, so it shows what `KIND list` would and needs no
//! controller-side aggregate that could drift from them. The summary is a
//! pure function of those lists ([`Summary::build`]), tested without a
//! controller.

use ferrofab_proto::v1::{self, Condition, Severity};
use serde_json::{json, Value};

use super::Ctx;
use crate::args::Format;
use crate::client::status_error;
use crate::output::{human_size, now_seconds, print, relative, render_value, timestamp};
use crate::resource::{name_of, readiness, Readiness, Resource};

/// Bursts expiring within this are listed. A named constant: a week is
/// the horizon on which someone can still act (extend, copy data off);
/// `volume list` shows every expiry for a longer view.
const EXPIRY_HORIZON_SECONDS: i64 = 7 * 86_400;

/// Most warnings listed; the rest are counted. Keeps the screen one screen
/// on a cluster where many objects share one fault.
const MAX_WARNINGS: usize = 10;

/// The data-path authentication policy (`[auth] require`) in words.
fn auth_word(c: &v1::ServerInfo) -> String {
    let what = if c.auth_required {
        "required for every export"
    } else {
        "optional (hosts without a key connect unauthenticated)"
    };
    let from = match c.auth_required_source.as_str() {
        "config" => "set by the controller's [auth] require",
        _ => "cluster default",
    };
    format!("{what} ({from})")
}

/// Warning events this recent are shown. A named constant: a day covers
/// "what happened overnight"; `ferrofab events` shows the whole history.
const EVENTS_HORIZON_SECONDS: i64 = 86_400;

/// Everything the lists say, reduced to what status prints.
#[derive(Debug, Default)]
pub struct Summary {
    pub controller: Option<v1::ServerInfo>,
    pub nodes_ready: usize,
    pub nodes_not_ready: Vec<(String, String)>,
    pub pools: usize,
    pub capacity_bytes: u64,
    pub allocated_bytes: u64,
    pub free_bytes: u64,
    pub volumes: usize,
    pub volumes_not_ready: Vec<(String, String)>,
    pub attachments: usize,
    pub attachments_pending: Vec<(String, String)>,
    /// (volume, expires_at seconds)
    pub expiring: Vec<(String, i64)>,
    /// (kind/name, type, reason or message, transition seconds)
    pub warnings: Vec<Warning>,
    pub warnings_total: usize,
    /// Warning events of the last day, most recent first (empty when the
    /// caller cannot read events).
    pub recent_events: Vec<v1::ObjectEvent>,
}

#[derive(Debug, Clone)]
pub struct Warning {
    pub object: String,
    pub condition: String,
    pub text: String,
    pub since: Option<i64>,
}

/// The replicated control plane's lines (replicas, leader, etcd members);
/// none with the embedded store or for a non-administrator.
fn control_plane_lines(info: Option<&v1::ServerInfo>) -> Vec<(&'static str, String)> {
    let Some(cp) = info.and_then(|i| i.control_plane.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !cp.error.is_empty() {
        out.push(("control:", format!("store unreachable: {}", cp.error)));
        return out;
    }
    let leader = if cp.leader.is_empty() {
        "none (election in progress)".to_string()
    } else {
        cp.leader.clone()
    };
    out.push(("leader:", format!("{leader} (answered by {})", cp.replica)));
    let replicas: Vec<String> = cp
        .replicas
        .iter()
        .map(|r| format!("{} {}", r.name, r.endpoint))
        .collect();
    out.push((
        "replicas:",
        format!("{} ({})", replicas.len(), replicas.join(", ")),
    ));
    let healthy = cp.store_members.iter().filter(|m| m.health == "ok").count();
    let mut etcd = format!("{healthy}/{} members healthy", cp.store_members.len());
    for m in cp.store_members.iter().filter(|m| m.health != "ok") {
        etcd.push_str(&format!("; {}: {}", m.endpoint, m.health));
    }
    out.push(("etcd:", etcd));
    out
}

fn control_plane_document(cp: &v1::ControlPlane) -> Value {
    json!({
        "replica": cp.replica,
        "leader": cp.leader,
        "replicas": cp.replicas.iter().map(|r| json!({
            "name": r.name, "endpoint": r.endpoint, "leader": r.leader,
        })).collect::<Vec<_>>(),
        "etcd_members": cp.store_members.iter().map(|m| json!({
            "endpoint": m.endpoint, "health": m.health, "leader": m.leader,
        })).collect::<Vec<_>>(),
        "error": cp.error,
    })
}

/// The lists status is built from.
#[derive(Debug, Default)]
pub struct Lists {
    pub nodes: Vec<v1::Node>,
    pub pools: Vec<v1::Pool>,
    pub volumes: Vec<v1::Volume>,
    pub attachments: Vec<v1::Attachment>,
    pub tenants: Vec<v1::Tenant>,
    pub events: Vec<v1::ObjectEvent>,
}

fn not_ready<R: Resource>(items: &[R]) -> Vec<(String, String)> {
    items
        .iter()
        .filter_map(|o| match readiness(o) {
            Readiness::Ready => None,
            Readiness::Pending(why) => Some((name_of(o).to_owned(), why)),
            Readiness::Failed(why) => Some((name_of(o).to_owned(), format!("failed: {why}"))),
        })
        .collect()
}

fn warnings_of<R: Resource>(items: &[R], out: &mut Vec<Warning>) {
    for o in items {
        for c in o.conditions() {
            if is_warning(c) {
                out.push(Warning {
                    object: format!("{}/{}", R::NOUN, name_of(o)),
                    condition: c.r#type.clone(),
                    text: if c.message.is_empty() {
                        c.reason.clone()
                    } else {
                        c.message.clone()
                    },
                    since: c.last_transition_time.as_ref().map(|t| t.seconds),
                });
            }
        }
    }
}

/// Warning and Error severities; a condition that holds (True) with
/// Warning severity is a warning too (e.g. `Expiring`).
fn is_warning(c: &Condition) -> bool {
    matches!(c.severity(), Severity::Warning | Severity::Error)
}

impl Summary {
    pub fn build(info: Option<v1::ServerInfo>, l: &Lists, now: i64) -> Self {
        let mut s = Summary {
            controller: info,
            ..Default::default()
        };
        s.nodes_not_ready = not_ready(&l.nodes);
        s.nodes_ready = l.nodes.len() - s.nodes_not_ready.len();
        s.pools = l.pools.len();
        for p in &l.pools {
            let st = p.status.clone().unwrap_or_default();
            s.capacity_bytes = s.capacity_bytes.saturating_add(st.capacity_bytes);
            s.allocated_bytes = s.allocated_bytes.saturating_add(st.allocated_bytes);
            s.free_bytes = s.free_bytes.saturating_add(st.free_bytes);
        }
        s.volumes = l.volumes.len();
        s.volumes_not_ready = not_ready(&l.volumes);
        s.attachments = l.attachments.len();
        s.attachments_pending = not_ready(&l.attachments);
        s.expiring = l
            .volumes
            .iter()
            .filter_map(|v| {
                let at = v.spec.as_ref()?.expires_at.as_ref()?.seconds;
                (at - now <= EXPIRY_HORIZON_SECONDS).then(|| (name_of(v).to_owned(), at))
            })
            .collect();
        s.expiring.sort_by_key(|(_, at)| *at);
        let mut w = Vec::new();
        warnings_of(&l.nodes, &mut w);
        warnings_of(&l.pools, &mut w);
        warnings_of(&l.volumes, &mut w);
        warnings_of(&l.attachments, &mut w);
        warnings_of(&l.tenants, &mut w);
        // Most recent first.
        w.sort_by_key(|x| std::cmp::Reverse(x.since.unwrap_or(i64::MIN)));
        s.warnings_total = w.len();
        w.truncate(MAX_WARNINGS);
        s.warnings = w;
        s.recent_events = recent_warning_events(&l.events, now);
        s
    }

    /// The one-screen text: the overview lines, then a section for
    /// each kind of trouble. One function per part, so a part can be
    /// added (e.g. controller replicas) without touching the others.
    pub fn text(&self, now: i64) -> String {
        let mut out = String::new();
        self.controller_lines(&mut out);
        self.count_lines(&mut out);
        section(&mut out, "nodes not ready", &self.nodes_not_ready, "node");
        section(
            &mut out,
            "volumes not ready",
            &self.volumes_not_ready,
            "volume",
        );
        section(
            &mut out,
            "attachments pending",
            &self.attachments_pending,
            "attachment",
        );
        self.expiring_section(&mut out, now);
        self.warnings_section(&mut out, now);
        self.events_section(&mut out, now);
        out
    }

    /// `controller:` and its store.
    fn controller_lines(&self, out: &mut String) {
        line(
            out,
            "controller:",
            match &self.controller {
                Some(c) => format!(
                    "{} (commit {}), store {} at revision {}",
                    c.version, c.commit, c.store, c.revision
                ),
                None => "-".into(),
            },
        );
        for (k, v) in control_plane_lines(self.controller.as_ref()) {
            line(out, k, v);
        }
        if let Some(c) = self
            .controller
            .as_ref()
            .filter(|c| !c.auth_required_source.is_empty())
        {
            line(out, "data auth:", auth_word(c));
        }
    }

    /// Nodes, pools, volumes and attachments, one line each.
    fn count_lines(&self, out: &mut String) {
        line(
            out,
            "nodes:",
            format!(
                "{} ready, {} not ready",
                self.nodes_ready,
                self.nodes_not_ready.len()
            ),
        );
        line(out, "pools:", self.pools_text());
        line(
            out,
            "volumes:",
            format!(
                "{} total, {} not ready",
                self.volumes,
                self.volumes_not_ready.len()
            ),
        );
        line(
            out,
            "attachments:",
            format!(
                "{} total, {} pending",
                self.attachments,
                self.attachments_pending.len()
            ),
        );
    }

    /// Bursts expiring within [`EXPIRY_HORIZON_SECONDS`].
    fn expiring_section(&self, out: &mut String, now: i64) {
        if self.expiring.is_empty() {
            return;
        }
        out.push_str("\nexpiring within 7d:\n");
        for (name, at) in &self.expiring {
            let when = if *at > now {
                relative(at - now)
            } else {
                format!("expired {}", relative(at - now))
            };
            out.push_str(&format!(
                "  volume/{name}  {when} ({})\n",
                timestamp(&prost_types::Timestamp {
                    seconds: *at,
                    nanos: 0
                })
            ));
        }
    }

    /// Conditions that are warnings now.
    fn warnings_section(&self, out: &mut String, now: i64) {
        if self.warnings.is_empty() {
            return;
        }
        out.push_str("\ncurrent warnings:\n");
        for w in &self.warnings {
            let age = w.since.map_or_else(|| "-".into(), |t| relative(t - now));
            out.push_str(&format!(
                "  {}  {}: {} ({age})\n",
                w.object, w.condition, w.text
            ));
        }
        if self.warnings_total > self.warnings.len() {
            out.push_str(&format!(
                "  ... and {} more\n",
                self.warnings_total - self.warnings.len()
            ));
        }
    }

    /// Warning events of the last [`EVENTS_HORIZON_SECONDS`] (what went
    /// wrong lately, even if it is over).
    fn events_section(&self, out: &mut String, now: i64) {
        if self.recent_events.is_empty() {
            return;
        }
        out.push_str("\nrecent warning events:\n");
        for l in super::events::table(&self.recent_events, now, true, false).lines() {
            out.push_str(&format!("  {l}\n"));
        }
    }

    fn pools_text(&self) -> String {
        if self.pools == 0 {
            return "none".into();
        }
        let pct = self
            .allocated_bytes
            .saturating_mul(100)
            .checked_div(self.capacity_bytes)
            .map_or_else(String::new, |p| format!(" ({p}% allocated)"));
        format!(
            "{}, {} allocated of {}, {} free{pct}",
            plural(self.pools, "pool"),
            human_size(self.allocated_bytes),
            human_size(self.capacity_bytes),
            human_size(self.free_bytes),
        )
    }

    /// The JSON/YAML document.
    pub fn document(&self, now: i64) -> Value {
        let pairs = |v: &[(String, String)]| -> Value {
            v.iter()
                .map(|(n, why)| json!({"name": n, "reason": why}))
                .collect()
        };
        json!({
            "controller": self.controller.as_ref().map(|c| json!({
                "version": c.version, "commit": c.commit, "build_date": c.build_date,
                "store": c.store, "revision": c.revision,
                "auth_required": c.auth_required,
                "auth_required_source": c.auth_required_source,
            })),
            "control_plane": self.controller.as_ref().and_then(|c| c.control_plane.as_ref()).map(control_plane_document),
            "nodes": {"ready": self.nodes_ready, "not_ready": pairs(&self.nodes_not_ready)},
            "pools": {
                "count": self.pools,
                "capacity_bytes": self.capacity_bytes,
                "allocated_bytes": self.allocated_bytes,
                "free_bytes": self.free_bytes,
            },
            "volumes": {"total": self.volumes, "not_ready": pairs(&self.volumes_not_ready)},
            "attachments": {"total": self.attachments, "pending": pairs(&self.attachments_pending)},
            "expiring": self.expiring.iter().map(|(n, at)| json!({
                "volume": n,
                "expires_at": timestamp(&prost_types::Timestamp { seconds: *at, nanos: 0 }),
                "expires_in_seconds": at - now,
            })).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(|w| json!({
                "object": w.object, "condition": w.condition, "message": w.text,
                "since": w.since.map(|t| timestamp(&prost_types::Timestamp { seconds: t, nanos: 0 })),
            })).collect::<Vec<_>>(),
            "warnings_total": self.warnings_total,
            "recent_warning_events": self.recent_events.iter().map(super::events::document).collect::<Vec<_>>(),
        })
    }
}

/// Warning events within [`EVENTS_HORIZON_SECONDS`], most recent first,
/// at most [`MAX_WARNINGS`].
fn recent_warning_events(events: &[v1::ObjectEvent], now: i64) -> Vec<v1::ObjectEvent> {
    let mut v: Vec<v1::ObjectEvent> = events
        .iter()
        .filter(|e| matches!(e.severity(), Severity::Warning | Severity::Error))
        .filter(|e| {
            e.last_time
                .as_ref()
                .is_some_and(|t| now - t.seconds <= EVENTS_HORIZON_SECONDS)
        })
        .cloned()
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.last_time.as_ref().map_or(0, |t| t.seconds)));
    v.truncate(MAX_WARNINGS);
    v
}

fn line(out: &mut String, k: &str, v: String) {
    out.push_str(&format!("{k:<13}{v}\n"));
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn section(out: &mut String, title: &str, items: &[(String, String)], kind: &str) {
    if items.is_empty() {
        return;
    }
    out.push_str(&format!("\n{title}:\n"));
    for (name, why) in items {
        out.push_str(&format!("  {kind}/{name}  {why}\n"));
    }
}

/// Reads every list (all pages) and the server info.
pub async fn collect(ctx: &Ctx) -> anyhow::Result<(Option<v1::ServerInfo>, Lists)> {
    let mut admin = ctx.admin().await?;
    let info = admin
        .get_server_info(v1::GetServerInfoRequest {})
        .await
        .map(|r| r.into_inner());
    // An older controller without GetServerInfo still gets a status.
    let info = match info {
        Ok(i) => Some(i),
        Err(s) if s.code() == tonic::Code::Unimplemented => None,
        Err(s) => return Err(status_error("controller", s)),
    };
    async fn all<R: Resource>(admin: &mut crate::client::Admin) -> anyhow::Result<Vec<R>> {
        R::list(admin, "")
            .await
            .map_err(|s| status_error(&format!("listing {}s", R::NOUN), s))
    }
    let lists = Lists {
        nodes: all(&mut admin).await?,
        pools: all(&mut admin).await?,
        volumes: all(&mut admin).await?,
        attachments: all(&mut admin).await?,
        tenants: all(&mut admin).await?,
        events: super::events::fetch(&mut admin, v1::Kind::Unspecified, "", 0)
            .await?
            .unwrap_or_default(),
    };
    Ok((info, lists))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (info, lists) = collect(ctx).await?;
    let now = now_seconds();
    let s = Summary::build(info, &lists, now);
    let text = match ctx.format {
        Format::Json | Format::Yaml => render_value(&s.document(now), ctx.format),
        _ => s.text(now),
    };
    print(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::{ConditionStatus, ObjectMeta};

    fn meta(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: name.into(),
            generation: 1,
            ..Default::default()
        })
    }

    fn cond(t: &str, status: ConditionStatus, sev: Severity, reason: &str, at: i64) -> Condition {
        Condition {
            r#type: t.into(),
            status: status as i32,
            severity: sev as i32,
            reason: reason.into(),
            last_transition_time: Some(prost_types::Timestamp {
                seconds: at,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn event(name: &str, reason: &str, sev: Severity, at: i64) -> v1::ObjectEvent {
        v1::ObjectEvent {
            kind: v1::Kind::Volume as i32,
            name: name.into(),
            reason: reason.into(),
            message: "no room".into(),
            severity: sev as i32,
            last_time: Some(prost_types::Timestamp {
                seconds: at,
                nanos: 0,
            }),
            count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn control_plane_lines_show_leader_replicas_and_etcd_health() {
        assert!(control_plane_lines(None).is_empty());
        let redb = v1::ServerInfo::default();
        assert!(
            control_plane_lines(Some(&redb)).is_empty(),
            "redb: no lines"
        );
        let info = v1::ServerInfo {
            control_plane: Some(v1::ControlPlane {
                replica: "ctl2".into(),
                leader: "ctl1".into(),
                replicas: vec![
                    v1::ControlReplica {
                        name: "ctl1".into(),
                        endpoint: "10.0.0.1:7443".into(),
                        leader: true,
                    },
                    v1::ControlReplica {
                        name: "ctl2".into(),
                        endpoint: "10.0.0.2:7443".into(),
                        leader: false,
                    },
                ],
                store_members: vec![
                    v1::StoreMember {
                        endpoint: "https://e1:2379".into(),
                        health: "ok".into(),
                        leader: true,
                    },
                    v1::StoreMember {
                        endpoint: "https://e2:2379".into(),
                        health: "no answer within 1666 ms".into(),
                        leader: false,
                    },
                ],
                error: String::new(),
            }),
            ..Default::default()
        };
        let lines = control_plane_lines(Some(&info));
        assert_eq!(
            lines,
            vec![
                ("leader:", "ctl1 (answered by ctl2)".to_string()),
                (
                    "replicas:",
                    "2 (ctl1 10.0.0.1:7443, ctl2 10.0.0.2:7443)".to_string()
                ),
                (
                    "etcd:",
                    "1/2 members healthy; https://e2:2379: no answer within 1666 ms".to_string()
                ),
            ]
        );
    }

    #[test]
    fn status_shows_the_data_path_authentication_policy() {
        let info = |required, source: &str| v1::ServerInfo {
            auth_required: required,
            auth_required_source: source.into(),
            ..Default::default()
        };
        let s = Summary::build(Some(info(true, "cluster")), &Lists::default(), 0);
        let text = s.text(0);
        assert!(
            text.contains("data auth:   required for every export (cluster default)"),
            "{text}"
        );
        assert_eq!(s.document(0)["controller"]["auth_required"], true);
        let s = Summary::build(Some(info(false, "config")), &Lists::default(), 0);
        assert!(s.text(0).contains("optional"), "{}", s.text(0));
        assert!(s.text(0).contains("[auth] require"), "{}", s.text(0));
        // An older controller says nothing: no line.
        let s = Summary::build(Some(info(false, "")), &Lists::default(), 0);
        assert!(!s.text(0).contains("data auth"), "{}", s.text(0));
    }

    #[test]
    fn summary_counts_and_lists_what_needs_attention() {
        let now = 1_000_000;
        let ready_node = v1::Node {
            metadata: meta("s1"),
            status: Some(v1::NodeStatus {
                observed_generation: 1,
                conditions: vec![cond(
                    "Ready",
                    ConditionStatus::True,
                    Severity::Info,
                    "",
                    now,
                )],
                ..Default::default()
            }),
            ..Default::default()
        };
        let lost_node = v1::Node {
            metadata: meta("ws-1"),
            status: Some(v1::NodeStatus {
                observed_generation: 1,
                conditions: vec![cond(
                    "Ready",
                    ConditionStatus::False,
                    Severity::Warning,
                    "HeartbeatLost",
                    now - 60,
                )],
                ..Default::default()
            }),
            ..Default::default()
        };
        let pool = v1::Pool {
            metadata: meta("fast"),
            status: Some(v1::PoolStatus {
                capacity_bytes: 8 << 30,
                allocated_bytes: 2 << 30,
                free_bytes: 6 << 30,
                ..Default::default()
            }),
            ..Default::default()
        };
        let burst = v1::Volume {
            metadata: meta("burst"),
            spec: Some(v1::VolumeSpec {
                expires_at: Some(prost_types::Timestamp {
                    seconds: now + 3 * 86_400,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            status: Some(v1::VolumeStatus {
                observed_generation: 1,
                phase: v1::VolumePhase::Pending as i32,
                ..Default::default()
            }),
        };
        let later = v1::Volume {
            metadata: meta("later"),
            spec: Some(v1::VolumeSpec {
                expires_at: Some(prost_types::Timestamp {
                    seconds: now + 30 * 86_400,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            status: Some(v1::VolumeStatus {
                observed_generation: 1,
                phase: v1::VolumePhase::Ready as i32,
                ..Default::default()
            }),
        };
        let lists = Lists {
            nodes: vec![ready_node, lost_node],
            pools: vec![pool],
            volumes: vec![burst, later],
            events: vec![
                event("huge", "Refused", Severity::Warning, now - 30),
                event("a", "Placed", Severity::Info, now - 20),
                event("old", "Refused", Severity::Warning, now - 2 * 86_400),
            ],
            ..Default::default()
        };
        let s = Summary::build(None, &lists, now);
        assert_eq!(s.nodes_ready, 1);
        assert_eq!(s.nodes_not_ready.len(), 1);
        assert_eq!(s.expiring, vec![("burst".to_owned(), now + 3 * 86_400)]);
        assert_eq!(s.volumes_not_ready[0].0, "burst");
        assert_eq!(s.warnings_total, 1);
        let t = s.text(now);
        assert!(t.contains("nodes:       1 ready, 1 not ready\n"), "{t}");
        assert!(
            t.contains("pools:       1 pool, 2GiB allocated of 8GiB, 6GiB free (25% allocated)"),
            "{t}"
        );
        assert!(t.contains("  node/ws-1  HeartbeatLost\n"), "{t}");
        assert!(t.contains("  volume/burst  in 3d ("), "{t}");
        assert!(!t.contains("volume/later  in"), "{t}");
        assert!(
            t.contains("current warnings:\n  node/ws-1  Ready: HeartbeatLost (60s ago)\n"),
            "{t}"
        );
        assert!(
            t.contains("recent warning events:\n  LAST SEEN  TYPE     OBJECT       REASON   COUNT  MESSAGE\n  30s        Warning  volume/huge  Refused  1      no room\n"),
            "{t}"
        );
        assert!(!t.contains("volume/old"), "{t}");
        let d = s.document(now);
        assert_eq!(d["pools"]["free_bytes"], 6u64 << 30);
        assert_eq!(d["expiring"][0]["volume"], "burst");
    }
}
