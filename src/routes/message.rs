//! `POST /jobs/message`: a message job, answered when a message worker has
//! run it (or at once with 202 in async mode). Also the `message` worker
//! type's registration: [`MessageKind`].

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::kind::JobKind;
use crate::queue::{Completed, JobQueue, SubmitOptions};
use crate::state::{AppState, StartContext};
use crate::storage::JobInput;
use crate::workers::message::{MessageJob, MessageOutput, MessageWorker, MAX_WORK_MS};

use super::admission::Admission;
use super::doc::SubmitResponses;

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
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

/// The `message` worker type.
pub struct MessageKind {
    queue: JobQueue<MessageWorker>,
}

impl MessageKind {
    pub fn start(ctx: &StartContext) -> std::io::Result<Self> {
        let queue = JobQueue::start(Self::NAME, ctx.config.message.clone(), |_| MessageWorker)?;
        Ok(MessageKind { queue })
    }
}

impl JobKind for MessageKind {
    type Worker = MessageWorker;
    type Params = MessageRequest;
    type Reply = MessageResponse;
    const NAME: &'static str = "message";

    fn queue(&self) -> &JobQueue<MessageWorker> {
        &self.queue
    }

    fn build(
        &self,
        request: &MessageRequest,
        _input: Option<&JobInput>,
    ) -> Result<(MessageJob, SubmitOptions), ApiError> {
        if request.work_ms > MAX_WORK_MS {
            return Err(ApiError::Invalid(format!(
                "work_ms must be at most {MAX_WORK_MS}"
            )));
        }
        let options = SubmitOptions {
            timeout: super::timeout_from(request.timeout_ms)?,
            ..SubmitOptions::default()
        };
        let job = MessageJob {
            text: request.text.clone(),
            work: Duration::from_millis(request.work_ms),
        };
        Ok((job, options))
    }

    fn reply(&self, done: Completed<MessageOutput>) -> MessageResponse {
        MessageResponse {
            job_id: done.job_id,
            worker: done.worker,
            result: done.output,
            queue_ms: done.queue_ms,
            run_ms: done.run_ms,
            total_ms: done.total_ms,
        }
    }
}

/// The message type's routes, with the JSON body limit.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(message_submit))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
}

/// Runs a message job: CPU-bound hashing of `text` for `work_ms`.
#[utoipa::path(post, path = "/jobs/message", tag = "jobs",
    params(("mode" = Option<String>, Query, description = "`async`: answer 202 at once and run the job detached")),
    request_body = MessageRequest,
    responses((status = 200, description = "The job ran", body = MessageResponse), SubmitResponses))]
pub async fn message_submit(
    State(state): State<AppState>,
    admission: Admission<MessageKind>,
    ApiJson(request): ApiJson<MessageRequest>,
) -> Result<Response, ApiError> {
    admission.run_or_accept(&state, request, None).await
}
