//! `POST /jobs/message`: a message job, answered when a message worker has
//! run it.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::queue::{Completed, SubmitOptions};
use crate::state::AppState;
use crate::workers::message::{MessageJob, MessageOutput, MAX_WORK_MS};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    pub text: String,
    /// CPU time the job should spend, in milliseconds (default 0).
    #[serde(default)]
    pub work_ms: u64,
    /// A deadline shorter than the server's `MESSAGE_TIMEOUT_MS`.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageResponse {
    pub job_id: Uuid,
    pub worker: String,
    pub result: MessageOutput,
    pub queue_ms: f64,
    pub run_ms: f64,
    pub total_ms: f64,
}

impl MessageRequest {
    pub fn into_job(self) -> Result<(MessageJob, SubmitOptions), ApiError> {
        if self.work_ms > MAX_WORK_MS {
            return Err(ApiError::Invalid(format!(
                "work_ms must be at most {MAX_WORK_MS}"
            )));
        }
        let options = SubmitOptions {
            timeout: super::timeout_from(self.timeout_ms)?,
            ..SubmitOptions::default()
        };
        let job = MessageJob {
            text: self.text,
            work: Duration::from_millis(self.work_ms),
        };
        Ok((job, options))
    }
}

/// Runs a message job: CPU-bound hashing of `text` for `work_ms`.
#[utoipa::path(post, path = "/jobs/message", tag = "jobs",
    params(("mode" = Option<String>, Query, description = "`async`: answer 202 at once and run the job detached")),
    request_body = MessageRequest,
    responses(
        (status = 200, description = "The job ran", body = MessageResponse),
        (status = 202, description = "Async mode (`?mode=async` or `Prefer: respond-async`): accepted; follow Location", body = crate::jobs::JobView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Wrong shape or value", body = ErrorBody),
        (status = 429, description = "Over the client's rate; see Retry-After", body = ErrorBody),
        (status = 503, description = "Queue full (see Retry-After) or shutting down", body = ErrorBody),
        (status = 504, description = "Deadline passed; the job was stopped or never started", body = ErrorBody),
    ))]
pub async fn submit(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    use axum::extract::FromRequest as _;
    let mode = super::jobs::Mode::read(request.uri().query(), request.headers())?;
    let ApiJson(request) = ApiJson::<MessageRequest>::from_request(request, &state).await?;
    if mode.is_async {
        return super::jobs::submit_message(&state, request, &mode).await;
    }
    let (job, options) = request.into_job()?;
    let done = state.message.run(job, options).await?;
    Ok(Json(response(done)).into_response())
}

pub(crate) fn response(done: Completed<MessageOutput>) -> MessageResponse {
    MessageResponse {
        job_id: done.job_id,
        worker: done.worker,
        result: done.output,
        queue_ms: done.queue_ms,
        run_ms: done.run_ms,
        total_ms: done.total_ms,
    }
}
