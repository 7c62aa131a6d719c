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
//! the caller and the worker ([`Ticket`]): a job is `QUEUED`, then either the
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

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::config::PoolConfig;
use crate::error::{ApiError, JobError};
use crate::metrics::{Histogram, LATENCY_BUCKETS};

/// A job type's synchronous engine. One value lives on each worker thread
/// (its per-thread context, built once by the factory given to
/// [`JobQueue::start`]); `process` runs one job and must return soon after
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
const IDLE_TICK: Duration = Duration::from_millis(500);

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
    ticket: Arc<Ticket>,
    slot: Arc<WorkerSlot>,
    observer: Option<Arc<dyn JobObserver>>,
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

    /// Report one more unit done, with what it made (`detail` is built only
    /// when someone watches the job: an async job's events).
    pub fn unit_done(&self, done: u64, detail: impl FnOnce() -> serde_json::Value) {
        self.progress(done);
        if let Some(observer) = &self.observer {
            observer.unit(done, detail());
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
    /// Unit `done` (counting from 1) is finished; `detail` says what it made.
    fn unit(&self, done: u64, detail: serde_json::Value);
}

/// A type with no values: channels of it only ever disconnect.
pub enum Never {}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const ABANDONED: u8 = 2;

/// State shared by a job's caller and the worker that may run it.
struct Ticket {
    state: AtomicU8,
    cancelled: AtomicBool,
    /// Dropped on cancellation so that `cancel_rx` disconnects.
    cancel_tx: Mutex<Option<Sender<Never>>>,
    cancel_rx: Receiver<Never>,
    /// Wakes the waiting caller when someone else cancels (DELETE).
    cancel_notify: tokio::sync::Notify,
}

impl Ticket {
    fn new() -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Arc::new(Ticket {
            state: AtomicU8::new(QUEUED),
            cancelled: AtomicBool::new(false),
            cancel_tx: Mutex::new(Some(tx)),
            cancel_rx: rx,
            cancel_notify: tokio::sync::Notify::new(),
        })
    }

    /// Worker side: claim the job. False if the caller already gave up.
    fn start(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Caller side: give up on a job that has not started. False if it runs.
    fn abandon_if_queued(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Stop the job wherever it is: never start it, and tell it to stop.
    fn cancel(&self) {
        self.abandon_if_queued();
        self.cancelled.store(true, Ordering::Release);
        // A poisoned lock only means another canceller panicked mid-take;
        // the sender is dropped either way.
        let sender = match self.cancel_tx.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(sender);
        self.cancel_notify.notify_one();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// How an admitted job ended, as counted in [`QueueStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Timeout,
    Cancelled,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
        }
    }

    fn of(result: &Result<(), &JobError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Ok,
            Err(JobError::QueueTimeout { .. } | JobError::Timeout { .. }) => Outcome::Timeout,
            Err(JobError::ShuttingDown | JobError::Cancelled) => Outcome::Cancelled,
            Err(_) => Outcome::Failed,
        }
    }
}

type Reply<O> = Result<Completed<O>, JobError>;

/// One job in the channel.
struct Envelope<W: Worker> {
    job: W::Job,
    job_id: Uuid,
    observer: Option<Arc<dyn JobObserver>>,
    enqueued_at: Instant,
    queue_deadline: Instant,
    deadline: Instant,
    ticket: Arc<Ticket>,
    reply: oneshot::Sender<Reply<W::Output>>,
    span: tracing::Span,
}

/// What one worker thread is doing now.
#[derive(Default)]
struct WorkerSlot {
    current: Mutex<Option<CurrentJob>>,
    progress: AtomicU64,
    total: AtomicU64,
}

#[derive(Clone)]
struct CurrentJob {
    job_id: Uuid,
    started: Instant,
    started_wall: SystemTime,
    ticket: Arc<Ticket>,
}

/// Counters for one queue, read by status and metrics. Outcomes of admitted
/// jobs are counted once, by the caller's side, when it has its answer.
#[derive(Default)]
pub struct QueueStats {
    busy: AtomicUsize,
    /// Exponentially weighted mean run time, microseconds (0 = no sample yet).
    mean_run_us: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub timeout: AtomicU64,
    pub cancelled: AtomicU64,
    pub rejected: AtomicU64,
    /// Time from admission to a worker picking the job up.
    pub queue_wait: Histogram,
    /// Time a worker spent on a job.
    pub run_time: Histogram,
    /// Units (pages) produced by successful jobs.
    pub units: AtomicU64,
    recent: Mutex<Recent>,
}

/// Seconds of per-second history kept for `/status` and the dashboard.
pub const HISTORY_SECS: usize = 300;
/// Finished jobs listed in `/status`.
const RECENT_JOBS: usize = 20;

/// Answered jobs, per second and the last few one by one.
struct Recent {
    /// Ring indexed by unix second: (second, jobs answered, latency buckets).
    seconds: Vec<(u64, u64, [u32; LATENCY_BUCKETS.len() + 1])>,
    jobs: VecDeque<FinishedJob>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            seconds: vec![(0, 0, [0; LATENCY_BUCKETS.len() + 1]); HISTORY_SECS],
            jobs: VecDeque::with_capacity(RECENT_JOBS),
        }
    }
}

