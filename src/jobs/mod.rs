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
//! [`AsyncJobs`] owns every async job this instance runs: a [`Tracked`] per
//! job in memory (state, progress, the event log that `GET
//! /jobs/{id}/events` streams) and a row per job in the SQLite
//! [`store`] under `OUTPUT_DIR`, so a crashed server's queued and running jobs
//! are run again on restart and finished ones are served until their TTL.
//! Sync jobs are never recorded: their caller left with the connection.
//!
//! Several instances may share `OUTPUT_DIR` (and so the database): each holds
//! an [`election::InstanceLock`] while alive, and jobs whose owner died are
//! claimed by the next instance to look (at start, then the primary every
//! sweep). Removing expired results is a singleton, run by the instance
//! that holds the [`election::Election`] lock.
//!
//! What a job needs to run again is recorded with it: its parameters as
//! JSON, and an uploaded PDF as a file under `OUTPUT_DIR/.jobs/inputs/`,
//! removed when the job ends.

pub mod election;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::JobsConfig;
use crate::error::{ApiError, ErrorBody, JobError};
use crate::queue::{
    Completed, JobHandle, JobObserver, JobQueue, QueueError, SubmitOptions, Worker,
};
use election::{Election, InstanceLock};
pub use store::{JobRecord, JobState, Store, StoreError};

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What `GET /jobs/{id}` answers, and the data of every `state` event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub job_id: Uuid,
    /// Worker type: `pdf` or `message`.
    pub kind: String,
    /// `queued`, `running`, `done`, `failed`, `cancelled` or `expired`.
    #[schema(value_type = String)]
    pub state: JobState,
    /// Jobs ahead of this one while queued (0: next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Units (pages) done so far, and in all once known.
    pub done: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Pages rendered so far (PDF jobs), each with its URL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub pages: Vec<Value>,
    /// The reply a sync request would have got, once `done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Why it ended, once `failed`, `cancelled` or `expired`: the error
    /// body a sync request would have got, with its HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub created_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// Unix ms after which the job and its output are removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    pub links: Links,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

impl Links {
    fn of(id: Uuid, kind: &str) -> Links {
        Links {
            this: format!("/jobs/{id}"),
            events: format!("/jobs/{id}/events"),
            archive: (kind == "pdf").then(|| format!("/jobs/{id}/archive")),
        }
    }
}

/// One event of a job's stream: `state` (data: the whole [`JobView`]) or
/// `page` (data: the page, with `done` and `total`).
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub name: &'static str,
    pub data: Value,
    /// The job's last event.
    pub last: bool,
}

/// What a live job is doing, guarded by [`Tracked::live`].
struct Live {
    state: JobState,
    worker: Option<String>,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    done: u64,
    total: Option<u64>,
    pages: Vec<Value>,
    result: Option<Value>,
    error: Option<Value>,
    events: Vec<JobEvent>,
    /// DELETE asked for it; tells a user's cancel from a shutdown's.
    cancel_requested: bool,
}

/// Cancels the job and tells its place in line, whatever its worker type.
trait Control: Send + Sync {
    fn cancel(&self);
    fn position(&self) -> Option<u64>;
}

impl<W: Worker> Control for JobHandle<W> {
    fn cancel(&self) {
        JobHandle::cancel(self);
    }
    fn position(&self) -> Option<u64> {
        JobHandle::position(self)
    }
}

