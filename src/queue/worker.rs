//! What a worker type implements ([`Worker`]) and what it sees of the job
//! it runs ([`JobContext`]), plus the failures a job can end in
//! ([`JobError`]). No tokio here: workers are plain synchronous code on
//! dedicated OS threads.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use uuid::Uuid;

use super::pool::WorkerSlot;
use super::ticket::Ticket;
use crate::storage::StoredPage;

/// A failure of a job that was admitted to a queue. Serialisable: in
/// cluster mode it travels back from the node that ran the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum JobError {
    /// Still waiting for a worker when its queue budget ran out; never started.
    #[error("job waited {waited_ms} ms in the queue without starting")]
    QueueTimeout { waited_ms: u64 },
    /// Passed its total deadline; the work was cancelled.
    #[error("job did not finish within its {budget_ms} ms deadline and was cancelled")]
    Timeout { budget_ms: u64 },
    /// The input was readable but cannot be processed (422).
    #[error("{0}")]
    Invalid(String),
    /// The job ran and failed for a reason that is not the caller's fault.
    #[error("{0}")]
    Failed(String),
    /// The job's output could not be stored for lack of space (`ENOSPC`,
    /// `EDQUOT`); what it had stored is removed. Answered `507 Insufficient
    /// Storage`: the request was fine and the server began it, but has no
    /// room for its result, so another instance, or this one later, may
    /// succeed. A submit refused *before* running because free space is
    /// already below `MIN_FREE_DISK_MB` is a `503` instead (the server is
    /// not taking such jobs at all for now, with a `Retry-After`).
    #[error("{0}")]
    StorageFull(String),
    /// The job's code panicked; the worker thread survived.
    #[error("job panicked: {0}")]
    Panicked(String),
    /// The server is draining: the job was not started.
    #[error("server is shutting down; the job was not run")]
    ShuttingDown,
    /// The worker type cannot run jobs right now (e.g. its engine is missing).
    #[error("{0}")]
    Unavailable(String),
    /// Cancelled before it finished, by its caller or by shutdown.
    #[error("job was cancelled")]
    Cancelled,
}

/// A job type's synchronous engine. One value lives on each worker thread
/// (its per-thread context, built once by the factory given to
/// [`super::JobQueue::start`]); `process` runs one job and must return soon after
/// `ctx.is_cancelled()` turns true.
pub trait Worker: Send + 'static {
    type Job: Send + 'static;
    type Output: Send + 'static;
    type Error: Into<JobError> + Send + 'static;

    fn process(&mut self, job: Self::Job, ctx: &JobContext) -> Result<Self::Output, Self::Error>;

    /// Units of work in an output (pages for PDF jobs), for logs and status.
    fn units(_output: &Self::Output) -> u64 {
        0
    }

    /// Called on the worker thread after a job when none waits, and after
    /// every `IDLE_TICK` without a job: a chance to check resources the
    /// worker holds (replace a child process that died or was killed).
    fn idle(&mut self) {}

    /// Called with an output whose caller left before it could be
    /// delivered, to release what it holds (files on disk, say).
    fn discard(&mut self, _output: Self::Output) {}
}

/// How long a worker waits for a job before calling [`Worker::idle`].
pub(super) const IDLE_TICK: Duration = Duration::from_millis(500);

/// A job's answer on success, with where and how long it ran.
#[derive(Debug)]
pub struct Completed<O> {
    pub job_id: Uuid,
    pub worker: String,
    pub output: O,
    pub queue_ms: f64,
    pub run_ms: f64,
    pub total_ms: f64,
}

/// What a worker sees of the job it runs besides its input.
pub struct JobContext {
    pub job_id: Uuid,
    /// Instant the total budget runs out.
    pub deadline: Instant,
    /// Name of the thread running the job (`<queue>-worker-<n>`).
    pub worker: String,
    pub(super) ticket: Arc<Ticket>,
    pub(super) slot: Arc<WorkerSlot>,
    pub(super) observer: Option<Arc<dyn JobObserver>>,
}

impl JobContext {
    /// True once the caller has gone or the deadline passed; check it often.
    pub fn is_cancelled(&self) -> bool {
        self.ticket.is_cancelled() || Instant::now() >= self.deadline
    }

    /// A channel that disconnects when the job is cancelled, for workers that
    /// block (on a child process, say) and want to wake on cancellation with
    /// `crossbeam_channel::select!` instead of polling.
    pub fn cancelled(&self) -> &Receiver<Never> {
        &self.ticket.cancel_rx
    }

    /// Report progress (units done so far, e.g. pages) for status displays.
    pub fn progress(&self, done: u64) {
        self.slot.progress.store(done, Ordering::Relaxed);
    }

    /// Report one more page stored (`done` counting from 1), for status
    /// displays and for whoever watches the job (an async job's events).
    pub fn page_done(&self, done: u64, page: &StoredPage) {
        self.progress(done);
        if let Some(observer) = &self.observer {
            observer.page(done, page);
        }
    }

    /// Report how many units the job has in all, once known.
    pub fn set_total(&self, total: u64) {
        self.slot.total.store(total, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer.total(total);
        }
    }
}

/// Watches one job from the worker's side: async jobs use it to record
/// state changes and per-unit events as they happen. Called on the worker
/// thread, so implementations must be quick and must not block.
pub trait JobObserver: Send + Sync + 'static {
    /// A worker took the job.
    fn started(&self, worker: &str);
    /// The job has `total` units in all.
    fn total(&self, total: u64);
    /// Page `done` (counting from 1) is stored.
    fn page(&self, done: u64, page: &StoredPage);
}

/// A type with no values: channels of it only ever disconnect.
pub enum Never {}
