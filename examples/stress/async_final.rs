//! How every accepted async job ended: followed to a final state after
//! the load (or read from jobs.db after a shutdown), then judged.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::checks::Checks;
use crate::clients::get_json;
use crate::record::{is_final, AsyncJob, Log, PdfOk};
use crate::requests::reply_pages;
use crate::servers::Server;

/// How long accepted async jobs get to reach a final state once the
/// server has settled after the load.
pub const ASYNC_FINAL_DEADLINE: Duration = Duration::from_secs(30);

/// Follows every accepted async job to a final state with `GET /jobs/{id}`,
/// for up to `ASYNC_FINAL_DEADLINE`; returns the last view of each.
pub async fn async_views(
    probe: &reqwest::Client,
    server: &Server,
    log: &Log,
) -> BTreeMap<String, Value> {
    let start = Instant::now();
    let mut views = BTreeMap::new();
    let mut pending: Vec<String> = log.async_jobs.iter().map(|j| j.job_id.clone()).collect();
    loop {
        let mut still = Vec::new();
        for id in pending {
            let view = get_json(probe, &format!("{}/jobs/{id}", server.base)).await;
            let ended = view
                .as_ref()
                .is_some_and(|v| v["state"].as_str().is_some_and(is_final));
            if let Some(v) = view {
                views.insert(id.clone(), v);
            }
            if !ended {
                still.push(id);
            }
        }
        pending = still;
        if pending.is_empty() || start.elapsed() > ASYNC_FINAL_DEADLINE {
            return views;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The accepted async jobs' rows in `OUTPUT_DIR/jobs.db` after the server
/// exited, as views: `state`, `result`, `error`.
pub fn async_rows(out_dir: &Path) -> Result<BTreeMap<String, Value>, String> {
    let path = out_dir.join("jobs.db");
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut query = db
        .prepare("SELECT id, state, result, error FROM jobs")
        .map_err(|e| e.to_string())?;
    let rows = query
        .query_map([], |row| {
            let json = |text: Option<String>| {
                text.and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .unwrap_or(Value::Null)
            };
            Ok((
                row.get::<_, String>(0)?,
                json!({
                    "state": row.get::<_, String>(1)?,
                    "result": json(row.get(2)?),
                    "error": json(row.get(3)?),
                }),
            ))
        })
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
}

/// Judges how every accepted async job ended, from `views` (its last
/// `GET /jobs/{id}`, or its row in the database after a shutdown): final
/// (or, after a shutdown, kept queued for the next start), as its client
/// saw it; cancelled exactly when a DELETE said so; done with the pages
/// asked for (queued for the disk check unless its client already
/// verified them); failed, cancelled or expired with an error and its
/// status, and no unexpected 500. Fills `log.async_*`.
pub fn judge_async(
    checks: &mut Checks,
    log: &mut Log,
    views: &BTreeMap<String, Value>,
    shutdown: bool,
) {
    let mut problems = Vec::new();
    let jobs = log.async_jobs.clone();
    for job in &jobs {
        let view = views.get(&job.job_id);
        judge_job(log, job, view, shutdown, &mut problems);
    }
    let ended = log.async_final.len();
    checks.check(
        if shutdown {
            "async jobs: ended, or kept queued in jobs.db for the next start"
        } else {
            "async jobs: each reaches a final state, as its client saw it"
        },
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{} accepted: {ended} ended (done with their pages, others with an error and its status), {} kept for the next start",
                jobs.len(),
                log.async_open.len()
            )
        } else {
            format!(
                "{} of {} jobs: {}",
                problems.len(),
                jobs.len(),
                problems[..problems.len().min(3)].join("; ")
            )
        },
    );
    for p in problems {
        checks.violations.push(format!("async jobs: {p}"));
    }
}

/// Judges one job from its last view (`None`: none could be had).
fn judge_job(
    log: &mut Log,
    job: &AsyncJob,
    view: Option<&Value>,
    shutdown: bool,
    problems: &mut Vec<String>,
) {
    let id = &job.job_id;
    let Some(view) = view else {
        problems.push(if shutdown {
            format!("job {id} was accepted (202) but is not in jobs.db")
        } else {
            format!("job {id}: GET /jobs/{id} failed")
        });
        return;
    };
    let state = view["state"].as_str().unwrap_or("?").to_string();
    if !is_final(&state) {
        if shutdown && matches!(state.as_str(), "queued" | "running") {
            log.async_open.insert(id.clone());
        } else {
            problems.push(format!(
                "job {id} still {state} {} s after the load: {view}",
                ASYNC_FINAL_DEADLINE.as_secs()
            ));
        }
        if let Some(seen) = &job.seen_final {
            problems.push(format!("job {id} is {state}, its client saw it {seen}"));
        }
        return;
    }
    log.async_final.insert(id.clone(), state.clone());
    if job.seen_final.as_ref().is_some_and(|s| *s != state) {
        problems.push(format!(
            "job {id} ended {state}, its client saw it {}",
            job.seen_final.as_deref().unwrap_or_default()
        ));
    }
    if job.cancelled != (state == "cancelled") && !(shutdown && state == "cancelled") {
        problems.push(format!(
            "job {id} ended {state}; a DELETE was{} answered 202 cancelled",
            if job.cancelled { "" } else { " not" }
        ));
    }
    if state == "done" {
        judge_done(log, job, &view["result"], problems);
    } else {
        judge_error(log, job, &state, &view["error"], problems);
    }
}

/// A done job: a result, and for a PDF job the pages asked for (queued for
/// the disk check unless its client already verified them).
fn judge_done(log: &mut Log, job: &AsyncJob, result: &Value, problems: &mut Vec<String>) {
    let id = &job.job_id;
    if !job.pdf {
        if !result.is_object() {
            problems.push(format!("job {id} done without a result"));
        }
        return;
    }
    let pages = reply_pages(result);
    let numbers: Vec<u32> = pages.iter().map(|p| p.0).collect();
    if numbers != job.expected {
        problems.push(format!(
            "job {id} done with pages {numbers:?}, expected {:?}",
            job.expected
        ));
    }
    if !job.verified {
        log.pdf_ok.push(PdfOk {
            target: 0,
            job_id: id.clone(),
            pages,
            at: Instant::now(),
        });
    }
}

/// A job that ended otherwise: an error and a status that fit its state.
fn judge_error(
    log: &mut Log,
    job: &AsyncJob,
    state: &str,
    error: &Value,
    problems: &mut Vec<String>,
) {
    let status = error["status"].as_u64().unwrap_or(0) as u16;
    let code = error["error"].as_str().unwrap_or_default().to_string();
    let message = error["message"].as_str().unwrap_or_default();
    let fitting = match state {
        "failed" => status == 500 && job.pdf && message.contains("renderer process died"),
        "expired" => status == 504,
        _ => status >= 400,
    };
    if status == 0 || code.is_empty() || !fitting {
        problems.push(format!("job {} {state} with error {error}", job.job_id));
    }
    log.async_failed.push((job.job_id.clone(), status, code));
}
