//! Time as the server reads it. Records, TTLs and expiry use wall-clock
//! milliseconds (they are shared with other instances through the job
//! database), read through [`Clock`] so tests can run expiry on tokio's
//! paused clock instead of waiting for the real one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system's clock: what production uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// Wall-clock time that follows tokio's clock from the moment it was
/// made: under `#[tokio::test(start_paused = true)]` it stands still until
/// the test advances it (`tokio::time::advance`), so TTL tests run in
/// microseconds and never race the real clock.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            base_ms: now_ms(),
            base: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

/// Time since the Unix epoch (zero if the system clock is before it).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    unix_now().as_millis() as u64
}
