//! Worker types as plug-ins.
//!
//! A worker type is its engine ([`crate::queue::Worker`], under
//! `workers/`) plus a [`JobKind`]: how a request's parameters become a job,
//! and how a finished job becomes the reply, with the type's queue. Its
//! route module implements `JobKind` and hands it, with its routes, to
//! [`crate::state::Registry::register`]: one line. Everything that serves
//! every type alike (status, metrics, health, drain and join, async submit,
//! recovery after a crash, the dashboard) sees the type only through
//! [`AnyKind`], the object-safe face every `JobKind` gets for free.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, JobError};
use crate::jobs::{AsyncJobs, JobRecord, Resume};
use crate::queue::{Completed, JobQueue, Pool, QueueError, SubmitOptions, Worker};
use crate::storage::{InputRef, JobInput};

/// The job a worker type runs.
pub type JobOf<K> = <<K as JobKind>::Worker as Worker>::Job;
/// What its worker makes of a job.
pub type OutputOf<K> = <<K as JobKind>::Worker as Worker>::Output;

/// A worker type: its queue, how requests become jobs, how outputs become
/// replies.
pub trait JobKind: Send + Sync + Sized + 'static {
    type Worker: Worker;
    /// What a request asks for, recorded with an async job so it can run
    /// again after a restart.
    type Params: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The body a sync request gets (and an async job's `result`).
    type Reply: Serialize + Send + 'static;

    /// The queue's label, the worker threads' prefix (`<name>-worker-<i>`)
    /// and the `kind` of its async jobs.
    const NAME: &'static str;
    /// Whether its jobs leave pages in the page store (served one by one
    /// and as an archive).
    const MAKES_PAGES: bool = false;
    /// What `/readyz` calls the check of [`JobKind::unavailable`].
    const ENGINE: &'static str = "engine";

    fn queue(&self) -> &JobQueue<Self::Worker>;

    /// Checks `params` (and the input, for types that take one) against the
    /// configured limits and builds the job; a refusal is the 4xx the
    /// client gets.
    fn build(
        &self,
        params: &Self::Params,
        input: Option<&JobInput>,
    ) -> Result<(JobOf<Self>, SubmitOptions), ApiError>;

    /// The reply for a finished job.
    fn reply(&self, done: Completed<OutputOf<Self>>) -> Self::Reply;

    /// Why the type cannot take jobs now (an engine that cannot be
    /// loaded): readiness fails and submits get 503.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// The type's own part of `/status` (an engine's counters), if any.
    fn status(&self) -> Option<Value> {
        None
    }

    /// The type's own metric families, written in the text format.
    fn metrics(&self, _out: &mut crate::metrics::Exposition) {}
}

/// A recorded async request: the parameters and, for types that take
/// one, a reference to the input.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recorded<P> {
    #[serde(flatten)]
    pub params: P,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputRef>,
}

/// A worker type without its job types: what the server needs to serve
/// every type alike.
pub trait AnyKind: Resume + Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn pool(&self) -> &dyn Pool;
    fn makes_pages(&self) -> bool;
    fn engine(&self) -> &'static str;
    fn unavailable(&self) -> Option<String>;
    fn status(&self) -> Option<Value>;
    fn metrics(&self, out: &mut crate::metrics::Exposition);
    /// Runs here a job another node admitted (cluster mode).
    fn run_remote(self: Arc<Self>, job: RemoteJob) -> Result<RemoteRun, JobError>;
}

/// A job another node admitted and this one runs (cluster mode): its
/// recorded request ([`Recorded`] of the type's parameters), its input and
/// what is left of its budget.
pub struct RemoteJob {
    pub job_id: uuid::Uuid,
    pub request: Value,
    pub input: Option<JobInput>,
    pub timeout: Duration,
}

/// A remote job on this node's queue: how to stop it, and its reply.
pub struct RemoteRun {
    pub cancel: Box<dyn Fn() + Send + Sync>,
    /// The type's reply as JSON, or how the job ended.
    pub done: BoxFuture<'static, Result<Value, JobError>>,
}

