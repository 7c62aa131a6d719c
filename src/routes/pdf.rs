//! `POST /jobs/pdf` (render a PDF's pages to PNG) and
//! `GET /jobs/{job_id}/pages/{n}` (fetch one rendered page); also the
//! `pdf` worker type's registration: [`PdfKind`].
//!
//! The PDF arrives as a raw body (`Content-Type: application/pdf`), as the
//! `file` field of a multipart upload, or as JSON `{"path": ...}` naming a
//! file in `DATA_DIR` (only there: `..`, absolute paths and symlinks that
//! lead out of it are refused with 400). Options come from the query string
//! or the body (JSON fields, multipart fields): `dpi`, `pages`, `password`,
//! `timeout_ms`; the body wins where both give one.
//!
//! An upload (raw or the `file` field) is read as it arrives
//! ([`crate::upload`]): held in memory up to `UPLOAD_SPOOL_THRESHOLD_BYTES`,
//! streamed to a spool file in the output folder past it, and refused with
//! 413 at the chunk that crosses `MAX_UPLOAD_BYTES`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{body_error, ApiJson, ApiQuery, JobId};
use crate::kind::JobKind;
use crate::metrics::{label, Exposition};
use crate::queue::{Completed, JobQueue, SubmitOptions};
use crate::render::engine::EngineStatus;
use crate::render::pages;
use crate::render::process::RendererSpec;
use crate::state::{AppState, StartContext};
use crate::storage::{InputRef, JobInput};
use crate::tenants::{may_see, Caller};
use crate::upload::Upload;
use crate::workers::pdf::{PdfJob, PdfOutput, PdfSettings, PdfWorker, RendererSlots};

use super::admission::Admission;
use super::doc::SubmitResponses;
use super::view::PageLink;

/// Options shared by every way of sending a PDF.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PdfOptions {
    /// Resolution, 1 to PDF_MAX_DPI (default PDF_DEFAULT_DPI).
    pub dpi: Option<u32>,
    /// Pages to render, e.g. `1-3,7,10-` (default: all).
    pub pages: Option<String>,
    /// Password of an encrypted document.
    pub password: Option<String>,
    /// A deadline shorter than PDF_TIMEOUT_MS (PDF_ASYNC_TIMEOUT_MS in async mode).
    pub timeout_ms: Option<u64>,
    /// `async`: answer 202 at once and run the job detached (see `/jobs/{job_id}`).
    /// `Prefer: respond-async` does the same unless `mode=sync` is given.
    /// Not recorded with the job.
    #[serde(skip_serializing)]
    pub mode: Option<String>,
}

impl PdfOptions {
    /// Fills the options this one lacks from `other`.
    fn or(self, other: PdfOptions) -> PdfOptions {
        PdfOptions {
            dpi: self.dpi.or(other.dpi),
            pages: self.pages.or(other.pages),
            password: self.password.or(other.password),
            timeout_ms: self.timeout_ms.or(other.timeout_ms),
            mode: self.mode.or(other.mode),
        }
    }
}

/// The JSON form: a file in `DATA_DIR` plus options.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PdfJsonBody {
    /// A file name inside DATA_DIR.
    pub path: String,
    #[serde(flatten)]
    pub options: PdfOptions,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PdfResponse {
    pub job_id: Uuid,
    pub worker: String,
    pub page_count: u32,
    pub dpi: u32,
    pub pages: Vec<PageLink>,
    pub queue_ms: f64,
    pub run_ms: f64,
    pub total_ms: f64,
}

/// The `pdf` worker type: its queue, its renderers' shared state, its limits.
pub struct PdfKind {
    queue: JobQueue<PdfWorker>,
    engine: Arc<EngineStatus>,
    config: crate::config::PdfConfig,
}

impl PdfKind {
    pub fn start(ctx: &StartContext) -> std::io::Result<Self> {
        let config = ctx.config.pdf.clone();
        let exe = match &config.renderer_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()?,
        };
        let settings = Arc::new(PdfSettings {
            renderer: RendererSpec {
                exe,
                library: config.pdfium_library(),
                memory_limit_bytes: config.renderer_cap_mb().saturating_mul(1024 * 1024),
                max_payload_bytes: config.max_upload_bytes as u64,
            },
            pages: Arc::clone(&ctx.pages),
            runtime: ctx.runtime.clone(),
            max_pages: config.max_pages,
            max_pixels: config.max_pixels,
            renderer_max_jobs: config.renderer_max_jobs,
            renderer_max_rss_bytes: config.renderer_max_rss_mb * 1024 * 1024,
            fan_out: config.fan_out,
        });
        let slots = RendererSlots::new(config.pool.workers);
        let engine = Arc::new(EngineStatus::default());
        let workers_engine = Arc::clone(&engine);
        let queue = JobQueue::start(Self::NAME, config.pool.clone(), move |i| {
            PdfWorker::new(
                i,
                Arc::clone(&settings),
                Arc::clone(&workers_engine),
                slots.clone(),
            )
        })?;
        Ok(PdfKind {
            queue,
            engine,
            config,
        })
    }

    pub fn engine(&self) -> &Arc<EngineStatus> {
        &self.engine
    }
}

