//! The `pdf` worker type's engine: renders PDF pages to PNG through
//! renderer processes and hands each page to the page store.
//!
//! Each worker thread owns one renderer process ([`crate::render::process`])
//! for its whole life, replacing it when it dies, is killed for a deadline,
//! has served `PDF_RENDERER_MAX_JOBS` jobs, or holds more than
//! `PDF_RENDERER_MAX_RSS_MB` of memory after a job (pdfium's caches only
//! grow; Gotenberg recycles its engines for the same reason). Renderers
//! write into the job's scratch space; every finished page is taken by the
//! page store at once, so a client can fetch it while the job runs. A job
//! that fails leaves no pages: the store removes what it took, and its
//! scratch space goes with it. One that runs out of disk space (`ENOSPC`,
//! `EDQUOT`, met by the renderer or by the store) fails with
//! [`JobError::StorageFull`]; one whose renderer aborts under its memory
//! cap (see [`crate::render::memory`]) fails alone with a 422.
//!
//! * `lending`: renderers parked between jobs, lent to a busy neighbour.
//! * `fan_out`: one job's pages spread over borrowed renderers.
//!
//! If pdfium cannot be loaded, the worker says why once, the shared
//! [`EngineStatus`] turns not-ready, and jobs are answered 503 with that
//! reason; the worker retries the load on each job, so a library installed
//! later is picked up without a restart.

mod fan_out;
mod lending;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use uuid::Uuid;

use crate::queue::{JobContext, JobError, Worker};
use crate::render::engine::EngineStatus;
use crate::render::pages::PageRanges;
use crate::render::process::{RenderError, Rendered, Renderer, RendererSpec};
use crate::render::protocol::{FailKind, PageInfo, Request, Source};
use crate::storage::{
    is_storage_full, page_file_name, ImageFormat, JobInput, PageStore, StoredPage,
};

pub use lending::{RendererSlot, RendererSlots};

#[derive(Debug, Clone)]
pub struct PdfJob {
    pub input: JobInput,
    pub dpi: u32,
    pub pages: Option<PageRanges>,
    pub password: Option<String>,
}

/// A rendered job: its pages, in the page store.
#[derive(Debug, Clone)]
pub struct PdfOutput {
    pub job_id: Uuid,
    /// Pages in the document.
    pub page_count: u32,
    pub dpi: u32,
    /// The pages rendered, by page number.
    pub pages: Vec<StoredPage>,
}

/// Limits and services shared by every PDF worker.
#[derive(Clone)]
pub struct PdfSettings {
    pub renderer: RendererSpec,
    pub pages: Arc<dyn PageStore>,
    /// For the page store's async calls from the worker threads.
    pub runtime: tokio::runtime::Handle,
    pub max_pages: u32,
    pub max_pixels: u64,
    pub renderer_max_jobs: u32,
    pub renderer_max_rss_bytes: u64,
    /// Spread a lone job's pages over idle workers' renderers.
    pub fan_out: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The renderer aborted under its address-space cap (`cap_mb` MiB).
    #[error("the document needs more memory than a renderer may use ({cap_mb} MB, the smaller of PDF_RENDERER_MEMORY_LIMIT_MB and PDF_RENDERER_MEMORY_BUDGET_MB / PDF_WORKERS); pdfium ran out and the renderer aborted")]
    OutOfMemory { cap_mb: u64 },
    #[error("cannot store the job's pages: {0}")]
    Output(std::io::Error),
}

impl PdfError {
    /// A renderer's failure: one that died of `abort()` ran out of memory
    /// under its cap of `cap_bytes`. pdfium calls abort() when an
    /// allocation fails (FX_OutOfMemoryTerminate), as it does under the
    /// renderer's RLIMIT_AS cap (so does Rust's allocation-failure
    /// handler). Other deaths (SIGSEGV, traps) stay crashes.
    fn of_render(e: RenderError, cap_bytes: u64) -> PdfError {
        match e {
            RenderError::Crashed { exit, .. } if exit.is_abort() => PdfError::OutOfMemory {
                cap_mb: cap_bytes >> 20,
            },
            e => PdfError::Render(e),
        }
    }
}

