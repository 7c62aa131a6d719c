//! `GET /status` (JSON for people and the dashboard) and `GET /metrics`
//! (Prometheus text format for monitoring). Both read the same counters;
//! neither is queued or rate-limited.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::health::{pools, readiness};
use crate::metrics::{header, histogram, RejectReason};
use crate::queue::{JobQueue, Worker, HISTORY_SECS};
use crate::state::AppState;

/// Window of the "recent" throughput and latency figures.
const RECENT_WINDOW_S: u64 = 60;
/// Step of the history series.
const HISTORY_STEP_S: u64 = 10;

/// Per worker type: workers and what each does now, queue depth, counters,
/// recent throughput and latency, recent jobs; pdfium and renderer state.
#[utoipa::path(get, path = "/status", tag = "health",
    responses((status = 200, description = "Server status", body = Object)))]
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let ready = readiness(
        &pools(&state),
        state.is_draining(),
        state.engine.unavailable(),
    )
    .0
    .is_success();
    let engine = &state.engine;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "draining": state.is_draining(),
        "ready": ready,
        "history_step_s": HISTORY_STEP_S,
        "history_s": HISTORY_SECS,
        "queues": [queue_status(&state, &state.message), queue_status(&state, &state.pdf)],
        "pdf_engine": {
            "available": engine.unavailable().is_none(),
            "unavailable_reason": engine.unavailable(),
            "library": state.config.pdf.pdfium_library(),
            "renderer_pids": engine.renderer_pids(),
            "renderers_started": engine.renderers_started.load(Relaxed),
            "renderer_crashes": engine.renderer_crashes.load(Relaxed),
            "renderer_kills": engine.renderer_kills.load(Relaxed),
            "renderer_recycles": engine.renderer_recycles.load(Relaxed),
            "fanned_out_jobs": engine.fanned_out_jobs.load(Relaxed),
            "pages_rendered": engine.pages_rendered.load(Relaxed),
            "bytes_written": engine.bytes_written.load(Relaxed),
        },
    }))
}

