//! The worker threads' side, written once for every worker type: named
//! threads, a supervisor that rebuilds a thread whose context panics, the
//! caller's tracing span re-entered, `catch_unwind` around each job so a
//! panic costs one request and not the thread, and the skip of a job whose
//! caller has gone.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::pending::Reply;
use super::ticket::Ticket;
use super::worker::{Completed, JobContext, JobError, JobObserver, Never, Worker, IDLE_TICK};
use super::{answer_unstarted, Inner};

/// One job in the channel.
pub(super) struct Envelope<W: Worker> {
    pub(super) job: W::Job,
    pub(super) job_id: Uuid,
    /// The tenant's hold on the job's place, given back when it leaves the
    /// channel.
    pub(super) share: Option<super::ShareHold>,
    pub(super) observer: Option<Arc<dyn JobObserver>>,
    pub(super) enqueued_at: Instant,
    pub(super) queue_deadline: Instant,
    pub(super) deadline: Instant,
    pub(super) ticket: Arc<Ticket>,
    pub(super) reply: oneshot::Sender<Reply<W::Output>>,
    pub(super) span: tracing::Span,
}

/// What one worker thread is doing now.
#[derive(Default)]
pub(super) struct WorkerSlot {
    pub(super) current: Mutex<Option<CurrentJob>>,
    pub(super) progress: AtomicU64,
    pub(super) total: AtomicU64,
}

#[derive(Clone)]
pub(super) struct CurrentJob {
    pub(super) job_id: Uuid,
    pub(super) started: Instant,
    pub(super) started_wall: SystemTime,
    pub(super) ticket: Arc<Ticket>,
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

/// Consecutive failures after which a worker thread gives up; the pool is
/// then dead and `/livez` says so.
const MAX_RESTARTS: u32 = 5;

/// Runs a worker thread: builds its context and serves jobs, rebuilding both
/// (after a short, growing pause) if either panics outside a job, which
/// only a broken context does; job panics are caught per job.
pub(super) fn supervise<W: Worker>(
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
                Ok(mut envelope) => {
                    inner.took_one();
                    drop(envelope.share.take());
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
        share: _,
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
    *slot.current.lock() = Some(CurrentJob {
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
    *slot.current.lock() = None;
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
    let pages = outcome
        .as_ref()
        .ok()
        .map(|done| W::units(&done.output))
        .filter(|&n| n > 0);
    let error = outcome.as_ref().err().map(tracing::field::display);
    if let Err(JobError::Panicked(msg)) = &outcome {
        tracing::error!(queue = inner.name, %job_id, worker = name, queue_ms, run_ms, outcome = outcome_label, "job panicked: {msg}");
    } else {
        tracing::info!(queue = inner.name, %job_id, worker = name, pages, queue_ms, run_ms, outcome = outcome_label, error, "job finished");
    }
    // The caller may be gone (deadline, disconnect): then nobody reads this,
    // and what the job made is released.
    if let Err(Ok(done)) = reply.send(outcome) {
        worker.discard(done.output);
    }
}

pub(super) fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
