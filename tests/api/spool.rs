//! Uploads past `UPLOAD_SPOOL_THRESHOLD_BYTES`: streamed to a spool file
//! under `OUTPUT_DIR/.spool/` while they arrive, rendered like uploads held
//! in memory, and never left behind: not after an answer, a client gone
//! mid-body, a body timeout or a 413.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    accepted_id, assert_error, eventually, fixture, ok_json, spawn_app, test_config, TestApp,
};

const SOON: Duration = Duration::from_secs(10);

/// What the spool-threshold tests upload: 170 KB, six pages.
const PDF: &str = "sample.pdf";
const QUERY: &str = "?dpi=36";

/// A server that spools every upload past 1 KiB.
async fn spooling_app() -> TestApp {
    let mut config = test_config();
    config.pdf.upload_spool_threshold_bytes = 1024;
    spawn_app(config).await
}

/// The spooled uploads in the server's spool folder now.
fn spooled(app: &TestApp) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(app.output_dir().join(".spool")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("upload-"))
        .map(|e| e.path())
        .collect()
}

/// Waits until the spool folder holds no upload.
async fn no_upload_left(app: &TestApp, after: &str) {
    let what = format!("no spooled upload is left after {after}");
    eventually(&what, SOON, || async {
        spooled(app).is_empty().then_some(())
    })
    .await;
}

/// Each page's number, size and PNG bytes, fetched from the server.
async fn pages_of(app: &TestApp, reply: &Value) -> Vec<(u64, u64, u64, Vec<u8>)> {
    let id = reply["job_id"].as_str().expect("a job id");
    let mut pages = Vec::new();
    for page in reply["pages"].as_array().expect("a page list") {
        let n = page["page"].as_u64().unwrap();
        let response = app.page(id, n as u32).await;
        assert_eq!(response.status(), 200, "page {n} of {id}");
        let png = response.bytes().await.unwrap().to_vec();
        let (w, h) = (page["width"].as_u64(), page["height"].as_u64());
        pages.push((n, w.unwrap(), h.unwrap(), png));
    }
    pages
}

/// The sample as a multipart form (the file first, then the options).
fn form(async_mode: bool) -> Form {
    let form = Form::new()
        .part("file", Part::bytes(fixture(PDF)).file_name("s.pdf"))
        .text("dpi", "36");
    match async_mode {
        true => form.text("mode", "async"),
        false => form,
    }
}

/// A finished async job's reply.
async fn done(app: &TestApp, id: &str) -> Value {
    let view = app
        .job_until(id, "done", |v| {
            v["state"] == "done" || v["state"] == "failed"
        })
        .await;
    assert_eq!(view["state"], "done", "{view}");
    view["result"].clone()
}

