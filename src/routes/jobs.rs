//! Async jobs over HTTP: async mode on every job endpoint (`?mode=async` or
//! `Prefer: respond-async` → 202 + `Location`), and the job resource:
//! `GET /jobs/{id}` (state), `GET /jobs/{id}/events` (server-sent events),
//! `GET /jobs/{id}/archive` (every page as one zip), `DELETE /jobs/{id}`
//! (cancel). Jobs are kept and run by [`crate::jobs::AsyncJobs`]; this
//! module turns requests into its calls, and records into jobs again after
//! a restart ([`resume_orphans`]).

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::jobs::{AsyncRequest, Idempotency, JobEvent, JobRecord, JobView};
use crate::render::child::page_file_name;
use crate::state::AppState;
use crate::workers::pdf::{PdfInput, PdfOutput};

use super::message::MessageRequest;
use super::pdf::PdfOptions;

/// Longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

/// How the client asked to be answered, read from the query and headers.
#[derive(Debug, Default)]
pub struct Mode {
    pub is_async: bool,
    /// `Prefer: respond-async` was sent (and is honoured).
    pub preferred: bool,
    pub idempotency_key: Option<String>,
}

impl Mode {
    /// `?mode=async|sync` (the query wins) or `Prefer: respond-async`, and
    /// a well-formed `Idempotency-Key` (1 to 255 visible ASCII characters).
    pub fn read(query: Option<&str>, headers: &HeaderMap) -> Result<Mode, ApiError> {
        let mut mode = Mode::default();
        let prefer = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| {
                p.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async"))
            });
        mode.is_async = prefer;
        mode.preferred = prefer;
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "mode" {
                mode.apply(Some(value))?;
            }
        }
        if let Some(raw) = headers.get("idempotency-key") {
            let key = raw.to_str().unwrap_or("").trim();
            let visible = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if key.is_empty() || key.len() > MAX_KEY_LEN || !visible {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                )));
            }
            mode.idempotency_key = Some(key.to_string());
        }
        Ok(mode)
    }

    /// An explicit `mode` (query, JSON or multipart field) overrides `Prefer`.
    pub fn apply(&mut self, mode: Option<&str>) -> Result<(), ApiError> {
        match mode {
            None => {}
            Some("async") => self.is_async = true,
            Some("sync") => {
                self.is_async = false;
                self.preferred = false;
            }
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "mode must be async or sync, got {other:?}"
                )))
            }
        }
        Ok(())
    }

    fn idempotency(&self, kind: &str, params: &Value, body: &[u8]) -> Option<Idempotency> {
        let key = self.idempotency_key.clone()?;
        let mut hash = Sha256::new();
        hash.update(kind.as_bytes());
        hash.update([0]);
        hash.update(params.to_string().as_bytes());
        hash.update([0]);
        hash.update(body);
        let fingerprint = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Some(Idempotency { key, fingerprint })
    }
}

/// The 202 reply: the job's view, `Location`, and what was applied.
fn accepted(view: JobView, mode: &Mode, replayed: bool) -> Response {
    let location = view.links.this.clone();
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(LOCATION, value);
    }
    if mode.preferred {
        headers.insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `POST /jobs/pdf` in async mode.
pub async fn submit_pdf(
    state: &AppState,
    input: PdfInput,
    options: PdfOptions,
    mode: &Mode,
) -> Result<Response, ApiError> {
    let params = json!({
        "dpi": options.dpi,
        "pages": options.pages,
        "password": options.password,
        "timeout_ms": options.timeout_ms,
    });
    let body: &[u8] = match &input {
        PdfInput::Bytes(bytes) => bytes,
        PdfInput::File(path) => path.as_os_str().as_encoded_bytes(),
    };
    let idempotency = mode.idempotency("pdf", &params, body);
    if let Some(view) = idempotency
        .as_ref()
        .map(|i| state.jobs.find_by_key(i))
        .transpose()?
        .flatten()
    {
        return Ok(accepted(view, mode, true));
    }
    if let Some(reason) = state.engine.unavailable() {
        return Err(ApiError::Unavailable(format!(
            "PDF rendering is unavailable: {reason}"
        )));
    }
    // Refuse before writing an upload to disk for nothing.
    state.pdf.check_room()?;
    let (mut job, submit) = super::pdf::build_job(state, input, options)?;
    let job_id = Uuid::new_v4();
    let mut kept = None;
    if let PdfInput::Bytes(bytes) = &job.input {
        let path = state.jobs.input_path(job_id);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| ApiError::Unavailable(format!("cannot keep the upload: {e}")))?;
        job.input = PdfInput::File(path.clone());
        kept = Some(path);
    }
    let mut params = params;
    if let PdfInput::File(path) = &job.input {
        params["file"] = json!(path);
    }
    let dpi = job.dpi;
    let accepted_job = state
        .jobs
        .submit(
            &state.pdf,
            AsyncRequest {
                job_id,
                kind: "pdf",
                job,
                options: submit,
                request: params,
                idempotency,
                input: kept,
                to_result: pdf_result(dpi),
            },
        )
        .await?;
    Ok(accepted(accepted_job.view, mode, accepted_job.replayed))
}

