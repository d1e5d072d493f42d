//! The one error type every gRPC handler returns, and its mapping to
//! `tonic::Status` — the only place in QapMap where that mapping happens.
//!
//! Services keep their own `thiserror` enums inside and convert to
//! [`ApiError`] at the edge. Each variant's doc names the status it becomes.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub type ApiResult<T> = Result<T, ApiError>;

/// The domain that `ErrorInfo` details carry, so clients can tell our reason
/// codes from anyone else's.
const ERROR_DOMAIN: &str = "qapmap";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `INVALID_ARGUMENT`, with a `BadRequest` field violation naming `field`
    /// (a proto field path such as `exercise.quantity`).
    #[error("invalid {field}: {description}")]
    InvalidArgument { field: String, description: String },

    /// `NOT_FOUND`. Also the answer for another tenant's ids, so existence never leaks.
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },

    /// `ALREADY_EXISTS`: e.g. a request id reused with a different payload.
    #[error("{0}")]
    AlreadyExists(String),

    /// `FAILED_PRECONDITION`: a business rule refused the request. `reason`
    /// is a stable snake_case code sent as `ErrorInfo.reason`.
    #[error("{description}")]
    FailedPrecondition {
        reason: &'static str,
        description: String,
    },

    /// `ABORTED`: an optimistic-concurrency conflict (a stale expected version).
    #[error("{0}")]
    Aborted(String),

    /// `UNAUTHENTICATED`.
    #[error("{0}")]
    Unauthenticated(String),

    /// `PERMISSION_DENIED`.
    #[error("{0}")]
    PermissionDenied(String),

    /// `RESOURCE_EXHAUSTED`, with `RetryInfo`.
    #[error("rate limit exceeded; retry after {retry_after:?}")]
    ResourceExhausted { retry_after: Duration },

    /// `UNAVAILABLE`: a dependency is down; the client may retry.
    #[error("{0}")]
    Unavailable(String),

    /// `INTERNAL`: logged with its cause chain, never shown to the caller.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            description: description.into(),
        }
    }

    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            resource,
            id: id.into(),
        }
    }

    pub fn precondition(reason: &'static str, description: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            description: description.into(),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error.message = %error, "database unavailable");
                Self::Unavailable("the database is unavailable; retry later".to_owned())
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("40001") => {
                Self::Aborted("concurrent update; retry the request".to_owned())
            }
            _ => Self::Internal(error.into()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::InvalidArgument { field, description } => {
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation(field, description);
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound { .. } => Status::not_found(message),
            ApiError::AlreadyExists(_) => Status::already_exists(message),
            ApiError::FailedPrecondition {
                reason,
                description,
            } => {
                let mut details = ErrorDetails::with_error_info(
                    reason,
                    ERROR_DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                );
                details.add_precondition_failure_violation(reason, "", description);
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            ApiError::Aborted(_) => Status::aborted(message),
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::ResourceExhausted { retry_after } => {
                let details = ErrorDetails::with_retry_info(Some(retry_after));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Internal(cause) => {
                tracing::error!(
                    error.cause_chain = ?cause,
                    error.message = %cause,
                    "internal error"
                );
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_the_field_in_bad_request_details() {
        let status = Status::from(ApiError::invalid("exercise.quantity", "must be above 0"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("bad request details");
        assert_eq!(bad_request.field_violations[0].field, "exercise.quantity");
    }

    #[test]
    fn failed_precondition_carries_a_machine_readable_reason() {
        let status = Status::from(ApiError::precondition(
            "pool_exhausted",
            "the pool has 10 options available",
        ));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().expect("error info").reason,
            "pool_exhausted"
        );
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status = Status::from(ApiError::internal(anyhow::anyhow!("password=hunter2")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
