//! `GET /v1/events`: the controller's events as a timeline, for the API
//! and the dashboard's Events page.
//!
//! STUB, to be wired after merging: controller events (ListEvents and
//! WatchEvents) are being added at the same time in another branch. This
//! module fixes the HTTP side against the small [`EventFeed`] trait;
//! [`feed`] returns `None` until then, the route answers 501
//! (UNIMPLEMENTED) and `/v1/whoami` tells the dashboard `events: false`,
//! so it shows no Events page. Wiring = implementing [`EventFeed`] over
//! the events operation (with the same authorization as ListEvents) and
//! returning it from [`feed`].

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

/// Where `/v1/events` reads from.
pub trait EventFeed: Send + Sync + 'static {
    /// The events `id` may see after `since` (0: the oldest kept), oldest
    /// first, at most `limit`; each as its JSON object.
    fn list(&self, id: &Identity, since: u64, limit: u32) -> Result<Vec<Value>, ApiError>;
}

/// The feed of this build: none yet (see the module doc).
pub fn feed(_s: &Arc<Shared>) -> Option<Arc<dyn EventFeed>> {
    None
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