fn pdf_result(dpi: u32) -> Box<dyn FnOnce(crate::queue::Completed<PdfOutput>) -> Value + Send> {
    Box::new(move |done| serde_json::to_value(super::pdf::response(done, dpi)).unwrap_or_default())
}

fn message_result(
) -> Box<dyn FnOnce(crate::queue::Completed<crate::workers::message::MessageOutput>) -> Value + Send>
{
    Box::new(|done| serde_json::to_value(super::message::response(done)).unwrap_or_default())
}

/// `POST /jobs/message` in async mode.
pub async fn submit_message(
    state: &AppState,
    request: MessageRequest,
    mode: &Mode,
) -> Result<Response, ApiError> {
    let params = json!({
        "text": request.text,
        "work_ms": request.work_ms,
        "timeout_ms": request.timeout_ms,
    });
    let idempotency = mode.idempotency("message", &params, &[]);
    if let Some(view) = idempotency
        .as_ref()
        .map(|i| state.jobs.find_by_key(i))
        .transpose()?
        .flatten()
    {
        return Ok(accepted(view, mode, true));
    }
    let (job, options) = request.into_job()?;
    let accepted_job = state
        .jobs
        .submit(
            &state.message,
            AsyncRequest {
                job_id: Uuid::new_v4(),
                kind: "message",
                job,
                options,
                request: params,
                idempotency,
                input: None,
                to_result: message_result(),
            },
        )
        .await?;
    Ok(accepted(accepted_job.view, mode, accepted_job.replayed))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::BadRequest(format!("{id:?} is not a job id")))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "job {id} (unknown, or removed after RESULT_TTL_SECS)"
    ))
}

/// An async job's state, progress and result.
#[utoipa::path(get, path = "/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 404, description = "No such job (or expired)", body = ErrorBody),
        (status = 429, description = "Over the client's rate", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_id(&job_id)?;
    state.jobs.view(id)?.map(Json).ok_or_else(|| not_found(id))
}

/// Cancels a queued job (it never runs) or a running one (its render stops).
#[utoipa::path(delete, path = "/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id")),
    responses(
        (status = 202, description = "Cancelled; the job's final view", body = JobView),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 404, description = "No such job (or expired)", body = ErrorBody),
        (status = 409, description = "The job already ended, or runs on another instance", body = ErrorBody),
        (status = 429, description = "Over the client's rate", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&job_id)?;
    let view = state.jobs.cancel(id).await?.ok_or_else(|| not_found(id))?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

fn sse_event(index: usize, event: &JobEvent) -> Event {
    Event::default()
        .event(event.name)
        .id(index.to_string())
        .data(event.data.to_string())
}

/// How often a stream of another instance's job re-reads the store.
const FOREIGN_POLL: Duration = Duration::from_millis(500);

