//! `ferrofab describe KIND NAME`: one object for a person — every field,
//! conditions with reasons and ages (relative and RFC 3339), expiry,
//! placement and the exposure path.
//!
//! The fields come from the same JSON document `-o json` prints, flattened
//! to `key: value` lines, so a field added to a kind's document shows up
//! here without a second list to keep in step. The related objects
//! (a volume's attachments, an attachment's volume, a pool's volumes, a
//! node's pools and attachments) are read with the ordinary List/Get RPCs.

use ferrofab_proto::v1::{self, Condition, ConditionStatus};
use serde_json::Value;

use super::Ctx;
use crate::args::{Format, KindArg};
use crate::client::{status_error, Admin};
use crate::output::{
    dash, enum_word, now_seconds, print, relative, render_value, table, timestamp,
};
use crate::resource::{document, name_of, readiness, what, Readiness, Resource};

pub async fn run(ctx: &Ctx, kind: KindArg, name: &str) -> anyhow::Result<()> {
    let mut admin = ctx.admin().await?;
    let now = now_seconds();
    let text = match kind {
        KindArg::Node => {
            let n: v1::Node = get(&mut admin, name).await?;
            let related = node_related(&mut admin, name).await?;
            describe(ctx, &mut admin, &n, related, now).await
        }
        KindArg::Pool => {
            let p: v1::Pool = get(&mut admin, name).await?;
            let vols: Vec<v1::Volume> = list(&mut admin).await?;
            let on: Vec<String> = vols
                .iter()
                .filter(|v| v.status.as_ref().is_some_and(|s| s.pool == name))
                .map(|v| format!("volume/{}", name_of(v)))
                .collect();
            describe(
                ctx,
                &mut admin,
                &p,
                vec![("Volumes".into(), joined(&on))],
                now,
            )
            .await
        }
        KindArg::Volume => {
            let v: v1::Volume = get(&mut admin, name).await?;
            let atts: Vec<v1::Attachment> = list(&mut admin).await?;
            let related = volume_related(&v, &atts, now);
            describe(ctx, &mut admin, &v, related, now).await
        }
        KindArg::Attachment => {
            let a: v1::Attachment = get(&mut admin, name).await?;
            let vol_name = a.spec.as_ref().map_or("", |s| s.volume.as_str());
            let vol = v1::Volume::get(&mut admin, vol_name).await.ok();
            let related = attachment_related(&a, vol.as_ref());
            describe(ctx, &mut admin, &a, related, now).await
        }
        KindArg::Tenant => {
            let t: v1::Tenant = get(&mut admin, name).await?;
            let vols: Vec<v1::Volume> = list(&mut admin).await?;
            let owned: Vec<String> = vols
                .iter()
                .filter(|v| v.spec.as_ref().is_some_and(|s| s.tenant == name))
                .map(|v| format!("volume/{}", name_of(v)))
                .collect();
            describe(
                ctx,
                &mut admin,
                &t,
                vec![("Volumes".into(), joined(&owned))],
                now,
            )
            .await
        }
    };
    print(&text)?;
    Ok(())
}

/// Most events `describe` shows (the most recent); `ferrofab events KIND
/// NAME` lists them all.
const MAX_EVENTS: u32 = 10;

/// The object's most recent events. The object exists (its Get
/// succeeded): a failure to read its events is logged and the
/// description still prints, without them.
async fn events_of<R: Resource>(admin: &mut Admin, name: &str) -> Option<Vec<v1::ObjectEvent>> {
    super::events::fetch(admin, R::KIND, name, MAX_EVENTS)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(
                "events not shown: {}",
                ferrofab_buildinfo::error_line(e.as_ref())
            );
            None
        })
}

