//! The `pdf` worker type: renders PDF pages to PNG files under
//! `OUT_DIR/<job_id>/`.
//!
//! Each worker thread owns one renderer process ([`crate::render::process`])
//! for its whole life, replacing it when it dies, is killed for a deadline,
//! has served `PDF_RENDERER_MAX_JOBS` jobs, or holds more than
//! `PDF_RENDERER_MAX_RSS_MB` of memory after a job (pdfium's caches only
//! grow; Gotenberg recycles its engines for the same reason). A job that
//! fails leaves nothing in `out/`: its folder is removed.
//!
//! If pdfium cannot be loaded, the worker says why once, the shared
//! [`EngineStatus`] turns not-ready, and jobs are answered 503 with that
//! reason; the worker retries the load on each job, so a library installed
//! later is picked up without a restart.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;

use crate::error::JobError;
use crate::queue::{JobContext, Worker};
use crate::render::pages::PageRanges;
use crate::render::process::{RenderError, Renderer, RendererSpec};
use crate::render::protocol::{FailKind, PageInfo, Request, Source};

/// Where a job's PDF comes from.
#[derive(Debug, Clone)]
pub enum PdfInput {
    /// Uploaded bytes.
    Bytes(Bytes),
    /// A checked path inside `DATA_DIR`.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct PdfJob {
    pub input: PdfInput,
    pub dpi: u32,
    pub pages: Option<PageRanges>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PdfOutput {
    /// Pages in the document.
    pub page_count: u32,
    pub pages: Vec<PageInfo>,
    /// Folder the pages were written to.
    #[serde(skip)]
    pub out_dir: PathBuf,
}

/// Limits and places shared by every PDF worker.
#[derive(Debug, Clone)]
pub struct PdfSettings {
    pub renderer: RendererSpec,
    pub out_dir: PathBuf,
    pub max_pages: u32,
    pub max_pixels: u64,
    pub renderer_max_jobs: u32,
    pub renderer_max_rss_bytes: u64,
}

/// Whether pdfium can be loaded, and renderer lifecycle counters; shared by
/// the workers, read by health and status.
#[derive(Debug, Default)]
pub struct EngineStatus {
    unavailable: Mutex<Option<String>>,
    /// Process ids of the live renderers.
    pids: Mutex<BTreeSet<u32>>,
    pub renderers_started: AtomicU64,
    pub renderer_crashes: AtomicU64,
    pub renderer_kills: AtomicU64,
    pub renderer_recycles: AtomicU64,
    pub pages_rendered: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl EngineStatus {
    /// `Some(reason)` while pdfium cannot be loaded.
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Process ids of the renderers alive now.
    pub fn renderer_pids(&self) -> Vec<u32> {
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    fn track(&self, pid: u32, alive: bool) {
        let mut pids = self.pids.lock().unwrap_or_else(|p| p.into_inner());
        if alive {
            pids.insert(pid);
        } else {
            pids.remove(&pid);
        }
    }

    fn set_unavailable(&self, reason: Option<String>) {
        let mut slot = self.unavailable.lock().unwrap_or_else(|p| p.into_inner());
        if reason.is_some() && slot.is_none() {
            tracing::error!(
                reason = reason.as_deref(),
                "pdfium cannot be loaded; PDF jobs get 503"
            );
        }
        *slot = reason;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("cannot prepare the output folder: {0}")]
    Output(std::io::Error),
}

impl From<PdfError> for JobError {
    fn from(err: PdfError) -> Self {
        match err {
            PdfError::Render(RenderError::Job { kind, message }) => match kind {
                FailKind::Format | FailKind::Password | FailKind::Limit => {
                    JobError::Invalid(message)
                }
                FailKind::Engine => JobError::Failed(message),
            },
            PdfError::Render(RenderError::Cancelled) => JobError::Cancelled,
            PdfError::Render(RenderError::Unavailable(reason)) => JobError::Unavailable(reason),
            PdfError::Render(e @ (RenderError::Crashed { .. } | RenderError::Io(_))) => {
                JobError::Failed(e.to_string())
            }
            PdfError::Output(e) => {
                JobError::Failed(format!("cannot prepare the output folder: {e}"))
            }
        }
    }
}

/// A PDF worker thread's context: its renderer and the shared settings.
pub struct PdfWorker {
    settings: Arc<PdfSettings>,
    engine: Arc<EngineStatus>,
    renderer: Option<Renderer>,
}

impl PdfWorker {
    /// Builds the context and starts the renderer at once, so that a missing
    /// pdfium is reported at server start, not at the first job.
    pub fn new(settings: Arc<PdfSettings>, engine: Arc<EngineStatus>) -> Self {
        let mut worker = PdfWorker {
            settings,
            engine,
            renderer: None,
        };
        if let Err(e) = worker.renderer() {
            tracing::debug!("renderer not started: {e}");
        }
        worker
    }

    /// The live renderer, started if there is none.
    fn renderer(&mut self) -> Result<&mut Renderer, RenderError> {
        if self.renderer.is_none() {
            match Renderer::spawn(&self.settings.renderer) {
                Ok(renderer) => {
                    self.engine.set_unavailable(None);
                    self.engine
                        .renderers_started
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pid = renderer.pid, "renderer started");
                    self.engine.track(renderer.pid, true);
                    self.renderer = Some(renderer);
                }
                Err(e) => {
                    if let RenderError::Unavailable(reason) = &e {
                        self.engine.set_unavailable(Some(reason.clone()));
                    }
                    return Err(e);
                }
            }
        }
        self.renderer
            .as_mut()
            .ok_or_else(|| RenderError::Io("renderer missing after start".into()))
    }

    /// Stops and forgets the current renderer.
    fn drop_renderer(&mut self) {
        if let Some(mut renderer) = self.renderer.take() {
            renderer.kill();
            self.engine.track(renderer.pid, false);
        }
    }

    /// After a job: replace a dead renderer now (off the next job's path),
    /// and recycle one that has served enough or grown too large.
    fn after_job(&mut self, result: &Result<crate::render::process::Rendered, RenderError>) {
        match result {
            Err(RenderError::Crashed { status }) => {
                self.engine.renderer_crashes.fetch_add(1, Ordering::Relaxed);
                tracing::error!(status, "renderer process died; starting a new one");
                self.drop_renderer();
            }
            Err(RenderError::Cancelled) => {
                self.engine.renderer_kills.fetch_add(1, Ordering::Relaxed);
                self.drop_renderer();
            }
            Err(RenderError::Io(message)) => {
                tracing::error!(message, "renderer failed; starting a new one");
                self.drop_renderer();
            }
            Ok(_) | Err(RenderError::Job { .. } | RenderError::Unavailable(_)) => {
                let recycle = self.renderer.as_ref().is_some_and(|r| {
                    let rss = r.rss_bytes().unwrap_or(0);
                    let due = r.jobs_done >= self.settings.renderer_max_jobs
                        || rss > self.settings.renderer_max_rss_bytes;
                    if due {
                        tracing::info!(pid = r.pid, jobs = r.jobs_done, rss, "recycling renderer");
                    }
                    due
                });
                if recycle {
                    self.engine
                        .renderer_recycles
                        .fetch_add(1, Ordering::Relaxed);
                    self.drop_renderer();
                }
            }
        }
        if self.renderer.is_none() {
            let _ = self.renderer();
        }
    }
}

impl Drop for PdfWorker {
    fn drop(&mut self) {
        self.drop_renderer();
    }
}

impl Worker for PdfWorker {
    type Job = PdfJob;
    type Output = PdfOutput;
    type Error = PdfError;

