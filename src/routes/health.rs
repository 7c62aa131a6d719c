//! Probes and status: `/livez`, `/readyz`, `/status`. Never queued, never
//! rate-limited, and cheap: they read atomics and thread handles only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::queue::{JobQueue, Worker};
use crate::state::AppState;

/// 200 while every pool has a live worker thread; 503 when one has none.
pub async fn livez(State(state): State<AppState>) -> Response {
    let dead: Vec<_> = pools(&state)
        .into_iter()
        .filter(|p| p["live_workers"] == 0 && !state.is_draining())
        .map(|p| p["queue"].clone())
        .collect();
    if dead.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "dead", "dead_pools": dead})),
        )
            .into_response()
    }
}

/// 200 when the server can take jobs now: not draining, every pool has live
/// workers and a queue that is not full.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut failed = Vec::new();
    if state.is_draining() {
        failed.push(json!({"check": "draining", "message": "server is shutting down"}));
    }
    if let Some(reason) = state.engine.unavailable() {
        failed.push(json!({"check": "pdfium", "queue": "pdf", "message": reason}));
    }
    for pool in pools(&state) {
        if pool["live_workers"] == 0 {
            failed.push(json!({"check": "workers", "queue": pool["queue"], "message": "no live worker threads"}));
        }
        if pool["depth"] == pool["capacity"] {
            failed.push(
                json!({"check": "queue", "queue": pool["queue"], "message": "queue is full"}),
            );
        }
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"ready": failed.is_empty(), "failed": failed});
    (status, Json(body)).into_response()
}

/// Per worker type: workers and what each is doing, queue depth, counters.
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "uptime_s": state.started.elapsed().as_secs(),
        "draining": state.is_draining(),
        "queues": pools(&state),
        "pdf_engine": {
            "available": state.engine.unavailable().is_none(),
            "unavailable_reason": state.engine.unavailable(),
            "renderers_started": state.engine.renderers_started.load(std::sync::atomic::Ordering::Relaxed),
            "renderer_crashes": state.engine.renderer_crashes.load(std::sync::atomic::Ordering::Relaxed),
            "renderer_kills": state.engine.renderer_kills.load(std::sync::atomic::Ordering::Relaxed),
            "renderer_recycles": state.engine.renderer_recycles.load(std::sync::atomic::Ordering::Relaxed),
            "pages_rendered": state.engine.pages_rendered.load(std::sync::atomic::Ordering::Relaxed),
            "bytes_written": state.engine.bytes_written.load(std::sync::atomic::Ordering::Relaxed),
        },
    }))
}

fn pools(state: &AppState) -> Vec<Value> {
    vec![pool_status(&state.message), pool_status(&state.pdf)]
}

fn pool_status<W: Worker>(queue: &JobQueue<W>) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = queue.stats();
    json!({
        "queue": queue.name(),
        "configured_workers": queue.config().workers,
        "live_workers": queue.live_workers(),
        "busy_workers": queue.busy(),
        "depth": queue.depth(),
        "capacity": queue.config().queue_capacity,
        "mean_run_ms": stats.mean_run().as_secs_f64() * 1000.0,
        "jobs": {
            "ok": stats.ok.load(Relaxed),
            "failed": stats.failed.load(Relaxed),
            "timeout": stats.timeout.load(Relaxed),
            "cancelled": stats.cancelled.load(Relaxed),
            "rejected": stats.rejected.load(Relaxed),
        },
        "workers": queue.workers(),
    })
}
