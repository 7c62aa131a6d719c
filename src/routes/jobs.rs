//! The job resource: `GET /jobs/{id}` (state), `GET /jobs/{id}/events`
//! (server-sent events), `GET /jobs/{id}/archive` (every page as one
//! zip), `DELETE /jobs/{id}` (cancel). Jobs are kept and run by
//! [`crate::jobs::AsyncJobs`]; this module turns requests into its calls
//! and its snapshots and events into HTTP.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use tokio_stream::wrappers::IntervalStream;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JobId, JobIdPath};
use crate::jobs::{EventLog, JobEvent, JobSnapshot, JobState};
use crate::state::AppState;
use crate::storage::page_file_name;
use crate::tenants::{may_see, Caller};

use super::doc::JobLookupResponses;
use super::view::{JobView, PageEvent, PageLink};

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!(
        "job {id} (unknown, or removed after RESULT_TTL_SECS)"
    ))
}

/// The job the path's `{job_id}` names, as it stands, with the state to
/// act on it: 400 for a path that is not a job id, 404 for a job that is
/// unknown or gone, or another tenant's (API keys on). Every route of one
/// job starts here, so what a client may see of a job is decided in one
/// place.
pub struct FoundJob {
    state: AppState,
    job: JobSnapshot,
}

impl FromRequestParts<AppState> for FoundJob {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let JobId(id) = JobId::from_request_parts(parts, state).await?;
        let caller = Caller::from_request_parts(parts, state).await?;
        let job = state
            .jobs
            .snapshot(id)
            .await?
            .filter(|job| may_see(&caller, job.tenant.as_deref()))
            .ok_or_else(|| not_found(id))?;
        Ok(FoundJob {
            state: state.clone(),
            job,
        })
    }
}

impl FoundJob {
    fn id(&self) -> Uuid {
        self.job.job_id
    }

    fn makes_pages(&self) -> bool {
        makes_pages(&self.state, &self.job)
    }
}

fn makes_pages(state: &AppState, job: &JobSnapshot) -> bool {
    state
        .kinds
        .by_name(&job.kind)
        .is_some_and(|k| k.makes_pages())
}

/// The HTTP view of a snapshot: links as its worker type has them.
fn view(state: &AppState, job: JobSnapshot) -> JobView {
    let pages = makes_pages(state, &job);
    JobView::of(job, pages)
}

/// An async job's state, progress and result.
#[utoipa::path(get, path = "/jobs/{job_id}", tag = "jobs",
    params(JobIdPath),
    responses((status = 200, description = "The job", body = JobView), JobLookupResponses))]
pub async fn job_get(found: FoundJob) -> Json<JobView> {
    Json(view(&found.state, found.job))
}

/// Cancels a queued job (it never runs) or a running one (its render stops).
#[utoipa::path(delete, path = "/jobs/{job_id}", tag = "jobs",
    params(JobIdPath),
    responses(
        (status = 202, description = "Cancelled; the job's final view", body = JobView),
        (status = 409, description = "The job already ended, or runs on another instance", body = ErrorBody),
        JobLookupResponses,
    ))]
pub async fn job_cancel(found: FoundJob) -> Result<Response, ApiError> {
    let id = found.id();
    let job = found.state.jobs.cancel(id).await?;
    let job = job.ok_or_else(|| not_found(id))?;
    Ok((StatusCode::ACCEPTED, Json(view(&found.state, job))).into_response())
}

/// How often a stream of another instance's job re-reads the records.
const FOREIGN_POLL: Duration = Duration::from_millis(500);

/// One SSE event of job `id`'s stream.
fn sse_event(state: &AppState, id: Uuid, index: usize, event: JobEvent) -> Event {
    let (name, data) = match event {
        JobEvent::State(job) => ("state", serde_json::to_string(&view(state, *job))),
        JobEvent::Page { page, done, total } => {
            let data = PageEvent {
                page: PageLink::of(id, &page),
                done,
                total,
            };
            ("page", serde_json::to_string(&data))
        }
    };
    Event::default()
        .event(name)
        .id(index.to_string())
        .data(data.unwrap_or_default())
}

/// Server-sent events: `state` (data: the job's view) on every state
/// change and `page` (data: the page) per rendered page, ending with the
/// final state. A client that connects late first gets the current state;
/// one that reconnects with `Last-Event-ID` gets what it missed.
#[utoipa::path(get, path = "/jobs/{job_id}/events", tag = "jobs",
    params(JobIdPath),
    responses(
        (status = 200, description = "An event stream (`text/event-stream`)", content_type = "text/event-stream", body = String),
        JobLookupResponses,
    ))]
