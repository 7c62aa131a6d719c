//! PDF jobs end to end, with the real renderer processes and the project's
//! own fixtures in `data/`.

use std::path::Path;
use std::time::Duration;

use jobserver::config::PoolConfig;
use serde_json::{json, Value};

use crate::helpers::{data_dir, error_code, spawn_app, temp_dir, test_config, wait_until, TestApp};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap()
}

async fn upload(app: &TestApp, query: &str, bytes: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/jobs/pdf{query}")))
        .header("content-type", "application/pdf")
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// Uploads a fixture in the background (a job to catch while it runs).
fn spawn_upload(
    app: &TestApp,
    query: &str,
    name: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = app
        .client
        .post(app.url(&format!("/jobs/pdf{query}")))
        .header("content-type", "application/pdf")
        .body(fixture(name));
    tokio::spawn(async move { request.send().await.unwrap() })
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
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
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
        let served = app.client.get(app.url(url)).send().await.unwrap();
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
    let response = upload(&app, "?dpi=150&pages=1", fixture("text.pdf")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    // 595 x 842 pt at 150 dpi = 1239.6 x 1754.2 px, rounded up.
    assert_eq!(body["pages"][0]["width"], 1240);
    assert_eq!(body["pages"][0]["height"], 1755);
}

#[tokio::test]
async fn a_page_range_renders_only_those_pages() {
    let config = test_config();
    let out = config.output_dir.clone();
    let app = spawn_app(config).await;
    let response = upload(&app, "?dpi=36&pages=2-3,40,3", fixture("many-pages.pdf")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let numbers: Vec<u64> = body["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["page"].as_u64().unwrap())
        .collect();
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
        app.client.post(app.url("/jobs/pdf")).multipart(form).send()
    };
    let ok = send(Some("secret")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["page_count"], 2);

    let missing = send(None).await.unwrap();
    assert_eq!(missing.status(), 422);
    let body: Value = missing.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("password"),
        "{body}"
    );

    let nul = send(Some("a\0b")).await.unwrap();
    assert_eq!(
        nul.status(),
        400,
        "a password pdfium cannot take is refused up front"
    );

    let wrong = send(Some("guess")).await.unwrap();
    assert_eq!(wrong.status(), 422);
    let body: Value = wrong.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("incorrect"),
        "{body}"
    );
}

#[tokio::test]
async fn unreadable_pdfs_get_422_with_pdfiums_reason_and_the_worker_carries_on() {
    let app = spawn_app(test_config()).await;
    for name in ["bad/truncated.pdf", "bad/random.pdf", "bad/not-a-pdf.pdf"] {
        let response = upload(&app, "", fixture(name)).await;
        assert_eq!(response.status(), 422, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_input");
        assert!(
            body["message"].as_str().unwrap().contains("pdfium"),
            "{name}: {body}"
        );
    }
    let empty = upload(&app, "", Vec::new()).await;
    assert_eq!(empty.status(), 422);
    assert_eq!(error_code(empty).await, "invalid_input");

    let after = upload(&app, "?dpi=36&pages=1", fixture("sample.pdf")).await;
    assert_eq!(after.status(), 200, "the worker survives bad input");
}

#[tokio::test]
async fn pages_past_the_limits_are_refused_before_rendering_with_422() {
    let mut config = test_config();
    config.pdf.max_pages = 5;
    let out = config.output_dir.clone();
    let app = spawn_app(config).await;

    let huge = app
        .post_json("/jobs/pdf", json!({"path": "huge-page.pdf"}))
        .await;
    assert_eq!(huge.status(), 422);
    let body: Value = huge.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("PDF_MAX_PIXELS"),
        "{body}"
    );

    let many = upload(&app, "?dpi=36", fixture("many-pages.pdf")).await;
    assert_eq!(many.status(), 422);
    let body: Value = many.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("PDF_MAX_PAGES"),
        "{body}"
    );

    let beyond = upload(&app, "?pages=7", fixture("sample.pdf")).await;
    assert_eq!(beyond.status(), 422);

    assert!(
        files_in(&out).is_empty(),
        "refused jobs wrote {:?}",
        files_in(&out)
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
        let response = upload(&app, query, fixture("text.pdf")).await;
        assert_eq!(response.status(), 400, "{query}");
    }
    let big = upload(&app, "", fixture("sample.pdf")).await;
    assert_eq!(big.status(), 413);
    assert_eq!(error_code(big).await, "payload_too_large");
    let wrong_type = app
        .client
        .post(app.url("/jobs/pdf"))
        .header("content-type", "image/png")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
}

