//! Renderer lending: between jobs a worker parks its renderer in a shared
//! slot, so that a worker with a job and idle neighbours can borrow their
//! renderers to spread the job's pages (fan-out), and an owner that gets
//! a job of its own takes its renderer back after the current chunk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::PdfWorker;
use crate::render::process::Renderer;

/// Where a worker's renderer waits between jobs.
#[derive(Default)]
pub struct RendererSlot {
    state: Mutex<SlotState>,
    returned: Condvar,
    /// The owner has a job and is waiting for its lent renderer.
    pub(super) wanted: AtomicBool,
}

#[derive(Default)]
struct SlotState {
    renderer: Option<Renderer>,
    lent: bool,
    owner_busy: bool,
}

/// Every PDF worker's slot, shared by the workers.
#[derive(Clone)]
pub struct RendererSlots(Arc<Vec<RendererSlot>>);

impl RendererSlots {
    pub fn new(workers: usize) -> Self {
        RendererSlots(Arc::new(
            (0..workers).map(|_| RendererSlot::default()).collect(),
        ))
    }

    pub(super) fn get(&self, i: usize) -> &RendererSlot {
        &self.0[i]
    }
}

/// A renderer taken for one job, and where it came from.
pub(super) struct Lane {
    pub renderer: Renderer,
    /// `Some(i)`: borrowed from worker `i`.
    pub lender: Option<usize>,
    pub busy: bool,
}

impl PdfWorker {
    /// Takes this worker's renderer out of its slot for a job, waiting for
    /// it if another worker has borrowed it (that worker gives it back after
    /// its current chunk of pages).
    pub(super) fn claim(&mut self) {
        let slot = self.slots.get(self.index);
        let mut state = slot.state.lock();
        state.owner_busy = true;
        while state.lent {
            slot.wanted.store(true, Ordering::Release);
            slot.returned.wait(&mut state);
        }
        slot.wanted.store(false, Ordering::Release);
        if self.renderer.is_none() {
            self.renderer = state.renderer.take();
        }
    }

    /// Puts this worker's renderer back in its slot, available to lend.
    pub(super) fn park(&mut self) {
        let slot = self.slots.get(self.index);
        let mut state = slot.state.lock();
        if let Some(renderer) = self.renderer.take() {
            state.renderer = Some(renderer);
        }
        state.owner_busy = false;
    }

    /// Whether this worker's own renderer needs replacing while idle (gone
    /// or dead); a lent one is left to its borrower.
    pub(super) fn parked_needs_care(&self) -> bool {
        let mut state = self.slots.get(self.index).state.lock();
        !state.lent && state.renderer.as_mut().is_none_or(|r| !r.is_alive())
    }

    /// Borrows up to `want` renderers of idle workers.
    pub(super) fn borrow(&self, want: usize) -> Vec<Lane> {
        let mut lanes = Vec::new();
        for (i, slot) in self.slots.0.iter().enumerate() {
            if lanes.len() == want {
                break;
            }
            if i == self.index {
                continue;
            }
            let Some(mut state) = slot.state.try_lock() else {
                continue;
            };
            if state.owner_busy || state.lent {
                continue;
            }
            // Never lend a dead renderer: the owner replaces it.
            if state.renderer.as_mut().is_some_and(|r| !r.is_alive()) {
                continue;
            }
            if let Some(renderer) = state.renderer.take() {
                state.lent = true;
                lanes.push(Lane {
                    renderer,
                    lender: Some(i),
                    busy: false,
                });
            }
        }
        lanes
    }

    /// Whether some other worker's renderer could be borrowed now.
    pub(super) fn can_borrow(&self) -> bool {
        self.slots.0.iter().enumerate().any(|(i, slot)| {
            i != self.index
                && slot
                    .state
                    .try_lock()
                    .is_some_and(|s| !s.owner_busy && !s.lent && s.renderer.is_some())
        })
    }

    /// Whether the owner of a borrowed renderer wants it back.
    pub(super) fn wanted_back(&self, lender: usize) -> bool {
        self.slots.get(lender).wanted.load(Ordering::Acquire)
    }

    /// Returns a borrowed renderer to its owner; one that died or was
    /// killed is replaced first (see [`PdfWorker::replace_lost`]).
    pub(super) fn give_back(&self, lender: usize, renderer: Option<Renderer>) {
        let slot = self.slots.get(lender);
        let mut state = slot.state.lock();
        state.renderer = renderer;
        state.lent = false;
        slot.returned.notify_all();
    }

    /// Replaces the borrowed renderers this job's failure killed, and hands
    /// them to their owners, so the owners' next jobs do not wait. Runs
    /// after the failed job's output is removed: cleanup comes first.
    pub(super) fn replace_lost(&mut self) {
        for lender in std::mem::take(&mut self.lost) {
            let fresh = self.spawn_for_lender();
            self.give_back(lender, fresh);
        }
    }

    fn spawn_for_lender(&self) -> Option<Renderer> {
        match Renderer::spawn(&self.settings.renderer) {
            Ok(fresh) => {
                self.engine
                    .renderers_started
                    .fetch_add(1, Ordering::Relaxed);
                self.engine.track(fresh.pid, true);
                Some(fresh)
            }
            // The owner retries at its next job.
            Err(_) => None,
        }
    }
}
