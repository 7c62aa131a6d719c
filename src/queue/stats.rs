//! Counters, histograms and the per-second history of one queue, read by
//! `/status`, `/metrics` and the dashboard. Outcomes of admitted jobs are
//! counted once, by the caller's side, when it has its answer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use uuid::Uuid;

use crate::clock::unix_now;
use crate::metrics::{Histogram, LATENCY_BUCKETS};

use super::pool::ms;

/// Counters for one queue, read by status and metrics. Outcomes of admitted
/// jobs are counted once, by the caller's side, when it has its answer.
#[derive(Default)]
pub struct QueueStats {
    pub(super) busy: AtomicUsize,
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
    /// `None` where job ids are not shown (`/status` off the admin scope).
    pub job_id: Option<Uuid>,
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
    pub(super) fn record_run(&self, run: Duration) {
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
    pub(super) fn record_answer(
        &self,
        job_id: Uuid,
        outcome: &'static str,
        total: Duration,
        units: u64,
    ) {
        let now = unix_now();
        let second = now.as_secs();
        let slot_of = |s: u64| (s % HISTORY_SECS as u64) as usize;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| total.as_secs_f64() <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut recent = self.recent.lock();
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
            job_id: Some(job_id),
            outcome,
            total_ms: ms(total),
            units,
            at_ms: now.as_millis() as u64,
        });
    }

    /// Jobs answered in the last `window_s` seconds (at most the history).
    pub fn window(&self, window_s: u64) -> WindowStats {
        let window_s = window_s.clamp(1, HISTORY_SECS as u64);
        self.ages(unix_now().as_secs(), 0, window_s)
    }

    /// Per-`step_s` windows over the last `HISTORY_SECS`, oldest first.
    pub fn history(&self, step_s: u64) -> Vec<WindowStats> {
        let step_s = step_s.clamp(1, HISTORY_SECS as u64);
        let now = unix_now().as_secs();
        let steps = HISTORY_SECS as u64 / step_s;
        (0..steps)
            .rev()
            .map(|i| self.ages(now, i * step_s, (i + 1) * step_s))
            .collect()
    }

    /// Jobs answered between `lo` (inclusive) and `hi` seconds ago.
    fn ages(&self, now: u64, lo: u64, hi: u64) -> WindowStats {
        let recent = self.recent.lock();
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
        let window_s = hi - lo;
        WindowStats {
            window_s,
            answered,
            per_second: answered as f64 / window_s as f64,
            p50_ms: quantile(&buckets, 0.50),
            p95_ms: quantile(&buckets, 0.95),
        }
    }

    /// The last jobs answered, newest first.
    pub fn recent_jobs(&self) -> Vec<FinishedJob> {
        self.recent.lock().jobs.iter().cloned().collect()
    }
}
