//! The caller's side of an admitted job: [`Pending`] waits for its answer
//! under two deadlines and counts its outcome once; [`JobHandle`] lets
//! someone else cancel it or ask its place in line.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::ticket::{Ticket, ABANDONED, QUEUED, RUNNING};
use super::worker::{Completed, JobError, Worker};
use super::{Inner, QueueError};

/// How an admitted job ended, as counted in [`super::QueueStats`].
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

    pub(super) fn of(result: &Result<(), &JobError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Ok,
            Err(JobError::QueueTimeout { .. } | JobError::Timeout { .. }) => Outcome::Timeout,
            Err(JobError::ShuttingDown | JobError::Cancelled) => Outcome::Cancelled,
            Err(_) => Outcome::Failed,
        }
    }
}

pub(super) type Reply<O> = Result<Completed<O>, JobError>;

/// An admitted job whose answer has not been collected yet. Dropping it
/// before [`Pending::wait`] finishes (the handler's future dropped when the
/// client disconnects) cancels the job: a queued job never starts, a
/// running one is told to stop. Outcomes are counted once, here.
pub struct Pending<W: Worker> {
    pub(super) inner: Arc<Inner<W>>,
    pub(super) job_id: Uuid,
    pub(super) ticket: Arc<Ticket>,
    pub(super) answer: oneshot::Receiver<Reply<W::Output>>,
    pub(super) admitted: Instant,
    pub(super) queue_deadline: Instant,
    pub(super) deadline: Instant,
    pub(super) budget: Duration,
    pub(super) seq: u64,
    /// Set once the outcome is counted; a drop after that does nothing.
    pub(super) finished: bool,
}

/// A handle on an admitted job for someone other than its waiter: cancel
/// it, ask where it stands.
pub struct JobHandle<W: Worker> {
    pub(super) inner: Arc<Inner<W>>,
    pub(super) ticket: Arc<Ticket>,
    pub(super) seq: u64,
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
    fn record_outcome(&mut self, outcome: Outcome, units: u64) {
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
    pub async fn wait(mut self) -> Result<Completed<W::Output>, QueueError> {
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
                    self.record_outcome(Outcome::of(&reply.as_ref().map(|_| ())), units);
                    return reply.map_err(|err| QueueError::job(job_id, err));
                }
                () = ticket.cancel_notify.notified() => {
                    // Cancelled by someone else: a job that never started is
                    // answered now; a running one answers when it stops.
                    if ticket.state.load(Ordering::Acquire) == ABANDONED {
                        self.record_outcome(Outcome::Cancelled, 0);
                        return Err(QueueError::job(job_id, JobError::Cancelled));
                    }
                }
                () = &mut queue_timer, if queue_timer_armed => {
                    queue_timer_armed = false;
                    if ticket.abandon_if_queued() {
                        self.record_outcome(Outcome::Timeout, 0);
                        let waited_ms = now.elapsed().as_millis() as u64;
                        return Err(QueueError::job(job_id, JobError::QueueTimeout { waited_ms }));
                    }
                    // Already running: keep waiting for it under the total budget.
                }
                () = &mut total_timer => {
                    // A queued job never starts, a running one is told to stop.
                    ticket.cancel();
                    self.record_outcome(Outcome::Timeout, 0);
                    let err = if ticket.state.load(Ordering::Acquire) == RUNNING {
                        JobError::Timeout { budget_ms: budget.as_millis() as u64 }
                    } else {
                        JobError::QueueTimeout { waited_ms: now.elapsed().as_millis() as u64 }
                    };
                    return Err(QueueError::job(job_id, err));
                }
            }
        }
    }
}

impl<W: Worker> Drop for Pending<W> {
    fn drop(&mut self) {
        if !self.finished {
            self.ticket.cancel();
            self.record_outcome(Outcome::Cancelled, 0);
        }
    }
}