#[tokio::test]
async fn paths_that_leave_the_data_folder_are_refused_with_400() {
    let data = temp_dir("data");
    std::fs::copy(data_dir().join("text.pdf"), data.join("text.pdf")).unwrap();
    let outside = temp_dir("outside");
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
    let config = test_config();
    let out = config.output_dir.clone();
    let app = spawn_app(config).await;
    wait_until("a renderer runs", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids()
            .len()
            == 1
    })
    .await;
    let pid = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_pids()[0];
    let slow = spawn_upload(&app, "?dpi=600", "many-pages.pdf");
    wait_until("the first page is written", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .pages_rendered
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());

    let failed = slow.await.unwrap();
    assert_eq!(failed.status(), 500);
    let body: Value = failed.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("renderer process died"),
        "{body}"
    );
    let job = body["job_id"].as_str().unwrap();
    assert!(
        !out.join(job).exists(),
        "the failed job's pages were removed"
    );

    let next = upload(&app, "?dpi=36&pages=1", fixture("sample.pdf")).await;
    assert_eq!(next.status(), 200);
    let pids = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_pids();
    assert_eq!(pids.len(), 1);
    assert_ne!(pids[0], pid, "a new renderer replaced the killed one");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the killed renderer was reaped"
    );
}

#[tokio::test]
async fn a_renderer_killed_while_idle_is_reaped_and_replaced_before_any_job_needs_it() {
    let app = spawn_app(test_config()).await;
    wait_until("a renderer runs", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids()
            .len()
            == 1
    })
    .await;
    let pid = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_pids()[0];
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    // The worker checks its renderer between jobs; no job is sent here.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let pids = app
            .state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids();
        if pids.len() == 1 && pids[0] != pid && !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead renderer was not replaced: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let next = upload(&app, "?dpi=36&pages=1", fixture("sample.pdf")).await;
    assert_eq!(next.status(), 200, "the next job finds a live renderer");
}

#[tokio::test]
async fn a_deadline_mid_render_answers_504_and_the_next_job_starts_within_100_ms() {
    let config = test_config();
    let out = config.output_dir.clone();
    let app = spawn_app(config).await;
    let slow = spawn_upload(&app, "?dpi=600&timeout_ms=400", "many-pages.pdf");
    wait_until("the slow job runs", || {
        app.state.pool("pdf").unwrap().busy() == 1
    })
    .await;
    let next = upload(&app, "?dpi=36&pages=1", fixture("text.pdf"));
    let (slow, next) = tokio::join!(slow, next);
    let slow = slow.unwrap();
    assert_eq!(slow.status(), 504);
    let body: Value = slow.json().await.unwrap();
    assert_eq!(body["error"], "timeout");

    assert_eq!(next.status(), 200);
    let next: Value = next.json().await.unwrap();
    let waited = next["queue_ms"].as_f64().unwrap();
    assert!(waited < 400.0 + 100.0, "the next job waited {waited} ms");
    // The next job started after the slow one's cleanup: nothing partial left.
    assert!(!out.join(body["job_id"].as_str().unwrap()).exists());
}

#[tokio::test]
async fn two_workers_render_two_jobs_at_once() {
    let mut config = test_config();
    config.pdf.pool = PoolConfig::new(2, 4, Duration::from_secs(30));
    let app = spawn_app(config).await;
    let a = spawn_upload(&app, "?dpi=600&timeout_ms=20000", "many-pages.pdf");
    let b = spawn_upload(&app, "?dpi=600&timeout_ms=20000", "many-pages.pdf");
    wait_until("both workers render", || {
        app.state.pool("pdf").unwrap().busy() == 2
    })
    .await;
    let pids = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_pids();
    assert_eq!(pids.len(), 2, "one renderer process per worker");
    wait_until("both renderers have written pages", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .pages_rendered
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    })
    .await;
    let workers: Vec<_> = app
        .state
        .pool("pdf")
        .unwrap()
        .workers()
        .into_iter()
        .filter(|w| w.job_id.is_some())
        .collect();
    assert_eq!(workers.len(), 2, "two jobs in flight at once");
    a.abort();
    b.abort();
    wait_until("cancelled renders free both workers", || {
        app.state.pool("pdf").unwrap().busy() == 0
    })
    .await;
}

