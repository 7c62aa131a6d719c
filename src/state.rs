//! `AppState`: the cheap, cloneable bag of handles every handler receives:
//! one [`JobQueue`] per worker type, the async jobs' registry and the
//! shared configuration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::jobs::AsyncJobs;
use crate::metrics::HttpMetrics;
use crate::queue::JobQueue;
use crate::render::process::RendererSpec;
use crate::workers::message::MessageWorker;
use crate::workers::pdf::{EngineStatus, PdfSettings, PdfWorker, RendererSlot, RendererSlots};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub message: JobQueue<MessageWorker>,
    pub pdf: JobQueue<PdfWorker>,
    /// pdfium's availability and renderer counters.
    pub engine: Arc<EngineStatus>,
    /// HTTP request and rejection counts.
    pub http: Arc<HttpMetrics>,
    /// Async jobs: their records, events and retention.
    pub jobs: Arc<AsyncJobs>,
    draining: Arc<AtomicBool>,
    pub started: Instant,
}

impl AppState {
    /// Opens the job database and starts every worker pool. A job
    /// database that cannot be used is an error naming it.
    pub fn start(config: Config) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.output_dir)?;
        let jobs = AsyncJobs::open(config.jobs.clone(), &config.output_dir)
            .map_err(std::io::Error::other)?;
        let message = JobQueue::start("message", config.message.clone(), |_| MessageWorker)?;
        std::fs::create_dir_all(&config.output_dir)?;
        let exe = match &config.pdf.renderer_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()?,
        };
        let settings = Arc::new(PdfSettings {
            renderer: RendererSpec {
                exe,
                library: config.pdf.pdfium_library(),
                memory_limit_bytes: config.pdf.renderer_memory_limit_mb * 1024 * 1024,
                max_payload_bytes: config.pdf.max_upload_bytes as u64,
            },
            out_dir: config.output_dir.clone(),
            max_pages: config.pdf.max_pages,
            max_pixels: config.pdf.max_pixels,
            renderer_max_jobs: config.pdf.renderer_max_jobs,
            renderer_max_rss_bytes: config.pdf.renderer_max_rss_mb * 1024 * 1024,
            fan_out: config.pdf.fan_out,
        });
        let slots: RendererSlots = Arc::new(
            (0..config.pdf.pool.workers)
                .map(|_| RendererSlot::default())
                .collect(),
        );
        let engine = Arc::new(EngineStatus::default());
        let pdf_engine = Arc::clone(&engine);
        let pdf = JobQueue::start("pdf", config.pdf.pool.clone(), move |i| {
            PdfWorker::new(
                i,
                Arc::clone(&settings),
                Arc::clone(&pdf_engine),
                Arc::clone(&slots),
            )
        })?;
        Ok(AppState {
            config: Arc::new(config),
            message,
            pdf,
            engine,
            http: Arc::new(HttpMetrics::default()),
            jobs,
            draining: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
        })
    }

    /// Stops admitting jobs on every queue and answers queued ones with 503.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.message.begin_drain();
        self.pdf.begin_drain();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Lets running jobs finish within `grace`, cancels the rest and joins
    /// every worker thread. Blocking: call it off the async runtime.
    pub fn join(&self, grace: Duration) {
        self.begin_drain();
        let deadline = Instant::now() + grace;
        self.message.join(grace);
        self.pdf
            .join(deadline.saturating_duration_since(Instant::now()));
    }
}
