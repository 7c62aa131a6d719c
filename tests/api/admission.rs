//! Admission before the body: uploads that arrive together are admitted up
//! to the room there is, and the rest are answered from their headers,
//! without a byte of their bodies, before anything is read.

use std::time::Duration;

use jobserver::config::{Config, PoolConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{eventually, fixture, spawn_app, test_config, TestApp};

const SOON: Duration = Duration::from_secs(10);

/// The head of a PDF upload of `length` bytes (`query` included in the
/// path), with no body yet.
fn upload_head(query: &str, length: usize) -> String {
    format!(
        "POST /jobs/pdf{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/pdf\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Sends the heads of `n` uploads of `pdf` together; returns the
/// connections, none of which has sent its body.
async fn heads(app: &TestApp, query: &str, pdf: &[u8], n: usize) -> Vec<TcpStream> {
    let head = upload_head(query, pdf.len());
    let sends = (0..n).map(|_| app.send_raw(&head));
    futures::future::join_all(sends).await
}

/// Whether the server has answered on `stream` within a short wait (the
/// refused are answered at once; the admitted wait for their bodies).
async fn answer_now(stream: &mut TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).to_string()),
        _ => None,
    }
}

/// The whole answer after the body is sent.
async fn answer_after_body(stream: &mut TcpStream, body: &[u8]) -> String {
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if n == 0 || text.contains("\"pages\"") && text.ends_with('}') {
                break;
            }
        }
    };
    tokio::time::timeout(SOON, read).await.expect("answered");
    String::from_utf8_lossy(&answer).to_string()
}

/// Splits the connections into those answered at once and those waiting
/// for their bodies.
async fn sort(streams: Vec<TcpStream>) -> (Vec<String>, Vec<TcpStream>) {
    let mut refused = Vec::new();
    let mut admitted = Vec::new();
    for mut stream in streams {
        match answer_now(&mut stream).await {
            Some(answer) => refused.push(answer),
            None => admitted.push(stream),
        }
    }
    (refused, admitted)
}

fn with_pdf_queue(capacity: usize) -> Config {
    let mut config = test_config();
    config.pdf.pool = PoolConfig::new(1, capacity, Duration::from_secs(30));
    config
}

#[tokio::test]
async fn uploads_arriving_together_get_exactly_the_places_there_are_and_the_rest_503_unread() {
    let app = spawn_app(with_pdf_queue(2)).await;
    let pdf = fixture("sample.pdf");
    let (refused, mut admitted) = sort(heads(&app, "?dpi=36&pages=1", &pdf, 10).await).await;
    assert_eq!(admitted.len(), 2, "two places, two admitted: {refused:?}");
    assert_eq!(refused.len(), 8);
    for answer in &refused {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("\"queue_full\""), "{answer}");
        assert!(answer.to_lowercase().contains("retry-after:"), "{answer}");
    }
    assert_eq!(
        app.pool("pdf").places_taken(),
        2,
        "held by the two bodies to come"
    );
    for stream in &mut admitted {
        let answer = answer_after_body(stream, &pdf).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(app.pool("pdf").places_taken(), 0, "every place came back");
    app.assert_pdf_renders("after the burst").await;
}

#[tokio::test]
async fn past_the_upload_budget_a_request_is_refused_from_its_headers() {
    let pdf = fixture("sample.pdf");
    let mut config = with_pdf_queue(10);
    config.pdf.max_upload_bytes = pdf.len();
    config.max_upload_bytes_in_flight = 2 * pdf.len() as u64;
    let app = spawn_app(config).await;
    let (refused, mut admitted) = sort(heads(&app, "?dpi=36&pages=1", &pdf, 3).await).await;
    assert_eq!(admitted.len(), 2, "{refused:?}");
    assert!(refused[0].starts_with("HTTP/1.1 503"), "{}", refused[0]);
    assert!(
        refused[0].contains("\"uploads_in_flight\""),
        "{}",
        refused[0]
    );
    assert!(
        refused[0].contains("MAX_UPLOAD_BYTES_IN_FLIGHT"),
        "{}",
        refused[0]
    );
    for stream in &mut admitted {
        let answer = answer_after_body(stream, &pdf).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // The bytes came back with the answers: another upload fits.
    app.assert_pdf_renders("once the budget is free").await;
}

#[tokio::test]
async fn async_uploads_past_max_tracked_jobs_are_refused_before_their_bodies() {
    let mut config = with_pdf_queue(10);
    config.jobs.max_tracked = 1;
    let app = spawn_app(config).await;
    let pdf = fixture("sample.pdf");
    let (refused, mut admitted) =
        sort(heads(&app, "?dpi=36&pages=1&mode=async", &pdf, 4).await).await;
    assert_eq!(admitted.len(), 1, "one record place: {refused:?}");
    for answer in &refused {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("\"too_many_jobs\""), "{answer}");
    }
    let mut answer = Vec::new();
    admitted[0].write_all(&pdf).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(SOON, admitted[0].read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    answer.extend_from_slice(&buf[..n]);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}

#[tokio::test]
async fn an_upload_cut_by_the_body_timeout_gives_its_place_back() {
    let mut config = with_pdf_queue(1);
    config.connections.body_idle_timeout = Duration::from_millis(300);
    let app = spawn_app(config).await;
    let pdf = fixture("sample.pdf");
    let mut stalled = app.send_raw(&upload_head("", pdf.len())).await;
    stalled.write_all(&pdf[..1000]).await.unwrap();
    eventually("the stalled upload holds the place", SOON, || async {
        (app.pool("pdf").places_taken() == 1).then_some(())
    })
    .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(SOON, stalled.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.pool("pdf").places_taken(), 0, "the place came back");
    app.assert_pdf_renders("in the place the stalled upload held")
        .await;
}

#[tokio::test]
async fn a_retry_under_its_idempotency_key_is_answered_however_full_the_queue() {
    let mut config = test_config();
    config.message = PoolConfig::new(1, 1, Duration::from_secs(10));
    let app = spawn_app(config).await;
    app.submit_running_message(1_500).await;
    let key = ("idempotency-key", "retry-1");
    let body = serde_json::json!({"text": "once"});
    let first = app
        .post_json_with("/jobs/message?mode=async", key, body.clone())
        .await;
    assert_eq!(first.status(), 202, "takes the last place");
    let full = app
        .async_message(serde_json::json!({"text": "other"}))
        .await;
    assert_eq!(full.status(), 503, "the queue is full");
    let retry = app
        .post_json_with("/jobs/message?mode=async", key, body)
        .await;
    assert_eq!(retry.status(), 202, "a retry needs no place");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let reused = app
        .post_json_with(
            "/jobs/message?mode=async",
            key,
            serde_json::json!({"text": "else"}),
        )
        .await;
    assert_eq!(reused.status(), 422, "the key names another request");
}
