//! The CRUD routes of the five kinds: `/v1/{kind}` (list, create, watch)
//! and `/v1/{kind}/{name}` (get, patch, delete). Each handler is the HTTP
//! twin of an AdminService RPC and calls the same operation.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferrofab_proto::v1::{Attachment, Node, Pool, Tenant, Volume};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::{from_value, Body, Caller};
use super::error::HttpError;
use super::Http;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::ops::{self, read, Delete, Shared};

/// The writes of a kind: which operation each HTTP verb calls.
pub trait HttpKind:
    read::Readable + Serialize + DeserializeOwned + utoipa::ToSchema + Send + Sync + 'static
{
    /// The path segment (`volumes`).
    const PLURAL: &'static str;
    fn create(
        s: Arc<Shared>,
        id: Identity,
        obj: Self,
    ) -> BoxFuture<'static, Result<Self, ApiError>>;
    fn update(
        s: Arc<Shared>,
        id: Identity,
        obj: Self,
    ) -> BoxFuture<'static, Result<Self, ApiError>>;
    fn delete(
        s: Arc<Shared>,
        id: Identity,
        d: Delete,
    ) -> BoxFuture<'static, Result<Self, ApiError>>;
}

macro_rules! http_kind {
    ($ty:ty, $plural:literal, $m:ident, $del_dry:tt, $upd_extra:tt) => {
        impl HttpKind for $ty {
            const PLURAL: &'static str = $plural;
            fn create(
                s: Arc<Shared>,
                id: Identity,
                obj: Self,
            ) -> BoxFuture<'static, Result<Self, ApiError>> {
                async move { ops::$m::create(&s, &id, obj, false).await }.boxed()
            }
            fn update(
                s: Arc<Shared>,
                id: Identity,
                obj: Self,
            ) -> BoxFuture<'static, Result<Self, ApiError>> {
                async move { http_kind!(@update $m, s, id, obj, $upd_extra) }.boxed()
            }
            fn delete(
                s: Arc<Shared>,
                id: Identity,
                d: Delete,
            ) -> BoxFuture<'static, Result<Self, ApiError>> {
                async move { http_kind!(@delete $m, s, id, d, $del_dry) }.boxed()
            }
        }
    };
    (@update $m:ident, $s:ident, $id:ident, $obj:ident, force) => {
        ops::$m::update(&$s, &$id, $obj, false, false).await
    };
    (@update $m:ident, $s:ident, $id:ident, $obj:ident, plain) => {
        ops::$m::update(&$s, &$id, $obj, false).await
    };
    (@delete $m:ident, $s:ident, $id:ident, $d:ident, dry) => {
        ops::$m::delete(&$s, &$id, &$d, false).await
    };
    (@delete $m:ident, $s:ident, $id:ident, $d:ident, plain) => {
        ops::$m::delete(&$s, &$id, &$d).await
    };
}

http_kind!(Node, "nodes", node, dry, plain);
http_kind!(Pool, "pools", pool, dry, plain);
http_kind!(Tenant, "tenants", tenant, dry, plain);
http_kind!(Volume, "volumes", volume, plain, plain);
http_kind!(Attachment, "attachments", attachment, plain, force);

/// The query of a list (and of a watch, with `watch=true`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// `key=value,key!=value,key` as the CLI's `-l`.
    #[serde(default)]
    pub label_selector: String,
    /// Most items in the page (0: the server's page budget).
    #[serde(default)]
    pub limit: u32,
    /// The `continue` token of the previous page.
    #[serde(default, rename = "continue")]
    pub continue_token: String,
    /// Stream changes as server-sent events instead of listing.
    #[serde(default)]
    pub watch: bool,
    /// With `watch`: resume after this revision (0: a snapshot first).
    #[serde(default)]
    pub resource_version: u64,
}

/// The query of a delete.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete only if the object is still at this revision (409 if not).
    #[serde(default)]
    pub resource_version: u64,
}

/// Refuses a `limit` above `http_api.max_page_size` (counted), rather
/// than answering fewer items than asked without saying so.
pub fn check_page_size(h: &Http, limit: u32) -> Result<(), HttpError> {
    if limit <= h.cfg.max_page_size {
        return Ok(());
    }
    h.s.metrics.refused("http_page_size");
    Err(ApiError::invalid(
        "limit",
        format!(
            "{limit} is more than http_api.max_page_size ({})",
            h.cfg.max_page_size
        ),
    )
    .into())
}

