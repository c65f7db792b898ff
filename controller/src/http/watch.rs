//! Watch over HTTP: server-sent events from the same watch the gRPC
//! Watch RPCs serve (`api::watch`: snapshot, then every committed change,
//! filtered by the selector and what the caller may read).
//!
//! Each event is `event: ADDED|MODIFIED|DELETED|SYNCED`, `data:` the JSON
//! `{"type", "revision", "object"}`, and an `id:` to resume from: a client
//! that reconnects with `Last-Event-ID` (browsers' EventSource do it by
//! themselves) or `?resourceVersion=` gets every change after it. An
//! object event's id is its revision minus one: one transaction may change
//! several objects at one revision, and a stream cut between them must
//! resend the rest, so resuming is at-least-once (an object may come
//! twice, with the same resource_version); the SYNCED event's id is the
//! snapshot's revision itself.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferrofab_proto::v1::{watch_event, EventType, WatchEvent, WatchRequest};
use serde_json::{json, Value};
use tokio_stream::StreamExt as _;

use super::error::HttpError;
use super::kinds::{HttpKind, ListQuery};
use super::Http;
use crate::error::ApiError;
use crate::identity::Identity;

/// Comment lines that keep idle streams (and proxies) from timing out.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The revision to resume after: `resourceVersion`, else `Last-Event-ID`.
fn resume_from(q: &ListQuery, headers: &HeaderMap) -> Result<u64, HttpError> {
    if q.resource_version != 0 {
        return Ok(q.resource_version);
    }
    match headers.get("last-event-id") {
        None => Ok(0),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| HttpError::BadRequest {
                field: "Last-Event-ID".into(),
                message: "must be a revision (an integer)".into(),
            }),
    }
}

/// Opens the stream, or refuses with the same errors the gRPC Watch gives
/// (plus `http_api.max_watches`).
pub fn stream<K: HttpKind>(
    h: &Http,
    id: Identity,
    q: &ListQuery,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let from = resume_from(q, headers)?;
    let permit = h.watches.clone().try_acquire_owned().map_err(|_| {
        h.s.metrics.refused("http_watches");
        ApiError::Exhausted(format!(
            "{} watch streams are open over HTTP (http_api.max_watches); try again later",
            h.cfg.max_watches
        ))
    })?;
    let events = crate::api::watch::watch::<K>(
        &h.s,
        id,
        WatchRequest {
            label_selector: q.label_selector.clone(),
            from_revision: from,
        },
    )?;
    let out = events.map(move |r| {
        let _held = &permit;
        Ok::<_, Infallible>(match r {
            Ok(ev) => sse_event(ev),
            Err(st) => Event::default().event("ERROR").data(
                json!({"code": format!("{:?}", st.code()), "message": st.message()}).to_string(),
            ),
        })
    });
    Ok(Sse::new(out)
        .keep_alive(KeepAlive::new().interval(KEEPALIVE))
        .into_response())
}

/// The JSON of one watch event's object.
fn object_json(o: Option<watch_event::Object>) -> Value {
    use watch_event::Object as O;
    let v = match o {
        None => Ok(Value::Null),
        Some(O::Node(x)) => serde_json::to_value(x),
        Some(O::Pool(x)) => serde_json::to_value(x),
        Some(O::Volume(x)) => serde_json::to_value(x),
        Some(O::Attachment(x)) => serde_json::to_value(x),
        Some(O::Tenant(x)) => serde_json::to_value(x),
    };
    v.unwrap_or(Value::Null)
}

fn sse_event(ev: WatchEvent) -> Event {
    let ty = EventType::try_from(ev.r#type).unwrap_or(EventType::Unspecified);
    let word = ty
        .as_str_name()
        .strip_prefix("EVENT_TYPE_")
        .unwrap_or("UNSPECIFIED");
    let id = if ty == EventType::Synced {
        ev.revision
    } else {
        ev.revision.saturating_sub(1)
    };
    let data = json!({
        "type": word,
        "revision": ev.revision,
        "object": object_json(ev.object),
    });
    Event::default()
        .event(word)
        .id(id.to_string())
        .data(data.to_string())
}
