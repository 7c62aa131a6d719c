//! Async jobs as a client sees them: submit (with idempotency keys),
//! cancel, poll, and the checks of a final view and of an archive.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::ctx::{json_str, Ctx};
use crate::events::follow_events;
use crate::record::{is_final, is_state, lock, AsyncJob, Expect, Kind};
use crate::requests::{check_pdf_answer, decode_png, pdf_request, PdfReq};
use crate::rng::Rng;

/// Share of the PDF and message clients' jobs sent in async mode.
pub const ASYNC_SHARE: f64 = 0.25;
/// How long a client polls its async job before leaving it to the
/// end-of-run check.
pub const POLL_LIMIT: Duration = Duration::from_secs(15);

/// The request of an async job, kept to send it again.
pub enum AsyncSpec {
    Pdf { req: PdfReq, form: u64 },
    Message { body: Value },
}

/// The submit of an async job: `?mode=async` or `Prefer: respond-async`,
/// with an `Idempotency-Key` if given. `altered` changes the request (the
/// dpi, the text) but not the key.
pub fn async_request(
    ctx: &Ctx,
    spec: &AsyncSpec,
    prefer: bool,
    key: Option<&str>,
    altered: bool,
) -> reqwest::RequestBuilder {
    let builder = match spec {
        AsyncSpec::Pdf { req, form } => {
            let mut req = req.clone();
            if altered {
                req.dpi += 1;
            }
            pdf_request(ctx, 0, &req, *form).1
        }
        AsyncSpec::Message { body } => {
            let mut body = body.clone();
            if altered {
                body["text"] = json!(format!("{} (altered)", body["text"]));
            }
            ctx.client.post(ctx.url(0, "/jobs/message")).json(&body)
        }
    };
    let builder = if prefer {
        builder.header("prefer", "respond-async")
    } else {
        builder.query(&[("mode", "async")])
    };
    match key {
        Some(key) => builder.header("idempotency-key", key),
        None => builder,
    }
}

/// One async job: submit (sometimes with an idempotency key, replayed or
/// reused with another request), sometimes a DELETE at a random moment,
/// then follow it by polling or by its events (or leave it to the
/// end-of-run check), and check what a done job produced.
pub async fn async_job(ctx: &Ctx, rng: &mut Rng, spec: AsyncSpec) {
    let (kind, pdf) = match spec {
        AsyncSpec::Pdf { .. } => (Kind::AsyncPdf, true),
        AsyncSpec::Message { .. } => (Kind::AsyncMessage, false),
    };
    let prefer = rng.chance(0.5);
    let key = rng
        .chance(0.3)
        .then(|| format!("stress-{:016x}", rng.next()));
    let sent = Sent {
        spec: &spec,
        kind,
        prefer,
    };
    let Some(job_id) = submit(ctx, &sent, key.as_deref()).await else {
        return;
    };
    let mut job = AsyncJob {
        job_id: job_id.clone(),
        pdf,
        expected: match &spec {
            AsyncSpec::Pdf { req, .. } => req.expected.clone(),
            AsyncSpec::Message { .. } => Vec::new(),
        },
        cancelled: false,
        seen_final: None,
        verified: false,
    };
    if let Some(key) = &key {
        check_key(ctx, rng, &sent, key, &job_id).await;
    }
    if rng.chance(0.15) {
        ctx.pause(rng.ms(0, 400)).await;
        job.cancelled = cancel_job(ctx, &job_id, &[202, 409]).await;
    }
    let view = match rng.below(10) {
        0..=3 => poll_job(ctx, rng, &job_id).await,
        4..=7 => follow_events(ctx, &job_id).await,
        _ => None,
    };
    if let Some(view) = view {
        job.seen_final = view["state"].as_str().map(str::to_string);
        check_final_view(ctx, rng, &spec, &mut job, &view).await;
    }
    if rng.chance(0.03) {
        unknown_job(ctx).await;
    }
    lock(&ctx.log).async_jobs.push(job);
}

/// How an async job was submitted, to send it again.
struct Sent<'a> {
    spec: &'a AsyncSpec,
    kind: Kind,
    /// `Prefer: respond-async` rather than `?mode=async`.
    prefer: bool,
}

