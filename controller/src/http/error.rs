//! How an operation's [`ApiError`] reaches an HTTP client: the status code
//! of the usual gRPC-to-HTTP mapping and a JSON body carrying the very
//! message the gRPC status carries, the gRPC code's name and, for an
//! invalid field, the field's path.
//!
//! ```json
//! {"error": {"code": "INVALID_ARGUMENT", "status": 400,
//!            "message": "invalid spec.size: is required", "field": "spec.size"}}
//! ```

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;

/// A refused request.
#[derive(Debug)]
pub enum HttpError {
    /// Refused by an operation (or the authentication in front of it).
    Api(ApiError),
    /// The request itself could not be read (bad JSON, bad query).
    BadRequest { field: String, message: String },
    /// A body over `http_api.max_body_bytes`.
    TooLarge(usize),
    /// No such route.
    NoRoute(String),
    /// A route this build does not serve yet.
    Unimplemented(String),
    /// A body that is not declared JSON.
    UnsupportedMediaType,
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

/// The HTTP status of `e`, following the gRPC code it maps to.
pub fn status(e: &ApiError) -> StatusCode {
    match e {
        ApiError::Invalid { .. } | ApiError::OutOfRange(_) => StatusCode::BAD_REQUEST,
        ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
        ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
        ApiError::FailedPrecondition(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ApiError::Exhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Denied { .. } => StatusCode::FORBIDDEN,
        ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ApiError::Step { source, .. } => status(source),
    }
}

/// The field an invalid-argument error names, through Apply-like steps.
fn field(e: &ApiError) -> Option<&str> {
    match e {
        ApiError::Invalid { field, .. } => Some(field),
        ApiError::Step { source, .. } => field(source),
        _ => None,
    }
}

/// The body of every refusal.
pub fn body(code: &str, status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let mut err = json!({
        "code": code,
        "status": status.as_u16(),
        "message": message,
    });
    if let Some(f) = field {
        err["field"] = json!(f);
    }
    (status, Json(json!({ "error": err }))).into_response()
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => {
                let st = status(&e);
                let code = crate::api::grpc_code_name(&e);
                body(code, st, &e.to_string(), field(&e))
            }
            Self::BadRequest { field, message } => body(
                "INVALID_ARGUMENT",
                StatusCode::BAD_REQUEST,
                &format!("invalid {field}: {message}"),
                Some(&field),
            ),
            Self::TooLarge(max) => body(
                "RESOURCE_EXHAUSTED",
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body is larger than http_api.max_body_bytes ({max} bytes)"),
                None,
            ),
            Self::UnsupportedMediaType => body(
                "INVALID_ARGUMENT",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid Content-Type: the body must be application/json (or application/merge-patch+json for PATCH)",
                Some("Content-Type"),
            ),
            Self::Unimplemented(why) => {
                body("UNIMPLEMENTED", StatusCode::NOT_IMPLEMENTED, &why, None)
            }
            Self::NoRoute(path) => body(
                "NOT_FOUND",
                StatusCode::NOT_FOUND,
                &format!("no such route {path:?}; the API is described at /v1/openapi.json"),
                None,
            ),
        }
    }
}

/// The fallback: unknown paths answer in the API's error shape.
pub async fn not_found_route(uri: axum::http::Uri) -> HttpError {
    HttpError::NoRoute(uri.path().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_grpc_mapping() {
        let cases = [
            (ApiError::invalid("spec.size", "x"), 400),
            (ApiError::not_found("volume", "v"), 404),
            (
                ApiError::Conflict {
                    kind: "volume",
                    name: "v".into(),
                    current: 2,
                    given: 1,
                },
                409,
            ),
            (ApiError::FailedPrecondition("x".into()), 422),
            (ApiError::Exhausted("x".into()), 429),
            (
                ApiError::Denied {
                    identity: "tenant:a".into(),
                    action: "x".into(),
                    reason: "y".into(),
                },
                403,
            ),
            (ApiError::Unauthenticated("x".into()), 401),
            (ApiError::Unavailable("x".into()), 503),
        ];
        for (e, want) in cases {
            assert_eq!(status(&e).as_u16(), want, "{e}");
        }
        let step = ApiError::Step {
            context: "c".into(),
            source: Box::new(ApiError::invalid("spec.tenant", "x")),
        };
        assert_eq!(field(&step), Some("spec.tenant"));
    }
}
