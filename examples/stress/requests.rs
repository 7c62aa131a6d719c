//! Valid jobs: PDF requests in their three input forms and message jobs,
//! and the checks of a 200 PDF answer (pages, dpi, a fetched PNG).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::async_jobs::{async_job, AsyncSpec, ASYNC_SHARE};
use crate::ctx::{Ctx, Fixtures};
use crate::record::{lock, Expect, Kind, PdfOk};
use crate::rng::Rng;

/// A valid PDF request: document, options, and the pages it must return.
#[derive(Clone)]
pub struct PdfReq {
    pub doc: &'static str,
    pub bytes: Bytes,
    pub dpi: u32,
    pub pages: Option<String>,
    pub expected: Vec<u32>,
    pub password: Option<&'static str>,
}

pub fn valid_pdf(rng: &mut Rng, fx: &Fixtures) -> PdfReq {
    let (doc, bytes, n) = rng.pick(&fx.docs).clone();
    let (pages, expected): (Option<String>, Vec<u32>) = match rng.below(5) {
        0 => (None, (1..=n).collect()),
        1 => (Some("1".into()), vec![1]),
        2 => (Some("1-2".into()), vec![1, 2]),
        3 => (Some(format!("{}-", n - 1)), vec![n - 1, n]),
        _ => (Some(format!("1,{n}")), vec![1, n]),
    };
    // Keep whole 40-page documents cheap; two cores render everything.
    let dpi = if expected.len() > 6 {
        *rng.pick(&[20, 36])
    } else {
        *rng.pick(&[36, 50, 72])
    };
    PdfReq {
        doc,
        bytes,
        dpi,
        pages,
        expected,
        password: (doc == "encrypted.pdf").then_some("secret"),
    }
}

pub fn pdf_json_body(req: &PdfReq, timeout_ms: Option<u64>) -> Value {
    let mut body = json!({"path": req.doc, "dpi": req.dpi});
    if let Some(p) = &req.pages {
        body["pages"] = json!(p);
    }
    if let Some(pw) = req.password {
        body["password"] = json!(pw);
    }
    if let Some(t) = timeout_ms {
        body["timeout_ms"] = json!(t);
    }
    body
}

pub fn pdf_query(req: &PdfReq) -> Vec<(&'static str, String)> {
    let mut q = vec![("dpi", req.dpi.to_string())];
    if let Some(p) = &req.pages {
        q.push(("pages", p.clone()));
    }
    if let Some(pw) = req.password {
        q.push(("password", pw.to_string()));
    }
    q
}

/// Runs a valid PDF job in one of the three input forms, then checks the
/// answer and sometimes fetches a page.
pub async fn pdf_job(ctx: &Ctx, rng: &mut Rng, kind: Kind, target: usize, form: u64) {
    let req = valid_pdf(rng, &ctx.fx);
    if target == 0 && rng.chance(ASYNC_SHARE) {
        return async_job(ctx, rng, AsyncSpec::Pdf { req, form }).await;
    }
    let request = pdf_request(ctx, target, &req, form);
    run_pdf(ctx, rng, kind, target, &req, request, None).await;
}