/// One answered job, for the status page's recent list.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedJob {
    pub job_id: Uuid,
    pub outcome: &'static str,
    pub total_ms: f64,
    pub units: u64,
    /// Unix time of the answer, milliseconds.
    pub at_ms: u64,
}

/// Throughput and latency of jobs answered in a window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowStats {
    pub window_s: u64,
    pub answered: u64,
    pub per_second: f64,
    /// Upper bounds of the latency buckets holding the median and the 95th
    /// percentile, in milliseconds (`null` without samples).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            // The +Inf bucket reports the largest finite bound.
            let bound = LATENCY_BUCKETS.get(i).or(LATENCY_BUCKETS.last()).copied()?;
            return Some(bound * 1000.0);
        }
    }
    None
}

impl QueueStats {
    fn record_run(&self, run: Duration) {
        let sample = run.as_micros().min(u64::MAX as u128) as u64;
        let old = self.mean_run_us.load(Ordering::Relaxed);
        // A lost update under contention only drops one sample of a mean.
        let new = if old == 0 {
            sample
        } else {
            (old * 4 + sample) / 5
        };
        self.mean_run_us.store(new.max(1), Ordering::Relaxed);
    }

    pub fn mean_run(&self) -> Duration {
        Duration::from_micros(self.mean_run_us.load(Ordering::Relaxed))
    }

    /// Records an answered job (any outcome) for throughput, latency and the
    /// recent list.
    fn record_answer(&self, job_id: Uuid, outcome: &'static str, total: Duration, units: u64) {
        let now = unix_now();
        let second = now.as_secs();
        let slot_of = |s: u64| (s % HISTORY_SECS as u64) as usize;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| total.as_secs_f64() <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut recent = lock(&self.recent);
        let entry = &mut recent.seconds[slot_of(second)];
        if entry.0 != second {
            *entry = (second, 0, [0; LATENCY_BUCKETS.len() + 1]);
        }
        entry.1 += 1;
        entry.2[bucket] += 1;
        if recent.jobs.len() == RECENT_JOBS {
            recent.jobs.pop_back();
        }
        recent.jobs.push_front(FinishedJob {
            job_id,
            outcome,
            total_ms: ms(total),
            units,
            at_ms: now.as_millis() as u64,
        });
    }

    /// Jobs answered in the last `window_s` seconds (at most the history).
    pub fn window(&self, window_s: u64) -> WindowStats {
        let window_s = window_s.clamp(1, HISTORY_SECS as u64);
        let now = unix_now().as_secs();
        let recent = lock(&self.recent);
        let mut answered = 0;
        let mut buckets = [0u64; LATENCY_BUCKETS.len() + 1];
        for (second, count, hist) in &recent.seconds {
            if *count > 0 && now.saturating_sub(*second) < window_s {
                answered += count;
                for (acc, n) in buckets.iter_mut().zip(hist) {
                    *acc += u64::from(*n);
                }
            }
        }
        WindowStats {
            window_s,
            answered,
            per_second: answered as f64 / window_s as f64,
            p50_ms: quantile(&buckets, 0.50),
            p95_ms: quantile(&buckets, 0.95),
        }
    }

    /// Per-`step_s` windows over the last `HISTORY_SECS`, oldest first.
    pub fn history(&self, step_s: u64) -> Vec<WindowStats> {
        let step_s = step_s.clamp(1, HISTORY_SECS as u64);
        let now = unix_now().as_secs();
        let recent = lock(&self.recent);
        let steps = HISTORY_SECS as u64 / step_s;
        let mut out = Vec::with_capacity(steps as usize);
        for i in (0..steps).rev() {
            let (lo, hi) = (i * step_s, (i + 1) * step_s);
            let mut answered = 0;
            let mut buckets = [0u64; LATENCY_BUCKETS.len() + 1];
            for (second, count, hist) in &recent.seconds {
                let age = now.saturating_sub(*second);
                if *count > 0 && age >= lo && age < hi {
                    answered += count;
                    for (acc, n) in buckets.iter_mut().zip(hist) {
                        *acc += u64::from(*n);
                    }
                }
            }
            out.push(WindowStats {
                window_s: step_s,
                answered,
                per_second: answered as f64 / step_s as f64,
                p50_ms: quantile(&buckets, 0.50),
                p95_ms: quantile(&buckets, 0.95),
            });
        }
        out
    }

    /// The last jobs answered, newest first.
    pub fn recent_jobs(&self) -> Vec<FinishedJob> {
        lock(&self.recent).jobs.iter().cloned().collect()
    }
}