/// Submits the job; its id if it was answered 202, after checking the
/// 202's `Location` and `Preference-Applied`.
async fn submit(ctx: &Ctx, sent: &Sent<'_>, key: Option<&str>) -> Option<String> {
    let request = async_request(ctx, sent.spec, sent.prefer, key, false);
    let answer = ctx
        .exec(sent.kind, "submit", 0, Expect::Async, request, None)
        .await;
    let Some((202, headers, body)) = answer else {
        return None;
    };
    // None: recorded as a shape violation.
    let job_id = json_str(&body, "job_id")?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("location") != Some(format!("/jobs/{job_id}").as_str()) {
        ctx.problem(format!(
            "202 for job {job_id}: Location {:?}, expected /jobs/{job_id}",
            header("location")
        ));
    }
    if sent.prefer && header("preference-applied") != Some("respond-async") {
        ctx.problem(format!(
            "202 for job {job_id} sent with Prefer: respond-async lacks Preference-Applied"
        ));
    }
    Some(job_id)
}

/// Sometimes sends the job again with its `Idempotency-Key`: the same
/// request must be answered with the same job, marked replayed; another
/// request with the same key must be refused.
async fn check_key(ctx: &Ctx, rng: &mut Rng, sent: &Sent<'_>, key: &str, job_id: &str) {
    if rng.chance(0.3) {
        if let Some((202, headers, body)) = send_again(ctx, sent, key, false).await {
            let replayed = json_str(&body, "job_id");
            if replayed.as_deref() != Some(job_id)
                || headers
                    .get("idempotent-replayed")
                    .is_none_or(|v| v != "true")
            {
                ctx.problem(format!(
                    "Idempotency-Key {key} sent again with the same request: job {replayed:?}, Idempotent-Replayed {:?}; expected job {job_id}, true",
                    headers.get("idempotent-replayed")
                ));
            }
        }
    }
    if rng.chance(0.15) {
        if let Some((422, _, body)) = send_again(ctx, sent, key, true).await {
            let code = json_str(&body, "error");
            if code.as_deref() != Some("idempotency_key_reused") {
                ctx.problem(format!(
                    "Idempotency-Key {key} reused with another request: 422 {code:?}, expected idempotency_key_reused"
                ));
            }
        }
    }
}

/// Sends the job again with its `Idempotency-Key`: the same request, to be
/// answered 202 as a replay, or when `altered` another one, to be refused
/// with 422.
async fn send_again(
    ctx: &Ctx,
    sent: &Sent<'_>,
    key: &str,
    altered: bool,
) -> Option<(u16, HeaderMap, Bytes)> {
    let (case, expect): (_, &'static [u16]) = if altered {
        ("key reused", &[422])
    } else {
        ("idempotent replay", &[202])
    };
    let request = async_request(ctx, sent.spec, sent.prefer, Some(key), altered);
    ctx.exec(sent.kind, case, 0, Expect::AnyOf(expect), request, None)
        .await
}

/// Jobs that do not exist: 404, and only there.
async fn unknown_job(ctx: &Ctx) {
    let unknown = uuid::Uuid::new_v4();
    for (case, request) in [
        (
            "unknown job",
            ctx.client.get(ctx.url(0, &format!("/jobs/{unknown}"))),
        ),
        (
            "unknown job",
            ctx.client.delete(ctx.url(0, &format!("/jobs/{unknown}"))),
        ),
    ] {
        ctx.exec(Kind::JobGet, case, 0, Expect::AnyOf(&[404]), request, None)
            .await;
    }
}

/// `DELETE /jobs/{id}`; true if it was answered 202 `cancelled`.
pub async fn cancel_job(ctx: &Ctx, job_id: &str, expect: &'static [u16]) -> bool {
    let url = ctx.url(0, &format!("/jobs/{job_id}"));
    let answer = ctx
        .exec(
            Kind::JobCancel,
            "cancel",
            0,
            Expect::AnyOf(expect),
            ctx.client.delete(url),
            None,
        )
        .await;
    let Some((202, _, body)) = answer else {
        return false;
    };
    let state = json_str(&body, "state");
    if state.as_deref() == Some("cancelled") {
        true
    } else {
        ctx.problem(format!(
            "DELETE /jobs/{job_id} answered 202 with state {state:?}; expected cancelled (or 409 if it had ended)"
        ));
        false
    }
}