/// An async job this instance runs: its state in memory and its events.
pub struct Tracked {
    pub id: Uuid,
    pub kind: &'static str,
    created_ms: u64,
    ttl_ms: u64,
    live: Mutex<Live>,
    /// Bumped to the number of events after each one.
    changed: watch::Sender<usize>,
    control: Mutex<Option<Box<dyn Control>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tracked {
    fn new(id: Uuid, kind: &'static str, created_ms: u64, ttl: Duration) -> Arc<Tracked> {
        let tracked = Arc::new(Tracked {
            id,
            kind,
            created_ms,
            ttl_ms: ttl.as_millis() as u64,
            live: Mutex::new(Live {
                state: JobState::Queued,
                worker: None,
                started_ms: None,
                finished_ms: None,
                done: 0,
                total: None,
                pages: Vec::new(),
                result: None,
                error: None,
                events: Vec::new(),
                cancel_requested: false,
            }),
            changed: watch::channel(0).0,
            control: Mutex::new(None),
        });
        tracked.push_state(&mut lock(&tracked.live));
        tracked
    }

    fn view_of(&self, live: &Live) -> JobView {
        let position = if live.state == JobState::Queued {
            lock(&self.control).as_ref().and_then(|c| c.position())
        } else {
            None
        };
        JobView {
            job_id: self.id,
            kind: self.kind.to_string(),
            state: live.state,
            position,
            worker: live.worker.clone(),
            done: live.done,
            total: live.total,
            pages: {
                // Pages arrive in render order, which fan-out mixes.
                let mut pages = live.pages.clone();
                pages.sort_by_key(|p| p.get("page").and_then(Value::as_u64));
                pages
            },
            result: live.result.clone(),
            error: live.error.clone(),
            created_ms: self.created_ms,
            started_ms: live.started_ms,
            finished_ms: live.finished_ms,
            expires_ms: live.finished_ms.map(|f| f + self.ttl_ms),
            links: Links::of(self.id, self.kind),
        }
    }

    pub fn view(&self) -> JobView {
        self.view_of(&lock(&self.live))
    }

    pub fn state(&self) -> JobState {
        lock(&self.live).state
    }

    fn finished_ms(&self) -> Option<u64> {
        lock(&self.live).finished_ms
    }

    /// Appends an event and wakes the streams.
    fn push(&self, live: &mut Live, event: JobEvent) {
        live.events.push(event);
        self.changed.send_replace(live.events.len());
    }

    fn push_state(&self, live: &mut Live) {
        let view = self.view_of(live);
        let last = view.state.is_final();
        let data = serde_json::to_value(view).unwrap_or_default();
        self.push(
            live,
            JobEvent {
                name: "state",
                data,
                last,
            },
        );
    }

    /// Events from `from` on, and whether the job has ended.
    pub fn events_since(&self, from: usize) -> (Vec<JobEvent>, usize) {
        let live = lock(&self.live);
        let from = from.min(live.events.len());
        (live.events[from..].to_vec(), live.events.len())
    }

    /// A receiver that changes with every new event.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.changed.subscribe()
    }

    /// Records the final outcome, once; later calls are ignored.
    fn finish(&self, state: JobState, result: Option<Value>, error: Option<Value>) -> bool {
        let mut live = lock(&self.live);
        if live.state.is_final() {
            return false;
        }
        live.state = state;
        if state != JobState::Done {
            // A job that did not finish leaves no pages behind.
            live.pages.clear();
        }
        live.result = result;
        live.error = error;
        live.finished_ms = Some(now_ms());
        self.push_state(&mut live);
        true
    }

    /// Stops the job (DELETE). False if it had already ended.
    fn request_cancel(&self) -> bool {
        {
            let mut live = lock(&self.live);
            if live.state.is_final() {
                return false;
            }
            live.cancel_requested = true;
        }
        if let Some(control) = lock(&self.control).as_ref() {
            control.cancel();
        }
        true
    }
}

impl JobObserver for Tracked {
    fn started(&self, worker: &str) {
        let mut live = lock(&self.live);
        if live.state.is_final() {
            return;
        }
        live.state = JobState::Running;
        live.worker = Some(worker.to_string());
        live.started_ms = Some(now_ms());
        self.push_state(&mut live);
    }

    fn total(&self, total: u64) {
        lock(&self.live).total = Some(total);
    }

    fn unit(&self, done: u64, mut detail: Value) {
        let mut live = lock(&self.live);
        live.done = done;
        let page = detail.get("page").and_then(Value::as_u64);
        if let (Some(fields), Some(page)) = (detail.as_object_mut(), page) {
            fields.insert(
                "url".into(),
                Value::String(format!("/jobs/{}/pages/{page}", self.id)),
            );
        }
        live.pages.push(detail.clone());
        let mut data = detail;
        if let Some(fields) = data.as_object_mut() {
            fields.insert("done".into(), done.into());
            fields.insert("total".into(), live.total.into());
        }
        self.push(
            &mut live,
            JobEvent {
                name: "page",
                data,
                last: false,
            },
        );
    }
}

/// A request's idempotency key and a digest of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

/// Everything needed to run a job asynchronously.
pub struct AsyncRequest<W: Worker> {
    pub job_id: Uuid,
    pub kind: &'static str,
    pub job: W::Job,
    pub options: SubmitOptions,
    /// Recorded with the job so it can run again after a restart.
    pub request: Value,
    pub idempotency: Option<Idempotency>,
    /// A file made for this job (an upload), removed when it ends.
    pub input: Option<PathBuf>,
    /// Turns the output into the reply a sync request would get.
    pub to_result: Box<dyn FnOnce(Completed<W::Output>) -> Value + Send>,
}

