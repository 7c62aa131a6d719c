//! Responses shared by many routes, for the OpenAPI document: each route
//! lists its own success and special cases and names one of these sets.

use crate::error::ErrorBody;

use super::view::JobView;

/// What every job submit route may answer besides its reply.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, clippy::large_enum_variant)] // Read by the OpenAPI derive only.
pub enum SubmitResponses {
    /// Async mode (`?mode=async`, `Prefer: respond-async`): accepted; follow `Location`.
    #[response(status = 202)]
    Accepted(JobView),
    /// Malformed JSON, query, multipart or option (bad `mode`, dpi, pages, path leaving DATA_DIR).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// API keys are on and the request carries no known key (`Authorization: Bearer <key>`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The body stalled (BODY_IDLE_TIMEOUT_MS) or took too long (BODY_TIMEOUT_MS).
    #[response(status = 408)]
    RequestTimeout(ErrorBody),
    /// Body over its limit: MAX_BODY_BYTES, or MAX_UPLOAD_BYTES for an upload.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Unsupported content type.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Well-formed but unusable input: wrong shape or value, unreadable or encrypted PDF, past a limit.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Over the client's rate (`rate_limited`), or the tenant holds its fair share of the queue while other tenants wait (`fair_share`); see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// Queue full (see `Retry-After`), shutting down, the type's engine unavailable, or (types that make pages) free disk space below MIN_FREE_DISK_MB (`insufficient_storage`, see `Retry-After`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// Deadline passed; the job was stopped, or never started.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// What every route that names one job may answer besides its reply.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Read by the OpenAPI derive only.
pub enum JobLookupResponses {
    /// Not a job id.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// API keys are on and the request carries no known key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such job, removed after RESULT_TTL_SECS, or another tenant's.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Over the client's rate; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
}
