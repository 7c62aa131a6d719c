//! The `pdf` worker type: renders PDF pages to PNG files under
//! `OUTPUT_DIR/<job_id>/`.
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use serde::Serialize;

use crate::error::JobError;
use crate::queue::{JobContext, Worker};
use crate::render::pages::PageRanges;
use crate::render::process::{RenderError, Rendered, Renderer, RendererSpec};
use crate::render::protocol::{Event, FailKind, PageInfo, Request, Source};

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
    /// Spread a lone job's pages over idle workers' renderers.
    pub fan_out: bool,
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
    /// Jobs whose pages were spread over more than one renderer.
    pub fanned_out_jobs: AtomicU64,
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
            // pdfium calls abort() when an allocation fails
            // (FX_OutOfMemoryTerminate), as it does under the renderer's
            // RLIMIT_AS cap (so does Rust's allocation-failure handler):
            // the document needs more memory than a renderer may use.
            // Other deaths (SIGSEGV, traps) stay 500.
            PdfError::Render(RenderError::Crashed { status }) if status.contains("SIGABRT") => {
                JobError::Invalid(
                    "the document needs more memory than a renderer may use (PDF_RENDERER_MEMORY_LIMIT_MB); pdfium ran out and the renderer aborted".into(),
                )
            }
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

/// Where a worker's renderer waits between jobs. Parking it here instead of
/// in the worker lets a busy worker borrow an idle worker's renderer to
/// spread one job's pages (fan-out), and lets the owner take it back as
/// soon as it has a job of its own.
#[derive(Default)]
pub struct RendererSlot {
    state: Mutex<SlotState>,
    returned: Condvar,
    /// The owner has a job and is waiting for its lent renderer.
    wanted: AtomicBool,
}

#[derive(Default)]
struct SlotState {
    renderer: Option<Renderer>,
    lent: bool,
    owner_busy: bool,
}

/// Every PDF worker's slot, shared by the workers.
pub type RendererSlots = Arc<Vec<RendererSlot>>;

