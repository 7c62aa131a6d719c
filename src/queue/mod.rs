//! The async/sync boundary: one bounded queue and one pool of dedicated OS
//! threads per worker type, and the oneshot that carries each answer back.
//!
//! ```text
//! handler ──submit──▶ JobQueue::run ──try_send──▶ [bounded channel] ──▶ worker thread
//!    ▲                    │  full → 503                                  │ Worker::process
//!    └──── answer ◀─── oneshot ◀──────────────────────────────────────────┘
//! ```
//!
//! Handlers never touch channels: they call [`JobQueue::run`], which makes the
//! oneshot, `try_send`s the job (a full queue is refused at once with 503 and
//! a `Retry-After` computed from depth, recent run time and worker count) and
//! awaits the answer under two deadlines: the queue budget (a job still
//! waiting when it passes is answered 504 and will never start) and the total
//! budget (a running job is told to stop, and the caller gets 504).
//!
//! Exactly one answer per job is guaranteed by a small state machine shared by
//! the caller and the worker (`Ticket`): a job is `QUEUED`, then either the
//! worker moves it to `RUNNING` or the caller moves it to `ABANDONED` (queue
//! deadline, client gone). Whoever wins the compare-and-swap owns the outcome,
//! so a worker never starts a job nobody waits for, and a caller never gives
//! up on a job that is already running without also cancelling it.
//!
//! The worker loop is written once ([`JobQueue::start`]): named threads, the
//! caller's tracing span re-entered, `catch_unwind` around each job so a panic
//! costs one request and not the thread, cancellation through the ticket.
//! Shutdown is explicit ([`JobQueue::begin_drain`], [`JobQueue::join`])
//! rather than by dropping senders, because clones of the router (tests, the
//! server's connections) keep handles alive for as long as they like.

mod pending;
mod pool;
mod share;
mod stats;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod ticket;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::config::PoolConfig;
use crate::tenants::Tenant;

pub use pending::{JobHandle, Outcome, Pending};
pub use pool::WorkerStatus;
pub use share::{ShareHold, Shares, CONTENDING};
pub use stats::{FinishedJob, QueueStats, WindowStats, HISTORY_SECS};
pub use worker::{Completed, JobContext, JobError, JobObserver, Never, Worker};

use pool::{supervise, Envelope, WorkerSlot};
use ticket::Ticket;

/// Why a queue turned a job away or could not answer it: its own error
/// type, which the HTTP side maps to statuses (`From<QueueError> for
/// ApiError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// Every place in the queue is taken (503 with `Retry-After`).
    #[error("the {queue} queue is full ({capacity} waiting); retry in {retry_after} s")]
    Full {
        queue: &'static str,
        capacity: usize,
        retry_after: u64,
    },
    /// The tenant holds its share of the places while others wait (429).
    #[error(
        "tenant {tenant} holds its fair share of the {queue} queue ({share} of {capacity} places)"
    )]
    FairShare {
        tenant: Arc<str>,
        queue: &'static str,
        share: usize,
        capacity: usize,
        retry_after: u64,
    },
    /// The pool is draining and admits nothing.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The job was admitted and then failed, timed out or was cancelled.
    #[error("{source}")]
    Job { job_id: Uuid, source: JobError },
}

impl QueueError {
    pub fn job(job_id: Uuid, source: JobError) -> Self {
        QueueError::Job { job_id, source }
    }
}

struct Inner<W: Worker> {
    name: &'static str,
    config: PoolConfig,
    tx: Sender<Envelope<W>>,
    /// Kept so that a draining pool can answer what is still queued.
    rx: Receiver<Envelope<W>>,
    draining: AtomicBool,
    /// Dropped to tell the worker threads to exit once idle.
    shutdown_tx: Mutex<Option<Sender<Never>>>,
    slots: Vec<Arc<WorkerSlot>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stats: QueueStats,
    /// Jobs admitted and jobs taken off the channel (started, skipped or
    /// drained): their difference gives a queued job's place in line.
    admitted: AtomicU64,
    taken: AtomicU64,
    /// Places taken: jobs in the channel plus places reserved for jobs
    /// still being read ([`Place`]); never above the capacity.
    places: AtomicUsize,
    /// The places each tenant holds, when requests carry one.
    shares: Arc<Shares>,
}

impl<W: Worker> Inner<W> {
    /// A job left the channel (taken by a worker, or drained): its place
    /// is free again.
    fn took_one(&self) {
        self.taken.fetch_add(1, Ordering::AcqRel);
        self.places.fetch_sub(1, Ordering::AcqRel);
    }

    fn full(&self) -> QueueError {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        QueueError::Full {
            queue: self.name,
            capacity: self.config.queue_capacity,
            retry_after: retry_after(self),
        }
    }
}

