//! How an operation's [`ApiError`] reaches a gRPC client: one status code
//! per variant, and the error's own message, unchanged (clients and
//! tests read it).

use tonic::{Code, Status};

use crate::error::ApiError;

/// The gRPC code of `e`. A step of a larger request keeps its own code.
pub fn code(e: &ApiError) -> Code {
    match e {
        ApiError::Invalid { .. } => Code::InvalidArgument,
        ApiError::NotFound { .. } => Code::NotFound,
        ApiError::AlreadyExists { .. } => Code::AlreadyExists,
        ApiError::Conflict { .. } => Code::Aborted,
        ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
        ApiError::Exhausted(_) => Code::ResourceExhausted,
        ApiError::Denied { .. } => Code::PermissionDenied,
        ApiError::Unauthenticated(_) => Code::Unauthenticated,
        ApiError::OutOfRange(_) => Code::OutOfRange,
        ApiError::Unavailable(_) => Code::Unavailable,
        ApiError::Internal(_) => Code::Internal,
        ApiError::Step { source, .. } => code(source),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::new(code(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_keeps_its_code_and_message() {
        let e = ApiError::Step {
            context: "apply refused at volume \"v\"".into(),
            source: Box::new(ApiError::invalid("spec.size", "is required")),
        };
        let st = Status::from(e);
        assert_eq!(st.code(), Code::InvalidArgument);
        assert_eq!(
            st.message(),
            "apply refused at volume \"v\": invalid spec.size: is required"
        );
    }

    #[test]
    fn a_store_without_quorum_is_unavailable_with_its_cause() {
        let e = ApiError::from(crate::store::StoreError::Unavailable(
            "etcd has no quorum or cannot be reached (etcd did not answer within 2000 ms)".into(),
        ));
        let st = Status::from(e);
        assert_eq!(st.code(), Code::Unavailable);
        assert!(
            st.message()
                .starts_with("store unavailable: etcd has no quorum"),
            "{}",
            st.message()
        );
        assert!(st.message().ends_with("retry"), "{}", st.message());
    }
}
