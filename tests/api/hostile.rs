//! The most dangerous files of the hostile corpus (`data/hostile/`, written
//! by `scripts/make_hostile.py`; the whole corpus runs in
//! `scripts/hostile.sh`, see `docs/hostile.md`): each gets a clear answer,
//! no renderer crashes, and the server stays up.

use std::time::{Duration, Instant};

use serde_json::Value;

use reqwest::Response;

use crate::helpers::{assert_error, data_dir, spawn_app, test_config, wait_until, TestApp};

fn hostile(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join("hostile").join(name))
        .unwrap_or_else(|e| panic!("data/hostile/{name}: {e} (python3 scripts/make_hostile.py)"))
}

async fn upload(app: &TestApp, query: &str, name: &str) -> Response {
    app.upload_pdf(query, hostile(name)).await
}

/// `/livez` answers 200 and no renderer has crashed.
async fn assert_up(app: &TestApp, after: &str) {
    assert_eq!(
        app.get("/livez").await.status(),
        200,
        "/livez after {after}"
    );
    assert_eq!(app.renderer_crashes(), 0, "a renderer crashed on {after}");
}

/// Uploads `name`, expects 200 and returns the rendered pages' pixel sizes.
async fn rendered(app: &TestApp, query: &str, name: &str) -> Vec<(u64, u64)> {
    let response = upload(app, query, name).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{name}{query}: {body}");
    assert_up(app, name).await;
    body["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["width"].as_u64().unwrap(), p["height"].as_u64().unwrap()))
        .collect()
}

/// Uploads `name` at 72 dpi: one page must render, at A4 size.
async fn renders_one_a4_page(app: &TestApp, name: &str) {
    assert_eq!(rendered(app, "?dpi=72", name).await, [(595, 842)], "{name}");
}

/// Uploads `name`, expects 422 and returns the message.
async fn refused(app: &TestApp, query: &str, name: &str) -> String {
    let response = upload(app, query, name).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 422, "{name}{query}: {body}");
    assert_eq!(body["error"], "invalid_input", "{name}: {body}");
    assert_up(app, name).await;
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_image_whose_stream_inflates_to_a_gibibyte_renders_at_once() {
    let app = spawn_app(test_config()).await;
    let started = Instant::now();
    // A 1000x1000 gray image whose 3 KB stream inflates to 1 GiB: pdfium
    // decodes only the 1 MB the image needs.
    renders_one_a4_page(&app, "flate-bomb-image.pdf").await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_content_stream_bomb_is_stopped_at_its_deadline_and_the_next_job_runs() {
    let app = spawn_app(test_config()).await;
    // The page's 3 KB content stream inflates to 1 GiB of NUL bytes: several
    // seconds of decoding and parsing, so a 0.5 s budget stops it.
    let started = Instant::now();
    let response = upload(&app, "?dpi=72&timeout_ms=500", "flate-bomb-content.pdf").await;
    assert_error(response, 504, "timeout").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the 504 came late"
    );
    assert_up(&app, "flate-bomb-content.pdf").await;
    // The worker kills the renderer at the deadline (just after the 504).
    wait_until("the renderer is killed", || app.renderer_kills() == 1).await;
    // The killed renderer was replaced: the next job renders.
    renders_one_a4_page(&app, "mediabox-inverted.pdf").await;
}

#[tokio::test]
async fn a_20000_px_image_renders_within_the_page_size() {
    let app = spawn_app(test_config()).await;
    // 1.2 GB of pixels once decoded, drawn on an A4 page.
    renders_one_a4_page(&app, "image-20000px.pdf").await;
}

#[tokio::test]
async fn bad_media_boxes_render_normalised_or_as_letter_or_are_refused() {
    let app = spawn_app(test_config()).await;
    let letter = [(612, 792)];
    // Empty, missing, malformed or unreadable boxes: pdfium's US Letter.
    for name in [
        "mediabox-zero.pdf",
        "mediabox-missing.pdf",
        "mediabox-nan.pdf",
        "mediabox-strings.pdf",
        "mediabox-short.pdf",
        "mediabox-huge.pdf",
    ] {
        assert_eq!(rendered(&app, "?dpi=72", name).await, letter, "{name}");
    }
    // Negative or swapped corners: normalised.
    for name in ["mediabox-negative.pdf", "mediabox-inverted.pdf"] {
        renders_one_a4_page(&app, name).await;
    }
    assert_eq!(
        rendered(&app, "?dpi=72", "mediabox-tiny.pdf").await,
        [(1, 1)]
    );
    // Past the pixel limit: refused before rendering.
    let message = refused(&app, "?dpi=72", "mediabox-big.pdf").await;
    assert!(message.contains("PDF_MAX_PIXELS"), "{message}");
}

#[tokio::test]
async fn owner_password_only_documents_render_without_a_password() {
    let app = spawn_app(test_config()).await;
    for name in ["enc-owner-aes256.pdf", "enc-owner-rc4.pdf"] {
        assert_eq!(rendered(&app, "?dpi=36", name).await.len(), 2, "{name}");
        assert_eq!(
            rendered(&app, "?dpi=36&password=owner", name).await.len(),
            2,
            "{name}"
        );
    }
    // A user password is required, and enough.
    for name in ["enc-user-aes256.pdf", "enc-user-rc4.pdf"] {
        let message = refused(&app, "?dpi=36", name).await;
        assert!(message.contains("password"), "{message}");
        refused(&app, "?dpi=36&password=wrong", name).await;
        assert_eq!(
            rendered(&app, "?dpi=36&password=user", name).await.len(),
            2,
            "{name}"
        );
    }
}
