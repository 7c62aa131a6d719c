//! PDF jobs end to end, with the real renderer processes and the project's
//! own fixtures in `data/`.

use std::path::Path;
use std::time::Duration;

use jobserver::config::PoolConfig;
use serde_json::{json, Value};

use crate::helpers::{
    answered_in_order, assert_error, data_dir, error_message, fixture, ok_json, send_signal,
    spawn_app, test_config, wait_until,
};

/// Whether process `pid` exists (a zombie counts: it is not reaped yet).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The page numbers of a PDF reply, in its order.
fn page_numbers(reply: &Value) -> Vec<u64> {
    let pages = reply["pages"]
        .as_array()
        .expect("a PDF reply lists its pages");
    pages.iter().map(|p| p["page"].as_u64().unwrap()).collect()
}

/// Decodes a PNG and returns its size.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).expect("PNG data decodes");
    (info.width, info.height)
}

/// Files jobs wrote under `dir`, leaving out the server's own bookkeeping
/// (the async jobs' database and locks).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .filter(|name| !name.starts_with("jobs.db") && !name.starts_with(".jobs/"))
        .collect();
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_data_file_renders_to_pngs_of_the_size_the_dpi_implies() {
    let app = spawn_app(test_config()).await;
    let response = app
        .post_json("/jobs/pdf", json!({"path": "sample.pdf", "dpi": 72}))
        .await;
    let body = ok_json(response).await;
    assert_eq!(body["page_count"], 6);
    assert_eq!(body["worker"], "pdf-worker-0");
    let pages = body["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 6);
    // At 72 dpi one point is one pixel: A4, Letter, A5, landscape A4,
    // A4 rotated 90° (shown landscape), Letter.
    let expected = [
        (595, 842),
        (612, 792),
        (420, 595),
        (842, 595),
        (842, 595),
        (612, 792),
    ];
    for (page, (w, h)) in pages.iter().zip(expected) {
        assert_eq!(
            (
                page["width"].as_u64().unwrap(),
                page["height"].as_u64().unwrap()
            ),
            (w, h)
        );
        let url = page["url"].as_str().unwrap();
        let served = app.get(url).await;
        assert_eq!(served.status(), 200);
        assert_eq!(served.headers()["content-type"], "image/png");
        let png = served.bytes().await.unwrap();
        assert_eq!(png.len() as u64, page["bytes"].as_u64().unwrap());
        assert_eq!(png_size(&png), (w as u32, h as u32), "{url}");
    }
}

#[tokio::test]
async fn the_dpi_scales_the_pixels_rounding_up() {
    let app = spawn_app(test_config()).await;
    let response = app
        .upload_pdf("?dpi=150&pages=1", fixture("text.pdf"))
        .await;
    let body = ok_json(response).await;
    // 595 x 842 pt at 150 dpi = 1239.6 x 1754.2 px, rounded up.
    assert_eq!(body["pages"][0]["width"], 1240);
    assert_eq!(body["pages"][0]["height"], 1755);
}

#[tokio::test]
async fn a_page_range_renders_only_those_pages() {
    let app = spawn_app(test_config()).await;
    let out = app.output_dir();
    let response = app
        .upload_pdf("?dpi=36&pages=2-3,40,3", fixture("many-pages.pdf"))
        .await;
    let body = ok_json(response).await;
    let numbers = page_numbers(&body);
    assert_eq!(numbers, [2, 3, 40]);
    assert_eq!(body["page_count"], 40);
    let job = body["job_id"].as_str().unwrap();
    assert_eq!(
        files_in(&out.join(job)),
        ["page-002.png", "page-003.png", "page-040.png"]
    );
}

#[tokio::test]
async fn a_multipart_upload_with_the_password_opens_an_encrypted_file() {
    let app = spawn_app(test_config()).await;
    let send = |password: Option<&str>| {
        let mut form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(fixture("encrypted.pdf")).file_name("e.pdf"),
            )
            .text("dpi", "50");
        if let Some(p) = password {
            form = form.text("password", p.to_string());
        }
        app.upload_multipart(form)
    };
    let ok = send(Some("secret")).await;
    let body = ok_json(ok).await;
    assert_eq!(body["page_count"], 2);

    let missing = send(None).await;
    let message = error_message(missing, 422).await;
    assert!(message.contains("password"), "{message}");

    let nul = send(Some("a\0b")).await;
    assert_eq!(
        nul.status(),
        400,
        "a password pdfium cannot take is refused up front"
    );

    let wrong = send(Some("guess")).await;
    let message = error_message(wrong, 422).await;
    assert!(message.contains("incorrect"), "{message}");
}