/// A snapshot of one worker for `/status`.
#[derive(Debug, Serialize)]
pub struct WorkerStatus {
    pub name: String,
    pub job_id: Option<Uuid>,
    /// Unix time the current job started, milliseconds.
    pub since_ms: Option<u64>,
    pub running_ms: Option<u64>,
    /// Units (pages) done so far, and in all when known.
    pub progress: Option<u64>,
    pub total: Option<u64>,
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

/// An admitted job whose answer has not been collected yet. Dropping it
/// before [`Pending::wait`] finishes (the handler's future dropped when the
/// client disconnects) cancels the job: a queued job never starts, a
/// running one is told to stop. Outcomes are counted once, here.
pub struct Pending<W: Worker> {
    inner: Arc<Inner<W>>,
    job_id: Uuid,
    ticket: Arc<Ticket>,
    answer: oneshot::Receiver<Reply<W::Output>>,
    admitted: Instant,
    queue_deadline: Instant,
    deadline: Instant,
    budget: Duration,
    seq: u64,
    /// Set once the outcome is counted; a drop after that does nothing.
    finished: bool,
}

/// A handle on an admitted job for someone other than its waiter: cancel
/// it, ask where it stands.
pub struct JobHandle<W: Worker> {
    inner: Arc<Inner<W>>,
    ticket: Arc<Ticket>,
    seq: u64,
}

impl<W: Worker> Clone for JobHandle<W> {
    fn clone(&self) -> Self {
        JobHandle {
            inner: Arc::clone(&self.inner),
            ticket: Arc::clone(&self.ticket),
            seq: self.seq,
        }
    }
}

impl<W: Worker> JobHandle<W> {
    /// Stops the job: a queued one never starts and its waiter is answered
    /// [`JobError::Cancelled`] at once; a running one is told to stop (its
    /// waiter gets the worker's answer, normally within milliseconds).
    pub fn cancel(&self) {
        self.ticket.cancel();
    }

    /// Jobs ahead of this one while it waits in the queue (0: next);
    /// `None` once a worker took it or it was abandoned.
    pub fn position(&self) -> Option<u64> {
        (self.ticket.state.load(Ordering::Acquire) == QUEUED).then(|| {
            self.seq
                .saturating_sub(self.inner.taken.load(Ordering::Acquire))
        })
    }
}

impl<W: Worker> Pending<W> {
    pub fn job_id(&self) -> Uuid {
        self.job_id
    }

    pub fn handle(&self) -> JobHandle<W> {
        JobHandle {
            inner: Arc::clone(&self.inner),
            ticket: Arc::clone(&self.ticket),
            seq: self.seq,
        }
    }

    /// The caller has its answer: count it once.
    fn finish(&mut self, outcome: Outcome, units: u64) {
        self.finished = true;
        let stats = &self.inner.stats;
        let counter = match outcome {
            Outcome::Ok => &stats.ok,
            Outcome::Failed => &stats.failed,
            Outcome::Timeout => &stats.timeout,
            Outcome::Cancelled => &stats.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        stats.units.fetch_add(units, Ordering::Relaxed);
        stats.record_answer(self.job_id, outcome.label(), self.admitted.elapsed(), units);
    }

    /// Waits for the job's answer under its deadlines: 504 `queue_timeout`
    /// if it is still queued when the queue budget ends (it will never
    /// start), 504 `timeout` when the total budget ends (a running job is
    /// told to stop).
    pub async fn wait(mut self) -> Result<Completed<W::Output>, ApiError> {
        let job_id = self.job_id;
        let (queue_deadline, deadline, budget, now) = (
            self.queue_deadline,
            self.deadline,
            self.budget,
            self.admitted,
        );
        let ticket = Arc::clone(&self.ticket);
        let queue_timer = tokio::time::sleep_until(queue_deadline.into());
        let total_timer = tokio::time::sleep_until(deadline.into());
        tokio::pin!(queue_timer, total_timer);
        let mut queue_timer_armed = queue_deadline < deadline;
        loop {
            tokio::select! {
                biased;
                reply = &mut self.answer => {
                    let reply = match reply {
                        // A job that stopped because its deadline passed
                        // (the worker saw it first) is a timeout.
                        Ok(Err(JobError::Cancelled)) if Instant::now() >= deadline => {
                            Err(JobError::Timeout { budget_ms: budget.as_millis() as u64 })
                        }
                        Ok(reply) => reply,
                        // Unanswered: a pool shutting down drops what it
                        // cannot run, and a worker drops a job cancelled
                        // before it started.
                        Err(_) if ticket.is_cancelled() => Err(JobError::Cancelled),
                        Err(_) => Err(JobError::ShuttingDown),
                    };
                    let units = reply.as_ref().map_or(0, |done| W::units(&done.output));
                    self.finish(Outcome::of(&reply.as_ref().map(|_| ())), units);
                    return reply.map_err(|err| ApiError::job(job_id, err));
                }
                () = ticket.cancel_notify.notified() => {
                    // Cancelled by someone else: a job that never started is
                    // answered now; a running one answers when it stops.
                    if ticket.state.load(Ordering::Acquire) == ABANDONED {
                        self.finish(Outcome::Cancelled, 0);
                        return Err(ApiError::job(job_id, JobError::Cancelled));
                    }
                }
                () = &mut queue_timer, if queue_timer_armed => {
                    queue_timer_armed = false;
                    if ticket.abandon_if_queued() {
                        self.finish(Outcome::Timeout, 0);
                        let waited_ms = now.elapsed().as_millis() as u64;
                        return Err(ApiError::job(job_id, JobError::QueueTimeout { waited_ms }));
                    }
                    // Already running: keep waiting for it under the total budget.
                }
                () = &mut total_timer => {
                    // A queued job never starts, a running one is told to stop.
                    ticket.cancel();
                    self.finish(Outcome::Timeout, 0);
                    let err = if ticket.state.load(Ordering::Acquire) == RUNNING {
                        JobError::Timeout { budget_ms: budget.as_millis() as u64 }
                    } else {
                        JobError::QueueTimeout { waited_ms: now.elapsed().as_millis() as u64 }
                    };
                    return Err(ApiError::job(job_id, err));
                }
            }
        }
    }
}

impl<W: Worker> Drop for Pending<W> {
    fn drop(&mut self) {
        if !self.finished {
            self.ticket.cancel();
            self.finish(Outcome::Cancelled, 0);
        }
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
        *lock(&inner.threads) = threads;
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
        lock(&self.inner.threads)
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
                let current = lock(&slot.current).clone();
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
        let mean = self.inner.stats.mean_run().as_secs_f64();
        let ahead = (self.depth() + 1) as f64;
        let secs = (ahead * mean / self.inner.config.workers as f64).ceil();
        (secs as u64).max(1)
    }