/// Sends a valid PDF job, `(case, request)`, hanging up after `hang_up` if
/// given, and checks a 200 answer against `req`.
pub async fn run_pdf(
    ctx: &Ctx,
    rng: &mut Rng,
    kind: Kind,
    target: usize,
    req: &PdfReq,
    (case, request): (&'static str, reqwest::RequestBuilder),
    hang_up: Option<Duration>,
) {
    let answer = ctx
        .exec(
            kind,
            case,
            target,
            Expect::Job { pdf: true },
            request,
            hang_up,
        )
        .await;
    if let Some((200, _, body)) = answer {
        check_pdf_answer(ctx, rng, target, req, &body).await;
    }
}

/// A valid PDF job as JSON naming a path (form 0), a raw upload (1) or a
/// multipart upload (2).
pub fn pdf_request(
    ctx: &Ctx,
    target: usize,
    req: &PdfReq,
    form: u64,
) -> (&'static str, reqwest::RequestBuilder) {
    let url = ctx.url(target, "/jobs/pdf");
    match form {
        0 => (
            "json",
            ctx.client.post(&url).json(&pdf_json_body(req, None)),
        ),
        1 => (
            "raw",
            ctx.client
                .post(&url)
                .query(&pdf_query(req))
                .header("content-type", "application/pdf")
                .body(req.bytes.clone()),
        ),
        _ => {
            let part = reqwest::multipart::Part::stream_with_length(
                req.bytes.clone(),
                req.bytes.len() as u64,
            )
            .file_name("upload.pdf")
            .mime_str("application/pdf")
            .expect("mime");
            let mut form = reqwest::multipart::Form::new()
                .part("file", part)
                .text("dpi", req.dpi.to_string());
            if let Some(p) = &req.pages {
                form = form.text("pages", p.clone());
            }
            if let Some(pw) = req.password {
                form = form.text("password", pw);
            }
            ("multipart", ctx.client.post(&url).multipart(form))
        }
    }
}

pub async fn check_pdf_answer(ctx: &Ctx, rng: &mut Rng, target: usize, req: &PdfReq, body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return; // already recorded as a shape violation
    };
    let job_id = v["job_id"].as_str().unwrap_or_default().to_string();
    let pages = reply_pages(&v);
    let numbers: Vec<u32> = pages.iter().map(|p| p.0).collect();
    if numbers != req.expected {
        ctx.problem(format!(
            "job {job_id} ({} pages={:?}) returned pages {numbers:?}, expected {:?}",
            req.doc, req.pages, req.expected
        ));
    }
    if v["dpi"].as_u64() != Some(u64::from(req.dpi)) {
        ctx.problem(format!("job {job_id}: dpi {} != {}", v["dpi"], req.dpi));
    }
    // Fetch a rendered page over HTTP now and then, and a missing one.
    if !pages.is_empty() && rng.chance(0.25) {
        let &(page, w, h, bytes) = rng.pick(&pages);
        let got = get_page(ctx, target, &job_id, page, ("rendered page", 200)).await;
        if let Some(png) = got {
            match decode_png(&png) {
                Ok((pw, ph)) if (pw, ph) == (w, h) && png.len() as u64 == bytes => {}
                Ok((pw, ph)) => ctx.problem(format!(
                    "GET page {page} of {job_id}: {pw}x{ph} px, {} bytes; reply said {w}x{h}, {bytes}",
                    png.len()
                )),
                Err(e) => ctx.problem(format!("GET page {page} of {job_id}: {e}")),
            }
        }
    }
    if rng.chance(0.05) {
        let missing = req.expected.iter().max().copied().unwrap_or(0) + 1;
        get_page(ctx, target, &job_id, missing, ("page not rendered", 404)).await;
    }
    lock(&ctx.log).pdf_ok.push(PdfOk {
        target,
        job_id,
        pages,
        at: Instant::now(),
    });
}

/// `GET /jobs/{job_id}/pages/{page}` on `target`, recorded as `case`, which
/// must answer `status`; the PNG if it was 200.
async fn get_page(
    ctx: &Ctx,
    target: usize,
    job_id: &str,
    page: u32,
    (case, status): (&'static str, u16),
) -> Option<Bytes> {
    let url = ctx.url(target, &format!("/jobs/{job_id}/pages/{page}"));
    let request = ctx.client.get(url);
    let answer = ctx
        .exec(
            Kind::PageGet,
            case,
            target,
            Expect::Page(status),
            request,
            None,
        )
        .await;
    match answer {
        Some((200, _, png)) => Some(png),
        _ => None,
    }
}

/// The pages a PDF reply lists: `(page, width, height, bytes)`.
pub fn reply_pages(reply: &Value) -> Vec<(u32, u32, u32, u64)> {
    reply["pages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            (
                n("page") as u32,
                n("width") as u32,
                n("height") as u32,
                n("bytes"),
            )
        })
        .collect()
}

pub fn decode_png(data: &[u8]) -> Result<(u32, u32), String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(data));
    let mut reader = decoder.read_info().map_err(|e| format!("bad PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("PNG too large to decode")?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("bad PNG data: {e}"))?;
    Ok((info.width, info.height))
}

pub async fn message_job(
    ctx: &Ctx,
    rng: &mut Rng,
    kind: Kind,
    target: usize,
    work_ms: u64,
    timeout_ms: Option<u64>,
    hang_up: Option<Duration>,
) {
    let mut body = json!({"text": format!("stress {}", rng.next()), "work_ms": work_ms});
    if let Some(t) = timeout_ms {
        body["timeout_ms"] = json!(t);
    }
    let builder = ctx
        .http(kind)
        .post(ctx.url(target, "/jobs/message"))
        .json(&body);
    ctx.exec(
        kind,
        "message",
        target,
        Expect::Job { pdf: false },
        builder,
        hang_up,
    )
    .await;
}