/// Seconds a refused client should wait: the time the workers need to
/// work through the queue ahead of it, at least 1.
fn retry_after<W: Worker>(inner: &Inner<W>) -> u64 {
    let mean = inner.stats.mean_run().as_secs_f64();
    let ahead = (inner.tx.len() + 1) as f64;
    let secs = (ahead * mean / inner.config.workers as f64).ceil();
    (secs as u64).max(1)
}

/// A place in a queue, reserved before the job exists (while its request
/// body is still being read), so that requests arriving together cannot
/// all see room. Submitting a job with it ([`JobQueue::submit_in`]) moves
/// the place to the job; dropping it gives the place back.
pub struct Place<W: Worker> {
    inner: Arc<Inner<W>>,
    held: bool,
    /// The tenant's hold on this place; it goes with the job.
    share: Option<ShareHold>,
}

impl<W: Worker> Drop for Place<W> {
    fn drop(&mut self) {
        if self.held {
            self.inner.places.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<W: Worker> std::fmt::Debug for Place<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Place({})", self.inner.name)
    }
}

/// Options a caller may set on one job.
#[derive(Default, Clone)]
pub struct SubmitOptions {
    /// A shorter total budget than the queue's; longer ones are clamped.
    pub timeout: Option<Duration>,
    /// Run under the async budget (`<TYPE>_ASYNC_TIMEOUT_MS`): nobody holds
    /// a connection open, so the queue budget is the whole budget.
    pub detached: bool,
    /// The job's id, when the caller chose it (async jobs are recorded
    /// before they are admitted); a fresh one otherwise.
    pub job_id: Option<Uuid>,
    /// Told of the job's start and progress on the worker thread.
    pub observer: Option<Arc<dyn JobObserver>>,
}

impl std::fmt::Debug for SubmitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitOptions")
            .field("timeout", &self.timeout)
            .field("detached", &self.detached)
            .field("job_id", &self.job_id)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// A cheap, cloneable handle to one worker type's queue and threads.
pub struct JobQueue<W: Worker> {
    inner: Arc<Inner<W>>,
}

impl<W: Worker> Clone for JobQueue<W> {
    fn clone(&self) -> Self {
        JobQueue {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<W: Worker> JobQueue<W> {
    /// Creates the queue and starts `config.workers` threads named
    /// `<name>-worker-<i>`. `factory(i)` runs on thread `i` itself and builds
    /// its per-thread context.
    pub fn start<F>(name: &'static str, config: PoolConfig, factory: F) -> std::io::Result<Self>
    where
        F: Fn(usize) -> W + Send + Sync + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<Never>(0);
        let slots: Vec<_> = (0..config.workers)
            .map(|_| Arc::new(WorkerSlot::default()))
            .collect();
        let inner = Arc::new(Inner {
            name,
            config,
            tx,
            rx,
            draining: AtomicBool::new(false),
            shutdown_tx: Mutex::new(Some(shutdown_tx)),
            slots,
            threads: Mutex::new(Vec::new()),
            stats: QueueStats::default(),
            admitted: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            places: AtomicUsize::new(0),
            shares: Arc::default(),
        });
        let factory = Arc::new(factory);
        let mut threads = Vec::with_capacity(inner.config.workers);
        for i in 0..inner.config.workers {
            let thread_name = format!("{name}-worker-{i}");
            let inner = Arc::clone(&inner);
            let factory = Arc::clone(&factory);
            let shutdown_rx = shutdown_rx.clone();
            let handle = std::thread::Builder::new()
                .name(thread_name.clone())
                .spawn(move || supervise(&inner, &*factory, i, &thread_name, &shutdown_rx))?;
            threads.push(handle);
        }
        *inner.threads.lock() = threads;
        Ok(JobQueue { inner })
    }

    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> &QueueStats {
        &self.inner.stats
    }

    /// Jobs waiting for a worker.
    pub fn depth(&self) -> usize {
        self.inner.tx.len()
    }

    /// Workers running a job now.
    pub fn busy(&self) -> usize {
        self.inner.stats.busy.load(Ordering::Relaxed)
    }

    /// Worker threads still alive.
    pub fn live_workers(&self) -> usize {
        self.inner
            .threads
            .lock()
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// What each worker is doing now.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.inner
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let current = slot.current.lock().clone();
                let total = slot.total.load(Ordering::Relaxed);
                WorkerStatus {
                    name: format!("{}-worker-{i}", self.inner.name),
                    job_id: current.as_ref().map(|c| c.job_id),
                    since_ms: current.as_ref().map(|c| {
                        c.started_wall
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_millis() as u64
                    }),
                    running_ms: current
                        .as_ref()
                        .map(|c| c.started.elapsed().as_millis() as u64),
                    progress: current
                        .as_ref()
                        .map(|_| slot.progress.load(Ordering::Relaxed)),
                    total: current.and(Some(total)).filter(|&t| t > 0),
                }
            })
            .collect()
    }

    /// Seconds a refused client should wait: the time the workers need to
    /// work through the queue ahead of it, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        retry_after(&self.inner)
    }

