//! `POST /multiThread`: the seed's endpoint, kept so existing clients work.
//!
//! It takes `{"data": "...", "jobType": "message" | "pdf2image"}` and answers
//! in the seed's shape, `{"data": {"id", "result": {"errCode", "err",
//! "data", "workerName", "dequeueElapsedMs", "processElapsedMs",
//! "totalElapsedMs"}}}`. For `pdf2image`, `data` names a PDF in `DATA_DIR`
//! (default `sample.pdf`) rendered at the default dpi. Errors use the
//! server's one JSON error shape and status codes.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::queue::{Completed, SubmitOptions};
use crate::state::AppState;
use crate::workers::message::{MessageJob, MAX_WORK_MS};
use crate::workers::pdf::PdfInput;

/// The PDF `pdf2image` renders when `data` names none.
pub const DEFAULT_SAMPLE: &str = "sample.pdf";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyRequest {
    #[serde(default)]
    pub data: String,
    pub job_type: String,
    /// CPU time a message job spends (default 0).
    #[serde(default)]
    pub work_ms: u64,
}

pub async fn multi_thread(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LegacyRequest>,
) -> Result<Json<Value>, ApiError> {
    match request.job_type.as_str() {
        "message" => {
            if request.work_ms > MAX_WORK_MS {
                return Err(ApiError::Invalid(format!(
                    "workMs must be at most {MAX_WORK_MS}"
                )));
            }
            let job = MessageJob {
                text: request.data,
                work: Duration::from_millis(request.work_ms),
            };
            let done = state.message.run(job, SubmitOptions::default()).await?;
            let text = done.output.text.clone();
            Ok(seed_shape(&done, text))
        }
        "pdf2image" => {
            let name = if request.data.is_empty() {
                DEFAULT_SAMPLE
            } else {
                request.data.as_str()
            };
            let path = super::pdf::resolve_data_path(&state.config.pdf.data_dir, name)?;
            let (job, options) =
                super::pdf::build_job(&state, PdfInput::File(path), Default::default())?;
            let done = super::pdf::run(&state, job, options).await?;
            let text = format!(
                "rendered {} pages to {}/ nPages={}",
                done.output.pages.len(),
                done.output.out_dir.display(),
                done.output.page_count
            );
            Ok(seed_shape(&done, text))
        }
        other => Err(ApiError::Invalid(format!(
            "unknown jobType {other:?}; expected \"message\" or \"pdf2image\""
        ))),
    }
}

fn seed_shape<O>(done: &Completed<O>, data: String) -> Json<Value> {
    let id: Uuid = done.job_id;
    Json(json!({
        "data": {
            "id": id,
            "result": {
                "errCode": "",
                "err": "",
                "data": data,
                "workerName": done.worker,
                "dequeueElapsedMs": done.queue_ms,
                "processElapsedMs": done.run_ms,
                "totalElapsedMs": done.total_ms,
            }
        }
    }))
}