    /// Refuses now, as a submit would, if the queue is full or draining:
    /// lets a caller skip costly preparation (writing an upload to disk)
    /// for a job that would be refused anyway.
    pub fn check_room(&self) -> Result<(), ApiError> {
        if self.is_draining() {
            return Err(ApiError::ShuttingDown);
        }
        if self.depth() >= self.inner.config.queue_capacity {
            self.inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::QueueFull {
                queue: self.inner.name,
                capacity: self.inner.config.queue_capacity,
                retry_after: self.retry_after_secs(),
            });
        }
        Ok(())
    }

    /// Admits `job` and waits for its answer. Returns at once with 503 when
    /// the queue is full or the pool is draining; with 504 when a deadline
    /// passes. Dropping the returned future (client gone) cancels the job.
    pub async fn run(
        &self,
        job: W::Job,
        options: SubmitOptions,
    ) -> Result<Completed<W::Output>, ApiError> {
        self.submit(job, options)?.wait().await
    }

    /// Admits `job` without waiting: 503 at once when the queue is full or
    /// the pool is draining. The answer is collected with [`Pending::wait`].
    pub fn submit(&self, job: W::Job, options: SubmitOptions) -> Result<Pending<W>, ApiError> {
        self.submit_or_return(job, options).map_err(|(_, e)| e)
    }

    /// [`JobQueue::submit`], handing the job back when it is refused, for
    /// callers that retry later (jobs recovered after a restart).
    pub fn submit_or_return(
        &self,
        job: W::Job,
        options: SubmitOptions,
    ) -> Result<Pending<W>, (W::Job, ApiError)> {
        let inner = &self.inner;
        let job_id = options.job_id.unwrap_or_else(Uuid::new_v4);
        if self.is_draining() {
            inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err((job, ApiError::ShuttingDown));
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
            observer: options.observer,
            enqueued_at: now,
            queue_deadline,
            deadline,
            ticket: Arc::clone(&ticket),
            reply,
            span: tracing::Span::current(),
        };
        match inner.tx.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Full(envelope)) => {
                inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
                let err = ApiError::QueueFull {
                    queue: inner.name,
                    capacity: inner.config.queue_capacity,
                    retry_after: self.retry_after_secs(),
                };
                return Err((envelope.job, err));
            }
            Err(TrySendError::Disconnected(envelope)) => {
                return Err((envelope.job, ApiError::ShuttingDown))
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
        drop(lock(&self.inner.shutdown_tx).take());
        while let Ok(envelope) = self.inner.rx.try_recv() {
            self.inner.taken.fetch_add(1, Ordering::AcqRel);
            answer_unstarted(envelope, JobError::ShuttingDown);
        }
    }