/// The `Events:` section: a table of the object's events, `<none>`, or
/// nothing when the caller cannot read them.
fn events_text(events: Option<&[v1::ObjectEvent]>, now: i64) -> String {
    let Some(events) = events else {
        return String::new();
    };
    let mut out = "Events:\n".to_owned();
    if events.is_empty() {
        out.push_str("  <none>\n");
    }
    for l in super::events::table(events, now, false, false)
        .lines()
        .take_while(|_| !events.is_empty())
    {
        out.push_str(&format!("  {l}\n"));
    }
    out
}

async fn get<R: Resource>(admin: &mut Admin, name: &str) -> anyhow::Result<R> {
    R::get(admin, name)
        .await
        .map_err(|s| status_error(&what::<R>(name), s))
}

async fn list<R: Resource>(admin: &mut Admin) -> anyhow::Result<Vec<R>> {
    R::list(admin, "")
        .await
        .map_err(|s| status_error(&format!("listing {}s", R::NOUN), s))
}

fn joined(items: &[String]) -> String {
    if items.is_empty() {
        "<none>".into()
    } else {
        items.join(", ")
    }
}

async fn node_related(admin: &mut Admin, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let pools: Vec<v1::Pool> = list(admin).await?;
    let atts: Vec<v1::Attachment> = list(admin).await?;
    let pools: Vec<String> = pools
        .iter()
        .filter(|p| p.spec.as_ref().is_some_and(|s| s.node == name))
        .map(|p| format!("pool/{}", name_of(p)))
        .collect();
    let atts: Vec<String> = atts
        .iter()
        .filter(|a| a.spec.as_ref().is_some_and(|s| s.node == name))
        .map(|a| format!("attachment/{}", name_of(a)))
        .collect();
    Ok(vec![
        ("Pools".into(), joined(&pools)),
        ("Attachments".into(), joined(&atts)),
    ])
}

/// Expiry, placement and where each attachment exposes the volume.
fn volume_related(v: &v1::Volume, atts: &[v1::Attachment], now: i64) -> Vec<(String, String)> {
    let spec = v.spec.clone().unwrap_or_default();
    let st = v.status.clone().unwrap_or_default();
    let expires = spec.expires_at.as_ref().map_or("never".into(), |t| {
        format!("{} ({})", timestamp(t), relative(t.seconds - now))
    });
    let placement = if st.pool.is_empty() {
        "not placed".into()
    } else {
        format!(
            "pool/{} on node/{}, backing {}",
            st.pool,
            st.node,
            if st.backing_path.is_empty() {
                "-"
            } else {
                &st.backing_path
            }
        )
    };
    let mut out = vec![
        ("Expires".into(), expires),
        ("Placement".into(), placement),
        (
            "Export".into(),
            format!(
                "{} ({})",
                if st.subsystem_nqn.is_empty() {
                    "-"
                } else {
                    &st.subsystem_nqn
                },
                if st.export_ready {
                    "ready"
                } else {
                    "not ready"
                }
            ),
        ),
    ];
    let mine: Vec<&v1::Attachment> = atts
        .iter()
        .filter(|a| a.spec.as_ref().is_some_and(|s| s.volume == name_of(v)))
        .collect();
    if mine.is_empty() {
        out.push(("Exposure".into(), "not attached".into()));
    }
    for a in mine {
        out.push(("Exposure".into(), exposure(a)));
    }
    out
}

/// `attachment/A on node/N (read-write): attached at /run/...`.
fn exposure(a: &v1::Attachment) -> String {
    let spec = a.spec.clone().unwrap_or_default();
    let st = a.status.clone().unwrap_or_default();
    let phase = enum_word(st.phase().as_str_name(), "ATTACHMENT_PHASE_");
    let mode = match spec.mode() {
        v1::AccessMode::Unspecified => "read-write".to_owned(),
        m => enum_word(m.as_str_name(), "ACCESS_MODE_"),
    };
    let path = if st.device_path.is_empty() {
        "no path yet".to_owned()
    } else {
        format!("at {}", st.device_path)
    };
    format!(
        "attachment/{} on node/{} ({mode}): {phase}, {path}",
        name_of(a),
        spec.node
    )
}