/// Polls `GET /jobs/{id}` until the job's state is final; `None` if the
/// load stops or `POLL_LIMIT` passes first.
pub async fn poll_job(ctx: &Ctx, rng: &mut Rng, job_id: &str) -> Option<Value> {
    let end = Instant::now() + POLL_LIMIT;
    let path = format!("/jobs/{job_id}");
    loop {
        let body = ctx.get_ok(Kind::JobGet, "poll", &path).await?;
        let view: Value = serde_json::from_slice(&body).ok()?;
        let state = view["state"].as_str().unwrap_or_default();
        if view["job_id"] != job_id || !is_state(state) {
            ctx.problem(format!("GET /jobs/{job_id}: {view}"));
            return None;
        }
        if is_final(state) {
            return Some(view);
        }
        if ctx.stopped() || Instant::now() > end {
            return None;
        }
        ctx.pause(rng.ms(50, 200)).await;
    }
}

/// Checks the final view a client saw: a done job's result (a PDF job's
/// pages, sometimes fetched as the archive, then verified on disk like a
/// sync answer's), a failed one's error.
pub async fn check_final_view(
    ctx: &Ctx,
    rng: &mut Rng,
    spec: &AsyncSpec,
    job: &mut AsyncJob,
    view: &Value,
) {
    let job_id = job.job_id.clone();
    match view["state"].as_str().unwrap_or_default() {
        "done" => {
            let result = &view["result"];
            if result["job_id"] != job_id.as_str() {
                ctx.problem(format!("job {job_id} done with result {result}"));
                return;
            }
            if let AsyncSpec::Pdf { req, .. } = spec {
                if rng.chance(0.5) {
                    check_archive(ctx, rng, &job_id, result).await;
                }
                let body = serde_json::to_vec(result).unwrap_or_default();
                check_pdf_answer(ctx, rng, 0, req, &body).await;
                job.verified = true;
            } else if rng.chance(0.2) {
                // A message job has no pages: its archive does not exist.
                let url = ctx.url(0, &format!("/jobs/{job_id}/archive"));
                ctx.exec(
                    Kind::JobArchive,
                    "message job",
                    0,
                    Expect::AnyOf(&[404]),
                    ctx.client.get(url),
                    None,
                )
                .await;
            }
        }
        state => {
            let error = &view["error"];
            if !error["status"].is_u64() || !error["error"].is_string() {
                ctx.problem(format!(
                    "job {job_id} {state} without an error status: {view}"
                ));
            }
        }
    }
    if rng.chance(0.1) {
        // Ended: a DELETE now is a conflict.
        cancel_job(ctx, &job_id, &[409]).await;
    }
}

/// Fetches a done PDF job's archive: a zip whose entries are exactly the
/// result's pages; one of them, chosen at random, decodes at its size.
pub async fn check_archive(ctx: &Ctx, rng: &mut Rng, job_id: &str, result: &Value) {
    let path = format!("/jobs/{job_id}/archive");
    let Some(zip) = ctx.get_ok(Kind::JobArchive, "archive", &path).await else {
        return;
    };
    let pages: Vec<(String, u32, u32)> = result["pages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(0) as u32;
            (
                format!("page-{:03}.png", n("page")),
                n("width"),
                n("height"),
            )
        })
        .collect();
    let entries = match read_zip(&zip) {
        Ok(entries) => entries,
        Err(e) => return ctx.problem(format!("archive of {job_id}: {e}")),
    };
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let expected: Vec<&str> = pages.iter().map(|p| p.0.as_str()).collect();
    if names != expected {
        return ctx.problem(format!(
            "archive of {job_id} holds {names:?}, expected {expected:?}"
        ));
    }
    if entries.is_empty() {
        return;
    }
    let i = rng.below(entries.len() as u64) as usize;
    let (name, w, h) = &pages[i];
    match decode_png(&entries[i].1) {
        Ok(dims) if dims == (*w, *h) => {}
        Ok(dims) => ctx.problem(format!(
            "archive of {job_id}: {name} is {dims:?}, result says {w}x{h}"
        )),
        Err(e) => ctx.problem(format!("archive of {job_id}: {name}: {e}")),
    }
}

/// Every entry of a zip: name and contents.
pub fn read_zip(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    use std::io::Read as _;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| format!("not a zip: {e}"))?;
    let mut entries = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(|e| format!("{}: {e}", file.name()))?;
        entries.push((file.name().to_string(), contents));
    }
    Ok(entries)
}