    /// Places taken: queued jobs and reserved places.
    pub fn places_taken(&self) -> usize {
        self.inner.places.load(Ordering::Acquire)
    }

    /// Reserves a place for a job still to come: 503 at once if every
    /// place is taken (by queued jobs or other reservations) or the pool
    /// is draining. Atomic: of N requests racing for the last place, one
    /// gets it.
    pub fn reserve(&self) -> Result<Place<W>, QueueError> {
        let inner = &self.inner;
        if self.is_draining() {
            inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(QueueError::ShuttingDown);
        }
        let capacity = inner.config.queue_capacity;
        inner
            .places
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map_err(|_| inner.full())?;
        Ok(Place {
            inner: Arc::clone(inner),
            held: true,
            share: None,
        })
    }

    /// [`JobQueue::reserve`] for a tenant's job: also 429
    /// ([`QueueError::FairShare`]) while the tenant holds its share of the
    /// places and others wait (see [`Shares`]). `None`: no tenant, no share.
    pub fn reserve_as(&self, tenant: Option<&Tenant>) -> Result<Place<W>, QueueError> {
        let Some(tenant) = tenant else {
            return self.reserve();
        };
        let inner = &self.inner;
        let capacity = inner.config.queue_capacity;
        match inner.shares.take(tenant, capacity, || self.reserve()) {
            Ok((mut place, hold)) => {
                place.share = Some(hold);
                Ok(place)
            }
            Err(Ok(share)) => {
                inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
                Err(QueueError::FairShare {
                    tenant: Arc::clone(&tenant.name),
                    queue: inner.name,
                    share,
                    capacity,
                    retry_after: retry_after(inner),
                })
            }
            Err(Err(refused)) => Err(refused),
        }
    }

    /// Places held now by each tenant (`/status`).
    pub fn places_by_tenant(&self) -> Vec<(String, usize)> {
        self.inner.shares.held()
    }

    /// Admits `job` and waits for its answer. Returns at once with 503 when
    /// the queue is full or the pool is draining; with 504 when a deadline
    /// passes. Dropping the returned future (client gone) cancels the job.
    pub async fn run(
        &self,
        job: W::Job,
        options: SubmitOptions,
    ) -> Result<Completed<W::Output>, QueueError> {
        self.submit(job, options)?.wait().await
    }

    /// Admits `job` without waiting: 503 at once when the queue is full or
    /// the pool is draining. The answer is collected with [`Pending::wait`].
    pub fn submit(&self, job: W::Job, options: SubmitOptions) -> Result<Pending<W>, QueueError> {
        self.submit_or_return(job, options).map_err(|(_, e)| e)
    }

    /// Admits `job` into the place reserved for it: refused only when the
    /// pool began draining since.
    pub fn submit_in(
        &self,
        place: Place<W>,
        job: W::Job,
        options: SubmitOptions,
    ) -> Result<Pending<W>, QueueError> {
        debug_assert!(
            Arc::ptr_eq(&place.inner, &self.inner),
            "a place of another queue"
        );
        self.admit(place, job, options).map_err(|(_, e)| e)
    }

    /// [`JobQueue::submit`], handing the job back when it is refused, for
    /// callers that retry later (jobs recovered after a restart).
    pub fn submit_or_return(
        &self,
        job: W::Job,
        options: SubmitOptions,
    ) -> Result<Pending<W>, (W::Job, QueueError)> {
        match self.reserve() {
            Ok(place) => self.admit(place, job, options),
            Err(e) => Err((job, e)),
        }
    }

    fn admit(
        &self,
        mut place: Place<W>,
        job: W::Job,
        options: SubmitOptions,
    ) -> Result<Pending<W>, (W::Job, QueueError)> {
        let inner = &self.inner;
        let job_id = options.job_id.unwrap_or_else(Uuid::new_v4);
        if self.is_draining() {
            inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err((job, QueueError::ShuttingDown));
        }
        let limit = if options.detached {
            inner.config.async_timeout
        } else {
            inner.config.timeout
        };
        let budget = options.timeout.map_or(limit, |t| t.min(limit));
        let now = Instant::now();
        let deadline = now + budget;
        let queue_deadline = if options.detached {
            deadline
        } else {
            now + inner.config.queue_timeout.min(budget)
        };
        let ticket = Ticket::new();
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope {
            job,
            job_id,
            share: place.share.take(),
            observer: options.observer,
            enqueued_at: now,
            queue_deadline,
            deadline,
            ticket: Arc::clone(&ticket),
            reply,
            span: tracing::Span::current(),
        };
        match inner.tx.try_send(envelope) {
            // The place now belongs to the queued job; it is freed when the
            // job leaves the channel.
            Ok(()) => place.held = false,
            // Not while places are counted right (the channel holds as many
            // jobs as there are places); refused like a full queue.
            Err(TrySendError::Full(envelope)) => return Err((envelope.job, inner.full())),
            Err(TrySendError::Disconnected(envelope)) => {
                return Err((envelope.job, QueueError::ShuttingDown))
            }
        }
        // Counted after the send so a refused job takes no number; two
        // racing submitters may swap numbers, which only blurs a position
        // by one.
        let seq = inner.admitted.fetch_add(1, Ordering::AcqRel);
        Ok(Pending {
            inner: Arc::clone(inner),
            job_id,
            ticket,
            answer,
            admitted: now,
            queue_deadline,
            deadline,
            budget,
            seq,
            finished: false,
        })
    }

