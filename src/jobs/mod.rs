//! Async jobs: records that outlive the request that made them.
//!
//! ```text
//! POST ?mode=async ─▶ JobQueue::submit (same 503 rules) ─▶ 202 + Location: /jobs/{id}
//!                          │ record inserted (durable) before the 202
//!                          ▼
//!                    tokio task: Pending::wait ─▶ finish ─▶ record updated, final event
//!                          ▲
//!   worker thread ─▶ JobObserver (Tracked): started, total, one event per page
//! ```
//!
//! [`AsyncJobs`] owns every async job this instance runs: a [`Tracked`]
//! per job in memory (state, progress, the event log that `GET
//! /jobs/{id}/events` streams) and a record per job in the
//! [`records::JobRecords`] (SQLite under `OUTPUT_DIR` here), so a crashed
//! server's queued and running jobs run again ([`recover`]) and finished
//! ones are served until their TTL ([`retention`]). Sync jobs are never
//! recorded: their caller left with the connection.
//!
//! Several instances may share the records: each is a member while alive
//! ([`election::Membership`]) and jobs whose owner died are claimed by the
//! next instance to look. Removing expired results is a singleton, run by
//! the holder of the [`election::Lease`].
//!
//! What a job needs to run again is recorded with it: its parameters and
//! a reference to its input, which the page store keeps until the job
//! ends.

pub mod election;
pub mod records;
pub mod recover;
pub mod retention;
pub mod store;
#[cfg(test)]
mod tests;
mod tracked;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::config::JobsConfig;
use crate::error::{ApiError, ErrorBody, JobError};
use crate::queue::{Completed, JobObserver, JobQueue, Place, QueueError, SubmitOptions, Worker};
use crate::storage::{InputRef, Layout, PageStore};
use election::{Election, Lease, LockFiles, Membership};
use records::{JobRecords, SqliteRecords};
pub use recover::Resume;
pub use store::{JobRecord, JobState, Store, StoreError};
use tracked::ReplyPages;
pub use tracked::{EventLog, JobEvent, JobSnapshot, MemoryLog, Tracked};

/// A request's idempotency key and a digest of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

/// Turns a finished job's output into its recorded result.
pub type ToResult<O> = Box<dyn FnOnce(Completed<O>) -> Value + Send>;

/// Everything needed to run a job asynchronously.
pub struct AsyncRequest<W: Worker> {
    pub job_id: Uuid,
    pub kind: &'static str,
    pub job: W::Job,
    pub options: SubmitOptions,
    /// Recorded with the job so it can run again after a restart.
    pub request: Value,
    pub idempotency: Option<Idempotency>,
    /// An input kept for this job, removed when it ends.
    pub input: Option<InputRef>,
    /// The reply a sync request would get.
    pub to_result: ToResult<W::Output>,
    /// The record's place, if reserved before the request was read; taken
    /// now otherwise.
    pub record_place: Option<RecordPlace>,
    /// The job's queue place, if reserved before the request was read.
    pub queue_place: Option<Place<W>>,
    /// The tenant it belongs to (API keys on).
    pub tenant: Option<Arc<str>>,
}

/// A place for one more async job record, reserved before the request's
/// body is read so that uploads arriving together cannot all pass
/// `MAX_TRACKED_JOBS`. Writing the record uses it; dropping it gives it
/// back.
pub struct RecordPlace {
    jobs: Arc<AsyncJobs>,
    held: bool,
}

impl RecordPlace {
    /// The record was written: the place is now the record's.
    fn commit(mut self) {
        self.jobs.record_count.fetch_add(1, Ordering::AcqRel);
        self.jobs.reserved_records.fetch_sub(1, Ordering::AcqRel);
        self.held = false;
    }
}