impl JobKind for PdfKind {
    type Worker = PdfWorker;
    type Params = PdfOptions;
    type Reply = PdfResponse;
    const NAME: &'static str = "pdf";
    const MAKES_PAGES: bool = true;
    const ENGINE: &'static str = "pdfium";

    fn queue(&self) -> &JobQueue<PdfWorker> {
        &self.queue
    }

    /// Validates options against the configured limits and builds the job.
    fn build(
        &self,
        options: &PdfOptions,
        input: Option<&JobInput>,
    ) -> Result<(PdfJob, SubmitOptions), ApiError> {
        let pdf = &self.config;
        let dpi = options.dpi.unwrap_or(pdf.default_dpi);
        if dpi == 0 || dpi > pdf.max_dpi {
            return Err(ApiError::BadRequest(format!(
                "dpi must be between 1 and {} (PDF_MAX_DPI), got {dpi}",
                pdf.max_dpi
            )));
        }
        let pages = options
            .pages
            .as_deref()
            .map(pages::parse)
            .transpose()
            .map_err(ApiError::BadRequest)?;
        let timeout = super::timeout_from(options.timeout_ms)?;
        // pdfium takes the password as a C string.
        if options
            .password
            .as_deref()
            .is_some_and(|p| p.contains('\0'))
        {
            return Err(ApiError::BadRequest(
                "password must not contain NUL characters".into(),
            ));
        }
        let input = input
            .cloned()
            .ok_or_else(|| ApiError::BadRequest("a PDF job needs a PDF".into()))?;
        let job = PdfJob {
            input,
            dpi,
            pages,
            password: options.password.clone(),
        };
        Ok((
            job,
            SubmitOptions {
                timeout,
                ..SubmitOptions::default()
            },
        ))
    }

    fn reply(&self, done: Completed<PdfOutput>) -> PdfResponse {
        let job_id = done.job_id;
        PdfResponse {
            job_id,
            worker: done.worker,
            page_count: done.output.page_count,
            dpi: done.output.dpi,
            pages: done
                .output
                .pages
                .iter()
                .map(|p| PageLink::of(job_id, p))
                .collect(),
            queue_ms: done.queue_ms,
            run_ms: done.run_ms,
            total_ms: done.total_ms,
        }
    }

    fn unavailable(&self) -> Option<String> {
        self.engine.unavailable()
    }

    fn status(&self) -> Option<Value> {
        let e = &self.engine;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Some(json!({
            "available": e.unavailable().is_none(),
            "unavailable_reason": e.unavailable(),
            "library": self.config.pdfium_library(),
            "renderer_pids": e.renderer_pids(),
            "renderer_memory_cap_mb": self.config.renderer_cap_mb(),
            "renderer_memory_budget_mb": self.config.renderer_memory_budget_mb,
            "renderers_started": n(&e.renderers_started),
            "renderer_crashes": n(&e.renderer_crashes),
            "renderer_kills": n(&e.renderer_kills),
            "renderer_recycles": n(&e.renderer_recycles),
            "fanned_out_jobs": n(&e.fanned_out_jobs),
            "pages_rendered": n(&e.pages_rendered),
            "bytes_written": n(&e.bytes_written),
        }))
    }

