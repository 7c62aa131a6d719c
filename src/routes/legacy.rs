//! `POST /multiThread`: the seed's endpoint, kept so existing clients work.
//!
//! It takes `{"data": "...", "jobType": "message" | "pdf2image"}` and answers
//! in the seed's shape, `{"data": {"id", "result": {"errCode", "err",
//! "data", "workerName", "dequeueElapsedMs", "processElapsedMs",
//! "totalElapsedMs"}}}`. For `pdf2image`, `data` names a PDF in `DATA_DIR`
//! (default `sample.pdf`) rendered at the default dpi. Errors use the
//! server's one JSON error shape and status codes. In async mode
//! (`?mode=async`, `Prefer: respond-async`) it answers 202 with the job's
//! view, like every job endpoint.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{ApiJson, AsyncMode};
use crate::kind::{JobKind, OutputOf};
use crate::queue::Completed;
use crate::state::AppState;
use crate::storage::JobInput;
use crate::tenants::Caller;

use super::doc::SubmitResponses;
use super::message::{MessageKind, MessageRequest};
use super::pdf::{data_file, PdfKind, PdfOptions};
use super::submit::{run, Submit};

/// The PDF `pdf2image` renders when `data` names none.
pub const DEFAULT_SAMPLE: &str = "sample.pdf";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyRequest {
    #[serde(default)]
    pub data: String,
    pub job_type: String,
    /// CPU time a message job spends (default 0).
    #[serde(default)]
    pub work_ms: u64,
}

/// The seed's reply: `{"data": {"id", "result": {...}}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LegacyReply {
    pub data: LegacyData,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LegacyData {
    pub id: Uuid,
    pub result: LegacyResult,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyResult {
    /// Always empty: errors use the error shape and a status code.
    pub err_code: String,
    pub err: String,
    pub data: String,
    pub worker_name: String,
    pub dequeue_elapsed_ms: f64,
    pub process_elapsed_ms: f64,
    pub total_elapsed_ms: f64,
}

/// The seed's endpoint: a message or pdf2image job, answered in its shape.
#[utoipa::path(post, path = "/multiThread", tag = "jobs",
    request_body = LegacyRequest,
    responses(
        (status = 200, description = "The job ran", body = LegacyReply),
        (status = 507, description = "pdf2image: no space left to store the job's pages (`insufficient_storage`)", body = crate::error::ErrorBody),
        SubmitResponses,
    ))]
pub async fn multi_thread(
    State(state): State<AppState>,
    caller: Caller,
    mode: AsyncMode,
    ApiJson(request): ApiJson<LegacyRequest>,
) -> Result<Response, ApiError> {
    match request.job_type.as_str() {
        "message" => {
            let kind = registered::<MessageKind>(&state)?;
            let message = MessageRequest {
                text: request.data,
                work_ms: request.work_ms,
                timeout_ms: None,
            };
            let submit = Submit::new(&state, &kind, &mode, &caller);
            seed(submit, message, None, |done| done.output.text.clone()).await
        }
        "pdf2image" => {
            let kind = registered::<PdfKind>(&state)?;
            let name = if request.data.is_empty() {
                DEFAULT_SAMPLE
            } else {
                request.data.as_str()
            };
            let path = super::pdf::resolve_data_path(&state.config.data_dir, name)?;
            let input = Some(data_file(path));
            let submit = Submit::new(&state, &kind, &mode, &caller);
            seed(submit, PdfOptions::default(), input, |done| {
                format!(
                    "rendered {} pages to /jobs/{}/pages/ nPages={}",
                    done.output.pages.len(),
                    done.job_id,
                    done.output.page_count
                )
            })
            .await
        }
        other => Err(ApiError::Invalid(format!(
            "unknown jobType {other:?}; expected \"message\" or \"pdf2image\""
        ))),
    }
}

fn registered<K: JobKind>(state: &AppState) -> Result<std::sync::Arc<K>, ApiError> {
    state
        .kind::<K>()
        .ok_or_else(|| ApiError::Unavailable(format!("no {} workers run here", K::NAME)))
}

/// Accepts the job in async mode, or runs it and answers in the seed's
/// shape with `text` as its data.
async fn seed<K: JobKind>(
    submit: Submit<'_, K>,
    params: K::Params,
    input: Option<JobInput>,
    text: impl FnOnce(&Completed<OutputOf<K>>) -> String,
) -> Result<Response, ApiError> {
    if submit.mode.is_async {
        return submit.accept(params, input).await;
    }
    let done = run(submit.state, submit.kind, &params, input.as_ref()).await?;
    let data = text(&done);
    Ok(seed_shape(&done, data))
}

fn seed_shape<O>(done: &Completed<O>, data: String) -> Response {
    Json(LegacyReply {
        data: LegacyData {
            id: done.job_id,
            result: LegacyResult {
                err_code: String::new(),
                err: String::new(),
                data,
                worker_name: done.worker.clone(),
                dequeue_elapsed_ms: done.queue_ms,
                process_elapsed_ms: done.run_ms,
                total_elapsed_ms: done.total_ms,
            },
        },
    })
    .into_response()
}
