//! `GET /status` (JSON for people and the dashboard) and `GET /metrics`
//! (Prometheus text format for monitoring). Both read the same counters;
//! neither is queued or rate-limited.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::kind::AnyKind;
use crate::metrics::{label, Exposition, RejectReason};
use crate::queue::{Pool, QueueStats, HISTORY_SECS};
use crate::state::AppState;

/// Window of the "recent" throughput and latency figures.
const RECENT_WINDOW_S: u64 = 60;
/// Step of the history series.
const HISTORY_STEP_S: u64 = 10;

/// Per worker type: workers and what each does now, queue depth, counters,
/// recent throughput and latency, recent jobs; each type's engine (as
/// `<type>_engine`); async jobs; the page store's free space against
/// `MIN_FREE_DISK_MB` (`disk`, `free_mb` null where it does not apply).
#[utoipa::path(get, path = "/status", tag = "health",
    responses((status = 200, description = "Server status", body = Object)))]
pub async fn status(
    State(state): State<AppState>,
    axum::Extension(scope): axum::Extension<super::StatusScope>,
) -> Json<Value> {
    let ready = super::health::ready_now(&state).0.is_success();
    let mut body = Map::new();
    body.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    body.insert("uptime_s".into(), json!(state.started.elapsed().as_secs()));
    body.insert("draining".into(), json!(state.is_draining()));
    body.insert("ready".into(), json!(ready));
    body.insert("history_step_s".into(), json!(HISTORY_STEP_S));
    body.insert("history_s".into(), json!(HISTORY_SECS));
    let queues: Vec<Value> = state
        .kinds
        .iter()
        .map(|kind| queue_status(&state, &**kind, scope))
        .collect();
    body.insert("queues".into(), Value::Array(queues));
    for kind in state.kinds.iter() {
        if let Some(engine) = kind.status() {
            body.insert(format!("{}_engine", kind.name()), engine);
        }
    }
    body.insert("async_jobs".into(), async_status(&state));
    if let Some(cluster) = &state.cluster {
        body.insert("cluster".into(), cluster.status());
    }
    body.insert(
        "disk".into(),
        json!({
            "free_mb": state.pages.free_space().map(|b| b >> 20),
            "min_free_mb": state.config.min_free_disk_mb,
        }),
    );
    Json(Value::Object(body))
}

fn async_status(state: &AppState) -> Value {
    let jobs = &state.jobs;
    let store = jobs.records().stats();
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
            "path": jobs.records().location(),
            "writes": store.writes,
            "commits": store.commits,
            "failed_writes": store.failed_writes,
            "largest_batch": store.largest_batch,
        },
    })
}

/// One worker type's queue. Out of the operators' scope, without the ids
/// of jobs (recent, running) or the tenants holding places.
fn queue_status(state: &AppState, kind: &dyn AnyKind, scope: super::StatusScope) -> Value {
    let queue = kind.pool();
    let stats = queue.stats();
    let rejections: Map<String, Value> = RejectReason::ALL
        .iter()
        .map(|r| {
            let n = state.http.rejections(queue.name(), *r);
            (r.label().to_string(), json!(n))
        })
        .collect();
    let mut workers = queue.workers();
    let mut recent_jobs = stats.recent_jobs();
    let mut tenants: Map<String, Value> = Map::new();
    if scope.job_ids {
        for (name, held) in queue.places_by_tenant() {
            tenants.insert(name, json!(held));
        }
    } else {
        workers.iter_mut().for_each(|w| w.job_id = None);
        recent_jobs.iter_mut().for_each(|j| j.job_id = None);
    }
    json!({
        "queue": queue.name(),
        "configured_workers": queue.config().workers,
        "live_workers": queue.live_workers(),
        "busy_workers": queue.busy(),
        "depth": queue.depth(),
        "capacity": queue.config().queue_capacity,
        "timeout_ms": queue.config().timeout.as_millis() as u64,
        "mean_run_ms": stats.mean_run().as_secs_f64() * 1000.0,
        "makes_pages": kind.makes_pages(),
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
        "workers": workers,
        "recent_jobs": recent_jobs,
        "tenants": tenants,
    })
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = Exposition::default();
    queue_metrics(&state, &mut out);
    for kind in state.kinds.iter() {
        kind.metrics(&mut out);
    }
    jobs_metrics(&state, &mut out);
    state.http.expose(&mut out);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out.render(),
    )
}