/// A renderer taken for one job, and where it came from.
struct Lane {
    renderer: Renderer,
    /// `Some(i)`: borrowed from worker `i`.
    lender: Option<usize>,
    busy: bool,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Takes this worker's renderer out of its slot for a job, waiting for
    /// it if another worker has borrowed it (that worker gives it back after
    /// its current chunk of pages).
    fn claim(&mut self) {
        let slot = &self.slots[self.index];
        let mut state = lock(&slot.state);
        state.owner_busy = true;
        while state.lent {
            slot.wanted.store(true, Ordering::Release);
            state = slot.returned.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        slot.wanted.store(false, Ordering::Release);
        if self.renderer.is_none() {
            self.renderer = state.renderer.take();
        }
    }

    /// Puts this worker's renderer back in its slot, available to lend.
    fn park(&mut self) {
        let slot = &self.slots[self.index];
        let mut state = lock(&slot.state);
        if let Some(renderer) = self.renderer.take() {
            state.renderer = Some(renderer);
        }
        state.owner_busy = false;
    }

    /// Borrows up to `want` renderers of idle workers.
    fn borrow(&self, want: usize) -> Vec<Lane> {
        let mut lanes = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if lanes.len() == want {
                break;
            }
            if i == self.index {
                continue;
            }
            let Ok(mut state) = slot.state.try_lock() else {
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
    fn can_borrow(&self) -> bool {
        self.slots.iter().enumerate().any(|(i, slot)| {
            i != self.index
                && slot
                    .state
                    .try_lock()
                    .is_ok_and(|s| !s.owner_busy && !s.lent && s.renderer.is_some())
        })
    }

    /// Returns a borrowed renderer to its owner; one that died or was
    /// killed is replaced first (see [`PdfWorker::replace_lost`]).
    fn give_back(&self, lender: usize, renderer: Option<Renderer>) {
        let slot = &self.slots[lender];
        let mut state = lock(&slot.state);
        state.renderer = renderer;
        state.lent = false;
        slot.returned.notify_all();
    }

    /// Replaces the borrowed renderers this job's failure killed, and hands
    /// them to their owners, so the owners' next jobs do not wait. Runs
    /// after the failed job's output is removed: cleanup comes first.
    fn replace_lost(&mut self) {
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

    /// The live renderer, started if there is none.
    fn renderer(&mut self) -> Result<&mut Renderer, RenderError> {
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
            Err(RenderError::Crashed { status }) => {
                self.engine.renderer_crashes.fetch_add(1, Ordering::Relaxed);
                tracing::error!(status, "renderer process died; starting a new one");
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

    /// Renders `request`, spreading its pages over idle workers' renderers
    /// when fan-out is on and some are idle; else on this worker's own.
    fn render(
        &mut self,
        request: &Request,
        payload: &[u8],
        ctx: &JobContext,
        on_page: &mut dyn FnMut(&PageInfo),
    ) -> Result<Rendered, RenderError> {
        if !self.settings.fan_out || !self.can_borrow() {
            return self.renderer()?.render(
                request,
                payload,
                ctx.cancelled(),
                ctx.deadline,
                |total| ctx.set_total(u64::from(total)),
                |page| on_page(page),
            );
        }
        // Learn which pages the job has (and check every limit) first.
        let probe = Request {
            dry_run: true,
            ..request.clone()
        };
        let opened = self.renderer()?.render(
            &probe,
            payload,
            ctx.cancelled(),
            ctx.deadline,
            |_| {},
            |_| {},
        )?;
        let pages = crate::render::pages::resolve(request.pages.as_deref(), opened.page_count)
            .map_err(|message| RenderError::Job {
                kind: FailKind::Limit,
                message,
            })?;
        ctx.set_total(pages.len() as u64);
        let mut lanes = self.borrow(pages.len().saturating_sub(1));
        if lanes.is_empty() {
            return self.renderer()?.render(
                request,
                payload,
                ctx.cancelled(),
                ctx.deadline,
                |_| {},
                |page| on_page(page),
            );
        }
        // Renderers read an upload from a file so it crosses a pipe once.
        let spool = match &request.source {
            Source::Payload => Some(
                Spool::write(&self.settings.out_dir, ctx.job_id, payload).map_err(|e| {
                    for lane in lanes.drain(..) {
                        if let Some(lender) = lane.lender {
                            self.give_back(lender, Some(lane.renderer));
                        }
                    }
                    RenderError::Io(format!("cannot spool the upload: {e}"))
                })?,
            ),
            Source::File(_) => None,
        };
        let source = spool
            .as_ref()
            .map_or_else(|| request.source.clone(), |s| Source::File(s.0.clone()));
        let own = self
            .renderer
            .take()
            .ok_or_else(|| RenderError::Io("renderer missing".into()))?;
        lanes.insert(
            0,
            Lane {
                renderer: own,
                lender: None,
                busy: false,
            },
        );
        // Small chunks balance the lanes and let a lender reclaim its
        // renderer soon; a chunk re-opens the document (about 1 ms).
        let chunk = pages.len().div_ceil(lanes.len() * 4).clamp(1, 8);
        let chunks: std::collections::VecDeque<Vec<u32>> =
            pages.chunks(chunk).map(<[u32]>::to_vec).collect();
        tracing::debug!(
            lanes = lanes.len(),
            pages = pages.len(),
            chunk,
            "fanning out"
        );
        self.engine.fanned_out_jobs.fetch_add(1, Ordering::Relaxed);
        let result = self.run_lanes(&mut lanes, request, source, chunks, ctx, on_page);
        for lane in lanes {
            match lane.lender {
                None => self.renderer = Some(lane.renderer),
                Some(lender) => self.give_back(lender, Some(lane.renderer)),
            }
        }
        result.map(|mut pages_done| {
            pages_done.sort_by_key(|p| p.page);
            Rendered {
                page_count: opened.page_count,
                pages: pages_done,
            }
        })
    }

    /// Feeds chunks of pages to the lanes until all are rendered. Lanes
    /// still held when it returns are alive; dead ones were removed (and
    /// borrowed ones reported dead to their owners).
    fn run_lanes(
        &mut self,
        lanes: &mut Vec<Lane>,
        request: &Request,
        source: Source,
        mut chunks: std::collections::VecDeque<Vec<u32>>,
        ctx: &JobContext,
        on_page: &mut dyn FnMut(&PageInfo),
    ) -> Result<Vec<PageInfo>, RenderError> {
        let chunk_request = |pages: &[u32]| Request {
            source: source.clone(),
            pages: Some(pages.iter().map(|&p| (p, Some(p))).collect()),
            dry_run: false,
            ..request.clone()
        };
        let mut done = Vec::new();
        let mut failure = None;
        // Start every lane.
        for lane in lanes.iter_mut() {
            if let Some(pages) = chunks.pop_front() {
                if let Err(e) = lane.renderer.send(&chunk_request(&pages), &[]) {
                    failure = Some(e);
                    break;
                }
                lane.busy = true;
            }
        }
        while failure.is_none() && lanes.iter().any(|l| l.busy) {
            let mut select = crossbeam_channel::Select::new();
            let mut order = Vec::new();
            for (i, lane) in lanes.iter().enumerate() {
                if lane.busy {
                    select.recv(lane.renderer.events());
                    order.push(i);
                }
            }
            let cancel = select.recv(ctx.cancelled());
            let timeout = ctx
                .deadline
                .saturating_duration_since(std::time::Instant::now());
            let op = match select.select_timeout(timeout) {
                Ok(op) => op,
                Err(_) => {
                    failure = Some(RenderError::Cancelled);
                    break;
                }
            };
            if op.index() == cancel {
                let _ = op.recv(ctx.cancelled());
                failure = Some(RenderError::Cancelled);
                break;
            }
            let i = order[op.index()];
            let event = op.recv(lanes[i].renderer.events());
            match event {
                Ok(Ok(Event::Page(page))) => {
                    on_page(&page);
                    done.push(page);
                }
                Ok(Ok(Event::Opened { .. })) => {}
                Ok(Ok(Event::Done)) => {
                    lanes[i].busy = false;
                    let reclaimed = lanes[i]
                        .lender
                        .is_some_and(|l| self.slots[l].wanted.load(Ordering::Acquire));
                    if !reclaimed {
                        if let Some(pages) = chunks.pop_front() {
                            if let Err(e) = lanes[i].renderer.send(&chunk_request(&pages), &[]) {
                                failure = Some(e);
                                break;
                            }
                            lanes[i].busy = true;
                            continue;
                        }
                    }
                    // Give a borrowed renderer back as soon as it is idle.
                    if let Some(lender) = lanes[i].lender {
                        let lane = lanes.remove(i);
                        self.give_back(lender, Some(lane.renderer));
                    }
                }
                Ok(Ok(Event::Failed { kind, message })) => {
                    lanes[i].busy = false;
                    failure = Some(RenderError::Job { kind, message });
                }
                Ok(Ok(Event::Ready { .. })) | Ok(Err(_)) | Err(_) => {
                    let status = lanes[i].renderer.kill();
                    failure = Some(RenderError::Crashed { status });
                }
            }
            if chunks.is_empty() && lanes.iter().all(|l| !l.busy) {
                break;
            }
            // A lender that wants its renderer back and whose lane is idle
            // was handled above; busy lanes finish their chunk first.
        }
        let Some(failure) = failure else {
            return Ok(done);
        };
        // Stop every lane still working on this job: their output is
        // discarded with the job's folder. Killed or dead renderers leave
        // the lanes; the own one is replaced by `after_job`.
        let mut i = 0;
        while i < lanes.len() {
            let dead = lanes[i].busy
                || matches!(
                    failure,
                    RenderError::Crashed { .. } | RenderError::Cancelled
                );
            if dead {
                let mut lane = lanes.remove(i);
                lane.renderer.kill();
                self.engine.track(lane.renderer.pid, false);
                // A lender keeps waiting until `replace_lost` gives it a
                // fresh renderer; the own one is replaced by `after_job`.
                if let Some(lender) = lane.lender {
                    self.engine.renderer_kills.fetch_add(1, Ordering::Relaxed);
                    self.lost.push(lender);
                }
            } else {
                i += 1;
            }
        }
        Err(failure)
    }
}

/// An upload written to `OUTPUT_DIR/.spool/<job_id>.pdf` for the renderers of
/// a fanned-out job; removed when dropped.
struct Spool(PathBuf);

impl Spool {
    fn write(
        out_dir: &std::path::Path,
        job_id: uuid::Uuid,
        bytes: &[u8],
    ) -> std::io::Result<Spool> {
        let dir = out_dir.join(".spool");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{job_id}.pdf"));
        std::fs::write(&path, bytes)?;
        Ok(Spool(path))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
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
        let needs_care = {
            let mut state = lock(&self.slots[self.index].state);
            !state.lent && state.renderer.as_mut().is_none_or(|r| !r.is_alive())
        };
        if needs_care {
            self.claim();
            let _ = self.renderer();
            self.park();
        }
    }

    /// The caller is gone (deadline passed as the job finished, client
    /// hung up): nobody will fetch these pages, so nothing stays on disk.
    fn discard(&mut self, output: PdfOutput) {
        if let Err(e) = std::fs::remove_dir_all(&output.out_dir) {
            tracing::warn!(dir = %output.out_dir.display(), "cannot remove an undelivered job's output: {e}");
        }
    }

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
            dry_run: false,
        };
        std::fs::create_dir_all(&out_dir).map_err(PdfError::Output)?;
        let engine = Arc::clone(&self.engine);
        let mut done = 0;
        self.claim();
        let result = self.render(&request, payload, ctx, &mut |page: &PageInfo| {
            done += 1;
            ctx.unit_done(done, || serde_json::to_value(page).unwrap_or_default());
            engine.pages_rendered.fetch_add(1, Ordering::Relaxed);
            engine
                .bytes_written
                .fetch_add(page.bytes, Ordering::Relaxed);
        });
        // A failed job leaves nothing behind, partial files included; this
        // comes before replacing renderers so cleanup is not delayed.
        if result.is_err() {
            if let Err(rm) = std::fs::remove_dir_all(&out_dir) {
                tracing::warn!(dir = %out_dir.display(), "cannot remove a failed job's output: {rm}");
            }
        }
        self.after_job(&result);
        self.replace_lost();
        self.park();
        match result {
            Ok(rendered) => Ok(PdfOutput {
                page_count: rendered.page_count,
                pages: rendered.pages,
                out_dir,
            }),
            Err(e) => Err(e.into()),
        }
    }
}