    fn units(output: &PdfOutput) -> u64 {
        output.pages.len() as u64
    }

    fn process(&mut self, job: PdfJob, ctx: &JobContext) -> Result<PdfOutput, PdfError> {
        let out_dir = self.settings.out_dir.join(ctx.job_id.to_string());
        let (source, payload) = match &job.input {
            PdfInput::Bytes(bytes) => (Source::Payload, bytes.as_ref()),
            PdfInput::File(path) => (Source::File(path.clone()), &[][..]),
        };
        let request = Request {
            source,
            password: job.password.clone(),
            dpi: job.dpi,
            pages: job.pages.clone(),
            out_dir: out_dir.clone(),
            max_pages: self.settings.max_pages,
            max_pixels: self.settings.max_pixels,
        };
        std::fs::create_dir_all(&out_dir).map_err(PdfError::Output)?;
        let engine = Arc::clone(&self.engine);
        let mut done = 0;
        let result = match self.renderer() {
            Ok(renderer) => renderer.render(
                &request,
                payload,
                ctx.cancelled(),
                ctx.deadline,
                |total| ctx.set_total(u64::from(total)),
                |page| {
                    done += 1;
                    ctx.progress(done);
                    engine.pages_rendered.fetch_add(1, Ordering::Relaxed);
                    engine
                        .bytes_written
                        .fetch_add(page.bytes, Ordering::Relaxed);
                },
            ),
            Err(e) => Err(e),
        };
        self.after_job(&result);
        match result {
            Ok(rendered) => Ok(PdfOutput {
                page_count: rendered.page_count,
                pages: rendered.pages,
                out_dir,
            }),
            Err(e) => {
                // A failed job leaves nothing behind, partial files included.
                if let Err(rm) = std::fs::remove_dir_all(&out_dir) {
                    tracing::warn!(dir = %out_dir.display(), "cannot remove a failed job's output: {rm}");
                }
                Err(e.into())
            }
        }
    }
}