/// A queue's refusal as the failure a remote caller is told of.
fn remote_error(err: QueueError) -> JobError {
    match err {
        QueueError::Job { source, .. } => source,
        QueueError::ShuttingDown => JobError::ShuttingDown,
        other => JobError::Unavailable(other.to_string()),
    }
}

impl<K: JobKind> AnyKind for K {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn pool(&self) -> &dyn Pool {
        self.queue()
    }
    fn makes_pages(&self) -> bool {
        K::MAKES_PAGES
    }
    fn engine(&self) -> &'static str {
        K::ENGINE
    }
    fn unavailable(&self) -> Option<String> {
        JobKind::unavailable(self)
    }
    fn status(&self) -> Option<Value> {
        JobKind::status(self)
    }
    fn metrics(&self, out: &mut crate::metrics::Exposition) {
        JobKind::metrics(self, out)
    }
    fn run_remote(self: Arc<Self>, remote: RemoteJob) -> Result<RemoteRun, JobError> {
        let recorded: Recorded<K::Params> = serde_json::from_value(remote.request)
            .map_err(|e| JobError::Invalid(format!("this node cannot read the request: {e}")))?;
        let input = match (remote.input, recorded.input) {
            (Some(input), _) => Some(input),
            (None, stored) => stored.map(JobInput::Stored),
        };
        let (job, mut options) = self
            .build(&recorded.params, input.as_ref())
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        options.job_id = Some(remote.job_id);
        options.timeout = Some(
            options
                .timeout
                .map_or(remote.timeout, |t| t.min(remote.timeout)),
        );
        let pending = self.queue().submit(job, options).map_err(remote_error)?;
        let handle = pending.handle();
        let kind = Arc::clone(&self);
        Ok(RemoteRun {
            cancel: Box::new(move || handle.cancel()),
            done: Box::pin(async move {
                let done = pending.wait().await.map_err(remote_error)?;
                serde_json::to_value(kind.reply(done))
                    .map_err(|e| JobError::Failed(format!("cannot write the reply: {e}")))
            }),
        })
    }
}

/// Turns a finished job into the recorded result of an async job.
pub fn to_result<K: JobKind>(
    kind: Arc<K>,
) -> Box<dyn FnOnce(Completed<OutputOf<K>>) -> Value + Send> {
    Box::new(move |done| serde_json::to_value(kind.reply(done)).unwrap_or_default())
}

impl<K: JobKind> Resume for K {
    fn resume(
        self: Arc<Self>,
        jobs: Arc<AsyncJobs>,
        record: JobRecord,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        Box::pin(async move {
            let id = record.id;
            let failed = |message: String| QueueError::job(id, JobError::Failed(message));
            let recorded: Recorded<K::Params> = serde_json::from_value(record.request.clone())
                .map_err(|e| failed(format!("the recorded request cannot be read: {e}")))?;
            if let Some(input) = &recorded.input {
                if !jobs.pages().has_input(input).await {
                    return Err(failed(format!("the job's input {input:?} is gone")));
                }
            }
            let input = recorded.input.clone().map(JobInput::Stored);
            let (job, mut options) = self
                .build(&recorded.params, input.as_ref())
                .map_err(|e| failed(e.to_string()))?;
            // What is left of the async budget since the job was admitted.
            let limit = self.queue().config().async_timeout;
            let budget = options.timeout.map_or(limit, |t| t.min(limit));
            let elapsed = Duration::from_millis(jobs.now_ms().saturating_sub(record.created_ms));
            let left = budget.checked_sub(elapsed).filter(|d| !d.is_zero());
            let Some(left) = left else {
                let budget_ms = budget.as_millis() as u64;
                return Err(QueueError::job(id, JobError::Timeout { budget_ms }));
            };
            options.timeout = Some(left);
            let to_result = to_result(Arc::clone(&self));
            let kept = recorded
                .input
                .filter(|i| matches!(i, InputRef::Kept { .. }));
            jobs.resume(self.queue(), &record, job, options, to_result, kept)
                .await;
            Ok(())
        })
    }
}
