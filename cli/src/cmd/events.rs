//! `ferrofab events [KIND [NAME]] [--watch]`: the controller's history of
//! notable transitions, oldest first; `--watch` then prints new ones as
//! they are recorded. `describe` and `status` show the same entries
//! through [`fetch`] and [`table`].

use ferrofab_proto::v1::{self, Kind, ObjectEvent, Severity};
use serde_json::{json, Value};

use super::Ctx;
use crate::args::{Format, KindArg};
use crate::client::{status_error, Admin};
use crate::output::{now_seconds, print, relative, render_value, table as layout, timestamp};

/// The proto kind of a command-line kind.
pub fn kind_of(k: KindArg) -> Kind {
    match k {
        KindArg::Node => Kind::Node,
        KindArg::Pool => Kind::Pool,
        KindArg::Volume => Kind::Volume,
        KindArg::Attachment => Kind::Attachment,
        KindArg::Tenant => Kind::Tenant,
    }
}

/// The events of a kind or object, or `None` when this caller cannot
/// have them (a controller without events, or a tenant's certificate):
/// `describe` and `status` then leave the section out instead of failing.
pub async fn fetch(
    admin: &mut Admin,
    kind: Kind,
    name: &str,
    limit: u32,
) -> anyhow::Result<Option<Vec<ObjectEvent>>> {
    let req = v1::ListEventsRequest {
        kind: kind as i32,
        name: name.into(),
        limit,
    };
    match admin.list_events(req).await {
        Ok(r) => Ok(Some(r.into_inner().events)),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unimplemented | tonic::Code::PermissionDenied
            ) =>
        {
            Ok(None)
        }
        Err(s) => Err(status_error("listing events", s)),
    }
}

/// `Warning` or `Normal`, as people know it from other systems.
fn kind_word(e: &ObjectEvent) -> &'static str {
    match e.severity() {
        Severity::Warning | Severity::Error => "Warning",
        _ => "Normal",
    }
}

fn object(e: &ObjectEvent) -> String {
    format!("{}/{}", e.kind().noun(), e.name)
}

fn last_seen(e: &ObjectEvent, now: i64) -> String {
    e.last_time.as_ref().map_or_else(
        || "-".into(),
        // Never "in 0s": a clock a little behind the controller's is
        // still "now".
        |t| {
            if t.seconds >= now {
                "0s".to_owned()
            } else {
                relative(t.seconds - now)
                    .trim_end_matches(" ago")
                    .to_owned()
            }
        },
    )
}

fn row(e: &ObjectEvent, now: i64, with_object: bool, wide: bool) -> Vec<String> {
    let mut r = vec![last_seen(e, now), kind_word(e).into()];
    if with_object {
        r.push(object(e));
    }
    r.push(e.reason.clone());
    r.push(e.count.to_string());
    if wide {
        r.push(e.first_time.as_ref().map_or_else(|| "-".into(), timestamp));
    }
    r.push(e.message.clone());
    r
}

fn header(with_object: bool, wide: bool) -> Vec<&'static str> {
    let mut h = vec!["LAST SEEN", "TYPE"];
    if with_object {
        h.push("OBJECT");
    }
    h.extend(["REASON", "COUNT"]);
    if wide {
        h.push("FIRST SEEN");
    }
    h.push("MESSAGE");
    h
}

/// The events as a table; without the OBJECT column when they are all
/// about one object (describe).
pub fn table(events: &[ObjectEvent], now: i64, with_object: bool, wide: bool) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| row(e, now, with_object, wide))
        .collect();
    layout(&header(with_object, wide), &rows)
}

/// One event as a JSON document (also the YAML one).
pub fn document(e: &ObjectEvent) -> Value {
    json!({
        "kind": e.kind().title(),
        "name": e.name,
        "reason": e.reason,
        "type": kind_word(e),
        "message": e.message,
        "count": e.count,
        "first_time": e.first_time.as_ref().map(timestamp),
        "last_time": e.last_time.as_ref().map(timestamp),
        "revision": e.revision,
    })
}