impl From<PdfError> for JobError {
    fn from(err: PdfError) -> Self {
        match err {
            PdfError::Render(RenderError::Job { kind, message }) => match kind {
                FailKind::Format | FailKind::Password | FailKind::Limit => {
                    JobError::Invalid(message)
                }
                FailKind::Engine => JobError::Failed(message),
                FailKind::Storage => JobError::StorageFull(message),
            },
            // The document asks for more than its share of memory: the
            // request's fault (422), and other jobs carry on.
            e @ PdfError::OutOfMemory { .. } => JobError::Invalid(e.to_string()),
            PdfError::Render(RenderError::Cancelled) => JobError::Cancelled,
            PdfError::Render(RenderError::Unavailable(reason)) => JobError::Unavailable(reason),
            PdfError::Render(e @ (RenderError::Crashed { .. } | RenderError::Io(_))) => {
                JobError::Failed(e.to_string())
            }
            PdfError::Output(e) if is_storage_full(&e) => {
                JobError::StorageFull(format!("no space left to store the job's pages: {e}"))
            }
            PdfError::Output(e) => JobError::Failed(format!("cannot store the job's pages: {e}")),
        }
    }
}

/// A PDF worker thread's context: its renderer and the shared settings.
pub struct PdfWorker {
    index: usize,
    settings: Arc<PdfSettings>,
    engine: Arc<EngineStatus>,
    slots: RendererSlots,
    /// This worker's renderer while it runs a job (parked in its slot between jobs).
    renderer: Option<Renderer>,
    /// Workers whose lent renderer this job's failure killed.
    lost: Vec<usize>,
}

impl PdfWorker {
    /// Builds the context and starts the renderer at once, so that a missing
    /// pdfium is reported at server start, not at the first job.
    pub fn new(
        index: usize,
        settings: Arc<PdfSettings>,
        engine: Arc<EngineStatus>,
        slots: RendererSlots,
    ) -> Self {
        let mut worker = PdfWorker {
            index,
            settings,
            engine,
            slots,
            renderer: None,
            lost: Vec::new(),
        };
        if let Err(e) = worker.renderer() {
            tracing::debug!("renderer not started: {e}");
        }
        worker.park();
        worker
    }