impl Drop for RecordPlace {
    fn drop(&mut self) {
        if self.held {
            self.jobs.reserved_records.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A job accepted in async mode (or found by its idempotency key).
pub struct Accepted {
    pub job: JobSnapshot,
    /// The key matched an earlier request: this is that job.
    pub replayed: bool,
}

/// Why an async submit did not go through.
enum Refused {
    /// The record could not be written.
    Unrecorded(StoreError),
    /// The queue turned the job away after it was recorded.
    Queue(QueueError),
}

/// Counters for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct JobsStats {
    pub submitted: AtomicU64,
    pub replayed: AtomicU64,
    pub recovered: AtomicU64,
    pub removed: AtomicU64,
    pub refused_full: AtomicU64,
}

/// The services async jobs stand on; [`AsyncJobs::open`] makes the local
/// ones.
pub struct Services {
    pub records: Arc<dyn JobRecords>,
    pub pages: Arc<dyn PageStore>,
    pub members: Box<dyn Membership>,
    pub lease: Box<dyn Lease>,
    pub clock: Arc<dyn Clock>,
}

/// Every async job of this instance, and the shared records.
pub struct AsyncJobs {
    config: JobsConfig,
    records: Arc<dyn JobRecords>,
    pages: Arc<dyn PageStore>,
    members: Box<dyn Membership>,
    lease: Box<dyn Lease>,
    clock: Arc<dyn Clock>,
    live: Mutex<HashMap<Uuid, Arc<Tracked>>>,
    /// Records in the store (all instances'): a place is reserved before a
    /// submit is admitted and given back if it is not recorded, and the
    /// count is taken again each sweep (a record written during that count
    /// may be missed until the next one).
    record_count: AtomicU64,
    /// Places reserved for records not written yet ([`RecordPlace`]),
    /// counted against `max_tracked` with the records.
    reserved_records: AtomicU64,
    tasks: TaskTracker,
    /// Cancelled when the server has stopped its workers: event streams
    /// still open then end (a job left queued for the next start would
    /// otherwise hold its stream, and the graceful shutdown, open forever).
    closing: CancellationToken,
    pub stats: JobsStats,
}

/// How long a finished job stays in memory (events, pages) before the
/// records alone answer for it.
pub const FINISHED_IN_MEMORY: Duration = Duration::from_secs(10);

/// The error body a sync request would have got, with its status.
fn error_value(err: &ApiError) -> Value {
    let (status, code) = err.status_and_code();
    let mut body = serde_json::to_value(ErrorBody {
        error: code.to_string(),
        message: err.to_string(),
        job_id: None,
    })
    .unwrap_or_default();
    if let Some(fields) = body.as_object_mut() {
        fields.insert("status".into(), status.as_u16().into());
    }
    body
}

fn unreadable(e: StoreError) -> ApiError {
    ApiError::Unavailable(format!("the job database cannot be read: {e}"))
}

fn already_ended(id: Uuid, state: JobState) -> ApiError {
    ApiError::Conflict(format!("job {id} already ended ({})", state.as_str()))
}

impl AsyncJobs {
    /// Opens the records in the output folder, marks this instance alive
    /// and joins the primary election. A corrupt or unwritable database is
    /// an error naming the file: the server does not start with it.
    pub async fn open(
        config: JobsConfig,
        layout: &Layout,
        pages: Arc<dyn PageStore>,
    ) -> Result<Arc<AsyncJobs>, String> {
        let store = Store::open(&layout.database()).map_err(|e| e.to_string())?;
        let members = LockFiles::join(&layout.instances_dir())
            .map_err(|e| format!("cannot lock {}: {e}", layout.instances_dir().display()))?;
        let lease = Election::start(layout.primary_lock())
            .map_err(|e| format!("cannot open {}: {e}", layout.primary_lock().display()))?;
        let services = Services {
            records: Arc::new(SqliteRecords::new(store)),
            pages,
            members: Box::new(members),
            lease: Box::new(lease),
            clock: Arc::new(SystemClock),
        };
        AsyncJobs::with(config, services).await
    }

    /// Async jobs over the given services.
    pub async fn with(config: JobsConfig, services: Services) -> Result<Arc<AsyncJobs>, String> {
        let count = services.records.count().await.map_err(|e| e.to_string())?;
        Ok(Arc::new(AsyncJobs {
            config,
            records: services.records,
            pages: services.pages,
            members: services.members,
            lease: services.lease,
            clock: services.clock,
            live: Mutex::new(HashMap::new()),
            record_count: AtomicU64::new(count),
            reserved_records: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            stats: JobsStats::default(),
        }))
    }

    pub fn instance_id(&self) -> &str {
        self.members.id()
    }

    pub fn is_primary(&self) -> bool {
        self.lease.is_held()
    }

    pub fn records(&self) -> &dyn JobRecords {
        &*self.records
    }

    pub fn pages(&self) -> &Arc<dyn PageStore> {
        &self.pages
    }

    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// Unix milliseconds, by this instance's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Records in the store, all instances' (as of the last sweep).
    pub fn tracked(&self) -> u64 {
        self.record_count.load(Ordering::Relaxed)
    }

    /// Jobs in this instance's memory, by state.
    pub fn live_by_state(&self) -> HashMap<&'static str, u64> {
        let mut counts = HashMap::new();
        for tracked in self.live.lock().values() {
            *counts.entry(tracked.state().as_str()).or_insert(0) += 1;
        }
        counts
    }

    pub fn get_live(&self, id: Uuid) -> Option<Arc<Tracked>> {
        self.live.lock().get(&id).cloned()
    }

    fn track(&self, record: &JobRecord, kind: &'static str) -> Arc<Tracked> {
        let ttl_ms = self.config.result_ttl.as_millis() as u64;
        let tenant = record.tenant.as_deref().map(Arc::from);
        let (id, created_ms) = (record.id, record.created_ms);
        let tracked = Tracked::new(
            id,
            kind,
            tenant,
            created_ms,
            ttl_ms,
            Arc::clone(&self.clock),
        );
        self.live.lock().insert(id, Arc::clone(&tracked));
        tracked
    }

    /// The job as it stands: from memory if this instance runs it, else
    /// from its record (finished jobs after a restart, other instances').
    pub async fn snapshot(&self, id: Uuid) -> Result<Option<JobSnapshot>, ApiError> {
        if let Some(tracked) = self.get_live(id) {
            return Ok(Some(tracked.snapshot()));
        }
        let record = self.records.get(id).await.map_err(unreadable)?;
        Ok(record.map(|r| self.snapshot_of_record(&r)))
    }

    fn snapshot_of_record(&self, record: &JobRecord) -> JobSnapshot {
        let pages = record
            .result
            .clone()
            .and_then(|r| serde_json::from_value::<ReplyPages>(r).ok())
            .unwrap_or_default()
            .pages;
        let count = pages.len() as u64;
        JobSnapshot {
            job_id: record.id,
            kind: record.kind.clone(),
            tenant: record.tenant.as_deref().map(Arc::from),
            state: record.state,
            position: None,
            worker: None,
            done: count,
            total: (count > 0).then_some(count),
            pages,
            result: record.result.clone(),
            error: record.error.clone(),
            created_ms: record.created_ms,
            started_ms: None,
            finished_ms: record.finished_ms,
            expires_ms: record
                .finished_ms
                .map(|f| f + self.config.result_ttl.as_millis() as u64),
        }
    }

    /// The job an idempotency key names, if any. The same key with another
    /// request is refused (422): the key promised the same request.
    /// Whether a job already holds the idempotency key `key` (whatever its
    /// request was).
    pub async fn key_is_taken(&self, key: &str) -> Result<bool, ApiError> {
        let record = self.records.find_by_key(key.to_string()).await;
        Ok(record.map_err(unreadable)?.is_some())
    }

    pub async fn find_by_key(&self, idem: &Idempotency) -> Result<Option<JobSnapshot>, ApiError> {
        let record = self
            .records
            .find_by_key(idem.key.clone())
            .await
            .map_err(unreadable)?;
        match record {
            None => Ok(None),
            Some(r) if r.fingerprint.as_deref() == Some(idem.fingerprint.as_str()) => {
                self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                Ok(Some(match self.get_live(r.id) {
                    Some(tracked) => tracked.snapshot(),
                    None => self.snapshot_of_record(&r),
                }))
            }
            Some(r) => Err(ApiError::IdempotencyKeyReused(format!(
                "Idempotency-Key {:?} was used for another request (job {})",
                idem.key, r.id
            ))),
        }
    }

    /// Records `request` durably, then admits it to `queue` exactly as a
    /// sync job would be (same 503s), and lets it run detached. Returns
    /// once both are done: a 202 is a promise the job survives a crash, and
    /// a job never starts before its record exists (so two requests with
    /// one idempotency key never both run). A job the queue refuses after
    /// all has its record deleted again, freeing its key.
    pub async fn submit<W: Worker>(
        self: &Arc<Self>,
        queue: &JobQueue<W>,
        request: AsyncRequest<W>,
    ) -> Result<Accepted, ApiError> {
        let AsyncRequest {
            job_id,
            kind,
            job,
            mut options,
            request,
            idempotency,
            input,
            to_result,
            record_place,
            queue_place,
            tenant,
        } = request;
        // A record's place first, so concurrent submits cannot all pass the
        // bound; given back if the job is not recorded.
        let record_place = match record_place {
            Some(place) => place,
            None => match self.reserve_record() {
                Ok(place) => place,
                Err(e) => {
                    self.remove_input(input.as_ref()).await;
                    return Err(e);
                }
            },
        };
        let created_ms = self.now_ms();
        options.detached = true;
        options.job_id = Some(job_id);
        let tracked = Tracked::new(
            job_id,
            kind,
            tenant.clone(),
            created_ms,
            self.config.result_ttl.as_millis() as u64,
            Arc::clone(&self.clock),
        );
        options.observer = Some(Arc::clone(&tracked) as Arc<dyn JobObserver>);
        let record = JobRecord {
            id: job_id,
            kind: kind.to_string(),
            state: JobState::Queued,
            owner: self.instance_id().to_string(),
            idempotency_key: idempotency.as_ref().map(|i| i.key.clone()),
            fingerprint: idempotency.as_ref().map(|i| i.fingerprint.clone()),
            request,
            result: None,
            error: None,
            created_ms,
            updated_ms: created_ms,
            finished_ms: None,
            tenant: tenant.as_deref().map(str::to_string),
        };
        // The task owns the job from here: a client that hangs up while
        // the record is written does not cancel it.
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        let jobs = Arc::clone(self);
        let queue = queue.clone();
        let task_tracked = Arc::clone(&tracked);
        self.tasks.spawn(async move {
            if let Err(e) = jobs.records.insert(record).await {
                // Unrecorded: the job must not run.
                drop(record_place);
                jobs.remove_input(input.as_ref()).await;
                let _ = ack_tx.send(Err(Refused::Unrecorded(e)));
                return;
            }
            record_place.commit();
            let admitted = match queue_place {
                Some(place) => queue.submit_in(place, job, options),
                None => queue.submit(job, options),
            };
            let pending = match admitted {
                Ok(pending) => pending,
                Err(e) => {
                    if let Err(gone) = jobs.records.delete(vec![job_id]).await {
                        tracing::warn!(%job_id, "cannot delete the record of a refused job: {gone}");
                    }
                    jobs.give_back_place();
                    jobs.remove_input(input.as_ref()).await;
                    let _ = ack_tx.send(Err(Refused::Queue(e)));
                    return;
                }
            };
            task_tracked.set_control(Box::new(pending.handle()));
            jobs.live.lock().insert(job_id, Arc::clone(&task_tracked));
            jobs.stats.submitted.fetch_add(1, Ordering::Relaxed);
            let _ = ack_tx.send(Ok(()));
            let reply = pending.wait().await.map(to_result);
            jobs.finish(&task_tracked, reply, input.as_ref()).await;
        });
        match ack_rx.await {
            Ok(Ok(())) => Ok(Accepted {
                job: tracked.snapshot(),
                replayed: false,
            }),
            Ok(Err(Refused::Unrecorded(StoreError::DuplicateKey))) => {
                // Another request with the same key won the race.
                let Some(idem) = idempotency.as_ref() else {
                    return Err(ApiError::Internal(
                        "idempotency key conflict without a key".into(),
                    ));
                };
                match self.find_by_key(idem).await? {
                    Some(job) => Ok(Accepted {
                        job,
                        replayed: true,
                    }),
                    None => Err(ApiError::Internal(
                        "idempotency key conflict without a job".into(),
                    )),
                }
            }
            Ok(Err(Refused::Unrecorded(e))) => Err(ApiError::Unavailable(format!(
                "the job database cannot record the job: {e}"
            ))),
            Ok(Err(Refused::Queue(e))) => Err(e.into()),
            Err(_) => Err(ApiError::Internal("the job's task ended early".into())),
        }
    }

    /// Reserves a place for one more record: 503 `too_many_jobs` when the
    /// records and the places already reserved reach `MAX_TRACKED_JOBS`.
    pub fn reserve_record(self: &Arc<Self>) -> Result<RecordPlace, ApiError> {
        let max = self.config.max_tracked;
        let reserved =
            self.reserved_records
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                    (self.record_count.load(Ordering::Acquire) + r < max).then_some(r + 1)
                });
        if reserved.is_err() {
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::TooManyJobs {
                max,
                retry_after: self.config.result_ttl.as_secs().clamp(1, 60),
            });
        }
        Ok(RecordPlace {
            jobs: Arc::clone(self),
            held: true,
        })
    }

    /// Gives back a place reserved for a record that was not written; a
    /// sweep's recount may have landed in between, so never below zero.
    fn give_back_place(&self) {
        let _ = self
            .record_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    async fn remove_input(&self, input: Option<&InputRef>) {
        if let Some(input) = input {
            if let Err(e) = self.pages.remove_input(input).await {
                tracing::warn!(?input, "cannot remove a job's kept input: {e}");
            }
        }
    }

    /// Records how a job ended. A job stopped by shutdown (not by DELETE)
    /// is left `queued` in the records, input kept, to run after restart.
    async fn finish(
        &self,
        tracked: &Tracked,
        reply: Result<Value, QueueError>,
        input: Option<&InputRef>,
    ) {
        let (state, result, error) = match reply {
            Ok(result) => (JobState::Done, Some(result), None),
            Err(err) => {
                let state = match &err {
                    QueueError::Job { source, .. } => match source {
                        JobError::Cancelled if tracked.cancel_requested() => {
                            Some(JobState::Cancelled)
                        }
                        JobError::QueueTimeout { .. } | JobError::Timeout { .. } => {
                            Some(JobState::Expired)
                        }
                        JobError::Cancelled | JobError::ShuttingDown => None,
                        _ => Some(JobState::Failed),
                    },
                    QueueError::ShuttingDown => None,
                    QueueError::Full { .. } | QueueError::FairShare { .. } => {
                        Some(JobState::Failed)
                    }
                };
                let Some(state) = state else {
                    tracing::info!(job_id = %tracked.id, "async job stopped by shutdown; it runs again at the next start");
                    return;
                };
                (state, None, Some(error_value(&ApiError::from(err))))
            }
        };
        if !tracked.end(state, result.clone(), error.clone()) {
            return;
        }
        tracing::info!(job_id = %tracked.id, kind = tracked.kind, state = state.as_str(), "async job ended");
        let change = records::Change {
            state,
            result,
            error,
            finished_ms: tracked.finished_ms(),
        };
        self.records.update(tracked.id, change);
        self.remove_input(input).await;
    }

    /// Ends a job that will not run again (a recovered job past its
    /// deadline, one whose input is gone).
    pub async fn finish_unrun(&self, record: &JobRecord, kind: &'static str, err: QueueError) {
        let tracked = self.track(record, kind);
        let input = InputRef::Kept { job_id: record.id };
        self.finish(&tracked, Err(err), Some(&input)).await;
    }

    /// Cancels a job (DELETE): a queued one never runs, a running one is
    /// stopped. Waits briefly for the job to reach its final state so the
    /// answer shows it. `Ok(None)`: no such job here or in the records.
    pub async fn cancel(&self, id: Uuid) -> Result<Option<JobSnapshot>, ApiError> {
        let Some(tracked) = self.get_live(id) else {
            return match self.snapshot(id).await? {
                None => Ok(None),
                Some(job) if job.state.is_final() => Err(already_ended(id, job.state)),
                Some(_) => Err(ApiError::Conflict(format!(
                    "job {id} runs on another instance; cancel it there"
                ))),
            };
        };
        if !tracked.request_cancel() {
            return Err(already_ended(id, tracked.state()));
        }
        // A running job stops within milliseconds (its renderer is
        // killed); the bound only keeps a stuck worker from holding the
        // request.
        let log = tracked.log();
        let from = log.len().saturating_sub(1);
        let ended = futures_util::StreamExt::collect::<Vec<_>>(log.follow(from));
        let _ = tokio::time::timeout(Duration::from_secs(2), ended).await;
        let job = tracked.snapshot();
        // The job may have finished on its own as the cancel arrived: then
        // it was not cancelled, and the answer says how it ended.
        if job.state.is_final() && job.state != JobState::Cancelled {
            return Err(already_ended(id, job.state));
        }
        Ok(Some(job))
    }

    /// Runs a recovered job again (its record claimed by this instance).
    pub async fn resume<W: Worker>(
        self: &Arc<Self>,
        queue: &JobQueue<W>,
        record: &JobRecord,
        job: W::Job,
        mut options: SubmitOptions,
        to_result: ToResult<W::Output>,
        input: Option<InputRef>,
    ) {
        let tracked = self.track(record, queue.name());
        options.detached = true;
        options.job_id = Some(record.id);
        options.observer = Some(Arc::clone(&tracked) as Arc<dyn JobObserver>);
        let mut job = Some(job);
        // The queue may be full of new work: wait for room rather than
        // drop a promised job.
        let pending = loop {
            let Some(next) = job.take() else { return };
            match queue.submit_or_return(next, options.clone()) {
                Ok(pending) => break pending,
                Err((back, QueueError::Full { retry_after, .. })) => {
                    job = Some(back);
                    tokio::time::sleep(Duration::from_secs(retry_after.min(5))).await;
                }
                Err((_, _)) => {
                    // Draining: it stays queued in the records.
                    self.live.lock().remove(&record.id);
                    return;
                }
            }
        };
        self.stats.recovered.fetch_add(1, Ordering::Relaxed);
        tracked.set_control(Box::new(pending.handle()));
        let jobs = Arc::clone(self);
        self.tasks.spawn(async move {
            let reply = pending.wait().await.map(to_result);
            jobs.finish(&tracked, reply, input.as_ref()).await;
        });
    }

    /// The workers have stopped: end every event stream still open.
    pub fn begin_close(&self) {
        self.closing.cancel();
    }

    /// Resolves when the event streams must end.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.closing.clone().cancelled_owned()
    }

    /// After the worker pools stopped: lets the jobs' tasks record their
    /// outcomes, then commits every pending write.
    pub async fn close(&self, wait: Duration) {
        self.tasks.close();
        let _ = tokio::time::timeout(wait, self.tasks.wait()).await;
        self.records.flush().await;
        self.lease.resign();
    }
}