fn queue_status<W: Worker>(state: &AppState, queue: &JobQueue<W>) -> Value {
    let stats = queue.stats();
    let rejections: serde_json::Map<String, Value> = RejectReason::ALL
        .iter()
        .map(|r| {
            let n = state.http.rejections(queue.name(), *r);
            // Queue-full refusals are counted by the queue itself too.
            (r.label().to_string(), json!(n))
        })
        .collect();
    json!({
        "queue": queue.name(),
        "configured_workers": queue.config().workers,
        "live_workers": queue.live_workers(),
        "busy_workers": queue.busy(),
        "depth": queue.depth(),
        "capacity": queue.config().queue_capacity,
        "timeout_ms": queue.config().timeout.as_millis() as u64,
        "mean_run_ms": stats.mean_run().as_secs_f64() * 1000.0,
        "jobs": {
            "ok": stats.ok.load(Relaxed),
            "failed": stats.failed.load(Relaxed),
            "timeout": stats.timeout.load(Relaxed),
            "cancelled": stats.cancelled.load(Relaxed),
            "rejected": stats.rejected.load(Relaxed),
        },
        "units_done": stats.units.load(Relaxed),
        "rejections": rejections,
        "recent": stats.window(RECENT_WINDOW_S),
        "history": stats.history(HISTORY_STEP_S),
        "workers": queue.workers(),
        "recent_jobs": stats.recent_jobs(),
    })
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(16 * 1024);
    let queues: [&dyn QueueMetrics; 2] = [&state.message, &state.pdf];

    header(
        &mut out,
        "jobserver_queue_depth",
        "gauge",
        "Jobs waiting for a worker.",
    );
    for q in queues {
        let _ = writeln!(
            out,
            "jobserver_queue_depth{{queue=\"{}\"}} {}",
            q.name(),
            q.depth()
        );
    }
    header(
        &mut out,
        "jobserver_queue_capacity",
        "gauge",
        "Jobs that may wait before new ones get 503.",
    );
    for q in queues {
        let _ = writeln!(
            out,
            "jobserver_queue_capacity{{queue=\"{}\"}} {}",
            q.name(),
            q.capacity()
        );
    }
    header(
        &mut out,
        "jobserver_workers",
        "gauge",
        "Live worker threads.",
    );
    for q in queues {
        let _ = writeln!(
            out,
            "jobserver_workers{{queue=\"{}\"}} {}",
            q.name(),
            q.live()
        );
    }
    header(
        &mut out,
        "jobserver_workers_configured",
        "gauge",
        "Configured worker threads.",
    );
    for q in queues {
        let _ = writeln!(
            out,
            "jobserver_workers_configured{{queue=\"{}\"}} {}",
            q.name(),
            q.configured()
        );
    }
    header(
        &mut out,
        "jobserver_workers_busy",
        "gauge",
        "Worker threads running a job now.",
    );
    for q in queues {
        let _ = writeln!(
            out,
            "jobserver_workers_busy{{queue=\"{}\"}} {}",
            q.name(),
            q.busy()
        );
    }
    header(
        &mut out,
        "jobserver_jobs_total",
        "counter",
        "Jobs by outcome; rejected ones were never admitted.",
    );
    for q in queues {
        let s = q.stats();
        for (outcome, n) in [
            ("ok", &s.ok),
            ("failed", &s.failed),
            ("timeout", &s.timeout),
            ("cancelled", &s.cancelled),
            ("rejected", &s.rejected),
        ] {
            let _ = writeln!(
                out,
                "jobserver_jobs_total{{queue=\"{}\",outcome=\"{outcome}\"}} {}",
                q.name(),
                n.load(Relaxed)
            );
        }
    }
    header(
        &mut out,
        "jobserver_job_queue_wait_seconds",
        "histogram",
        "Time from admission to a worker starting the job.",
    );
    for q in queues {
        histogram(
            &mut out,
            "jobserver_job_queue_wait_seconds",
            &format!("queue=\"{}\"", q.name()),
            &q.stats().queue_wait,
        );
    }
    header(
        &mut out,
        "jobserver_job_run_seconds",
        "histogram",
        "Time a worker spent on a job.",
    );
    for q in queues {
        histogram(
            &mut out,
            "jobserver_job_run_seconds",
            &format!("queue=\"{}\"", q.name()),
            &q.stats().run_time,
        );
    }

    let e = &state.engine;
    header(
        &mut out,
        "jobserver_pdf_engine_available",
        "gauge",
        "1 when pdfium can be loaded.",
    );
    let _ = writeln!(
        out,
        "jobserver_pdf_engine_available {}",
        u8::from(e.unavailable().is_none())
    );
    header(
        &mut out,
        "jobserver_pdf_renderers",
        "gauge",
        "Live renderer processes.",
    );
    let _ = writeln!(out, "jobserver_pdf_renderers {}", e.renderer_pids().len());
    header(
        &mut out,
        "jobserver_pdf_renderer_starts_total",
        "counter",
        "Renderer processes started.",
    );
    let _ = writeln!(
        out,
        "jobserver_pdf_renderer_starts_total {}",
        e.renderers_started.load(Relaxed)
    );
    header(
        &mut out,
        "jobserver_pdf_renderer_restarts_total",
        "counter",
        "Renderers replaced after dying (crash) or being killed (deadline, cancellation).",
    );
    let _ = writeln!(
        out,
        "jobserver_pdf_renderer_restarts_total{{reason=\"crash\"}} {}",
        e.renderer_crashes.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "jobserver_pdf_renderer_restarts_total{{reason=\"killed\"}} {}",
        e.renderer_kills.load(Relaxed)
    );
    header(&mut out, "jobserver_pdf_renderer_recycles_total", "counter", "Healthy renderers replaced after PDF_RENDERER_MAX_JOBS jobs or above PDF_RENDERER_MAX_RSS_MB.");
    let _ = writeln!(
        out,
        "jobserver_pdf_renderer_recycles_total {}",
        e.renderer_recycles.load(Relaxed)
    );
    header(
        &mut out,
        "jobserver_pdf_fanned_out_jobs_total",
        "counter",
        "Jobs whose pages were spread over idle workers' renderers.",
    );
    let _ = writeln!(
        out,
        "jobserver_pdf_fanned_out_jobs_total {}",
        e.fanned_out_jobs.load(Relaxed)
    );
    header(
        &mut out,
        "jobserver_pdf_pages_rendered_total",
        "counter",
        "Pages rendered and written.",
    );
    let _ = writeln!(
        out,
        "jobserver_pdf_pages_rendered_total {}",
        e.pages_rendered.load(Relaxed)
    );
    header(
        &mut out,
        "jobserver_pdf_written_bytes_total",
        "counter",
        "Bytes of PNG written.",
    );
    let _ = writeln!(
        out,
        "jobserver_pdf_written_bytes_total {}",
        e.bytes_written.load(Relaxed)
    );

    header(
        &mut out,
        "jobserver_draining",
        "gauge",
        "1 while the server is shutting down.",
    );
    let _ = writeln!(out, "jobserver_draining {}", u8::from(state.is_draining()));
    header(
        &mut out,
        "jobserver_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(
        out,
        "jobserver_uptime_seconds {}",
        state.started.elapsed().as_secs_f64()
    );

    state.http.render(&mut out, &["message", "pdf", "legacy"]);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
}

/// The parts of a queue `/metrics` reads, without its worker type.
trait QueueMetrics {
    fn name(&self) -> &'static str;
    fn depth(&self) -> usize;
    fn capacity(&self) -> usize;
    fn live(&self) -> usize;
    fn configured(&self) -> usize;
    fn busy(&self) -> usize;
    fn stats(&self) -> &crate::queue::QueueStats;
}

impl<W: Worker> QueueMetrics for JobQueue<W> {
    fn name(&self) -> &'static str {
        JobQueue::name(self)
    }
    fn depth(&self) -> usize {
        JobQueue::depth(self)
    }
    fn capacity(&self) -> usize {
        self.config().queue_capacity
    }
    fn live(&self) -> usize {
        self.live_workers()
    }
    fn configured(&self) -> usize {
        self.config().workers
    }
    fn busy(&self) -> usize {
        JobQueue::busy(self)
    }
    fn stats(&self) -> &crate::queue::QueueStats {
        JobQueue::stats(self)
    }
}