    /// The live renderer, started if there is none.
    pub(super) fn renderer(&mut self) -> Result<&mut Renderer, RenderError> {
        // A renderer that died between jobs (killed, OOM) is replaced
        // before the job is sent, not discovered by failing the job.
        if self.renderer.as_mut().is_some_and(|r| !r.is_alive()) {
            self.engine.renderer_crashes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("renderer died while idle; starting a new one");
            self.drop_renderer();
        }
        if self.renderer.is_none() {
            let started = std::time::Instant::now();
            match Renderer::spawn(&self.settings.renderer) {
                Ok(renderer) => {
                    self.engine.set_unavailable(None);
                    self.engine
                        .renderers_started
                        .fetch_add(1, Ordering::Relaxed);
                    let start_ms = started.elapsed().as_secs_f64() * 1000.0;
                    tracing::debug!(pid = renderer.pid, start_ms, "renderer started");
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
    /// and recycle one that has served enough or grown too large. A
    /// renderer killed to stop its job is replaced later ([`Worker::idle`]
    /// right after the job when nothing waits, else the next job), so the
    /// cancelled job's worker is free the moment the kill is done.
    fn after_job(&mut self, result: &Result<Rendered, RenderError>) {
        match result {
            Err(RenderError::Crashed { exit, .. }) => {
                self.engine.renderer_crashes.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%exit, "renderer process died; starting a new one");
                self.drop_renderer();
            }
            Err(RenderError::Cancelled) => {
                self.engine.renderer_kills.fetch_add(1, Ordering::Relaxed);
                self.drop_renderer();
                return;
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

    /// Runs the page store's async call on this (non-async) thread.
    fn store<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.settings.runtime.block_on(call)
    }

    fn remove_pages(&self, job_id: Uuid) {
        if let Err(e) = self.store(self.settings.pages.remove_pages(job_id)) {
            tracing::warn!(%job_id, "cannot remove a job's pages: {e}");
        }
    }
}

impl Drop for PdfWorker {
    fn drop(&mut self) {
        self.claim();
        self.drop_renderer();
        self.park();
    }
}

impl Worker for PdfWorker {
    type Job = PdfJob;
    type Output = PdfOutput;
    type Error = PdfError;

    /// Between jobs: reap and replace this worker's renderer if it died,
    /// so no zombie lingers and `/status` lists only live renderers.
    ///
    /// A renderer lent to another worker's fanned-out job is left alone:
    /// claiming it would pull it out of that job every tick.
    fn idle(&mut self) {
        if self.parked_needs_care() {
            self.claim();
            let _ = self.renderer();
            self.park();
        }
    }

    /// The caller is gone (deadline passed as the job finished, client
    /// hung up): nobody will fetch these pages, so nothing stays stored.
    fn discard(&mut self, output: PdfOutput) {
        self.remove_pages(output.job_id);
    }

    fn units(output: &PdfOutput) -> u64 {
        output.pages.len() as u64
    }

    fn process(&mut self, job: PdfJob, ctx: &JobContext) -> Result<PdfOutput, PdfError> {
        let job_id = ctx.job_id;
        let pages = Arc::clone(&self.settings.pages);
        let scratch = pages.scratch(job_id).map_err(PdfError::Output)?;
        // An upload held in memory crosses the pipe as the frame's
        // payload; a spooled upload or a stored input is a file the
        // renderer reads (the job holds a spooled upload's file until it
        // ends, and `_local` holds it too).
        let (source, payload, _local) = match &job.input {
            JobInput::Inline(bytes) => (Source::Payload, bytes.as_ref(), None),
            file @ (JobInput::Spooled(_) | JobInput::Stored(_)) => {
                let local = pages.local_input(job_id, file).map_err(PdfError::Output)?;
                (
                    Source::File(local.path().to_path_buf()),
                    &[][..],
                    Some(local),
                )
            }
        };
        let request = Request {
            source,
            password: job.password.clone(),
            dpi: job.dpi,
            pages: job.pages.clone(),
            out_dir: scratch.dir().to_path_buf(),
            max_pages: self.settings.max_pages,
            max_pixels: self.settings.max_pixels,
            dry_run: false,
        };
        let engine = Arc::clone(&self.engine);
        let runtime = self.settings.runtime.clone();
        let mut stored = Vec::new();
        let mut store_error = None;
        self.claim();
        let result = self.render(&request, payload, ctx, &mut |page: &PageInfo| {
            let page = StoredPage {
                page: page.page,
                width: page.width,
                height: page.height,
                bytes: page.bytes,
                format: ImageFormat::Png,
            };
            let file = scratch.dir().join(page_file_name(page.page, page.format));
            match runtime.block_on(pages.put_page(job_id, &page, &file)) {
                Ok(()) => {
                    engine.pages_rendered.fetch_add(1, Ordering::Relaxed);
                    engine
                        .bytes_written
                        .fetch_add(page.bytes, Ordering::Relaxed);
                    ctx.page_done(stored.len() as u64 + 1, &page);
                    stored.push(page);
                }
                Err(e) => {
                    store_error.get_or_insert(e);
                }
            }
        });
        // A failed job leaves nothing behind; this comes before replacing
        // renderers so cleanup is not delayed.
        let failed = result.is_err() || store_error.is_some();
        if failed {
            self.remove_pages(job_id);
        }
        drop(scratch);
        self.after_job(&result);
        self.replace_lost();
        self.park();
        let cap = self.settings.renderer.memory_limit_bytes;
        let rendered = result.map_err(|e| PdfError::of_render(e, cap))?;
        if let Some(e) = store_error {
            return Err(PdfError::Output(e));
        }
        stored.sort_by_key(|p| p.page);
        Ok(PdfOutput {
            job_id,
            page_count: rendered.page_count,
            dpi: job.dpi,
            pages: stored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::process::Exit;

    #[test]
    fn a_full_disk_met_by_the_renderer_or_the_store_is_storage_full() {
        let renderer = PdfError::Render(RenderError::Job {
            kind: FailKind::Storage,
            message: "page 2: cannot write PNG: No space left on device".into(),
        });
        assert!(matches!(JobError::from(renderer), JobError::StorageFull(_)));
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let store = PdfError::Output(std::io::Error::from_raw_os_error(errno));
            assert!(
                matches!(JobError::from(store), JobError::StorageFull(_)),
                "errno {errno}"
            );
        }
        let other = PdfError::Output(std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(JobError::from(other), JobError::Failed(_)));
    }

    #[test]
    fn an_abort_is_the_document_outgrowing_its_renderer_s_cap_and_other_deaths_are_crashes() {
        let crashed = |exit| RenderError::Crashed { exit, detail: None };
        let abort = PdfError::of_render(crashed(Exit::Signal(libc::SIGABRT)), 300 << 20);
        let JobError::Invalid(message) = JobError::from(abort) else {
            panic!("an abort is the document's fault");
        };
        assert!(message.contains("300 MB"), "{message}");
        let segv = PdfError::of_render(crashed(Exit::Signal(libc::SIGSEGV)), 300 << 20);
        assert!(matches!(JobError::from(segv), JobError::Failed(_)));
    }
}
