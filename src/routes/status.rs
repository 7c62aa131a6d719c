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
        "async_jobs": async_status(&state),
    }))
}

fn async_status(state: &AppState) -> Value {
    let jobs = &state.jobs;
    let store = jobs.store().stats();
    json!({
        "instance": jobs.instance_id(),
        "primary": jobs.is_primary(),
        "in_memory": jobs.live_by_state(),
        "tracked": jobs.tracked(),
        "max_tracked": jobs.config().max_tracked,
        "result_ttl_s": jobs.config().result_ttl.as_secs(),
        "submitted": jobs.stats.submitted.load(Relaxed),
        "replayed": jobs.stats.replayed.load(Relaxed),
        "recovered": jobs.stats.recovered.load(Relaxed),
        "removed": jobs.stats.removed.load(Relaxed),
        "refused_full": jobs.stats.refused_full.load(Relaxed),
        "database": {
            "path": jobs.store().path(),
            "writes": store.writes,
            "commits": store.commits,
            "failed_writes": store.failed_writes,
            "largest_batch": store.largest_batch,
        },
    })
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
    let per_queue = |value: &dyn Fn(&dyn QueueMetrics) -> f64| -> Samples {
        queues
            .iter()
            .map(|q| (format!("queue=\"{}\"", q.name()), value(*q)))
            .collect()
    };
    let gauges: [(&str, &str, Samples); 5] = [
        (
            "jobserver_queue_depth",
            "Jobs waiting for a worker.",
            per_queue(&|q| q.depth() as f64),
        ),
        (
            "jobserver_queue_capacity",
            "Jobs that may wait before new ones get 503.",
            per_queue(&|q| q.capacity() as f64),
        ),
        (
            "jobserver_workers",
            "Live worker threads.",
            per_queue(&|q| q.live() as f64),
        ),
        (
            "jobserver_workers_configured",
            "Configured worker threads.",
            per_queue(&|q| q.configured() as f64),
        ),
        (
            "jobserver_workers_busy",
            "Worker threads running a job now.",
            per_queue(&|q| q.busy() as f64),
        ),
    ];
    for (name, help, samples) in gauges {
        family(&mut out, name, "gauge", help, samples);
    }
    let mut outcomes = Vec::new();
    for q in queues {
        let s = q.stats();
        for (outcome, n) in [
            ("ok", &s.ok),
            ("failed", &s.failed),
            ("timeout", &s.timeout),
            ("cancelled", &s.cancelled),
            ("rejected", &s.rejected),
        ] {
            outcomes.push((
                format!("queue=\"{}\",outcome=\"{outcome}\"", q.name()),
                n.load(Relaxed) as f64,
            ));
        }
    }
    family(
        &mut out,
        "jobserver_jobs_total",
        "counter",
        "Jobs by outcome; rejected ones were never admitted.",
        outcomes,
    );
    type Pick = fn(&crate::queue::QueueStats) -> &crate::metrics::Histogram;
    let histograms: [(&str, &str, Pick); 2] = [
        (
            "jobserver_job_queue_wait_seconds",
            "Time from admission to a worker starting the job.",
            |s| &s.queue_wait,
        ),
        (
            "jobserver_job_run_seconds",
            "Time a worker spent on a job.",
            |s| &s.run_time,
        ),
    ];
    for (name, help, pick) in histograms {
        header(&mut out, name, "histogram", help);
        for q in queues {
            histogram(
                &mut out,
                name,
                &format!("queue=\"{}\"", q.name()),
                pick(q.stats()),
            );
        }
    }

    let e = &state.engine;
    let n = |c: &std::sync::atomic::AtomicU64| vec![(String::new(), c.load(Relaxed) as f64)];
    let jobs = &state.jobs;
    let store = jobs.store().stats();
    let by_state = jobs.live_by_state();
    let families: Vec<(&str, &str, &str, Samples)> = vec![
        ("jobserver_pdf_engine_available", "gauge", "1 when pdfium can be loaded.",
            vec![(String::new(), f64::from(u8::from(e.unavailable().is_none())))]),
        ("jobserver_pdf_renderers", "gauge", "Live renderer processes.",
            vec![(String::new(), e.renderer_pids().len() as f64)]),
        ("jobserver_pdf_renderer_starts_total", "counter", "Renderer processes started.", n(&e.renderers_started)),
        ("jobserver_pdf_renderer_restarts_total", "counter", "Renderers replaced after dying (crash) or being killed (deadline, cancellation).",
            vec![
                ("reason=\"crash\"".into(), e.renderer_crashes.load(Relaxed) as f64),
                ("reason=\"killed\"".into(), e.renderer_kills.load(Relaxed) as f64),
            ]),
        ("jobserver_pdf_renderer_recycles_total", "counter", "Healthy renderers replaced after PDF_RENDERER_MAX_JOBS jobs or above PDF_RENDERER_MAX_RSS_MB.", n(&e.renderer_recycles)),
        ("jobserver_pdf_fanned_out_jobs_total", "counter", "Jobs whose pages were spread over idle workers' renderers.", n(&e.fanned_out_jobs)),
        ("jobserver_pdf_pages_rendered_total", "counter", "Pages rendered and written.", n(&e.pages_rendered)),
        ("jobserver_pdf_written_bytes_total", "counter", "Bytes of PNG written.", n(&e.bytes_written)),
        ("jobserver_async_jobs", "gauge", "Async jobs this instance holds in memory, by state.",
            ["queued", "running", "done", "failed", "cancelled", "expired"]
                .iter()
                .map(|s| (format!("state=\"{s}\""), by_state.get(s).copied().unwrap_or(0) as f64))
                .collect()),
        ("jobserver_async_jobs_tracked", "gauge", "Async job records in the job database (all instances), against MAX_TRACKED_JOBS.",
            vec![(String::new(), jobs.tracked() as f64)]),
        ("jobserver_async_jobs_events_total", "counter", "Async jobs submitted, answered from an idempotency key, resumed after a restart, and removed after RESULT_TTL_SECS.",
            [
                ("submitted", &jobs.stats.submitted),
                ("replayed", &jobs.stats.replayed),
                ("recovered", &jobs.stats.recovered),
                ("removed", &jobs.stats.removed),
                ("refused_full", &jobs.stats.refused_full),
            ]
            .iter()
            .map(|(event, c)| (format!("event=\"{event}\""), c.load(Relaxed) as f64))
            .collect()),
        ("jobserver_job_db_writes_total", "counter", "Writes committed to the job database.",
            vec![(String::new(), store.writes as f64)]),
        ("jobserver_job_db_commits_total", "counter", "Transactions committed to the job database (writes are grouped).",
            vec![(String::new(), store.commits as f64)]),
        ("jobserver_job_db_failed_writes_total", "counter", "Writes to the job database that failed.",
            vec![(String::new(), store.failed_writes as f64)]),
        ("jobserver_primary", "gauge", "1 in the instance that runs the singletons (result cleanup).",
            vec![(String::new(), f64::from(u8::from(jobs.is_primary())))]),
        ("jobserver_draining", "gauge", "1 while the server is shutting down.",
            vec![(String::new(), f64::from(u8::from(state.is_draining())))]),
        ("jobserver_uptime_seconds", "gauge", "Seconds since the server started.",
            vec![(String::new(), state.started.elapsed().as_secs_f64())]),
    ];
    for (name, kind, help, samples) in families {
        family(&mut out, name, kind, help, samples);
    }

    state.http.render(&mut out, &["message", "pdf", "legacy"]);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
}

/// A metric's samples: label set (`""`: none) and value.
type Samples = Vec<(String, f64)>;

/// One metric family: its header, then one line per label set.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Samples) {
    header(out, name, kind, help);
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
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