#[tokio::test]
async fn multi_thread_pdf2image_answers_in_the_seed_shape() {
    let app = spawn_app(test_config()).await;
    let response = app
        .post_json(
            "/multiThread",
            json!({"jobType": "pdf2image", "data": "sample.pdf"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
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
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .unavailable()
            .is_some()
    })
    .await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["failed"][0]["check"], "pdfium", "{body}");

    let pdf = upload(&app, "", fixture("text.pdf")).await;
    assert_eq!(pdf.status(), 503);
    let body: Value = pdf.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("pdfium"),
        "{body}"
    );
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
    let config = two_workers();
    let out = config.output_dir.clone();
    let app = spawn_app(config).await;
    wait_until("both renderers run", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids()
            .len()
            == 2
    })
    .await;
    let response = upload(&app, "?dpi=50", fixture("many-pages.pdf")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let numbers: Vec<u64> = body["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["page"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=40).collect::<Vec<u64>>());
    assert_eq!(
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .fanned_out_jobs
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let job = body["job_id"].as_str().unwrap();
    assert_eq!(files_in(&out.join(job)).len(), 40);
    assert!(
        files_in(&out.join(".spool")).is_empty(),
        "the spooled upload was removed"
    );
    assert_eq!(
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids()
            .len(),
        2,
        "the borrowed renderer went back"
    );
}

#[tokio::test]
async fn a_new_job_takes_its_renderer_back_from_a_fanned_out_one() {
    let app = spawn_app(two_workers()).await;
    wait_until("both renderers run", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids()
            .len()
            == 2
    })
    .await;
    let big = spawn_upload(&app, "?dpi=400", "many-pages.pdf");
    wait_until("the big job fans out", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .fanned_out_jobs
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    let small = upload(&app, "?dpi=36&pages=1", fixture("text.pdf")).await;
    assert_eq!(small.status(), 200);
    assert!(
        !big.is_finished(),
        "the small job finished first: queued jobs come first"
    );
    let big = big.await.unwrap();
    assert_eq!(big.status(), 200);
    let body: Value = big.json().await.unwrap();
    assert_eq!(body["pages"].as_array().unwrap().len(), 40);
}

#[tokio::test]
async fn a_deadline_during_fan_out_stops_every_renderer_and_both_workers_carry_on() {
    let config = two_workers();
    let out = config.output_dir.clone();
    let app = spawn_app(config).await;
    wait_until("both renderers run", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids()
            .len()
            == 2
    })
    .await;
    let before = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_pids();
    let slow = upload(&app, "?dpi=600&timeout_ms=400", fixture("many-pages.pdf")).await;
    assert_eq!(slow.status(), 504);
    let body: Value = slow.json().await.unwrap();
    // The answer leaves at the deadline; the worker cleans up right after.
    wait_until("the worker has cleaned up", || {
        app.state.pool("pdf").unwrap().busy() == 0
    })
    .await;
    assert!(!out.join(body["job_id"].as_str().unwrap()).exists());
    wait_until("both renderers are replaced", || {
        let now = app
            .state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids();
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    })
    .await;
    let (a, b) = tokio::join!(
        upload(&app, "?dpi=36&pages=1", fixture("text.pdf")),
        upload(&app, "?dpi=36&pages=2", fixture("text.pdf"))
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
    wait_until("a renderer runs", || {
        app.state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .unwrap()
            .engine()
            .renderer_pids()
            .len()
            == 1
    })
    .await;
    let first = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_pids()[0];
    for page in ["1", "2"] {
        let response = upload(&app, &format!("?dpi=36&pages={page}"), fixture("text.pdf")).await;
        assert_eq!(response.status(), 200);
    }
    let recycles = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_recycles
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(recycles, 1, "two jobs reach the quota of two");
    let pids = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_pids();
    assert_eq!(pids.len(), 1);
    assert_ne!(pids[0], first, "a fresh renderer took over");
    assert_eq!(
        upload(&app, "?dpi=36&pages=3", fixture("text.pdf"))
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
        upload(&app, "?dpi=36&pages=1", fixture("text.pdf"))
            .await
            .status(),
        200
    );
    let recycles = app
        .state
        .kind::<jobserver::routes::pdf::PdfKind>()
        .unwrap()
        .engine()
        .renderer_recycles
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(recycles, 1);
}

#[tokio::test]
async fn a_page_too_big_for_the_renderers_memory_cap_fails_alone_with_422() {
    let mut config = test_config();
    // Enough to load pdfium, too little for an A4 bitmap at 600 dpi (~100 MiB).
    config.pdf.renderer_memory_limit_mb = 96;
    let app = spawn_app(config).await;
    let big = upload(&app, "?dpi=600&pages=1", fixture("text.pdf")).await;
    assert_eq!(big.status(), 422);
    let body: Value = big.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("PDF_RENDERER_MEMORY_LIMIT_MB"),
        "{body}"
    );
    let small = upload(&app, "?dpi=72&pages=1", fixture("text.pdf")).await;
    assert_eq!(small.status(), 200, "the renderer carries on");
}
