//! The `message` worker type: a real CPU-bound task of a requested length.
//!
//! It hashes the message text in rounds until `work_ms` of CPU time has been
//! spent, checking for cancellation every few microseconds of work, so a job
//! whose caller is gone stops within a millisecond. It exists to exercise
//! the queue machinery (and to size it: a `work_ms` of 0 measures the pure
//! HTTP → queue → thread → oneshot path).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::JobError;
use crate::queue::{JobContext, Worker};

/// Longest `work_ms` a request may ask for.
pub const MAX_WORK_MS: u64 = 600_000;

/// Rounds between two looks at the clock and the cancellation flag: about
/// 20–50 µs of work, so cancellation lands well within a millisecond.
const ROUNDS_PER_CHECK: u64 = 256;

#[derive(Debug, Clone)]
pub struct MessageJob {
    pub text: String,
    pub work: Duration,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MessageOutput {
    /// The text, upper-cased (the "result" a caller can check).
    pub text: String,
    /// Hash rounds computed.
    pub rounds: u64,
    /// Final digest of the rounds, hex.
    pub digest: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("cancelled after {rounds} rounds")]
    Cancelled { rounds: u64 },
}

impl From<MessageError> for JobError {
    fn from(err: MessageError) -> Self {
        match err {
            MessageError::Cancelled { .. } => JobError::Cancelled,
        }
    }
}

/// A message worker thread's context (it needs none beyond its identity).
#[derive(Debug, Default)]
pub struct MessageWorker;

impl Worker for MessageWorker {
    type Job = MessageJob;
    type Output = MessageOutput;
    type Error = MessageError;

    fn process(
        &mut self,
        job: MessageJob,
        ctx: &JobContext,
    ) -> Result<MessageOutput, MessageError> {
        process(&job, || ctx.is_cancelled())
    }
}

/// Runs the hash rounds for `job.work`, stopping early when `cancelled()`.
pub fn process(
    job: &MessageJob,
    cancelled: impl Fn() -> bool,
) -> Result<MessageOutput, MessageError> {
    let start = Instant::now();
    let mut state = fnv1a(0xcbf2_9ce4_8422_2325, job.text.as_bytes());
    let mut rounds = 0u64;
    loop {
        for _ in 0..ROUNDS_PER_CHECK {
            state = fnv1a(state, &state.to_le_bytes());
            state = fnv1a(state, job.text.as_bytes());
            rounds += 1;
        }
        if start.elapsed() >= job.work {
            break;
        }
        if cancelled() {
            return Err(MessageError::Cancelled { rounds });
        }
    }
    Ok(MessageOutput {
        text: job.text.to_uppercase(),
        rounds,
        digest: format!("{state:016x}"),
    })
}

/// FNV-1a over `bytes`, continuing from `state`. Not for security: a cheap,
/// dependency-free mix that the optimiser cannot skip.
fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn job(work_ms: u64) -> MessageJob {
        MessageJob {
            text: "hello".into(),
            work: Duration::from_millis(work_ms),
        }
    }

    #[test]
    fn it_works_at_least_the_requested_time_and_answers_the_text() {
        let start = Instant::now();
        let out = process(&job(30), || false).unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(30), "stopped early: {took:?}");
        assert_eq!(out.text, "HELLO");
        assert!(out.rounds > 0);
    }

    #[test]
    fn zero_work_still_computes_one_batch() {
        let out = process(&job(0), || false).unwrap();
        assert_eq!(out.rounds, ROUNDS_PER_CHECK);
    }

    #[test]
    fn cancellation_stops_it_at_the_first_check_after_bounded_work() {
        // Deterministic rather than timed: the task must return at the
        // first check that sees cancellation, having done at most
        // ROUNDS_PER_CHECK rounds since the previous check (tens of µs).
        let calls = Cell::new(0u64);
        let cancel_on_call = 5;
        let result = process(&job(60_000), || {
            calls.set(calls.get() + 1);
            calls.get() >= cancel_on_call
        });
        assert_eq!(
            result,
            Err(MessageError::Cancelled {
                rounds: cancel_on_call * ROUNDS_PER_CHECK
            })
        );
        assert_eq!(
            calls.get(),
            cancel_on_call,
            "no check after the cancelling one"
        );
    }
}
