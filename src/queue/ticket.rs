//! The small state machine a job's caller and its worker share, which
//! guarantees exactly one answer per job: a job is `QUEUED`, then either the
//! worker moves it to `RUNNING` or the caller moves it to `ABANDONED`.
//! Whoever wins the compare-and-swap owns the outcome.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::worker::Never;

pub(super) const QUEUED: u8 = 0;
pub(super) const RUNNING: u8 = 1;
pub(super) const ABANDONED: u8 = 2;

/// State shared by a job's caller and the worker that may run it.
pub(super) struct Ticket {
    pub(super) state: AtomicU8,
    pub(super) cancelled: AtomicBool,
    /// Dropped on cancellation so that `cancel_rx` disconnects.
    pub(super) cancel_tx: Mutex<Option<Sender<Never>>>,
    pub(super) cancel_rx: Receiver<Never>,
    /// Wakes the waiting caller when someone else cancels (DELETE).
    pub(super) cancel_notify: tokio::sync::Notify,
}

impl Ticket {
    pub(super) fn new() -> Arc<Self> {
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
    pub(super) fn start(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Caller side: give up on a job that has not started. False if it runs.
    pub(super) fn abandon_if_queued(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Stop the job wherever it is: never start it, and tell it to stop.
    pub(super) fn cancel(&self) {
        self.abandon_if_queued();
        self.cancelled.store(true, Ordering::Release);
        drop(self.cancel_tx.lock().take());
        self.cancel_notify.notify_one();
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}