/// A query that could not be read: 400 naming the parameter.
pub fn bad_query(e: axum::extract::rejection::QueryRejection) -> HttpError {
    HttpError::BadRequest {
        field: "query".into(),
        message: e.body_text(),
    }
}

pub fn routes() -> Router<Http> {
    Router::new()
        .merge(kind_routes::<Node>())
        .merge(kind_routes::<Pool>())
        .merge(kind_routes::<Tenant>())
        .merge(kind_routes::<Volume>())
        .merge(kind_routes::<Attachment>())
}

fn kind_routes<K: HttpKind>() -> Router<Http> {
    Router::new()
        .route(
            &format!("/v1/{}", K::PLURAL),
            get(list::<K>).post(create::<K>),
        )
        .route(
            &format!("/v1/{}/{{name}}", K::PLURAL),
            get(get_one::<K>).patch(patch::<K>).delete(delete::<K>),
        )
}

async fn list<K: HttpKind>(
    State(h): State<Http>,
    Caller(id): Caller,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(q) = q.map_err(bad_query)?;
    if q.watch {
        return super::watch::stream::<K>(&h, id, &q, &headers);
    }
    check_page_size(&h, q.limit)?;
    let (items, revision, next) =
        read::list::<K>(&h.s, &id, &q.label_selector, q.limit, &q.continue_token)?;
    Ok(Json(json!({
        "items": items,
        "revision": revision,
        "continue": next,
    }))
    .into_response())
}

async fn get_one<K: HttpKind>(
    State(h): State<Http>,
    Caller(id): Caller,
    Path(name): Path<String>,
) -> Result<Json<K>, HttpError> {
    Ok(Json(read::get::<K>(&h.s, &id, &name)?))
}

async fn create<K: HttpKind>(
    State(h): State<Http>,
    Caller(id): Caller,
    Body(obj): Body<K>,
) -> Result<(StatusCode, Json<K>), HttpError> {
    let made = K::create(h.s.clone(), id, obj).await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// A JSON merge patch (RFC 7396) of the object as the caller reads it.
/// `metadata.resource_version` in the patch is the precondition: the
/// update is refused with 409 if the object has changed since; without
/// it the patch applies to whatever is current.
async fn patch<K: HttpKind>(
    State(h): State<Http>,
    Caller(id): Caller,
    Path(name): Path<String>,
    Body(patch): Body<Value>,
) -> Result<Json<K>, HttpError> {
    if !patch.is_object() {
        return Err(HttpError::BadRequest {
            field: "body".into(),
            message: "a merge patch must be a JSON object".into(),
        });
    }
    let given_rv = match patch.pointer("/metadata/resource_version") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| HttpError::BadRequest {
            field: "metadata.resource_version".into(),
            message: "must be a non-negative integer".into(),
        })?,
    };
    if let Some(n) = patch.pointer("/metadata/name").and_then(Value::as_str) {
        if n != name {
            return Err(ApiError::invalid(
                "metadata.name",
                format!("{n:?} differs from the path's {name:?}; objects cannot be renamed"),
            )
            .into());
        }
    }
    let current = read::get::<K>(&h.s, &id, &name)?;
    let mut doc = serde_json::to_value(&current)
        .map_err(|e| ApiError::Internal(format!("encoding {name:?}: {e}")))?;
    merge_patch(&mut doc, &patch);
    let mut obj: K = from_value(doc)?;
    obj.meta_mut().resource_version = given_rv;
    Ok(Json(K::update(h.s.clone(), id, obj).await?))
}

async fn delete<K: HttpKind>(
    State(h): State<Http>,
    Caller(id): Caller,
    Path(name): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<K>, HttpError> {
    let Query(q) = q.map_err(bad_query)?;
    let d = Delete {
        name,
        resource_version: q.resource_version,
    };
    Ok(Json(K::delete(h.s.clone(), id, d).await?))
}

/// RFC 7396: objects merge key by key, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_merges_replaces_and_removes() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1], "e": "x"});
        merge_patch(
            &mut doc,
            &json!({"a": {"b": 9, "c": null}, "d": [2, 3], "f": true}),
        );
        assert_eq!(
            doc,
            json!({"a": {"b": 9}, "d": [2, 3], "e": "x", "f": true})
        );
    }
}