fn attachment_related(a: &v1::Attachment, vol: Option<&v1::Volume>) -> Vec<(String, String)> {
    let mut out = vec![("Exposure".into(), exposure(a))];
    if let Some(v) = vol {
        let st = v.status.clone().unwrap_or_default();
        out.push((
            "Volume".into(),
            format!(
                "volume/{} on pool/{} node/{} ({})",
                name_of(v),
                if st.pool.is_empty() { "-" } else { &st.pool },
                if st.node.is_empty() { "-" } else { &st.node },
                st.subsystem_nqn
            ),
        ));
    }
    out
}

/// The full text (or, with `-o json|yaml`, the document plus the related
/// lines under `related`).
async fn describe<R: Resource>(
    ctx: &Ctx,
    admin: &mut Admin,
    obj: &R,
    related: Vec<(String, String)>,
    now: i64,
) -> String {
    let events = events_of::<R>(admin, name_of(obj)).await;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        let mut doc = document(obj);
        doc["related"] = related
            .iter()
            .map(|(k, v)| serde_json::json!({"what": k, "value": v}))
            .collect();
        if let Some(events) = &events {
            doc["events"] = events.iter().map(super::events::document).collect();
        }
        return render_value(&doc, ctx.format);
    }
    text(obj, &related, now) + &events_text(events.as_deref(), now)
}

pub(crate) fn text<R: Resource>(obj: &R, related: &[(String, String)], now: i64) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{:<13}{v}\n", format!("{k}:")));
    let meta = obj.meta().cloned().unwrap_or_default();
    kv("Name", meta.name.clone());
    kv("Kind", R::TITLE.into());
    if !meta.uid.is_empty() {
        kv("UID", meta.uid.clone());
    }
    if let Some(t) = &meta.creation_timestamp {
        kv(
            "Created",
            format!("{} ({})", timestamp(t), relative(t.seconds - now)),
        );
    }
    if let Some(t) = &meta.deletion_timestamp {
        kv(
            "Deleting",
            format!("since {} ({})", timestamp(t), relative(t.seconds - now)),
        );
    }
    kv(
        "Generation",
        format!(
            "{} (observed {}), resource version {}",
            meta.generation,
            obj.observed_generation()
                .map_or("never".into(), |g| g.to_string()),
            meta.resource_version
        ),
    );
    kv("Labels", pairs(&meta.labels));
    kv("Annotations", pairs(&meta.annotations));
    if !meta.finalizers.is_empty() {
        kv("Finalizers", meta.finalizers.join(", "));
    }
    kv(
        "Ready",
        match readiness(obj) {
            Readiness::Ready => "True".into(),
            Readiness::Pending(why) => format!("False: {why}"),
            Readiness::Failed(why) => format!("Failed: {why}"),
        },
    );
    for (k, v) in related {
        kv(k, v.clone());
    }
    let doc = document(obj);
    out.push_str("Spec:\n");
    flatten(&doc["spec"], "  ", &mut out);
    out.push_str("Status:\n");
    let mut status = doc["status"].clone();
    if let Some(m) = status.as_object_mut() {
        m.remove("conditions");
    }
    flatten(&status, "  ", &mut out);
    out.push_str("Conditions:\n");
    out.push_str(&conditions_table(obj.conditions(), now));
    out
}

fn pairs(m: &std::collections::HashMap<String, String>) -> String {
    if m.is_empty() {
        return "<none>".into();
    }
    let mut v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(", ")
}

/// `key: value` lines, nested objects indented, lists inline when scalar.
fn flatten(v: &Value, indent: &str, out: &mut String) {
    match v {
        Value::Object(m) if m.is_empty() => out.push_str(&format!("{indent}<none>\n")),
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{indent}{k}:\n"));
                        flatten(v, &format!("{indent}  "), out);
                    }
                    other => out.push_str(&format!("{indent}{k}: {}\n", scalar(other))),
                }
            }
        }
        Value::Null => out.push_str(&format!("{indent}<none>\n")),
        other => out.push_str(&format!("{indent}{}\n", scalar(other))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
        Value::Object(_) => v.to_string(),
        other => other.to_string(),
    }
}

