//! What the clients sent and what came back: request kinds, the answers
//! each may get, the outcome records, and the shared log of a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jobserver::jobs::JobState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    PdfJson,
    PdfRaw,
    PdfMultipart,
    Message,
    ShortDeadline,
    Disconnect,
    Malformed,
    Burst,
    RateLimited,
    PageGet,
    Long,
    AsyncPdf,
    AsyncMessage,
    JobGet,
    JobEvents,
    JobArchive,
    JobCancel,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::PdfJson => "pdf json path",
            Kind::PdfRaw => "pdf raw upload",
            Kind::PdfMultipart => "pdf multipart",
            Kind::Message => "message",
            Kind::ShortDeadline => "short deadline",
            Kind::Disconnect => "disconnect mid-job",
            Kind::Malformed => "malformed",
            Kind::Burst => "burst",
            Kind::RateLimited => "rate-limited burst (B)",
            Kind::PageGet => "page fetch",
            Kind::Long => "long job (shutdown run)",
            Kind::AsyncPdf => "pdf async (submit, replay)",
            Kind::AsyncMessage => "message async (submit, replay)",
            Kind::JobGet => "job state (GET /jobs/{id})",
            Kind::JobEvents => "job events (SSE)",
            Kind::JobArchive => "job archive (zip)",
            Kind::JobCancel => "job cancel (DELETE)",
        }
    }
}

/// What a request may be answered with.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// A valid job: 200, or the server's load answers (503 queue full,
    /// upload budget used up (`uploads_in_flight`, which the hostile
    /// phase's flood holds at times) or shutting down, 504), or for PDF
    /// jobs 500 when its renderer was killed.
    Job { pdf: bool },
    /// A job the worker refuses (unreadable PDF, pages it lacks): 422 in
    /// place of 200, otherwise as `Job`.
    JobInvalid { pdf: bool },
    /// Refused while the job is built, with exactly this status, unless
    /// admission (from the headers, before the body) refused it first:
    /// 503 `queue_full`, `too_many_jobs` or `uploads_in_flight` with
    /// `Retry-After`, or `shutting_down` while draining.
    Before(u16),
    /// `GET /jobs/{id}/pages/{n}` with this status.
    Page(u16),
    /// An async submit: 202, or the load answers of admission (503
    /// `queue_full`, `too_many_jobs` or `uploads_in_flight` with
    /// `Retry-After`, 503
    /// `shutting_down` while draining); never 500 or 504, which belong to
    /// the job's record.
    Async,
    /// A request about an async job (state, events, archive, cancel):
    /// one of these statuses.
    AnyOf(&'static [u16]),
}

#[derive(Debug)]
pub enum Res {
    Http {
        status: u16,
        code: Option<String>,
        message: String,
        job_id: Option<String>,
        shape: Result<(), String>,
        retry_after: bool,
    },
    /// Dropped on purpose by a disconnecting client.
    Dropped,
    /// Transport failure: refused, reset, closed, timed out.
    Conn(String),
}

pub struct Record {
    pub kind: Kind,
    pub case: &'static str,
    pub target: usize,
    pub expect: Expect,
    pub started: Instant,
    pub finished: Instant,
    pub res: Res,
}

/// A 200 PDF answer, checked against the disk at the end.
#[derive(Clone)]
pub struct PdfOk {
    pub target: usize,
    pub job_id: String,
    /// `(page, width, height, bytes)`.
    pub pages: Vec<(u32, u32, u32, u64)>,
    /// When the answer (and the client's page fetches) were done.
    pub at: Instant,
}

/// An async job a client got a 202 for, checked at the end of the run.
#[derive(Clone)]
pub struct AsyncJob {
    pub job_id: String,
    pub pdf: bool,
    /// Pages a PDF job must render, in order.
    pub expected: Vec<u32>,
    /// A DELETE was answered 202 `cancelled`: the job must end so.
    pub cancelled: bool,
    /// The final state its client saw (polling or reading events).
    pub seen_final: Option<String>,
    /// Its pages went to the verifier (its client saw it done).
    pub verified: bool,
}

#[derive(Default)]
pub struct Log {
    pub records: Vec<Record>,
    pub pdf_ok: Vec<PdfOk>,
    /// Problems the clients saw in answers' content.
    pub problems: Vec<String>,
    /// Async jobs accepted by server A (async jobs go to A only).
    pub async_jobs: Vec<AsyncJob>,
    /// Filled by the end-of-run check: accepted async jobs by final
    /// state, and those not ended (kept queued by a shutdown).
    pub async_final: BTreeMap<String, String>,
    pub async_open: BTreeSet<String>,
    /// Async jobs that ended without a result: `(id, status, error)`.
    pub async_failed: Vec<(String, u16, String)>,
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `state` names a state of an async job.
pub fn is_state(state: &str) -> bool {
    JobState::parse(state).is_some()
}

/// Whether `state` names a final state of an async job.
pub fn is_final(state: &str) -> bool {
    JobState::parse(state).is_some_and(JobState::is_final)
}

/// The log once the clients that shared it are gone.
pub fn unshare(log: Arc<Mutex<Log>>) -> Result<Log, String> {
    Ok(Arc::try_unwrap(log)
        .map_err(|_| "log still shared".to_string())?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner()))
}