/// Server-sent events: `state` (data: the job's view) on every state
/// change and `page` (data: the page) per rendered page, ending with the
/// final state. A client that connects late first gets the current state;
/// one that reconnects with `Last-Event-ID` gets what it missed.
#[utoipa::path(get, path = "/jobs/{job_id}/events", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "An event stream (`text/event-stream`)", content_type = "text/event-stream", body = String),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 404, description = "No such job (or expired)", body = ErrorBody),
        (status = 429, description = "Over the client's rate", body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&job_id)?;
    let resume_from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(|last| last + 1);
    let stream = if let Some(tracked) = state.jobs.get_live(id) {
        let mut changes = tracked.subscribe();
        // Mark the current events seen before reading them, so none is
        // missed between the read and the first wait.
        changes.borrow_and_update();
        let (now, len) = tracked.events_since(0);
        let (first, next): (Vec<(usize, JobEvent)>, usize) = match resume_from {
            Some(from) => (now.into_iter().enumerate().skip(from).collect(), len),
            None => {
                let view = tracked.view();
                let snapshot = JobEvent {
                    name: "state",
                    last: view.state.is_final(),
                    data: serde_json::to_value(view).unwrap_or_default(),
                };
                (vec![(len.saturating_sub(1), snapshot)], len)
            }
        };
        let ended = first.iter().any(|(_, e)| e.last);
        let closing = Box::pin(state.jobs.closing());
        let live = futures_util::stream::unfold(
            (tracked, changes, next, ended, closing),
            |(tracked, mut changes, next, ended, mut closing)| async move {
                if ended {
                    return None;
                }
                loop {
                    let (fresh, len) = tracked.events_since(next);
                    if !fresh.is_empty() {
                        let ended = fresh.iter().any(|e| e.last);
                        let batch: Vec<_> = fresh
                            .iter()
                            .enumerate()
                            .map(|(i, e)| Ok(sse_event(next + i, e)))
                            .collect();
                        return Some((
                            futures_util::stream::iter(batch),
                            (tracked, changes, len, ended, closing),
                        ));
                    }
                    // The server stops: the stream ends without a final
                    // state, and the client reconnects (Last-Event-ID).
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        () = &mut closing => return None,
                    }
                }
            },
        );
        let first = futures_util::stream::iter(
            first
                .into_iter()
                .map(|(i, e)| Ok(sse_event(i, &e)))
                .collect::<Vec<_>>(),
        );
        futures_util::StreamExt::boxed(futures_util::StreamExt::chain(
            first,
            futures_util::StreamExt::flatten(live),
        ))
    } else {
        // Not run here: report the stored state, then follow the store
        // until the job ends (state changes only; pages are counted by
        // the instance that runs it).
        let view = state.jobs.view(id)?.ok_or_else(|| not_found(id))?;
        let jobs = state.jobs.clone();
        let closing = Box::pin(state.jobs.closing());
        futures_util::StreamExt::boxed(futures_util::stream::unfold(
            (Some(view), jobs, 0usize, None::<String>, closing),
            move |(view, jobs, n, last_state, mut closing)| async move {
                let mut view = match view {
                    Some(view) => view,
                    None => loop {
                        tokio::select! {
                            () = tokio::time::sleep(FOREIGN_POLL) => {}
                            () = &mut closing => return None,
                        }
                        match jobs.view(id) {
                            Ok(Some(v)) if Some(v.state.as_str()) != last_state.as_deref() => {
                                break v
                            }
                            Ok(Some(_)) => continue,
                            _ => return None,
                        }
                    },
                };
                if last_state.as_deref() == Some("__end") {
                    return None;
                }
                let state_name = view.state.as_str().to_string();
                let end = view.state.is_final();
                view.position = None;
                let event = Event::default()
                    .event("state")
                    .id(n.to_string())
                    .data(serde_json::to_string(&view).unwrap_or_default());
                let next_state = if end { "__end".to_string() } else { state_name };
                Some((Ok(event), (None, jobs, n + 1, Some(next_state), closing)))
            },
        ))
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Every rendered page of a finished PDF job, as one zip (pages stored,
/// not compressed again: PNG is compressed already).
#[utoipa::path(get, path = "/jobs/{job_id}/archive", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "A zip of page-N.png files", content_type = "application/zip", body = Vec<u8>),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 404, description = "No such job, or not a PDF job", body = ErrorBody),
        (status = 409, description = "The job has not finished, or failed", body = ErrorBody),
        (status = 429, description = "Over the client's rate", body = ErrorBody),
    ))]
pub async fn archive(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&job_id)?;
    let view = state.jobs.view(id)?.ok_or_else(|| not_found(id))?;
    if view.kind != "pdf" {
        return Err(ApiError::NotFound(format!(
            "job {id} is a {} job: it has no pages",
            view.kind
        )));
    }
    if view.state != crate::jobs::JobState::Done {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; its archive exists once it is done",
            view.state.as_str()
        )));
    }
    let pages: Vec<u32> = view
        .pages
        .iter()
        .filter_map(|p| p.get("page").and_then(Value::as_u64))
        .map(|p| p as u32)
        .collect();
    let dir = state.config.output_dir.join(id.to_string());
    let files: Vec<(String, PathBuf)> = pages
        .iter()
        .map(|&p| (page_file_name(p), dir.join(page_file_name(p))))
        .collect();
    if let Some((name, _)) = files.iter().find(|(_, path)| !path.is_file()) {
        return Err(ApiError::NotFound(format!("{name} of job {id} is gone")));
    }
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write_zip(tokio_util::io::SyncIoBridge::new(writer), &files) {
            // The client sees a truncated body: a zip without its
            // central directory does not open.
            tracing::warn!(job_id = %id, "archive stream ended early: {e}");
        }
    });
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    Ok((
        [
            (CONTENT_TYPE, "application/zip".to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.zip\""),
            ),
            (CACHE_CONTROL, "private, max-age=3600".to_string()),
        ],
        body,
    )
        .into_response())
}

