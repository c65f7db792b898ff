//! The actions that are not plain CRUD, as sub-resources of a volume:
//! `POST /v1/volumes/{name}/resize|extend|move`. Each is the change the
//! CLI's command of the same name makes, sent through the same update
//! operation, so its refusals (shrinking, quota, a node the tenant may not
//! use) are the operation's.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use ferrofab_proto::v1::{Attachment, Volume};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{Body, Caller};
use super::error::HttpError;
use super::Http;
use crate::error::ApiError;
use crate::ops::{self, list_checked, read};
use crate::resource::Object;

/// `POST /v1/volumes/{name}/resize`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    /// The new size, bytes or with a unit ("200GiB"). Volumes only grow.
    pub size: String,
    /// Resize only if the volume is still at this revision (409 if not).
    #[serde(default)]
    pub resource_version: u64,
}

/// `POST /v1/volumes/{name}/extend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// How much later the volume expires, e.g. "7d". An expiry already
    /// past counts from now.
    pub by: String,
}

/// `POST /v1/volumes/{name}/move`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The workstation node to move the volume's attachment to.
    pub to: String,
    /// Fence the previous node by revoking its host at once, without
    /// waiting for it to detach (for a node that is down).
    #[serde(default)]
    pub force: bool,
}

pub fn routes() -> Router<Http> {
    Router::new()
        .route("/v1/volumes/{name}/resize", post(resize))
        .route("/v1/volumes/{name}/extend", post(extend))
        .route("/v1/volumes/{name}/move", post(move_volume))
}

async fn resize(
    State(h): State<Http>,
    Caller(id): Caller,
    Path(name): Path<String>,
    Body(r): Body<ResizeRequest>,
) -> Result<Json<Volume>, HttpError> {
    let mut v: Volume = read::get(&h.s, &id, &name)?;
    v.spec.get_or_insert_with(Default::default).size = r.size;
    v.meta_mut().resource_version = r.resource_version;
    Ok(Json(ops::volume::update(&h.s, &id, v, false).await?))
}

async fn extend(
    State(h): State<Http>,
    Caller(id): Caller,
    Path(name): Path<String>,
    Body(r): Body<ExtendRequest>,
) -> Result<Json<Volume>, HttpError> {
    let by =
        ferrofab_pki::parse_duration(&r.by).map_err(|e| ApiError::invalid("by", e.to_string()))?;
    let by = i64::try_from(by.as_secs()).map_err(|_| ApiError::invalid("by", "too long"))?;
    let mut v: Volume = read::get(&h.s, &id, &name)?;
    let now = h.s.clock.now();
    let spec = v.spec.get_or_insert_with(Default::default);
    let Some(at) = spec.expires_at.as_mut() else {
        return Err(ApiError::FailedPrecondition(format!(
            "volume {name:?} has no expiry to extend (it never expires; set spec.expires_at with PATCH)"
        ))
        .into());
    };
    at.seconds = at
        .seconds
        .max(now)
        .checked_add(by)
        .ok_or_else(|| ApiError::invalid("by", "too long"))?;
    v.meta_mut().resource_version = 0;
    Ok(Json(ops::volume::update(&h.s, &id, v, false).await?))
}

/// Moves the volume's one attachment to another node: the controller
/// fences the move (the new node connects only once the storage node
/// reports the old one's host revoked).
async fn move_volume(
    State(h): State<Http>,
    Caller(id): Caller,
    Path(name): Path<String>,
    Body(r): Body<MoveRequest>,
) -> Result<Json<Attachment>, HttpError> {
    let _: Volume = read::get(&h.s, &id, &name)?;
    let (all, _) = list_checked::<Attachment>(&h.s, &id, "")?;
    let mut mine: Vec<Attachment> = all
        .into_iter()
        .filter(|a| a.spec.as_ref().is_some_and(|s| s.volume == name))
        .collect();
    let mut a = match mine.len() {
        1 => mine.remove(0),
        0 => {
            return Err(ApiError::FailedPrecondition(format!(
                "volume {name:?} is not attached; attach it (POST /v1/attachments) instead"
            ))
            .into())
        }
        n => {
            return Err(ApiError::FailedPrecondition(format!(
                "volume {name:?} has {n} attachments; move them one by one (PATCH /v1/attachments/NAME spec.node)"
            ))
            .into())
        }
    };
    a.spec.get_or_insert_with(Default::default).node = r.to;
    a.meta_mut().resource_version = 0;
    Ok(Json(
        ops::attachment::update(&h.s, &id, a, false, r.force).await?,
    ))
}
