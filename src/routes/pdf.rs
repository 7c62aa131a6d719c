//! `POST /jobs/pdf` (render a PDF's pages to PNG) and
//! `GET /jobs/{job_id}/pages/{n}` (fetch one rendered page).
//!
//! The PDF arrives as a raw body (`Content-Type: application/pdf`), as the
//! `file` field of a multipart upload, or as JSON `{"path": ...}` naming a
//! file in `DATA_DIR` (only there: `..`, absolute paths and symlinks that
//! lead out of it are refused with 400). Options come from the query string
//! or the body (JSON fields, multipart fields): `dpi`, `pages`, `password`,
//! `timeout_ms`; the body wins where both give one.

use std::path::{Component, Path, PathBuf};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{body_error, ApiJson, ApiQuery};
use crate::queue::{Completed, SubmitOptions};
use crate::render::child::page_file_name;
use crate::render::pages;
use crate::state::AppState;
use crate::workers::pdf::{PdfInput, PdfJob, PdfOutput};

/// Options shared by every way of sending a PDF.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
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
pub struct PageLink {
    pub page: u32,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub url: String,
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
        (status = 202, description = "Async mode: accepted; follow Location (`/jobs/{job_id}`)", body = crate::jobs::JobView),
        (status = 400, description = "Bad dpi, pages, query, multipart, or a path leaving DATA_DIR", body = ErrorBody),
        (status = 413, description = "Upload over MAX_UPLOAD_BYTES", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 422, description = "Unreadable or encrypted PDF, past PDF_MAX_PAGES or PDF_MAX_PIXELS, missing pages", body = ErrorBody),
        (status = 429, description = "Over the client's rate; see Retry-After", body = ErrorBody),
        (status = 500, description = "The renderer died while rendering this job", body = ErrorBody),
        (status = 503, description = "Queue full (see Retry-After), shutting down, or pdfium unavailable", body = ErrorBody),
        (status = 504, description = "Deadline passed; the render was killed or never started", body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PdfOptions>,
    request: Request,
) -> Result<Response, ApiError> {
    let mut mode = super::jobs::Mode::read(request.uri().query(), request.headers())?;
    let (input, options) = read_input(&state, request).await?;
    let options = options.or(query);
    mode.apply(options.mode.as_deref())?;
    if mode.is_async {
        return super::jobs::submit_pdf(&state, input, options, &mode).await;
    }
    let (job, submit) = build_job(&state, input, options)?;
    let dpi = job.dpi;
    let done = run(&state, job, submit).await?;
    Ok(Json(response(done, dpi)).into_response())
}

/// Checks the engine, then admits the job to the PDF queue.
pub async fn run(
    state: &AppState,
    job: PdfJob,
    options: SubmitOptions,
) -> Result<Completed<PdfOutput>, ApiError> {
    if let Some(reason) = state.engine.unavailable() {
        return Err(ApiError::Unavailable(format!(
            "PDF rendering is unavailable: {reason}"
        )));
    }
    Ok(state.pdf.run(job, options).await?)
}

pub(crate) fn response(done: Completed<PdfOutput>, dpi: u32) -> PdfResponse {
    let job_id = done.job_id;
    PdfResponse {
        job_id,
        worker: done.worker,
        page_count: done.output.page_count,
        dpi,
        pages: done
            .output
            .pages
            .into_iter()
            .map(|p| PageLink {
                url: format!("/jobs/{job_id}/pages/{}", p.page),
                page: p.page,
                width: p.width,
                height: p.height,
                bytes: p.bytes,
            })
            .collect(),
        queue_ms: done.queue_ms,
        run_ms: done.run_ms,
        total_ms: done.total_ms,
    }
}

/// The PDF and the options the body carries, by content type.
async fn read_input(
    state: &AppState,
    request: Request,
) -> Result<(PdfInput, PdfOptions), ApiError> {
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
            let bytes = Bytes::from_request(request, state)
                .await
                .map_err(|e| body_error(e.status(), e.body_text()))?;
            Ok((pdf_bytes(bytes)?, PdfOptions::default()))
        }
        "multipart/form-data" => {
            let multipart = Multipart::from_request(request, state)
                .await
                .map_err(|e| body_error(e.status(), e.body_text()))?;
            read_multipart(multipart).await
        }
        "application/json" => {
            let ApiJson(body) = ApiJson::<PdfJsonBody>::from_request(request, state).await?;
            let path = resolve_data_path(&state.config.data_dir, &body.path)?;
            Ok((PdfInput::File(path), body.options))
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "send the PDF as application/pdf, as multipart/form-data (field `file`), or as application/json {{\"path\": ...}}; got {:?}",
            content_type
        ))),
    }
}

async fn read_multipart(mut multipart: Multipart) -> Result<(PdfInput, PdfOptions), ApiError> {
    let mut file = None;
    let mut options = PdfOptions::default();
    let field_error =
        |e: axum::extract::multipart::MultipartError| body_error(e.status(), e.body_text());
    while let Some(field) = multipart.next_field().await.map_err(field_error)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "file" => file = Some(field.bytes().await.map_err(field_error)?),
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
    Ok((pdf_bytes(file)?, options))
}

fn parse_number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{name} must be a whole number, got {text:?}")))
}

fn pdf_bytes(bytes: Bytes) -> Result<PdfInput, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::Invalid("the PDF is empty (0 bytes)".into()));
    }
    Ok(PdfInput::Bytes(bytes))
}

/// Validates options against the configured limits and builds the job.
pub fn build_job(
    state: &AppState,
    input: PdfInput,
    options: PdfOptions,
) -> Result<(PdfJob, SubmitOptions), ApiError> {
    let pdf = &state.config.pdf;
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
    let job = PdfJob {
        input,
        dpi,
        pages,
        password: options.password,
    };
    Ok((
        job,
        SubmitOptions {
            timeout,
            ..SubmitOptions::default()
        },
    ))
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

/// A rendered page as `image/png`.
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
pub async fn page(
    State(state): State<AppState>,
    axum::extract::Path((job_id, page)): axum::extract::Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job_id = Uuid::parse_str(&job_id)
        .map_err(|_| ApiError::BadRequest(format!("{job_id:?} is not a job id")))?;
    let page: u32 = page
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| ApiError::BadRequest(format!("{page:?} is not a page number")))?;
    let path = state
        .config
        .output_dir
        .join(job_id.to_string())
        .join(page_file_name(page));
    match tokio::fs::read(&path).await {
        Ok(png) => Ok((
            [
                (CONTENT_TYPE, "image/png"),
                (CACHE_CONTROL, "private, max-age=3600"),
            ],
            png,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::NotFound(format!("page {page} of job {job_id}")))
        }
        Err(e) => Err(ApiError::Internal(format!("cannot read the page: {e}"))),
    }
}