    fn metrics(&self, out: &mut Exposition) {
        let e = &self.engine;
        let n = |c: &std::sync::atomic::AtomicU64| {
            vec![(
                Vec::new(),
                c.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )]
        };
        out.gauge(
            "jobserver_pdf_engine_available",
            "1 when pdfium can be loaded.",
            [(Vec::new(), f64::from(u8::from(e.unavailable().is_none())))],
        );
        out.gauge(
            "jobserver_pdf_renderers",
            "Live renderer processes.",
            [(Vec::new(), e.renderer_pids().len() as f64)],
        );
        out.counter(
            "jobserver_pdf_renderer_starts_total",
            "Renderer processes started.",
            n(&e.renderers_started),
        );
        out.counter(
            "jobserver_pdf_renderer_restarts_total",
            "Renderers replaced after dying (crash) or being killed (deadline, cancellation).",
            [
                (label("reason", "crash"), n(&e.renderer_crashes)[0].1),
                (label("reason", "killed"), n(&e.renderer_kills)[0].1),
            ],
        );
        let counters = [
            ("jobserver_pdf_renderer_recycles_total", "Healthy renderers replaced after PDF_RENDERER_MAX_JOBS jobs or above PDF_RENDERER_MAX_RSS_MB.", &e.renderer_recycles),
            ("jobserver_pdf_fanned_out_jobs_total", "Jobs whose pages were spread over idle workers' renderers.", &e.fanned_out_jobs),
            ("jobserver_pdf_pages_rendered_total", "Pages rendered and written.", &e.pages_rendered),
            ("jobserver_pdf_written_bytes_total", "Bytes of PNG written.", &e.bytes_written),
        ];
        for (name, help, value) in counters {
            out.counter(name, help, n(value));
        }
    }
}

/// The PDF type's routes: submit with the upload limit, and pages.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pdf_submit))
        .layer(DefaultBodyLimit::max(state.config.pdf.max_upload_bytes))
        .merge(OpenApiRouter::new().routes(routes!(page_get)))
}

/// Renders a PDF's pages to PNG files under `OUTPUT_DIR/<job_id>/`.
#[utoipa::path(post, path = "/jobs/pdf", tag = "jobs",
    params(PdfOptions),
    request_body(description = "The PDF: raw, as multipart field `file` (with optional option fields), or JSON naming a file in DATA_DIR",
        content(
            ("application/pdf"),
            ("multipart/form-data"),
            (PdfJsonBody = "application/json"),
        )),
    responses(
        (status = 200, description = "Pages rendered", body = PdfResponse),
        (status = 500, description = "The renderer died while rendering this job", body = ErrorBody),
        (status = 507, description = "No space left to store this job's pages (`insufficient_storage`); nothing of it is kept", body = ErrorBody),
        SubmitResponses,
    ))]
pub async fn pdf_submit(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PdfOptions>,
    mut admission: Admission<PdfKind>,
    request: Request,
) -> Result<Response, ApiError> {
    let (input, options) = read_input(&state, request).await?;
    let options = options.or(query);
    admission.apply_mode(&state, options.mode.as_deref())?;
    admission.run_or_accept(&state, options, Some(input)).await
}

/// The PDF and the options the body carries, by content type.
async fn read_input(
    state: &AppState,
    request: Request,
) -> Result<(JobInput, PdfOptions), ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/pdf" => {
            let mut upload = new_upload(state);
            upload.read_body(request.into_body()).await?;
            Ok((pdf_input(upload.finish().await?)?, PdfOptions::default()))
        }
        "multipart/form-data" => {
            let multipart = Multipart::from_request(request, state)
                .await
                .map_err(|e| body_error(&e, e.status(), e.body_text()))?;
            read_multipart(state, multipart).await
        }
        "application/json" => {
            let ApiJson(body) = ApiJson::<PdfJsonBody>::from_request(request, state).await?;
            let path = resolve_data_path(&state.config.data_dir, &body.path)?;
            Ok((data_file(path), body.options))
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "send the PDF as application/pdf, as multipart/form-data (field `file`), or as application/json {{\"path\": ...}}; got {:?}",
            content_type
        ))),
    }
}

/// An upload to `POST /jobs/pdf`, under its threshold and limit.
fn new_upload(state: &AppState) -> Upload<'_> {
    let pdf = &state.config.pdf;
    Upload::new(
        &*state.pages,
        pdf.upload_spool_threshold_bytes,
        pdf.max_upload_bytes,
    )
}

