//! `POST /multiThread`: the seed's endpoint, kept so existing clients work.
//!
//! It takes `{"data": "...", "jobType": "message"}` and answers in the
//! seed's shape, `{"data": {"id", "result": {"errCode", "err", "data",
//! "workerName", "dequeueElapsedMs", "processElapsedMs", "totalElapsedMs"}}}`.
//! Errors use the server's one JSON error shape and status codes.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::queue::SubmitOptions;
use crate::state::AppState;
use crate::workers::message::{MessageJob, MAX_WORK_MS};

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
            Ok(Json(json!({
                "data": {
                    "id": done.job_id,
                    "result": {
                        "errCode": "",
                        "err": "",
                        "data": done.output.text,
                        "workerName": done.worker,
                        "dequeueElapsedMs": done.queue_ms,
                        "processElapsedMs": done.run_ms,
                        "totalElapsedMs": done.total_ms,
                    }
                }
            })))
        }
        other => Err(ApiError::Invalid(format!(
            "unknown jobType {other:?}; expected \"message\""
        ))),
    }
}