fn render(events: &[ObjectEvent], format: Format, now: i64, header_too: bool) -> String {
    match format {
        Format::Json | Format::Yaml => {
            render_value(&Value::Array(events.iter().map(document).collect()), format)
        }
        Format::Name => events.iter().map(|e| format!("{}\n", object(e))).collect(),
        f => {
            let t = table(events, now, true, f == Format::Wide);
            if header_too {
                t
            } else {
                t.lines().skip(1).map(|l| format!("{l}\n")).collect()
            }
        }
    }
}

pub async fn run(
    ctx: &Ctx,
    kind: Option<KindArg>,
    name: Option<String>,
    watch: bool,
    limit: u32,
) -> anyhow::Result<()> {
    let mut admin = ctx.admin().await?;
    let kind = kind.map_or(Kind::Unspecified, kind_of);
    let name = name.unwrap_or_default();
    let resp = admin
        .list_events(v1::ListEventsRequest {
            kind: kind as i32,
            name: name.clone(),
            limit,
        })
        .await
        .map_err(|s| status_error("listing events", s))?
        .into_inner();
    let now = now_seconds();
    if !watch {
        if resp.events.is_empty() && matches!(ctx.output, Format::Table | Format::Wide) {
            eprintln!("no events");
            return Ok(());
        }
        print(&render(&resp.events, ctx.output, now, true))?;
        return Ok(());
    }
    // Watching: the list, then each new or repeated entry as one more
    // line (JSON: one document a line, for `jq`).
    let line_format = match ctx.output {
        Format::Json | Format::Yaml => Format::Json,
        f => f,
    };
    let mut columns_shown = false;
    if !resp.events.is_empty() || line_format == Format::Table || line_format == Format::Wide {
        print(&render(&resp.events, line_format, now, true))?;
        columns_shown = true;
    }
    let mut stream = admin
        .watch_events(v1::WatchEventsRequest {
            kind: kind as i32,
            name,
            from_revision: resp.revision,
        })
        .await
        .map_err(|s| status_error("watching events", s))?
        .into_inner();
    while let Some(ev) = stream
        .message()
        .await
        .map_err(|s| status_error("watching events", s))?
    {
        let text = match line_format {
            Format::Json => format!("{}\n", document(&ev)),
            f => render(std::slice::from_ref(&ev), f, now_seconds(), !columns_shown),
        };
        print(&text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, reason: &str, sev: Severity, at: i64, count: u32) -> ObjectEvent {
        ObjectEvent {
            kind: Kind::Volume as i32,
            name: name.into(),
            reason: reason.into(),
            message: format!("{reason} message"),
            severity: sev as i32,
            first_time: Some(prost_types::Timestamp {
                seconds: at - 60,
                nanos: 0,
            }),
            last_time: Some(prost_types::Timestamp {
                seconds: at,
                nanos: 0,
            }),
            count,
            revision: 7,
        }
    }

    #[test]
    fn tables_and_documents() {
        let now = 1_000_000;
        let list = vec![
            ev("a", "Placed", Severity::Info, now - 120, 1),
            ev("big", "Refused", Severity::Warning, now - 5, 3),
        ];
        let t = table(&list, now, true, false);
        assert_eq!(
            t.lines().next().unwrap(),
            "LAST SEEN  TYPE     OBJECT      REASON   COUNT  MESSAGE"
        );
        assert!(
            t.contains("5s         Warning  volume/big  Refused  3      Refused message"),
            "{t}"
        );
        let one = table(&list[..1], now, false, false);
        assert!(
            one.starts_with("LAST SEEN  TYPE    REASON  COUNT  MESSAGE\n"),
            "{one}"
        );
        assert_eq!(
            render(&list, Format::Name, now, true),
            "volume/a\nvolume/big\n"
        );
        let wide = table(&list, now, true, true);
        assert!(
            wide.lines().next().unwrap().contains("FIRST SEEN"),
            "{wide}"
        );
        let d = document(&list[1]);
        assert_eq!(d["kind"], "Volume");
        assert_eq!(d["type"], "Warning");
        assert_eq!(d["count"], 3);
        // Watch lines after the first carry no header.
        let line = render(&list[..1], Format::Table, now, false);
        assert_eq!(line.lines().count(), 1, "{line}");
    }
}