    /// Stops admitting jobs, answers every queued job with 503 and tells the
    /// workers to exit once their current job is done.
    pub fn begin_drain(&self) {
        if self.inner.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        drop(self.inner.shutdown_tx.lock().take());
        while let Ok(envelope) = self.inner.rx.try_recv() {
            self.inner.took_one();
            answer_unstarted(envelope, JobError::ShuttingDown);
        }
    }

    /// Waits up to `grace` for running jobs to finish, cancels those still
    /// running after it, and joins every worker thread.
    pub fn join(&self, grace: Duration) {
        self.begin_drain();
        let deadline = Instant::now() + grace;
        let threads = std::mem::take(&mut *self.inner.threads.lock());
        let mut cancelled = false;
        for handle in threads {
            while !handle.is_finished() {
                if !cancelled && Instant::now() >= deadline {
                    cancelled = true;
                    for slot in &self.inner.slots {
                        if let Some(current) = slot.current.lock().as_ref() {
                            current.ticket.cancel();
                        }
                    }
                }
                // Joining has no timeout in std; a short park between checks
                // is the cheapest way to honour the grace deadline.
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.join().is_err() {
                tracing::error!(
                    queue = self.inner.name,
                    "worker thread panicked outside a job"
                );
            }
        }
        // A submit that raced the drain may have slipped in after it.
        while let Ok(envelope) = self.inner.rx.try_recv() {
            self.inner.took_one();
            answer_unstarted(envelope, JobError::ShuttingDown);
        }
    }
}

fn answer_unstarted<W: Worker>(envelope: Envelope<W>, err: JobError) {
    if envelope.ticket.start() {
        let _ = envelope.reply.send(Err(err));
    }
}

/// A queue seen without its worker type: what status, metrics, health and
/// shutdown need, for every registered type alike.
pub trait Pool: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn config(&self) -> &PoolConfig;
    fn stats(&self) -> &QueueStats;
    /// Jobs waiting for a worker.
    fn depth(&self) -> usize;
    /// Places taken: queued jobs and places reserved for requests whose
    /// bodies are still being read.
    /// Places held now by each tenant.
    fn places_by_tenant(&self) -> Vec<(String, usize)>;
    fn places_taken(&self) -> usize;
    /// Workers running a job now.
    fn busy(&self) -> usize;
    /// Worker threads still alive.
    fn live_workers(&self) -> usize;
    /// What each worker is doing now.
    fn workers(&self) -> Vec<WorkerStatus>;
    fn is_draining(&self) -> bool;
    fn begin_drain(&self);
    /// Blocking: waits up to `grace` for running jobs, then cancels them.
    fn join(&self, grace: Duration);
}

impl<W: Worker> Pool for JobQueue<W> {
    fn name(&self) -> &'static str {
        JobQueue::name(self)
    }
    fn config(&self) -> &PoolConfig {
        JobQueue::config(self)
    }
    fn stats(&self) -> &QueueStats {
        JobQueue::stats(self)
    }
    fn depth(&self) -> usize {
        JobQueue::depth(self)
    }
    fn places_by_tenant(&self) -> Vec<(String, usize)> {
        JobQueue::places_by_tenant(self)
    }

    fn places_taken(&self) -> usize {
        JobQueue::places_taken(self)
    }
    fn busy(&self) -> usize {
        JobQueue::busy(self)
    }
    fn live_workers(&self) -> usize {
        JobQueue::live_workers(self)
    }
    fn workers(&self) -> Vec<WorkerStatus> {
        JobQueue::workers(self)
    }
    fn is_draining(&self) -> bool {
        JobQueue::is_draining(self)
    }
    fn begin_drain(&self) {
        JobQueue::begin_drain(self)
    }
    fn join(&self, grace: Duration) {
        JobQueue::join(self, grace)
    }
}
