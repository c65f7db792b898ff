//! The typed error of every operation. The gRPC adapters map it to a
//! status code (`api::status`); an HTTP API would map the same variants.
//! Every message names what was wrong (the field, the object, the
//! identity) so operators can act on it without reading logs.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{kind} {name:?} was modified concurrently: current resource_version is {current}, request had {given}")]
    Conflict {
        kind: &'static str,
        name: String,
        current: u64,
        given: u64,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{identity} may not {action}: {reason}")]
    Denied {
        identity: String,
        action: String,
        reason: String,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    OutOfRange(String),
    /// The store cannot serve the request now (see
    /// [`StoreError::Unavailable`]): gRPC UNAVAILABLE, HTTP 503.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// An error of one step of a larger request (an Apply): says which
    /// step, and keeps the step's own status code, so a refusal through
    /// Apply carries the same code and message as the typed RPC's.
    #[error("{context}: {source}")]
    Step {
        context: String,
        source: Box<ApiError>,
    },
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn not_found(kind: &'static str, name: &str) -> Self {
        Self::NotFound {
            kind,
            name: name.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { .. } => Self::OutOfRange(e.to_string()),
            StoreError::NotLeader { .. } => Self::FailedPrecondition(e.to_string()),
            StoreError::Unavailable(_) => Self::Unavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_store_is_unavailable_not_internal() {
        let e = ApiError::from(StoreError::Unavailable(
            "etcd has no quorum or cannot be reached (etcdserver: request timed out)".into(),
        ));
        assert!(matches!(e, ApiError::Unavailable(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "store unavailable: etcd has no quorum or cannot be reached (etcdserver: request timed out); retry"
        );
        let other = ApiError::from(StoreError::Io("disk full".into()));
        assert!(matches!(other, ApiError::Internal(_)), "{other:?}");
    }
}