async fn read_multipart(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<(JobInput, PdfOptions), ApiError> {
    let mut file = None;
    let mut options = PdfOptions::default();
    let field_error =
        |e: axum::extract::multipart::MultipartError| body_error(&e, e.status(), e.body_text());
    while let Some(mut field) = multipart.next_field().await.map_err(field_error)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "file" => {
                // A second `file` field replaces the first (whose spool
                // file, if any, goes with it).
                let mut upload = new_upload(state);
                while let Some(chunk) = field.chunk().await.map_err(field_error)? {
                    upload.push(chunk).await?;
                }
                file = Some(upload.finish().await?);
            }
            "dpi" | "pages" | "password" | "timeout_ms" | "mode" => {
                let text = field.text().await.map_err(field_error)?;
                match name.as_str() {
                    "dpi" => options.dpi = Some(parse_number(&name, &text)?),
                    "timeout_ms" => options.timeout_ms = Some(parse_number(&name, &text)?),
                    "mode" => options.mode = Some(text),
                    "pages" => options.pages = Some(text),
                    _ => options.password = Some(text),
                }
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unexpected multipart field {other:?}; expected file, dpi, pages, password, timeout_ms, mode"
                )))
            }
        }
    }
    let file =
        file.ok_or_else(|| ApiError::BadRequest("the multipart body has no `file` field".into()))?;
    Ok((pdf_input(file)?, options))
}

fn parse_number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{name} must be a whole number, got {text:?}")))
}

/// An upload as a PDF job's input: not empty. (A spooled one never is: it
/// is past its threshold.)
fn pdf_input(input: JobInput) -> Result<JobInput, ApiError> {
    if matches!(&input, JobInput::Inline(bytes) if bytes.is_empty()) {
        return Err(ApiError::Invalid("the PDF is empty (0 bytes)".into()));
    }
    Ok(input)
}

/// A checked file in `DATA_DIR` as a job's input.
pub fn data_file(path: PathBuf) -> JobInput {
    JobInput::Stored(InputRef::Data { path })
}

/// Resolves `name` inside `data_dir`, refusing anything that could leave it.
pub fn resolve_data_path(data_dir: &Path, name: &str) -> Result<PathBuf, ApiError> {
    let relative = Path::new(name);
    let plain = !name.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(ApiError::BadRequest(format!(
            "path must name a file inside the data folder, without `..` or a leading `/`; got {name:?}"
        )));
    }
    let root = data_dir
        .canonicalize()
        .map_err(|e| ApiError::Unavailable(format!("the data folder cannot be read: {e}")))?;
    let full = root
        .join(relative)
        .canonicalize()
        .map_err(|_| ApiError::Invalid(format!("no file named {name:?} in the data folder")))?;
    if !full.starts_with(&root) {
        return Err(ApiError::BadRequest(format!(
            "path {name:?} leads out of the data folder (symlink)"
        )));
    }
    if !full.is_file() {
        return Err(ApiError::Invalid(format!("{name:?} is not a file")));
    }
    Ok(full)
}

/// Whether the caller's tenant owns job `job_id`'s pages: an async job's
/// owner is in its record, a sync job's was stored with its pages.
async fn owns_pages(state: &AppState, caller: &Caller, job_id: Uuid) -> Result<bool, ApiError> {
    if let Some(job) = state.jobs.snapshot(job_id).await? {
        return Ok(may_see(caller, job.tenant.as_deref()));
    }
    let owner = state
        .pages
        .owner(job_id)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot read the pages' owner: {e}")))?;
    Ok(may_see(caller, owner.as_deref()))
}

/// A rendered page, as the image it was stored as.
#[utoipa::path(get, path = "/jobs/{job_id}/pages/{page}", tag = "jobs",
    params(
        ("job_id" = String, Path, description = "The job's id"),
        ("page" = u32, Path, description = "1-based page number"),
    ),
    responses(
        (status = 200, description = "The page", content_type = "image/png", body = Vec<u8>),
        (status = 400, description = "Not a job id or page number", body = ErrorBody),
        (status = 404, description = "No such page", body = ErrorBody),
        (status = 429, description = "Over the client's rate", body = ErrorBody),
    ))]
pub async fn page_get(
    State(state): State<AppState>,
    JobId(job_id): JobId,
    caller: Caller,
    axum::extract::Path((_, page)): axum::extract::Path<(String, String)>,
) -> Result<Response, ApiError> {
    let page: u32 = page
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| ApiError::BadRequest(format!("{page:?} is not a page number")))?;
    if caller.owner().is_some() && !owns_pages(&state, &caller, job_id).await? {
        return Err(ApiError::NotFound(format!("page {page} of job {job_id}")));
    }
    match state.pages.get_page(job_id, page).await {
        Ok(Some((format, bytes))) => Ok((
            [
                (CONTENT_TYPE, format.content_type()),
                (CACHE_CONTROL, "private, max-age=3600"),
            ],
            bytes,
        )
            .into_response()),
        Ok(None) => Err(ApiError::NotFound(format!("page {page} of job {job_id}"))),
        Err(e) => Err(ApiError::Internal(format!("cannot read the page: {e}"))),
    }
}