/// The queue families, one series per registered worker type.
fn queue_metrics(state: &AppState, out: &mut Exposition) {
    let kinds: Vec<&dyn AnyKind> = state.kinds.iter().map(|k| &**k).collect();
    type Read = fn(&dyn Pool) -> f64;
    let gauges: [(&str, &str, Read); 5] = [
        ("jobserver_queue_depth", "Jobs waiting for a worker.", |p| {
            p.depth() as f64
        }),
        (
            "jobserver_queue_capacity",
            "Jobs that may wait before new ones get 503.",
            |p| p.config().queue_capacity as f64,
        ),
        ("jobserver_workers", "Live worker threads.", |p| {
            p.live_workers() as f64
        }),
        (
            "jobserver_workers_configured",
            "Configured worker threads.",
            |p| p.config().workers as f64,
        ),
        (
            "jobserver_workers_busy",
            "Worker threads running a job now.",
            |p| p.busy() as f64,
        ),
    ];
    for (name, help, read) in gauges {
        let samples = kinds
            .iter()
            .map(|k| (label("queue", k.name()), read(k.pool())));
        out.gauge(name, help, samples);
    }
    let mut outcomes = Vec::new();
    for k in &kinds {
        let s = k.pool().stats();
        for (outcome, n) in [
            ("ok", &s.ok),
            ("failed", &s.failed),
            ("timeout", &s.timeout),
            ("cancelled", &s.cancelled),
            ("rejected", &s.rejected),
        ] {
            let labels = vec![
                ("queue", k.name().to_string()),
                ("outcome", outcome.to_string()),
            ];
            outcomes.push((labels, n.load(Relaxed) as f64));
        }
    }
    out.counter(
        "jobserver_jobs_total",
        "Jobs by outcome; rejected ones were never admitted.",
        outcomes,
    );
    type Pick = fn(&QueueStats) -> &crate::metrics::Histogram;
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
        out.histogram(
            name,
            help,
            kinds
                .iter()
                .map(|k| (label("queue", k.name()), pick(k.pool().stats()))),
        );
    }
}

/// Async jobs, the job records, the lease, the server.
fn jobs_metrics(state: &AppState, out: &mut Exposition) {
    let jobs = &state.jobs;
    let store = jobs.records().stats();
    let by_state = jobs.live_by_state();
    let one = |v: f64| [(Vec::new(), v)];
    out.gauge(
        "jobserver_async_jobs",
        "Async jobs this instance holds in memory, by state.",
        [
            "queued",
            "running",
            "done",
            "failed",
            "cancelled",
            "expired",
        ]
        .map(|s| {
            (
                label("state", s),
                by_state.get(s).copied().unwrap_or(0) as f64,
            )
        }),
    );
    out.gauge(
        "jobserver_async_jobs_tracked",
        "Async job records in the job database (all instances), against MAX_TRACKED_JOBS.",
        one(jobs.tracked() as f64),
    );
    out.counter(
        "jobserver_async_jobs_events_total",
        "Async jobs submitted, answered from an idempotency key, resumed after a restart, and removed after RESULT_TTL_SECS.",
        [
            ("submitted", &jobs.stats.submitted),
            ("replayed", &jobs.stats.replayed),
            ("recovered", &jobs.stats.recovered),
            ("removed", &jobs.stats.removed),
            ("refused_full", &jobs.stats.refused_full),
        ]
        .map(|(event, c)| (label("event", event), c.load(Relaxed) as f64)),
    );
    out.counter(
        "jobserver_job_db_writes_total",
        "Writes committed to the job database.",
        one(store.writes as f64),
    );
    out.counter(
        "jobserver_job_db_commits_total",
        "Transactions committed to the job database (writes are grouped).",
        one(store.commits as f64),
    );
    out.counter(
        "jobserver_job_db_failed_writes_total",
        "Writes to the job database that failed.",
        one(store.failed_writes as f64),
    );
    let flag = |b: bool| one(f64::from(u8::from(b)));
    out.gauge(
        "jobserver_primary",
        "1 in the instance that runs the singletons (result cleanup).",
        flag(jobs.is_primary()),
    );
    out.gauge(
        "jobserver_draining",
        "1 while the server is shutting down.",
        flag(state.is_draining()),
    );
    state.connections.metrics(out);
    out.gauge(
        "jobserver_uptime_seconds",
        "Seconds since the server started.",
        one(state.started.elapsed().as_secs_f64()),
    );
}