pub async fn job_events(
    found: FoundJob,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let FoundJob { state, job } = found;
    let id = job.job_id;
    let resume_from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(|last| last + 1);
    let events: BoxStream<'static, (usize, JobEvent)> = match state.jobs.get_live(id) {
        Some(tracked) => {
            let log = tracked.log();
            match resume_from {
                Some(from) => log.follow(from),
                None => {
                    // A late client starts from the current state (numbered
                    // as the event before the next one), then follows.
                    let next = log.len();
                    let now = JobEvent::State(Box::new(tracked.snapshot()));
                    let ended = now.is_last();
                    let first = stream::iter([(next.saturating_sub(1), now)]);
                    if ended {
                        first.boxed()
                    } else {
                        first.chain(log.follow(next)).boxed()
                    }
                }
            }
        }
        None => follow_records(&state, job),
    };
    let sse_state = state.clone();
    let stream = events
        .map(move |(i, event)| Ok(sse_event(&sse_state, id, i, event)))
        // The server stops: the stream ends without a final state, and
        // the client reconnects (Last-Event-ID).
        .take_until(state.jobs.closing());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A job not run here: its stored state, then the records followed until
/// it ends (state changes only; pages are counted where it runs).
fn follow_records(state: &AppState, first: JobSnapshot) -> BoxStream<'static, (usize, JobEvent)> {
    let jobs = state.jobs.clone();
    let id = first.job_id;
    let mut last = first.state;
    let done = first.state.is_final();
    let start = stream::iter([JobEvent::State(Box::new(first))]);
    if done {
        return start.enumerate().boxed();
    }
    let mut ended = false;
    let polls = IntervalStream::new(tokio::time::interval(FOREIGN_POLL))
        .then(move |_| {
            let jobs = jobs.clone();
            async move { jobs.snapshot(id).await }
        })
        .take_while(|read| std::future::ready(matches!(read, Ok(Some(_)))))
        .filter_map(move |read| {
            let job = read.ok().flatten().filter(|job| job.state != last);
            if let Some(job) = &job {
                last = job.state;
            }
            std::future::ready(job)
        })
        .take_while(move |job| {
            let more = !ended;
            ended = job.state.is_final();
            std::future::ready(more)
        })
        .map(|mut job| {
            job.position = None;
            JobEvent::State(Box::new(job))
        });
    start.chain(polls).enumerate().boxed()
}

/// Every rendered page of a finished job, as one zip (pages stored, not
/// compressed again: they are compressed images already).
#[utoipa::path(get, path = "/jobs/{job_id}/archive", tag = "jobs",
    params(JobIdPath),
    responses(
        (status = 200, description = "A zip of page-N.png files (404 for a job without pages)", content_type = "application/zip", body = Vec<u8>),
        (status = 409, description = "The job has not finished, or failed", body = ErrorBody),
        JobLookupResponses,
    ))]
pub async fn job_archive(found: FoundJob) -> Result<Response, ApiError> {
    let id = found.id();
    if !found.makes_pages() {
        return Err(ApiError::NotFound(format!(
            "job {id} is a {} job: it has no pages",
            found.job.kind
        )));
    }
    let FoundJob { state, job } = found;
    if job.state != JobState::Done {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; its archive exists once it is done",
            job.state.as_str()
        )));
    }
    let stored = state
        .pages
        .list_pages(id)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot list the job's pages: {e}")))?;
    if let Some(missing) = job
        .pages
        .iter()
        .find(|p| !stored.iter().any(|(n, _)| *n == p.page))
    {
        return Err(ApiError::NotFound(format!(
            "{} of job {id} is gone",
            page_file_name(missing.page, missing.format)
        )));
    }
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let pages = state.pages.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let out = tokio_util::io::SyncIoBridge::new(writer);
        let read = |page: u32| runtime.block_on(pages.get_page(id, page));
        if let Err(e) = write_zip(out, &stored, read) {
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

type PageRead = std::io::Result<Option<(crate::storage::ImageFormat, bytes::Bytes)>>;

fn write_zip(
    out: impl std::io::Write,
    pages: &[(u32, crate::storage::ImageFormat)],
    read: impl Fn(u32) -> PageRead,
) -> zip::result::ZipResult<()> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    for &(page, format) in pages {
        let Some((_, bytes)) = read(page)? else {
            return Err(std::io::Error::other(format!("page {page} is gone")).into());
        };
        zip.start_file(page_file_name(page, format), options)?;
        std::io::Write::write_all(&mut zip, &bytes)?;
    }
    zip.finish()?;
    Ok(())
}
