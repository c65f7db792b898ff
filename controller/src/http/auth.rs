//! Who is calling, and the request body, as extractors.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::HttpError;
use super::{Http, Peer};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::ops::apitoken;

/// The caller: a bearer API token when one is sent (it wins over the
/// certificate, so a browser with an admin certificate can still act as a
/// tenant), else the verified client certificate.
pub struct Caller(pub Identity);

impl FromRequestParts<Http> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Http) -> Result<Self, HttpError> {
        if let Some(h) = parts.headers.get(AUTHORIZATION) {
            let token = h
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    ApiError::Unauthenticated(
                        "the Authorization header must be `Bearer <API token>`".into(),
                    )
                })?;
            return apitoken::authenticate(&state.s, token)
                .map(Caller)
                .map_err(|e| {
                    state.s.metrics.refused("http_token");
                    e.into()
                });
        }
        match parts.extensions.get::<Peer>() {
            Some(Peer(Some(id))) => Ok(Caller(id.clone())),
            _ => Err(ApiError::Unauthenticated(
                "present a client certificate or an API token (Authorization: Bearer ...)".into(),
            )
            .into()),
        }
    }
}

/// A JSON body of at most `http_api.max_body_bytes`; a decoding error
/// names the path of the offending field. The Content-Type must be JSON:
/// a browser holding a client certificate would otherwise let any web page
/// submit a cross-site form (text/plain) that the API takes as the user's
/// request; a JSON content type cannot be sent cross-site without a CORS
/// preflight, which this API never grants.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Http> for Body<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &Http) -> Result<Self, HttpError> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|t| t == "application/json" || t == "application/merge-patch+json");
        if !json {
            return Err(HttpError::UnsupportedMediaType);
        }
        let max = state.cfg.max_body_bytes;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            state.s.metrics.refused("http_body_bytes");
            HttpError::TooLarge(max)
        };
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), max)
            .await
            .map_err(|_| too_large())?;
        decode(&bytes).map(Body)
    }
}

/// Decodes JSON, naming the field at fault (`spec.size`) in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        HttpError::BadRequest {
            field: if path == "." { "body".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// Decodes a JSON value the same way.
pub fn from_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, HttpError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        HttpError::BadRequest {
            field: if path == "." { "body".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}
