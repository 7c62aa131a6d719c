//! Benchmark baseline: a bare axum server with the same request and reply
//! shapes as `POST /jobs/message`, answered directly in the handler.
//!
//! `POST /bare` parses the job body (`{"text": "...", "work_ms": 0}`) and
//! returns a reply shaped like the job server's (a fresh v4 `job_id`, a fixed
//! worker name, the text upper-cased, zero timings), with no queue, no worker
//! thread, no oneshot and no middleware. It runs on the same tokio
//! multi-thread runtime as the real server, so the difference between the two
//! (see `bench/core.sh`) is the cost of the job path.
//!
//! ```text
//! BIND_ADDR=127.0.0.1:8001 cargo run --release --example bare
//! ```

use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Address used when `BIND_ADDR` is unset.
const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8001";

/// The same body `POST /jobs/message` accepts. `work_ms` and `timeout_ms`
/// are parsed (same deserialisation cost) but not used: there is no job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    text: String,
    #[serde(default)]
    #[allow(dead_code)]
    work_ms: u64,
    #[allow(dead_code)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct MessageOutput {
    text: String,
    rounds: u64,
    digest: String,
}

/// The same shape `POST /jobs/message` answers with.
#[derive(Debug, Serialize)]
struct MessageResponse {
    job_id: Uuid,
    worker: &'static str,
    result: MessageOutput,
    queue_ms: f64,
    run_ms: f64,
    total_ms: f64,
}

async fn bare(Json(request): Json<MessageRequest>) -> Json<MessageResponse> {
    Json(MessageResponse {
        job_id: Uuid::new_v4(),
        worker: "bare-handler",
        result: MessageOutput {
            text: request.text.to_uppercase(),
            rounds: 0,
            digest: "0000000000000000".to_string(),
        },
        queue_ms: 0.0,
        run_ms: 0.0,
        total_ms: 0.0,
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| DEFAULT_BIND_ADDR.to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "bare baseline listening on http://{}",
        listener.local_addr()?
    );
    let app = Router::new().route("/bare", post(bare));
    axum::serve(listener, app).await
}
