//! `GET /v1/events`: the controller's events as a timeline, for the API
//! and the dashboard's Events page.
//!
//! The route reads through the small [`EventFeed`] trait, implemented by
//! [`StoreFeed`] over the events operation (`ops::events`, the history
//! `ferrofab events` shows) with ListEvents' authorization: admin only,
//! since an event can name any tenant's objects. A tenant's token gets
//! 403 here, and `/v1/whoami` tells the dashboard whether to show the
//! Events page.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::HttpError;
use super::kinds::{bad_query, check_page_size};
use super::Http;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::ops::Shared;
use ferrofab_proto::v1::{Kind, ObjectEvent};

/// Where `/v1/events` reads from.
pub trait EventFeed: Send + Sync + 'static {
    /// The events `id` may see after `since` (0: the oldest kept), oldest
    /// first, at most `limit`; each as its JSON object.
    fn list(&self, id: &Identity, since: u64, limit: u32) -> Result<Vec<Value>, ApiError>;
}

/// The feed of this build: the store's event history.
pub fn feed(s: &Arc<Shared>) -> Option<Arc<dyn EventFeed>> {
    Some(Arc::new(StoreFeed(s.clone())))
}

/// [`EventFeed`] over `ops::events`.
pub struct StoreFeed(Arc<Shared>);

impl EventFeed for StoreFeed {
    /// With `since` 0 the most recent `limit` entries (what a timeline
    /// shows first); otherwise the first `limit` written after `since`,
    /// so a client can page forward by the last entry's `revision`.
    fn list(&self, id: &Identity, since: u64, limit: u32) -> Result<Vec<Value>, ApiError> {
        crate::authz::admin_only(id, crate::action::Action::ListEvents)?;
        let (mut events, _) = crate::ops::events::list(&self.0, Kind::Unspecified, "", 0)?;
        events.retain(|e| e.revision > since);
        events.sort_by_key(|e| e.revision);
        let limit = limit as usize;
        if since == 0 && events.len() > limit {
            events.drain(..events.len() - limit);
        }
        events.truncate(limit);
        Ok(events.iter().map(event_json).collect())
    }
}

/// One event as JSON: the message's fields (times as RFC 3339, the
/// severity by name, as in the object documents), plus `time` (the latest
/// occurrence) and `object` (`{kind, name}`) for a timeline.
fn event_json(e: &ObjectEvent) -> Value {
    let when = |t: &Option<prost_types::Timestamp>| {
        t.as_ref().map_or(Value::Null, |t| {
            Value::String(ferrofab_proto::time::rfc3339(t.seconds))
        })
    };
    json!({
        "kind": e.kind().noun(),
        "name": e.name,
        "reason": e.reason,
        "message": e.message,
        "severity": e.severity().as_str_name(),
        "first_time": when(&e.first_time),
        "last_time": when(&e.last_time),
        "time": when(&e.last_time),
        "count": e.count,
        "revision": e.revision,
        "object": { "kind": e.kind().noun(), "name": e.name },
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    pub since: u64,
    #[serde(default)]
    pub limit: u32,
}

pub async fn list(
    State(h): State<Http>,
    Caller(id): Caller,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let Query(q) = q.map_err(bad_query)?;
    let Some(feed) = &h.events else {
        return Err(HttpError::Unimplemented(
            "events are not served by this controller build yet".into(),
        ));
    };
    check_page_size(&h, q.limit)?;
    let limit = if q.limit == 0 {
        h.cfg.max_page_size
    } else {
        q.limit
    };
    Ok(Json(json!({ "items": feed.list(&id, q.since, limit)? })))
}
