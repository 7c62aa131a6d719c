//! `AppState`: the cheap, cloneable bag of handles every handler receives:
//! one [`JobQueue`] per worker type and the shared configuration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::queue::JobQueue;
use crate::workers::message::MessageWorker;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub message: JobQueue<MessageWorker>,
    draining: Arc<AtomicBool>,
    pub started: Instant,
}

impl AppState {
    /// Starts every worker pool.
    pub fn start(config: Config) -> std::io::Result<Self> {
        let message = JobQueue::start("message", config.message.clone(), |_| MessageWorker)?;
        Ok(AppState {
            config: Arc::new(config),
            message,
            draining: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
        })
    }

    /// Stops admitting jobs on every queue and answers queued ones with 503.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.message.begin_drain();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Lets running jobs finish within `grace`, cancels the rest and joins
    /// every worker thread. Blocking: call it off the async runtime.
    pub fn join(&self, grace: Duration) {
        self.begin_drain();
        self.message.join(grace);
    }
}
