//! The way out: every failure a request can meet, as one enum with one JSON
//! shape and one status mapping.
//!
//! Handlers, extractors, the rate limiter, the panic catcher and the queue all
//! end in [`ApiError`]; its `IntoResponse` writes
//! `{"error": "<code>", "message": "...", "job_id"?: "..."}` with the right
//! status and, for 429/503, a `Retry-After` header. Failures that happen after
//! a job was admitted carry its id ([`ApiError::Job`] wrapping [`JobError`]).
//! Expected refusals (429, 503, 504, 4xx) are logged at debug/info, never as
//! errors: they are the server working as designed.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::metrics::{RejectReason, Rejected};
pub use crate::queue::JobError;
use crate::queue::QueueError;

/// The JSON body of every error response.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `queue_full`, `timeout`, `invalid_input`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// The job, when the error happened after admission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

/// Every error an HTTP request can end in.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client stopped sending its body (BODY_IDLE_TIMEOUT_MS,
    /// BODY_TIMEOUT_MS).
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Invalid(String),
    /// No API key, or one not known, while keys are on (`API_KEYS`).
    #[error("{0}")]
    Unauthorized(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("too many requests; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// The tenant holds its share of a queue's places while others wait.
    #[error("tenant {tenant} holds its fair share of the {queue} queue ({share} of {capacity} places) while other tenants wait; retry in {retry_after} s")]
    FairShare {
        tenant: std::sync::Arc<str>,
        queue: &'static str,
        share: usize,
        capacity: usize,
        retry_after: u64,
    },
    #[error("the {queue} queue is full ({capacity} waiting); retry in {retry_after} s")]
    QueueFull {
        queue: &'static str,
        capacity: usize,
        retry_after: u64,
    },
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("the server is receiving MAX_UPLOAD_BYTES_IN_FLIGHT ({limit} bytes) of request bodies; retry in {retry_after} s")]
    UploadsInFlight { limit: u64, retry_after: u64 },
    #[error("{max} async jobs are tracked (MAX_TRACKED_JOBS); retry in {retry_after} s, when finished ones expire")]
    TooManyJobs { max: u64, retry_after: u64 },
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// No room on the output folder's filesystem for a job that makes
    /// pages (below `MIN_FREE_DISK_MB`, or an upload that could not be
    /// kept for lack of space): refused before it runs, `503` with a
    /// `Retry-After`. A job that runs out of space while rendering is
    /// [`JobError::StorageFull`], `507`.
    #[error("{0}; retry later or on another instance")]
    InsufficientStorage(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{source}")]
    Job { job_id: Uuid, source: JobError },
}

impl ApiError {
    pub fn job(job_id: Uuid, source: JobError) -> Self {
        ApiError::Job { job_id, source }
    }

    /// HTTP status and the stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::FairShare { .. } => (StatusCode::TOO_MANY_REQUESTS, "fair_share"),
            ApiError::QueueFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::UploadsInFlight { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "uploads_in_flight")
            }
            ApiError::TooManyJobs { .. } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_jobs"),
            ApiError::IdempotencyKeyReused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::InsufficientStorage(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "insufficient_storage")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Job { source, .. } => match source {
                JobError::QueueTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "queue_timeout"),
                JobError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                JobError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
                JobError::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "job_failed"),
                JobError::StorageFull(_) => {
                    (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
                }
                JobError::Panicked(_) => (StatusCode::INTERNAL_SERVER_ERROR, "job_panicked"),
                JobError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                JobError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                JobError::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
            },
        }
    }

    /// Seconds a client should wait before retrying, where that is known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::FairShare { retry_after, .. }
            | ApiError::QueueFull { retry_after, .. }
            | ApiError::TooManyJobs { retry_after, .. }
            | ApiError::UploadsInFlight { retry_after, .. } => Some(*retry_after),
            ApiError::InsufficientStorage(_) => Some(crate::disk::RETRY_AFTER_SECS),
            ApiError::ShuttingDown
            | ApiError::Job {
                source: JobError::ShuttingDown,
                ..
            } => Some(1),
            _ => None,
        }
    }

    /// How `/metrics` counts this error, if it turned a request away.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            // No room for another async record is, to a client, a full queue.
            ApiError::QueueFull { .. } | ApiError::TooManyJobs { .. } => {
                Some(RejectReason::QueueFull)
            }
            ApiError::RateLimited { .. } => Some(RejectReason::RateLimited),
            ApiError::FairShare { .. } => Some(RejectReason::FairShare),
            ApiError::InsufficientStorage(_) => Some(RejectReason::InsufficientStorage),
            ApiError::UploadsInFlight { .. } => Some(RejectReason::UploadsInFlight),
            ApiError::PayloadTooLarge(_) => Some(RejectReason::TooLarge),
            ApiError::BadRequest(_)
            | ApiError::MalformedJson(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::Invalid(_)
            | ApiError::IdempotencyKeyReused(_)
            | ApiError::Job {
                source: JobError::Invalid(_),
                ..
            } => Some(RejectReason::Invalid),
            _ => None,
        }
    }

    pub fn job_id(&self) -> Option<Uuid> {
        match self {
            ApiError::Job { job_id, .. } => Some(*job_id),
            _ => None,
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Full {
                queue,
                capacity,
                retry_after,
            } => ApiError::QueueFull {
                queue,
                capacity,
                retry_after,
            },
            QueueError::ShuttingDown => ApiError::ShuttingDown,
            QueueError::FairShare {
                tenant,
                queue,
                share,
                capacity,
                retry_after,
            } => ApiError::FairShare {
                tenant,
                queue,
                share,
                capacity,
                retry_after,
            },
            QueueError::Job { job_id, source } => ApiError::Job { job_id, source },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // 503 and 504 are the server refusing or giving up as designed;
        // only failures (crashes, panics, internal errors) are errors.
        if status.is_server_error()
            && status != StatusCode::SERVICE_UNAVAILABLE
            && status != StatusCode::GATEWAY_TIMEOUT
        {
            tracing::error!(error = code, job_id = ?self.job_id(), "{self}");
        } else {
            tracing::debug!(error = code, job_id = ?self.job_id(), "{self}");
        }
        let body = ErrorBody {
            error: code.to_string(),
            message: self.to_string(),
            job_id: self.job_id(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(reason) = self.reject_reason() {
            response.extensions_mut().insert(Rejected(reason));
        }
        if let ApiError::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jobserver\""),
            );
        }
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_answers_503_with_retry_after_and_the_json_shape() {
        let response = ApiError::QueueFull {
            queue: "message",
            capacity: 10,
            retry_after: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn lack_of_storage_is_503_with_retry_after_before_a_job_and_507_during_one() {
        let refused = ApiError::InsufficientStorage("1 MB free".into()).into_response();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
        let err = ApiError::job(Uuid::new_v4(), JobError::StorageFull("ENOSPC".into()));
        assert_eq!(
            err.status_and_code(),
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        );
    }

    #[test]
    fn job_errors_carry_the_job_id_and_map_deadlines_to_504() {
        let id = Uuid::new_v4();
        let err = ApiError::job(id, JobError::Timeout { budget_ms: 10 });
        assert_eq!(err.status_and_code().0, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(err.job_id(), Some(id));
    }
}