fn write_zip(out: impl std::io::Write, files: &[(String, PathBuf)]) -> zip::result::ZipResult<()> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    for (name, path) in files {
        zip.start_file(name.as_str(), options)?;
        let mut file = std::fs::File::open(path)?;
        std::io::copy(&mut file, &mut zip)?;
    }
    zip.finish()?;
    Ok(())
}

/// Runs again the async jobs whose instance died (this one before a
/// crash, or another sharing `OUTPUT_DIR`): claimed in the store, rebuilt from
/// their recorded request, admitted under what is left of their deadline.
pub async fn resume_orphans(state: &AppState) {
    // Database and lock-file work: off the async threads.
    let jobs = state.jobs.clone();
    let records = tokio::task::spawn_blocking(move || jobs.claim_orphans())
        .await
        .unwrap_or_default();
    if records.is_empty() {
        return;
    }
    tracing::info!(
        jobs = records.len(),
        "resuming async jobs of a stopped instance"
    );
    for record in records {
        if let Err(err) = resume(state, &record).await {
            state.jobs.finish_unrun(&record, err);
        }
    }
}

async fn resume(state: &AppState, record: &JobRecord) -> Result<(), ApiError> {
    let id = record.id;
    let request = &record.request;
    let str_field = |name: &str| request.get(name).and_then(Value::as_str).map(String::from);
    let u64_field = |name: &str| request.get(name).and_then(Value::as_u64);
    let pool = match record.kind.as_str() {
        "pdf" => &state.config.pdf.pool,
        _ => &state.config.message,
    };
    // What is left of the async budget since the job was first admitted.
    let budget = u64_field("timeout_ms")
        .map_or(pool.async_timeout, Duration::from_millis)
        .min(pool.async_timeout);
    let elapsed = Duration::from_millis(crate::jobs::now_ms().saturating_sub(record.created_ms));
    let Some(left) = budget.checked_sub(elapsed).filter(|d| !d.is_zero()) else {
        return Err(ApiError::job(
            id,
            crate::error::JobError::Timeout {
                budget_ms: budget.as_millis() as u64,
            },
        ));
    };
    match record.kind.as_str() {
        "pdf" => {
            let file = str_field("file").map(PathBuf::from).ok_or_else(|| {
                ApiError::job(
                    id,
                    crate::error::JobError::Failed("the job's input is not recorded".into()),
                )
            })?;
            if !file.is_file() {
                return Err(ApiError::job(
                    id,
                    crate::error::JobError::Failed(format!(
                        "the job's input {} is gone",
                        file.display()
                    )),
                ));
            }
            let options = PdfOptions {
                dpi: u64_field("dpi").map(|d| d as u32),
                pages: str_field("pages"),
                password: str_field("password"),
                timeout_ms: None,
                mode: None,
            };
            let kept = file.starts_with(state.jobs.input_path(id).parent().unwrap_or(&file));
            let (job, mut options) =
                super::pdf::build_job(state, PdfInput::File(file.clone()), options)?;
            options.timeout = Some(left);
            let dpi = job.dpi;
            state
                .jobs
                .resume(
                    &state.pdf,
                    record,
                    job,
                    options,
                    pdf_result(dpi),
                    kept.then_some(file),
                )
                .await;
        }
        "message" => {
            let request = MessageRequest {
                text: str_field("text").unwrap_or_default(),
                work_ms: u64_field("work_ms").unwrap_or(0),
                timeout_ms: None,
            };
            let (job, mut options) = request.into_job()?;
            options.timeout = Some(left);
            state
                .jobs
                .resume(&state.message, record, job, options, message_result(), None)
                .await;
        }
        other => {
            return Err(ApiError::job(
                id,
                crate::error::JobError::Failed(format!("unknown job kind {other:?}")),
            ))
        }
    }
    Ok(())
}
