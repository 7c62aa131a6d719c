//! What the server knows of its renderers as a whole: whether pdfium can
//! be loaded, which renderer processes live, and lifecycle counters;
//! updated by the PDF worker threads, read by health, status and metrics.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;

/// pdfium's availability and the renderers' counters.
#[derive(Debug, Default)]
pub struct EngineStatus {
    unavailable: Mutex<Option<String>>,
    /// Process ids of the live renderers.
    pids: Mutex<BTreeSet<u32>>,
    pub renderers_started: AtomicU64,
    pub renderer_crashes: AtomicU64,
    pub renderer_kills: AtomicU64,
    pub renderer_recycles: AtomicU64,
    /// Jobs whose pages were spread over more than one renderer.
    pub fanned_out_jobs: AtomicU64,
    pub pages_rendered: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl EngineStatus {
    /// `Some(reason)` while pdfium cannot be loaded.
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable.lock().clone()
    }

    /// Process ids of the renderers alive now.
    pub fn renderer_pids(&self) -> Vec<u32> {
        self.pids.lock().iter().copied().collect()
    }

    /// Records a renderer starting (`alive`) or gone.
    pub fn track(&self, pid: u32, alive: bool) {
        let mut pids = self.pids.lock();
        if alive {
            pids.insert(pid);
        } else {
            pids.remove(&pid);
        }
    }

    /// Records whether pdfium loads; the first failure is logged once.
    pub fn set_unavailable(&self, reason: Option<String>) {
        let mut slot = self.unavailable.lock();
        if reason.is_some() && slot.is_none() {
            tracing::error!(
                reason = reason.as_deref(),
                "pdfium cannot be loaded; PDF jobs get 503"
            );
        }
        *slot = reason;
    }
}