/// A job accepted in async mode (or found by its idempotency key).
pub struct Accepted {
    pub view: JobView,
    /// The key matched an earlier request: this is that job.
    pub replayed: bool,
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

/// Every async job of this instance, and the shared record store.
pub struct AsyncJobs {
    config: JobsConfig,
    out_dir: PathBuf,
    store: Arc<Store>,
    instance: InstanceLock,
    election: Election,
    live: Mutex<HashMap<Uuid, Arc<Tracked>>>,
    /// Records in the store (all instances'): a place is reserved before a
    /// submit is admitted and given back if it is not recorded, and the
    /// count is taken again from the store each sweep (a record written
    /// during that count may be missed until the next one).
    tracked: AtomicU64,
    tasks: TaskTracker,
    /// Cancelled when the server has stopped its workers: event streams
    /// still open then end (a job left queued for the next start would
    /// otherwise hold its stream, and the graceful shutdown, open forever).
    closing: CancellationToken,
    pub stats: JobsStats,
}

/// How long a finished job stays in memory (events, pages) before the
/// database alone answers for it.
pub const FINISHED_IN_MEMORY: Duration = Duration::from_secs(10);

/// `OUTPUT_DIR/.jobs`: locks and kept inputs.
fn jobs_dir(out_dir: &Path) -> PathBuf {
    out_dir.join(".jobs")
}

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

impl AsyncJobs {
    /// Opens the store under `out_dir`, marks this instance alive and
    /// joins the primary election. A corrupt or unwritable database is an
    /// error naming the file: the server does not start with it.
    pub fn open(config: JobsConfig, out_dir: &Path) -> Result<Arc<AsyncJobs>, String> {
        let dir = jobs_dir(out_dir);
        for sub in ["instances", "inputs"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        let store = Store::open(&out_dir.join("jobs.db")).map_err(|e| e.to_string())?;
        let instance =
            InstanceLock::acquire(&dir.join("instances"), &Uuid::new_v4().to_string())
                .map_err(|e| format!("cannot lock {}: {e}", dir.join("instances").display()))?;
        let election = Election::start(dir.join("primary.lock"))
            .map_err(|e| format!("cannot open {}: {e}", dir.join("primary.lock").display()))?;
        let tracked = store.count().map_err(|e| e.to_string())?;
        Ok(Arc::new(AsyncJobs {
            config,
            out_dir: out_dir.to_path_buf(),
            store: Arc::new(store),
            instance,
            election,
            live: Mutex::new(HashMap::new()),
            tracked: AtomicU64::new(tracked),
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            stats: JobsStats::default(),
        }))
    }

    pub fn instance_id(&self) -> &str {
        self.instance.id()
    }

    pub fn is_primary(&self) -> bool {
        self.election.is_primary()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// Records in the store, all instances' (as of the last sweep).
    pub fn tracked(&self) -> u64 {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Jobs in this instance's memory, by state.
    pub fn live_by_state(&self) -> HashMap<&'static str, u64> {
        let mut counts = HashMap::new();
        for tracked in lock(&self.live).values() {
            *counts.entry(tracked.state().as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// Where an upload for an async job is kept until the job ends.
    pub fn input_path(&self, job_id: Uuid) -> PathBuf {
        jobs_dir(&self.out_dir)
            .join("inputs")
            .join(format!("{job_id}.pdf"))
    }

    pub fn get_live(&self, id: Uuid) -> Option<Arc<Tracked>> {
        lock(&self.live).get(&id).cloned()
    }

    /// The job's view: from memory if this instance runs it, else from
    /// the store (finished jobs after a restart, other instances' jobs).
    pub fn view(&self, id: Uuid) -> Result<Option<JobView>, ApiError> {
        if let Some(tracked) = self.get_live(id) {
            return Ok(Some(tracked.view()));
        }
        let record = self
            .store
            .get(id)
            .map_err(|e| ApiError::Unavailable(format!("the job database cannot be read: {e}")))?;
        Ok(record.map(|r| self.view_of_record(&r)))
    }

    fn view_of_record(&self, record: &JobRecord) -> JobView {
        let pages = record
            .result
            .as_ref()
            .and_then(|r| r.get("pages"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        JobView {
            job_id: record.id,
            kind: record.kind.clone(),
            state: record.state,
            position: None,
            worker: None,
            done: pages.len() as u64,
            total: (!pages.is_empty()).then_some(pages.len() as u64),
            pages,
            result: record.result.clone(),
            error: record.error.clone(),
            created_ms: record.created_ms,
            started_ms: None,
            finished_ms: record.finished_ms,
            expires_ms: record
                .finished_ms
                .map(|f| f + self.config.result_ttl.as_millis() as u64),
            links: Links::of(record.id, &record.kind),
        }
    }

    /// The job an idempotency key names, if any. The same key with another
    /// request is refused (422): the key promised the same request.
    pub fn find_by_key(&self, idem: &Idempotency) -> Result<Option<JobView>, ApiError> {
        let record = self
            .store
            .find_by_key(&idem.key)
            .map_err(|e| ApiError::Unavailable(format!("the job database cannot be read: {e}")))?;
        match record {
            None => Ok(None),
            Some(r) if r.fingerprint.as_deref() == Some(idem.fingerprint.as_str()) => {
                self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                Ok(Some(
                    self.view(r.id)?.unwrap_or_else(|| self.view_of_record(&r)),
                ))
            }
            Some(r) => Err(ApiError::IdempotencyKeyReused(format!(
                "Idempotency-Key {:?} was used for another request (job {})",
                idem.key, r.id
            ))),
        }
    }

    /// Admits `request` to `queue` exactly as a sync job would be (same
    /// 503s), records it durably, and lets it run detached. Returns once
    /// the record is committed: a 202 is a promise the job survives a crash.
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
        } = request;
        let remove_input = || {
            if let Some(path) = &input {
                let _ = std::fs::remove_file(path);
            }
        };
        // Reserve a record's place first, so concurrent submits cannot all
        // pass the bound; given back below if the job is not recorded.
        if self.tracked.fetch_add(1, Ordering::AcqRel) >= self.config.max_tracked {
            self.tracked.fetch_sub(1, Ordering::AcqRel);
            remove_input();
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::TooManyJobs {
                max: self.config.max_tracked,
                retry_after: self.config.result_ttl.as_secs().clamp(1, 60),
            });
        }
        let created_ms = now_ms();
        let tracked = Tracked::new(job_id, kind, created_ms, self.config.result_ttl);
        options.detached = true;
        options.job_id = Some(job_id);
        options.observer = Some(Arc::clone(&tracked) as Arc<dyn JobObserver>);
        let pending = match queue.submit(job, options) {
            Ok(pending) => pending,
            Err(e) => {
                self.tracked.fetch_sub(1, Ordering::AcqRel);
                remove_input();
                return Err(e.into());
            }
        };
        *lock(&tracked.control) = Some(Box::new(pending.handle()));
        lock(&self.live).insert(job_id, Arc::clone(&tracked));
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
        };
        // The task owns the job from here: a client that hangs up while
        // the record is written does not cancel it.
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        let jobs = Arc::clone(self);
        let task_tracked = Arc::clone(&tracked);
        self.tasks.spawn(async move {
            if let Err(e) = jobs.store.insert(record).await {
                // Unrecorded: the job must not run.
                jobs.tracked.fetch_sub(1, Ordering::AcqRel);
                drop(pending);
                lock(&jobs.live).remove(&job_id);
                if let Some(path) = &input {
                    let _ = std::fs::remove_file(path);
                }
                let _ = ack_tx.send(Err(e));
                return;
            }
            jobs.stats.submitted.fetch_add(1, Ordering::Relaxed);
            let _ = ack_tx.send(Ok(()));
            let reply = pending.wait().await.map(to_result);
            jobs.finish(&task_tracked, reply, input.as_deref());
        });
        match ack_rx.await {
            Ok(Ok(())) => Ok(Accepted {
                view: tracked.view(),
                replayed: false,
            }),
            Ok(Err(StoreError::DuplicateKey)) => {
                // Another request with the same key won the race.
                match idempotency.as_ref().map(|i| self.find_by_key(i)) {
                    Some(Ok(Some(view))) => Ok(Accepted {
                        view,
                        replayed: true,
                    }),
                    Some(Err(e)) => Err(e),
                    _ => Err(ApiError::Internal(
                        "idempotency key conflict without a job".into(),
                    )),
                }
            }
            Ok(Err(e)) => Err(ApiError::Unavailable(format!(
                "the job database cannot record the job: {e}"
            ))),
            Err(_) => Err(ApiError::Internal("the job's task ended early".into())),
        }
    }

    /// Records how a job ended. A job stopped by shutdown (not by DELETE)
    /// is left `queued` in the store, input kept, to run after restart.
    fn finish(&self, tracked: &Tracked, reply: Result<Value, QueueError>, input: Option<&Path>) {
        let cancel_requested = lock(&tracked.live).cancel_requested;
        let (state, result, error) = match reply {
            Ok(result) => (JobState::Done, Some(result), None),
            Err(err) => {
                let state = match &err {
                    QueueError::Job { source, .. } => match source {
                        JobError::Cancelled if cancel_requested => Some(JobState::Cancelled),
                        JobError::QueueTimeout { .. } | JobError::Timeout { .. } => {
                            Some(JobState::Expired)
                        }
                        JobError::Cancelled | JobError::ShuttingDown => None,
                        _ => Some(JobState::Failed),
                    },
                    QueueError::ShuttingDown => None,
                    QueueError::Full { .. } => Some(JobState::Failed),
                };
                let Some(state) = state else {
                    tracing::info!(job_id = %tracked.id, "async job stopped by shutdown; it runs again at the next start");
                    return;
                };
                (state, None, Some(error_value(&ApiError::from(err))))
            }
        };
        if !tracked.finish(state, result.clone(), error.clone()) {
            return;
        }
        tracing::info!(job_id = %tracked.id, kind = tracked.kind, state = state.as_str(), "async job ended");
        self.store
            .update(tracked.id, state, result, error, tracked.finished_ms());
        if let Some(path) = input {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Ends a job that will not run again (a recovered job past its
    /// deadline, one whose input is gone).
    pub fn finish_unrun(&self, record: &JobRecord, err: ApiError) {
        let tracked = Tracked::new(
            record.id,
            kind_name(&record.kind),
            record.created_ms,
            self.config.result_ttl,
        );
        let input = self.input_path(record.id);
        lock(&self.live).insert(record.id, Arc::clone(&tracked));
        let err = match err {
            ApiError::Job { job_id, source } => QueueError::Job { job_id, source },
            other => QueueError::job(record.id, JobError::Failed(other.to_string())),
        };
        self.finish(&tracked, Err(err), Some(&input));
    }

    /// Cancels a job (DELETE): a queued one never runs, a running one is
    /// stopped. Waits briefly for the job to reach its final state so the
    /// answer shows it. `Ok(None)`: no such job here or in the store.
    pub async fn cancel(&self, id: Uuid) -> Result<Option<JobView>, ApiError> {
        let Some(tracked) = self.get_live(id) else {
            return match self.view(id)? {
                None => Ok(None),
                Some(view) if view.state.is_final() => Err(ApiError::Conflict(format!(
                    "job {id} already ended ({})",
                    view.state.as_str()
                ))),
                Some(_) => Err(ApiError::Conflict(format!(
                    "job {id} runs on another instance; cancel it there"
                ))),
            };
        };
        if !tracked.request_cancel() {
            return Err(ApiError::Conflict(format!(
                "job {id} already ended ({})",
                tracked.state().as_str()
            )));
        }
        let mut changes = tracked.subscribe();
        let ended = async {
            while !tracked.state().is_final() {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        };
        // A running job stops within milliseconds (its renderer is
        // killed); the bound only keeps a stuck worker from holding the
        // request.
        let _ = tokio::time::timeout(Duration::from_secs(2), ended).await;
        let view = tracked.view();
        // The job may have finished on its own as the cancel arrived: then
        // it was not cancelled, and the answer says how it ended.
        if view.state.is_final() && view.state != JobState::Cancelled {
            return Err(ApiError::Conflict(format!(
                "job {id} already ended ({})",
                view.state.as_str()
            )));
        }
        Ok(Some(view))
    }

    /// Resumes a recovered job (its record claimed by this instance).
    pub async fn resume<W: Worker>(
        self: &Arc<Self>,
        queue: &JobQueue<W>,
        record: &JobRecord,
        job: W::Job,
        mut options: SubmitOptions,
        to_result: Box<dyn FnOnce(Completed<W::Output>) -> Value + Send>,
        input: Option<PathBuf>,
    ) {
        let tracked = Tracked::new(
            record.id,
            kind_name(&record.kind),
            record.created_ms,
            self.config.result_ttl,
        );
        options.detached = true;
        options.job_id = Some(record.id);
        options.observer = Some(Arc::clone(&tracked) as Arc<dyn JobObserver>);
        lock(&self.live).insert(record.id, Arc::clone(&tracked));
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
                    // Draining: it stays queued in the store.
                    lock(&self.live).remove(&record.id);
                    return;
                }
            }
        };
        self.stats.recovered.fetch_add(1, Ordering::Relaxed);
        *lock(&tracked.control) = Some(Box::new(pending.handle()));
        let jobs = Arc::clone(self);
        self.tasks.spawn(async move {
            let reply = pending.wait().await.map(to_result);
            jobs.finish(&tracked, reply, input.as_deref());
        });
    }

    /// Unfinished jobs whose owner died, claimed for this instance.
    pub fn claim_orphans(&self) -> Vec<JobRecord> {
        let dir = jobs_dir(&self.out_dir).join("instances");
        let records = match self.store.unfinished() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("cannot read unfinished jobs: {e}");
                return Vec::new();
            }
        };
        records
            .into_iter()
            .filter(|r| r.owner != self.instance_id())
            .filter(|r| election::instance_is_dead(&dir, &r.owner))
            .filter_map(
                |mut r| match self.store.claim(r.id, &r.owner, self.instance_id()) {
                    Ok(true) => {
                        r.owner = self.instance_id().to_string();
                        Some(r)
                    }
                    Ok(false) => None,
                    Err(e) => {
                        tracing::error!(job_id = %r.id, "cannot claim an orphaned job: {e}");
                        None
                    }
                },
            )
            .collect()
    }

    /// Periodic housekeeping. Every instance forgets its own finished jobs
    /// past the TTL and recounts the records; the primary alone removes
    /// expired records and output (async and sync) and dead instances'
    /// lock files.
    pub fn sweep(&self) {
        let cutoff = now_ms().saturating_sub(self.config.result_ttl.as_millis() as u64);
        self.forget_finished();
        if self.is_primary() {
            self.remove_expired(cutoff);
        }
        match self.store.count() {
            Ok(n) => self.tracked.store(n, Ordering::Relaxed),
            Err(e) => tracing::warn!("cannot count job records: {e}"),
        }
    }

    /// Drops finished jobs from memory once [`FINISHED_IN_MEMORY`] has
    /// passed: afterwards the database answers for them, so memory holds
    /// the running jobs and those of the last seconds, not a TTL's worth of
    /// pages and events. Cheap; run more often than [`AsyncJobs::sweep`].
    pub fn forget_finished(&self) {
        let ttl_ms = self.config.result_ttl.as_millis() as u64;
        let keep_ms = ttl_ms.min(FINISHED_IN_MEMORY.as_millis() as u64);
        let forget_before = now_ms().saturating_sub(keep_ms);
        lock(&self.live).retain(|_, t| t.finished_ms().is_none_or(|f| f > forget_before));
    }

    fn remove_expired(&self, cutoff: u64) {
        loop {
            let ids = match self.store.finished_before(cutoff, 500) {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!("cannot list expired jobs: {e}");
                    return;
                }
            };
            if ids.is_empty() {
                break;
            }
            for id in &ids {
                let _ = std::fs::remove_dir_all(self.out_dir.join(id.to_string()));
                let _ = std::fs::remove_file(self.input_path(*id));
            }
            if let Err(e) = self.store.delete(&ids) {
                tracing::error!("cannot delete expired jobs: {e}");
                return;
            }
            self.stats
                .removed
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            tracing::info!(jobs = ids.len(), "removed expired async jobs");
            if ids.len() < 500 {
                break;
            }
        }
        // Sync jobs' output has no record: its folder's age tells.
        let cutoff_time = UNIX_EPOCH + Duration::from_millis(cutoff);
        let Ok(entries) = std::fs::read_dir(&self.out_dir) else {
            return;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < cutoff_time);
            if old
                && matches!(self.store.get(id), Ok(None))
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(folders = removed, "removed expired sync job output");
        }
        election::remove_dead_instance_locks(&jobs_dir(&self.out_dir).join("instances"));
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
        let store = Arc::clone(&self.store);
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
        self.election.resign();
    }
}

/// The static name of a worker type read back from the store.
fn kind_name(kind: &str) -> &'static str {
    match kind {
        "pdf" => "pdf",
        "message" => "message",
        _ => "unknown",
    }
}