#[tokio::test]
async fn unreadable_pdfs_get_422_with_pdfiums_reason_and_the_worker_carries_on() {
    let app = spawn_app(test_config()).await;
    for name in ["bad/truncated.pdf", "bad/random.pdf", "bad/not-a-pdf.pdf"] {
        let response = app.upload_pdf("", fixture(name)).await;
        let message = error_message(response, 422).await;
        assert!(message.contains("pdfium"), "{name}: {message}");
    }
    let empty = app.upload_pdf("", Vec::new()).await;
    assert_error(empty, 422, "invalid_input").await;

    app.assert_pdf_renders("the worker survives bad input")
        .await;
}

#[tokio::test]
async fn pages_past_the_limits_are_refused_before_rendering_with_422() {
    let mut config = test_config();
    config.pdf.max_pages = 5;
    let app = spawn_app(config).await;
    let out = app.output_dir();

    let huge = app
        .post_json("/jobs/pdf", json!({"path": "huge-page.pdf"}))
        .await;
    let message = error_message(huge, 422).await;
    assert!(message.contains("PDF_MAX_PIXELS"), "{message}");

    let many = app.upload_pdf("?dpi=36", fixture("many-pages.pdf")).await;
    let message = error_message(many, 422).await;
    assert!(message.contains("PDF_MAX_PAGES"), "{message}");

    let beyond = app.upload_pdf("?pages=7", fixture("sample.pdf")).await;
    assert_eq!(beyond.status(), 422);

    assert!(
        files_in(out).is_empty(),
        "refused jobs wrote {:?}",
        files_in(out)
    );
}

#[tokio::test]
async fn bad_options_get_400_and_an_upload_over_the_limit_413() {
    let mut config = test_config();
    config.pdf.max_upload_bytes = 8 * 1024;
    let app = spawn_app(config).await;
    for query in [
        "?pages=3-1",
        "?pages=x",
        "?dpi=0",
        "?dpi=100000",
        "?dpi=abc",
    ] {
        let response = app.upload_pdf(query, fixture("text.pdf")).await;
        assert_eq!(response.status(), 400, "{query}");
    }
    let big = app.upload_pdf("", fixture("sample.pdf")).await;
    assert_error(big, 413, "payload_too_large").await;
    let wrong_type = app.post_body("/jobs/pdf", "image/png", vec![1, 2, 3]).await;
    assert_eq!(wrong_type.status(), 415);
}