#[tokio::test]
async fn an_upload_above_the_threshold_renders_the_same_pages_as_one_below_it() {
    let in_memory = spawn_app(test_config()).await;
    let reference = ok_json(in_memory.upload_pdf(QUERY, fixture(PDF)).await).await;
    let expected = pages_of(&in_memory, &reference).await;
    assert_eq!(expected.len(), 6, "{reference}");

    let app = spooling_app().await;
    let raw_sync = ok_json(app.upload_pdf(QUERY, fixture(PDF)).await).await;
    let multipart_sync = ok_json(app.upload_multipart(form(false)).await).await;
    let raw_async = app.submit_pdf(QUERY, fixture(PDF)).await;
    let multipart = app
        .client
        .post(app.url("/jobs/pdf"))
        .multipart(form(true))
        .send()
        .await
        .unwrap();
    let multipart_async = accepted_id(multipart).await;
    let replies = [
        ("raw, sync", raw_sync),
        ("multipart, sync", multipart_sync),
        ("raw, async", done(&app, &raw_async).await),
        ("multipart, async", done(&app, &multipart_async).await),
    ];
    for (how, reply) in replies {
        assert_eq!(reply["page_count"], 6, "{how}: {reply}");
        let pages = pages_of(&app, &reply).await;
        assert!(
            pages == expected,
            "{how}: the pages differ from the in-memory upload's"
        );
    }
    no_upload_left(&app, "every job ended").await;
    let inputs = app.output_dir().join(".jobs/inputs");
    eventually(
        "the async jobs' kept inputs went with them",
        SOON,
        || async {
            let kept = std::fs::read_dir(&inputs).map_or(0, |d| d.count());
            (kept == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_spooled_upload_is_a_file_while_it_arrives_and_none_once_answered() {
    let app = spooling_app().await;
    let pdf = fixture(PDF);
    let head = format!(
        "POST /jobs/pdf{QUERY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        pdf.len()
    );
    let mut stream = app.send_raw(&head).await;
    let half = pdf.len() / 2;
    stream.write_all(&pdf[..half]).await.unwrap();
    let files = eventually("the upload is spooled", SOON, || async {
        let files = spooled(&app);
        (files.len() == 1).then_some(files)
    })
    .await;
    let size = std::fs::metadata(&files[0]).map_or(0, |m| m.len());
    assert!(size <= half as u64, "no more than was sent: {size}");

    stream.write_all(&pdf[half..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(SOON, stream.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"page_count\":6"), "{answer}");
    no_upload_left(&app, "the answer").await;
}

#[tokio::test]
async fn a_client_gone_mid_upload_or_cut_by_the_body_timeout_leaves_no_spool_file() {
    let mut config = test_config();
    config.pdf.upload_spool_threshold_bytes = 1024;
    config.connections.body_idle_timeout = Duration::from_millis(300);
    let app = spawn_app(config).await;
    let pdf = fixture(PDF);
    let head = format!(
        "POST /jobs/pdf HTTP/1.1\r\nHost: x\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\n\r\n",
        pdf.len()
    );
    let spooling = || async {
        let found = spooled(&app);
        (!found.is_empty()).then_some(())
    };

    let mut gone = app.send_raw(&head).await;
    gone.write_all(&pdf[..pdf.len() / 2]).await.unwrap();
    eventually("the upload is spooled", SOON, spooling).await;
    drop(gone);
    no_upload_left(&app, "the client went away mid-body").await;

    let mut stalled = app.send_raw(&head).await;
    stalled.write_all(&pdf[..pdf.len() / 2]).await.unwrap();
    eventually("the stalled upload is spooled", SOON, spooling).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(SOON, stalled.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    no_upload_left(&app, "the body timeout").await;
    app.assert_pdf_renders("after the cut uploads").await;
}

#[tokio::test]
async fn a_spooled_upload_over_max_upload_bytes_is_413_and_leaves_no_file() {
    let mut config = test_config();
    config.pdf.upload_spool_threshold_bytes = 1024;
    config.pdf.max_upload_bytes = 64 * 1024;
    let app = spawn_app(config).await;
    // Sent chunked, the length unknown until it ends: the limit holds as
    // the bytes arrive, after the upload began to spool.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = fixture(PDF)
        .chunks(8 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let raw = app.post_body("/jobs/pdf", "application/pdf", body).await;
    assert_error(raw, 413, "payload_too_large").await;
    no_upload_left(&app, "the raw 413").await;

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = fixture(PDF)
        .chunks(8 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let part = Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    let multipart = app
        .upload_multipart(Form::new().part("file", part.file_name("s.pdf")))
        .await;
    assert_error(multipart, 413, "payload_too_large").await;
    no_upload_left(&app, "the multipart 413").await;
    let under = app.upload_pdf("?dpi=36", fixture("text.pdf")).await;
    ok_json(under).await;
    no_upload_left(&app, "a spooled upload under the limit").await;
}

#[tokio::test]
async fn an_async_spooled_upload_is_replayed_under_its_idempotency_key() {
    let app = spooling_app().await;
    let send = |pdf: &'static str| {
        app.client
            .post(app.url("/jobs/pdf?mode=async&dpi=36&pages=1"))
            .header("content-type", "application/pdf")
            .header("idempotency-key", "spooled-1")
            .body(fixture(pdf))
            .send()
    };
    let first = accepted_id(send(PDF).await.unwrap()).await;
    let retry = send(PDF).await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(accepted_id(retry).await, first, "the same job");
    let other = send("many-pages.pdf").await.unwrap();
    assert_error(other, 422, "idempotency_key_reused").await;
    done(&app, &first).await;
    no_upload_left(&app, "the job and its retries").await;
}

#[tokio::test]
async fn a_spooled_upload_whose_job_is_refused_fails_or_is_abandoned_leaves_no_file() {
    let app = spooling_app().await;
    let bad_options = app.upload_pdf("?dpi=0", fixture(PDF)).await;
    assert_eq!(bad_options.status(), 400, "refused after its body was read");
    no_upload_left(&app, "a 400").await;
    let not_a_pdf = app.upload_pdf("", vec![b'x'; 4096]).await;
    assert_eq!(not_a_pdf.status(), 422, "the renderer refused it");
    no_upload_left(&app, "a failed job").await;

    // A long job whose client goes away while it renders: the job is
    // stopped, and its input goes with it.
    let abandoned = app.spawn_upload_pdf("?dpi=300", fixture("many-pages.pdf"));
    eventually("the job runs", SOON, || async {
        (app.workers_on_a_job("pdf") == 1).then_some(())
    })
    .await;
    assert_eq!(spooled(&app).len(), 1, "the running job holds its upload");
    abandoned.abort();
    no_upload_left(&app, "its client went away").await;
    eventually("the worker is free", SOON, || async {
        (app.workers_on_a_job("pdf") == 0).then_some(())
    })
    .await;
}