    /// Waits up to `grace` for running jobs to finish, cancels those still
    /// running after it, and joins every worker thread.
    pub fn join(&self, grace: Duration) {
        self.begin_drain();
        let deadline = Instant::now() + grace;
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        let mut cancelled = false;
        for handle in threads {
            while !handle.is_finished() {
                if !cancelled && Instant::now() >= deadline {
                    cancelled = true;
                    for slot in &self.inner.slots {
                        if let Some(current) = lock(&slot.current).as_ref() {
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
            answer_unstarted(envelope, JobError::ShuttingDown);
        }
    }
}

fn answer_unstarted<W: Worker>(envelope: Envelope<W>, err: JobError) {
    if envelope.ticket.start() {
        let _ = envelope.reply.send(Err(err));
    }
}

/// Consecutive failures after which a worker thread gives up; the pool is
/// then dead and `/livez` says so.
const MAX_RESTARTS: u32 = 5;

/// Runs a worker thread: builds its context and serves jobs, rebuilding both
/// (after a short, growing pause) if either panics outside a job, which
/// only a broken context does; job panics are caught per job.
fn supervise<W: Worker>(
    inner: &Inner<W>,
    factory: &(dyn Fn(usize) -> W + Send + Sync),
    index: usize,
    name: &str,
    shutdown: &Receiver<Never>,
) {
    let mut failures = 0;
    loop {
        let run = catch_unwind(AssertUnwindSafe(|| {
            let worker = factory(index);
            worker_loop(inner, worker, index, name, shutdown);
        }));
        let Err(panic) = run else { return };
        failures += 1;
        let message = panic_message(&panic);
        if failures > MAX_RESTARTS || inner.draining.load(Ordering::Acquire) {
            tracing::error!(
                queue = inner.name,
                worker = name,
                failures,
                "worker thread failed for good: {message}"
            );
            return;
        }
        tracing::error!(
            queue = inner.name,
            worker = name,
            failures,
            "worker thread failed, restarting: {message}"
        );
        std::thread::sleep(Duration::from_millis(10 << failures));
    }
}

fn worker_loop<W: Worker>(
    inner: &Inner<W>,
    mut worker: W,
    index: usize,
    name: &str,
    shutdown: &Receiver<Never>,
) {
    let slot = Arc::clone(&inner.slots[index]);
    loop {
        let envelope = crossbeam_channel::select! {
            recv(inner.rx) -> msg => match msg {
                Ok(envelope) => {
                    inner.taken.fetch_add(1, Ordering::AcqRel);
                    envelope
                }
                Err(_) => break,
            },
            recv(shutdown) -> _ => break,
            default(IDLE_TICK) => {
                worker.idle();
                continue;
            }
        };
        if inner.draining.load(Ordering::Acquire) {
            answer_unstarted(envelope, JobError::ShuttingDown);
            continue;
        }
        run_one(inner, &mut worker, &slot, name, envelope);
        // Nothing waits: tidy up now (a killed renderer is replaced here)
        // rather than on the next job's time.
        if inner.rx.is_empty() {
            worker.idle();
        }
    }
    tracing::debug!(queue = inner.name, worker = %name, "worker thread exits");
}

fn run_one<W: Worker>(
    inner: &Inner<W>,
    worker: &mut W,
    slot: &Arc<WorkerSlot>,
    name: &str,
    envelope: Envelope<W>,
) {
    let Envelope {
        job,
        job_id,
        observer,
        enqueued_at,
        queue_deadline,
        deadline,
        ticket,
        reply,
        span,
    } = envelope;
    let _entered = span.enter();
    let started = Instant::now();
    let queue_ms = ms(started - enqueued_at);
    // The caller gave up (deadline, disconnect) before we got here: the
    // answer is already theirs to give, and the core stays free.
    if !ticket.start() {
        tracing::debug!(queue = inner.name, %job_id, queue_ms, "skipped abandoned job");
        return;
    }
    if started >= queue_deadline {
        let waited_ms = queue_ms as u64;
        let _ = reply.send(Err(JobError::QueueTimeout { waited_ms }));
        return;
    }

    inner.stats.busy.fetch_add(1, Ordering::Relaxed);
    inner.stats.queue_wait.observe(started - enqueued_at);
    slot.progress.store(0, Ordering::Relaxed);
    slot.total.store(0, Ordering::Relaxed);
    *lock(&slot.current) = Some(CurrentJob {
        job_id,
        started,
        started_wall: SystemTime::now(),
        ticket: Arc::clone(&ticket),
    });
    if let Some(observer) = &observer {
        observer.started(name);
    }
    let ctx = JobContext {
        job_id,
        deadline,
        worker: name.to_string(),
        ticket: Arc::clone(&ticket),
        slot: Arc::clone(slot),
        observer,
    };
    let result = catch_unwind(AssertUnwindSafe(|| worker.process(job, &ctx)));
    let finished = Instant::now();
    *lock(&slot.current) = None;
    inner.stats.busy.fetch_sub(1, Ordering::Relaxed);
    let run = finished - started;
    inner.stats.record_run(run);
    inner.stats.run_time.observe(run);
    let run_ms = ms(run);

    let outcome: Reply<W::Output> = match result {
        Ok(Ok(output)) => Ok(Completed {
            job_id,
            worker: name.to_string(),
            output,
            queue_ms,
            run_ms,
            total_ms: ms(finished - enqueued_at),
        }),
        Ok(Err(err)) => Err(err.into()),
        Err(panic) => Err(JobError::Panicked(panic_message(&panic))),
    };
    let outcome_label = match &outcome {
        Ok(_) => "ok",
        Err(_) if finished >= deadline => "timeout",
        Err(_) if ticket.is_cancelled() => "cancelled",
        Err(_) => "failed",
    };
    match &outcome {
        Err(JobError::Panicked(msg)) => {
            tracing::error!(queue = inner.name, %job_id, worker = name, queue_ms, run_ms, outcome = outcome_label, "job panicked: {msg}")
        }
        Err(err) => {
            tracing::info!(queue = inner.name, %job_id, worker = name, queue_ms, run_ms, outcome = outcome_label, error = %err, "job finished")
        }
        Ok(done) => match W::units(&done.output) {
            0 => {
                tracing::info!(queue = inner.name, %job_id, worker = name, queue_ms, run_ms, outcome = outcome_label, "job finished")
            }
            pages => {
                tracing::info!(queue = inner.name, %job_id, worker = name, pages, queue_ms, run_ms, outcome = outcome_label, "job finished")
            }
        },
    }
    // The caller may be gone (deadline, disconnect): then nobody reads this,
    // and what the job made is released.
    if let Err(Ok(done)) = reply.send(outcome) {
        worker.discard(done.output);
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Locks a mutex whose data stays valid even if a holder panicked (every
/// critical section here is a single assignment or read).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    //! The pool on its own, with a test worker that reports each start on a
    //! channel and blocks on a gate, so tests wait on signals, not sleeps.
    //! Real OS threads do the work, so tokio time is never paused here.

    use super::*;
    use crossbeam_channel::{unbounded, Receiver, Sender};
    use futures::FutureExt;

    enum TestJob {
        /// Reports start, then waits for the gate or cancellation.
        Block(&'static str),
        /// Reports start, then spins until cancelled and reports that.
        Spin(&'static str),
        Quick(&'static str),
        Panic,
    }

    struct TestWorker {
        started: Sender<&'static str>,
        gate: Receiver<()>,
        saw_cancel: Sender<&'static str>,
    }

    impl Worker for TestWorker {
        type Job = TestJob;
        type Output = &'static str;
        type Error = JobError;

        fn process(&mut self, job: TestJob, ctx: &JobContext) -> Result<&'static str, JobError> {
            match job {
                TestJob::Quick(name) => {
                    self.started.send(name).unwrap();
                    Ok(name)
                }
                TestJob::Block(name) => {
                    self.started.send(name).unwrap();
                    crossbeam_channel::select! {
                        recv(self.gate) -> _ => Ok(name),
                        recv(ctx.cancelled()) -> _ => Err(JobError::Cancelled),
                    }
                }
                TestJob::Spin(name) => {
                    self.started.send(name).unwrap();
                    while !ctx.is_cancelled() {
                        std::hint::spin_loop();
                    }
                    self.saw_cancel.send(name).unwrap();
                    Err(JobError::Cancelled)
                }
                TestJob::Panic => panic!("boom"),
            }
        }
    }

    struct Harness {
        queue: JobQueue<TestWorker>,
        started: Receiver<&'static str>,
        gate: Sender<()>,
        saw_cancel: Receiver<&'static str>,
    }

    const SIGNAL: Duration = Duration::from_secs(5);

    fn harness(workers: usize, capacity: usize, queue_timeout_ms: u64, timeout_ms: u64) -> Harness {
        let (started_tx, started) = unbounded();
        let (gate, gate_rx) = unbounded();
        let (cancel_tx, saw_cancel) = unbounded();
        let config = PoolConfig {
            workers,
            queue_capacity: capacity,
            queue_timeout: Duration::from_millis(queue_timeout_ms),
            timeout: Duration::from_millis(timeout_ms),
            async_timeout: Duration::from_millis(timeout_ms * 2),
        };
        let queue = JobQueue::start("test", config, move |_| TestWorker {
            started: started_tx.clone(),
            gate: gate_rx.clone(),
            saw_cancel: cancel_tx.clone(),
        })
        .unwrap();
        Harness {
            queue,
            started,
            gate,
            saw_cancel,
        }
    }

    impl Harness {
        fn spawn(
            &self,
            job: TestJob,
        ) -> tokio::task::JoinHandle<Result<Completed<&'static str>, ApiError>> {
            let queue = self.queue.clone();
            tokio::spawn(async move { queue.run(job, SubmitOptions::default()).await })
        }

        fn expect_start(&self, name: &str) {
            let got = self
                .started
                .recv_timeout(SIGNAL)
                .expect("a job should start");
            assert_eq!(got, name, "expected {name} to start next");
        }

        /// Runs a quick job and checks that it is the only one to start:
        /// whatever was skipped (`what`) never ran.
        async fn next_runs_alone(&self, what: &str) {
            let next = self
                .queue
                .run(TestJob::Quick("next"), SubmitOptions::default())
                .await;
            assert_eq!(next.unwrap().output, "next");
            self.expect_start("next");
            assert!(self.started.try_recv().is_err(), "{what}");
        }

        /// Waits until `depth` jobs are queued (the submit tasks run
        /// concurrently with the test).
        async fn until_depth(&self, depth: usize) {
            let deadline = Instant::now() + SIGNAL;
            while self.queue.depth() != depth {
                assert!(
                    Instant::now() < deadline,
                    "queue never reached depth {depth}"
                );
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_on_the_first_poll_with_a_retry_after() {
        let h = harness(1, 1, 5_000, 5_000);
        let running = h.spawn(TestJob::Block("a"));
        h.expect_start("a");
        let queued = h.spawn(TestJob::Quick("b"));
        h.until_depth(1).await;

        let refused = h
            .queue
            .run(TestJob::Quick("c"), SubmitOptions::default())
            .now_or_never()
            .expect("a full queue must answer without waiting");
        match refused {
            Err(ApiError::QueueFull { retry_after, .. }) => assert!(retry_after >= 1),
            other => panic!("expected QueueFull, got {other:?}"),
        }
        assert_eq!(h.queue.stats().rejected.load(Ordering::Relaxed), 1);

        h.gate.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap().output, "a");
        assert_eq!(queued.await.unwrap().unwrap().output, "b");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_past_its_queue_budget_gets_504_and_is_never_started() {
        let h = harness(1, 4, 50, 5_000);
        let running = h.spawn(TestJob::Block("a"));
        h.expect_start("a");

        let waited = h
            .queue
            .run(TestJob::Quick("late"), SubmitOptions::default())
            .await;
        match waited {
            Err(ApiError::Job {
                source: JobError::QueueTimeout { waited_ms },
                ..
            }) => assert!(waited_ms >= 50, "answered after {waited_ms} ms"),
            other => panic!("expected a queue timeout, got {other:?}"),
        }

        h.gate.send(()).unwrap();
        running.await.unwrap().unwrap();
        h.next_runs_alone("the abandoned job must not run").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_job_past_its_deadline_gets_504_and_is_told_to_stop() {
        let h = harness(1, 4, 5_000, 5_000);
        let options = SubmitOptions {
            timeout: Some(Duration::from_millis(100)),
            ..SubmitOptions::default()
        };
        let result = h.queue.run(TestJob::Spin("spin"), options).await;
        match result {
            Err(ApiError::Job {
                source: JobError::Timeout { budget_ms },
                ..
            }) => assert_eq!(budget_ms, 100),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(h.saw_cancel.recv_timeout(SIGNAL), Ok("spin"));
        assert_eq!(h.queue.stats().timeout.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_may_shorten_its_deadline_but_never_lengthen_it() {
        let h = harness(1, 4, 200, 200);
        let options = SubmitOptions {
            timeout: Some(Duration::from_secs(60)),
            ..SubmitOptions::default()
        };
        let result = h.queue.run(TestJob::Spin("spin"), options).await;
        assert!(
            matches!(
                &result,
                Err(ApiError::Job {
                    source: JobError::Timeout { budget_ms: 200 },
                    ..
                })
            ),
            "the server's 200 ms budget must win: {result:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_went_away_is_skipped_when_dequeued() {
        let h = harness(1, 4, 5_000, 5_000);
        let running = h.spawn(TestJob::Block("a"));
        h.expect_start("a");
        let gone = h.spawn(TestJob::Quick("gone"));
        h.until_depth(1).await;
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());

        h.gate.send(()).unwrap();
        running.await.unwrap().unwrap();
        let next = h
            .queue
            .run(TestJob::Quick("next"), SubmitOptions::default())
            .await;
        assert_eq!(next.unwrap().output, "next");
        h.expect_start("next");
        assert_eq!(h.queue.stats().cancelled.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_job_whose_caller_went_away_is_cancelled() {
        let h = harness(1, 4, 5_000, 5_000);
        let spinning = h.spawn(TestJob::Spin("spin"));
        h.expect_start("spin");
        spinning.abort();
        assert_eq!(h.saw_cancel.recv_timeout(SIGNAL), Ok("spin"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_costs_one_answer_and_not_the_thread() {
        let h = harness(1, 4, 5_000, 5_000);
        let result = h.queue.run(TestJob::Panic, SubmitOptions::default()).await;
        match result {
            Err(ApiError::Job {
                source: JobError::Panicked(msg),
                ..
            }) => assert_eq!(msg, "boom"),
            other => panic!("expected a panic report, got {other:?}"),
        }
        let next = h
            .queue
            .run(TestJob::Quick("after"), SubmitOptions::default())
            .await;
        let next = next.expect("the same thread serves the next job");
        assert_eq!(next.worker, "test-worker-0");
        assert_eq!(h.queue.live_workers(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn draining_answers_queued_jobs_503_refuses_new_ones_and_lets_running_ones_finish() {
        let h = harness(1, 4, 5_000, 5_000);
        let running = h.spawn(TestJob::Block("a"));
        h.expect_start("a");
        let queued = h.spawn(TestJob::Quick("b"));
        h.until_depth(1).await;

        h.queue.begin_drain();
        assert!(matches!(
            queued.await.unwrap(),
            Err(ApiError::Job {
                source: JobError::ShuttingDown,
                ..
            })
        ));
        assert!(matches!(
            h.queue
                .run(TestJob::Quick("c"), SubmitOptions::default())
                .await,
            Err(ApiError::ShuttingDown)
        ));
        h.gate.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap().output, "a");
        let queue = h.queue.clone();
        tokio::task::spawn_blocking(move || queue.join(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(h.queue.live_workers(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn join_cancels_jobs_still_running_when_the_grace_period_ends() {
        let h = harness(1, 4, 5_000, 60_000);
        let spinning = h.spawn(TestJob::Spin("spin"));
        h.expect_start("spin");
        let queue = h.queue.clone();
        tokio::task::spawn_blocking(move || queue.join(Duration::from_millis(50)))
            .await
            .unwrap();
        assert_eq!(h.saw_cancel.try_recv(), Ok("spin"));
        assert!(spinning.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_pool_whose_context_keeps_failing_gives_up_and_has_no_live_workers() {
        let config = PoolConfig::new(1, 1, Duration::from_secs(1));
        let queue: JobQueue<TestWorker> =
            JobQueue::start("broken", config, |_| panic!("cannot build the context")).unwrap();
        let deadline = Instant::now() + SIGNAL;
        while queue.live_workers() > 0 {
            assert!(Instant::now() < deadline, "the worker thread never gave up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn retry_after_grows_with_the_queue_ahead_and_shrinks_with_workers() {
        let h = harness(2, 8, 5_000, 5_000);
        h.queue.inner.stats.record_run(Duration::from_secs(3));
        // Empty queue: one job ahead (the caller's own) over 2 workers.
        assert_eq!(h.queue.retry_after_secs(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_job_cancelled_through_its_handle_is_answered_at_once_and_never_runs() {
        let h = harness(1, 4, 5_000, 5_000);
        let running = h.spawn(TestJob::Block("a"));
        h.expect_start("a");
        let pending = h
            .queue
            .submit(TestJob::Quick("never"), SubmitOptions::default())
            .unwrap();
        let handle = pending.handle();
        assert_eq!(
            handle.position(),
            Some(0),
            "next in line behind nothing queued"
        );
        let waiter = tokio::spawn(pending.wait());
        handle.cancel();
        let answer = tokio::time::timeout(SIGNAL, waiter)
            .await
            .expect("a cancelled queued job is answered without waiting for a worker")
            .unwrap();
        assert!(
            matches!(
                answer,
                Err(ApiError::Job {
                    source: JobError::Cancelled,
                    ..
                })
            ),
            "{answer:?}"
        );
        assert_eq!(handle.position(), None, "no longer queued");
        h.gate.send(()).unwrap();
        running.await.unwrap().unwrap();
        h.next_runs_alone("the cancelled job never started").await;
        assert_eq!(h.queue.stats().cancelled.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn positions_count_the_jobs_ahead_and_move_up_as_workers_take_jobs() {
        let h = harness(1, 4, 5_000, 5_000);
        let running = h.spawn(TestJob::Block("a"));
        h.expect_start("a");
        let first = h
            .queue
            .submit(TestJob::Block("b"), SubmitOptions::default())
            .unwrap();
        let second = h
            .queue
            .submit(TestJob::Quick("c"), SubmitOptions::default())
            .unwrap();
        let (first_handle, second_handle) = (first.handle(), second.handle());
        assert_eq!(first_handle.position(), Some(0));
        assert_eq!(second_handle.position(), Some(1));
        let first = tokio::spawn(first.wait());
        let second = tokio::spawn(second.wait());
        h.gate.send(()).unwrap();
        h.expect_start("b");
        assert_eq!(first_handle.position(), None, "running, not queued");
        assert_eq!(second_handle.position(), Some(0));
        h.gate.send(()).unwrap();
        running.await.unwrap().unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl JobObserver for Recorder {
        fn started(&self, worker: &str) {
            lock(&self.0).push(format!("started on {worker}"));
        }
        fn total(&self, total: u64) {
            lock(&self.0).push(format!("total {total}"));
        }
        fn unit(&self, done: u64, detail: serde_json::Value) {
            lock(&self.0).push(format!("unit {done} {detail}"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_observer_hears_of_the_start_on_the_worker_thread() {
        let h = harness(1, 4, 5_000, 5_000);
        let recorder = Arc::new(Recorder::default());
        let options = SubmitOptions {
            observer: Some(Arc::clone(&recorder) as Arc<dyn JobObserver>),
            ..SubmitOptions::default()
        };
        h.queue.run(TestJob::Quick("seen"), options).await.unwrap();
        assert_eq!(
            *lock(&recorder.0),
            vec!["started on test-worker-0".to_string()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_detached_job_runs_under_the_async_budget_and_may_queue_for_all_of_it() {
        // Attached jobs: queue budget 50 ms, total 100 ms. Detached: 200 ms
        // (twice the total, see `harness`), and this one asks for 150 ms.
        let h = harness(1, 4, 50, 100);
        let detached = SubmitOptions {
            detached: true,
            ..SubmitOptions::default()
        };
        let running = h
            .queue
            .submit(TestJob::Block("a"), detached.clone())
            .unwrap();
        let running = tokio::spawn(running.wait());
        h.expect_start("a");
        let options = SubmitOptions {
            timeout: Some(Duration::from_millis(150)),
            ..detached
        };
        let started = Instant::now();
        let waited = h.queue.run(TestJob::Quick("late"), options).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(
                waited,
                Err(ApiError::Job {
                    source: JobError::QueueTimeout { .. },
                    ..
                })
            ),
            "{waited:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(150),
            "gave up after {elapsed:?}: an attached budget applied"
        );
        h.gate.send(()).unwrap();
        running.await.unwrap().unwrap();
    }
}