#[tokio::test]
async fn paths_that_leave_the_data_folder_are_refused_with_400() {
    // root/data is the data folder; root/outside/secret.pdf lies beside it.
    let root = tempfile::tempdir().unwrap();
    let (data, outside) = (root.path().join("data"), root.path().join("outside"));
    for dir in [&data, &outside] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::copy(data_dir().join("text.pdf"), data.join("text.pdf")).unwrap();
    std::fs::copy(data_dir().join("text.pdf"), outside.join("secret.pdf")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.pdf"), data.join("link.pdf")).unwrap();
    let mut config = test_config();
    config.data_dir = data;
    let app = spawn_app(config).await;

    for path in ["../outside/secret.pdf", "/etc/passwd", "link.pdf", ""] {
        let response = app.post_json("/jobs/pdf", json!({"path": path})).await;
        assert_eq!(response.status(), 400, "{path:?}");
    }
    let missing = app
        .post_json("/jobs/pdf", json!({"path": "nope.pdf"}))
        .await;
    assert_eq!(missing.status(), 422);
    let ok = app
        .post_json("/jobs/pdf", json!({"path": "text.pdf", "dpi": 36}))
        .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_killed_renderer_fails_that_job_only_and_the_next_job_succeeds() {
    let app = spawn_app(test_config()).await;
    let out = app.output_dir();
    let pid = app.wait_renderers(1).await[0];
    let slow = app.spawn_upload_pdf("?dpi=600", fixture("many-pages.pdf"));
    wait_until("the first page is written", || app.pages_rendered() >= 1).await;
    send_signal(pid, "KILL");

    let failed = slow.await.unwrap();
    assert_eq!(failed.status(), 500);
    let body: Value = failed.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("renderer process died"), "{body}");
    let job = body["job_id"].as_str().unwrap();
    assert!(
        !out.join(job).exists(),
        "the failed job's pages were removed"
    );

    app.assert_pdf_renders("the next job renders").await;
    let pids = app.renderer_pids();
    assert_eq!(pids.len(), 1);
    assert_ne!(pids[0], pid, "a new renderer replaced the killed one");
    assert!(!exists(pid), "the killed renderer was reaped");
}

#[tokio::test]
async fn a_renderer_killed_while_idle_is_reaped_and_replaced_before_any_job_needs_it() {
    let app = spawn_app(test_config()).await;
    let pid = app.wait_renderers(1).await[0];
    send_signal(pid, "KILL");
    // The worker checks its renderer between jobs; no job is sent here.
    wait_until("the dead renderer is reaped and replaced", || {
        let pids = app.renderer_pids();
        pids.len() == 1 && pids[0] != pid && !exists(pid)
    })
    .await;
    app.assert_pdf_renders("the next job finds a live renderer")
        .await;
}

#[tokio::test]
async fn a_deadline_mid_render_answers_504_and_the_next_job_runs_once_the_render_is_stopped() {
    let app = spawn_app(test_config()).await;
    let out = app.output_dir();
    // 40 pages at 600 dpi take far longer than the 400 ms deadline.
    let slow = app.spawn_upload_pdf("?dpi=600&timeout_ms=400", fixture("many-pages.pdf"));
    wait_until("the slow job runs", || app.busy("pdf") == 1).await;
    let next = app.spawn_upload_pdf("?dpi=36&pages=1", fixture("text.pdf"));

    // Queued behind the slow job, the next one is answered after its 504.
    let (slow, next) = answered_in_order(slow, next).await;
    assert_eq!(slow.status(), 504);
    let body: Value = slow.json().await.unwrap();
    assert_eq!(body["error"], "timeout");
    assert_eq!(
        next.status(),
        200,
        "the worker carries on with the next job"
    );

    assert_eq!(
        app.renderer_kills(),
        1,
        "the slow job was stopped by killing its renderer"
    );
    let slow_pages = app.pages_rendered() - 1;
    assert!(
        slow_pages < 40,
        "the next job ran once the slow render was stopped, not after its 40 pages \
         ({slow_pages} rendered)"
    );
    // The slow one's cleanup came first too: nothing partial left.
    assert!(
        !out.join(body["job_id"].as_str().unwrap()).exists(),
        "the stopped job's pages were removed"
    );
}

#[tokio::test]
async fn two_workers_render_two_jobs_at_once() {
    let mut config = test_config();
    config.pdf.pool = PoolConfig::new(2, 4, Duration::from_secs(30));
    let app = spawn_app(config).await;
    let a = app.spawn_upload_pdf("?dpi=600&timeout_ms=20000", fixture("many-pages.pdf"));
    let b = app.spawn_upload_pdf("?dpi=600&timeout_ms=20000", fixture("many-pages.pdf"));
    wait_until("both workers render", || app.busy("pdf") == 2).await;
    let pids = app.renderer_pids();
    assert_eq!(pids.len(), 2, "one renderer process per worker");
    wait_until("both renderers have written pages", || {
        app.pages_rendered() >= 2
    })
    .await;
    assert_eq!(app.workers_on_a_job("pdf"), 2, "two jobs in flight at once");
    a.abort();
    b.abort();
    wait_until("cancelled renders free both workers", || {
        app.busy("pdf") == 0
    })
    .await;
}

#[tokio::test]
async fn multi_thread_pdf2image_answers_in_the_seed_shape() {
    let app = spawn_app(test_config()).await;
    let body = ok_json(app.multi_thread("pdf2image", "sample.pdf").await).await;
    let data = body["data"]["result"]["data"].as_str().unwrap();
    assert!(data.ends_with("nPages=6"), "{data}");
    assert_eq!(body["data"]["result"]["workerName"], "pdf-worker-0");
}

#[tokio::test]
async fn without_pdfium_the_server_starts_reports_not_ready_and_answers_pdf_jobs_503() {
    let mut config = test_config();
    config.pdf.pdfium_lib_path = Some("/nonexistent/libpdfium.so".into());
    let app = spawn_app(config).await;
    wait_until("the engine reports unavailable", || {
        app.pdfium_unavailable()
    })
    .await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "not ready without pdfium: {body}");
    assert_eq!(body["failed"][0]["check"], "pdfium", "{body}");

    let pdf = app.upload_pdf("", fixture("text.pdf")).await;
    let message = error_message(pdf, 503).await;
    assert!(message.contains("pdfium"), "{message}");
    assert_eq!(
        app.message(json!({"text": "still here"})).await.status(),
        200
    );
}

fn two_workers() -> jobserver::config::Config {
    let mut config = test_config();
    config.pdf.pool = PoolConfig::new(2, 4, Duration::from_secs(30));
    config
}

