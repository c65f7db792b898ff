//! The gRPC adapters: each RPC decodes its request, names the caller
//! (from its verified client certificate), calls an operation
//! ([`crate::ops`]) and encodes the answer or the refusal as a
//! `tonic::Status` ([`status`]). No write logic lives here. Latency is
//! recorded for every call by one tower layer ([`timing`]).

pub mod admin;
pub mod agent;
pub mod debug;
mod status;
pub mod timing;
pub(crate) mod watch;

use tonic::Request;

use crate::error::ApiError;
use crate::identity::Identity;
pub use crate::ops::{merge_update, new_meta, Shared};

/// The caller's identity from its verified client certificate.
pub fn identity<T>(req: &Request<T>) -> Result<Identity, ApiError> {
    let certs = req.peer_certs().ok_or_else(|| {
        ApiError::Unauthenticated("a client certificate is required for this call".into())
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| ApiError::Unauthenticated("empty client certificate chain".into()))?;
    Identity::from_cert_der(leaf).map_err(|e| ApiError::Unauthenticated(e.to_string()))
}

/// The gRPC code name of `e` (`INVALID_ARGUMENT`), which the HTTP API's
/// error body carries too, so both APIs' clients match on the same words.
pub fn grpc_code_name(e: &ApiError) -> &'static str {
    grpc_code_name_of(status::code(e))
}

/// The name of a gRPC code as the protobuf enum spells it.
pub fn grpc_code_name_of(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Awaits `next` unless the server is shutting down, in which case it gives
/// `None` at once: a stream that ends this way lets the graceful shutdown
/// finish instead of waiting for its client to hang up.
pub async fn until_stopping<T>(
    next: impl std::future::Future<Output = Option<T>>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<T> {
    if *stopping.borrow() {
        return None;
    }
    tokio::select! {
        v = next => v,
        _ = stopping.changed() => None,
    }
}