/// TYPE STATUS SEVERITY REASON AGE SINCE MESSAGE.
fn conditions_table(conds: &[Condition], now: i64) -> String {
    if conds.is_empty() {
        return "  <none>\n".into();
    }
    let rows: Vec<Vec<String>> = conds
        .iter()
        .map(|c| {
            let (age, since) = c.last_transition_time.as_ref().map_or_else(
                || ("-".into(), "-".into()),
                |t| {
                    let r = relative(t.seconds - now);
                    (r.trim_end_matches(" ago").to_owned(), timestamp(t))
                },
            );
            vec![
                c.r#type.clone(),
                match c.status() {
                    ConditionStatus::True => "True".into(),
                    ConditionStatus::False => "False".into(),
                    _ => "Unknown".into(),
                },
                enum_word(c.severity().as_str_name(), "SEVERITY_"),
                dash(&c.reason),
                age,
                since,
                dash(&c.message),
            ]
        })
        .collect();
    table(
        &[
            "TYPE", "STATUS", "SEVERITY", "REASON", "AGE", "SINCE", "MESSAGE",
        ],
        &rows,
    )
    .lines()
    .map(|l| format!("  {l}\n"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_description_has_every_part() {
        let now = 2_000_000_000;
        let v = v1::Volume {
            metadata: Some(v1::ObjectMeta {
                name: "scratch".into(),
                uid: "u-1".into(),
                generation: 2,
                resource_version: 9,
                creation_timestamp: Some(prost_types::Timestamp {
                    seconds: now - 3 * 3600,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(v1::VolumeSpec {
                tenant: "neuro".into(),
                size: "4GiB".into(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: now + 3 * 86_400,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            status: Some(v1::VolumeStatus {
                observed_generation: 2,
                phase: v1::VolumePhase::Ready as i32,
                pool: "fast".into(),
                node: "s1".into(),
                backing_path: "/srv/fast/u-1.img".into(),
                subsystem_nqn: "nqn.x:volume:u-1".into(),
                export_ready: true,
                conditions: vec![Condition {
                    r#type: "Ready".into(),
                    status: ConditionStatus::True as i32,
                    reason: "Exported".into(),
                    last_transition_time: Some(prost_types::Timestamp {
                        seconds: now - 7200,
                        nanos: 0,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let att = v1::Attachment {
            metadata: Some(v1::ObjectMeta {
                name: "a1".into(),
                ..Default::default()
            }),
            spec: Some(v1::AttachmentSpec {
                volume: "scratch".into(),
                node: "ws-1".into(),
                ..Default::default()
            }),
            status: Some(v1::AttachmentStatus {
                phase: v1::AttachmentPhase::Attached as i32,
                device_path: "/run/ferrofab/volumes/scratch".into(),
                ..Default::default()
            }),
        };
        let related = volume_related(&v, &[att], now);
        let t = text(&v, &related, now);
        for want in [
            "Name:        scratch\n",
            "Created:     ",
            "(3h ago)\n",
            "Generation:  2 (observed 2), resource version 9\n",
            "Ready:       True\n",
            "Expires:     ",
            "(in 3d)\n",
            "Placement:   pool/fast on node/s1, backing /srv/fast/u-1.img\n",
            "Export:      nqn.x:volume:u-1 (ready)\n",
            "Exposure:    attachment/a1 on node/ws-1 (read-write): attached, at /run/ferrofab/volumes/scratch\n",
            "  tenant: neuro\n",
            "  size_bytes: 0\n",
            "  Ready  True    -         Exported  2h ",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(
            t.contains(&timestamp(&prost_types::Timestamp {
                seconds: now - 7200,
                nanos: 0
            })),
            "{t}"
        );
    }
}