#[tokio::test]
async fn a_lone_job_spreads_its_pages_over_idle_renderers_and_keeps_their_order() {
    let app = spawn_app(two_workers()).await;
    let out = app.output_dir();
    app.wait_renderers(2).await;
    let response = app.upload_pdf("?dpi=50", fixture("many-pages.pdf")).await;
    let body = ok_json(response).await;
    let numbers = page_numbers(&body);
    assert_eq!(numbers, (1..=40).collect::<Vec<u64>>());
    assert_eq!(app.fanned_out_jobs(), 1);
    let job = body["job_id"].as_str().unwrap();
    assert_eq!(files_in(&out.join(job)).len(), 40);
    assert!(
        files_in(&out.join(".spool")).is_empty(),
        "the spooled upload was removed"
    );
    assert_eq!(
        app.renderer_pids().len(),
        2,
        "the borrowed renderer went back"
    );
}

#[tokio::test]
async fn a_new_job_takes_its_renderer_back_from_a_fanned_out_one() {
    let app = spawn_app(two_workers()).await;
    app.wait_renderers(2).await;
    let big = app.spawn_upload_pdf("?dpi=400", fixture("many-pages.pdf"));
    wait_until("the big job fans out", || app.fanned_out_jobs() == 1).await;
    let small = app.upload_pdf("?dpi=36&pages=1", fixture("text.pdf")).await;
    assert_eq!(small.status(), 200);
    assert!(
        !big.is_finished(),
        "the small job finished first: queued jobs come first"
    );
    let big = big.await.unwrap();
    let body = ok_json(big).await;
    assert_eq!(body["pages"].as_array().unwrap().len(), 40);
}

#[tokio::test]
async fn a_deadline_during_fan_out_stops_every_renderer_and_both_workers_carry_on() {
    let app = spawn_app(two_workers()).await;
    let out = app.output_dir();
    let before = app.wait_renderers(2).await;
    let slow = app
        .upload_pdf("?dpi=600&timeout_ms=400", fixture("many-pages.pdf"))
        .await;
    assert_eq!(slow.status(), 504);
    let body: Value = slow.json().await.unwrap();
    // The answer leaves at the deadline; the worker cleans up right after.
    wait_until("the worker has cleaned up", || app.busy("pdf") == 0).await;
    assert!(!out.join(body["job_id"].as_str().unwrap()).exists());
    wait_until("both renderers are replaced", || {
        let now = app.renderer_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    })
    .await;
    let (a, b) = tokio::join!(
        app.upload_pdf("?dpi=36&pages=1", fixture("text.pdf")),
        app.upload_pdf("?dpi=36&pages=2", fixture("text.pdf"))
    );
    assert_eq!(
        (a.status(), b.status()),
        (reqwest::StatusCode::OK, reqwest::StatusCode::OK)
    );
}

#[tokio::test]
async fn a_renderer_is_recycled_after_its_job_quota() {
    let mut config = test_config();
    config.pdf.renderer_max_jobs = 2;
    let app = spawn_app(config).await;
    let first = app.wait_renderers(1).await[0];
    for page in ["1", "2"] {
        let response = app
            .upload_pdf(&format!("?dpi=36&pages={page}"), fixture("text.pdf"))
            .await;
        assert_eq!(response.status(), 200);
    }
    let recycles = app.renderer_recycles();
    assert_eq!(recycles, 1, "two jobs reach the quota of two");
    let pids = app.renderer_pids();
    assert_eq!(pids.len(), 1);
    assert_ne!(pids[0], first, "a fresh renderer took over");
    assert_eq!(
        app.upload_pdf("?dpi=36&pages=3", fixture("text.pdf"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_renderer_above_the_memory_mark_is_recycled_after_its_job() {
    let mut config = test_config();
    // Any renderer that has loaded pdfium holds more than 1 MiB.
    config.pdf.renderer_max_rss_mb = 1;
    let app = spawn_app(config).await;
    assert_eq!(
        app.upload_pdf("?dpi=36&pages=1", fixture("text.pdf"))
            .await
            .status(),
        200
    );
    let recycles = app.renderer_recycles();
    assert_eq!(recycles, 1);
}

#[tokio::test]
async fn a_page_too_big_for_the_renderers_memory_cap_fails_alone_with_422() {
    let mut config = test_config();
    // Enough to load pdfium, too little for an A4 bitmap at 600 dpi (~100 MiB).
    config.pdf.renderer_memory_limit_mb = 96;
    let app = spawn_app(config).await;
    let big = app
        .upload_pdf("?dpi=600&pages=1", fixture("text.pdf"))
        .await;
    let message = error_message(big, 422).await;
    assert!(
        message.contains("PDF_RENDERER_MEMORY_LIMIT_MB"),
        "{message}"
    );
    let small = app.upload_pdf("?dpi=72&pages=1", fixture("text.pdf")).await;
    assert_eq!(small.status(), 200, "the renderer carries on");
}
