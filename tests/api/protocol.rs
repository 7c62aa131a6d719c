//! The HTTP contract: one JSON error shape for every error status, the
//! seed's `/multiThread` shape, rate limiting, request ids and probes.

use jobserver::config::RateLimitConfig;
use serde_json::json;

use crate::helpers::{
    assert_error, error_code, ok_json, raw_post_json, retry_after, spawn_app, test_config,
};

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app(test_config()).await;
    let response = app
        .post_body("/jobs/message", "application/json", "{\"text\": ")
        .await;
    assert_error(response, 400, "malformed_json").await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app(test_config()).await;
    let response = app.post_body("/jobs/message", "text/plain", "hello").await;
    assert_error(response, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn json_of_the_wrong_shape_or_out_of_range_is_422() {
    let app = spawn_app(test_config()).await;
    for body in [
        json!({"work_ms": 5}),
        json!({"text": 3}),
        json!({"text": "x", "surprise": true}),
        json!({"text": "x", "work_ms": 10_000_000}),
        json!({"text": "x", "timeout_ms": 0}),
    ] {
        let response = app.message(body.clone()).await;
        assert_eq!(response.status(), 422, "for {body}");
        assert_eq!(error_code(response).await, "invalid_input");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let mut config = test_config();
    config.max_body_bytes = 1024;
    let app = spawn_app(config).await;
    let response = app.message(json!({"text": "x".repeat(4096)})).await;
    assert_error(response, 413, "payload_too_large").await;
}

/// The head of a raw HTTP response, lower-cased.
fn head(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response).to_lowercase();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_small_body_refused_from_its_headers_leaves_the_connection_open_for_the_next_request() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = test_config();
    config.message = jobserver::config::PoolConfig::new(1, 1, Duration::from_secs(10));
    let app = spawn_app(config).await;
    let running = app.spawn_message(json!({"text": "a", "work_ms": 10_000, "timeout_ms": 2_000}));
    crate::helpers::wait_until("the first job runs", || app.busy("message") == 1).await;
    let queued = app.spawn_message(json!({"text": "b", "work_ms": 0}));
    crate::helpers::wait_until("the second job is queued", || app.depth("message") == 1).await;
    // A refused submit and a probe, pipelined on one connection.
    let refused = raw_post_json("/jobs/message", &json!({"text": "c"}).to_string());
    let mut stream = app.send_raw(&refused).await;
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answers = String::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while answers.matches("HTTP/1.1 ").count() < 2 || !answers.ends_with('}') {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed after: {answers}");
            answers.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("both answered");
    let (first, second) = answers.split_at(answers.rfind("HTTP/1.1 ").unwrap());
    assert!(first.starts_with("HTTP/1.1 503"), "{first}");
    assert!(
        !first.to_lowercase().contains("connection: close"),
        "{first}"
    );
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(running.await.unwrap().status(), 504);
    assert_eq!(queued.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_response_sent_before_the_body_was_read_says_connection_close() {
    let mut config = test_config();
    config.max_body_bytes = 1024;
    let app = spawn_app(config).await;
    let big = json!({"text": "x".repeat(64 * 1024)}).to_string();
    let small = json!({"text": "fits"}).to_string();
    let refused = head(&app.raw_http(&raw_post_json("/jobs/message", &big)).await);
    let accepted = head(&app.raw_http(&raw_post_json("/jobs/message", &small)).await);
    // Without the header a keep-alive client would write its next request
    // into a socket the server is closing.
    assert!(refused.starts_with("http/1.1 413"), "{refused}");
    assert!(refused.contains("connection: close"), "{refused}");
    assert!(accepted.starts_with("http/1.1 200"), "{accepted}");
    assert!(
        !accepted.contains("connection: close"),
        "a read body keeps the connection: {accepted}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = spawn_app(test_config()).await;
    let response = app.get("/nope").await;
    assert_error(response, 404, "not_found").await;
    let response = app.get("/jobs/message").await;
    assert_error(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn multi_thread_answers_in_the_seed_shape() {
    let app = spawn_app(test_config()).await;
    let body = ok_json(app.multi_thread("message", "abc").await).await;
    let result = &body["data"]["result"];
    assert!(body["data"]["id"].is_string());
    assert_eq!(result["errCode"], "");
    assert_eq!(result["err"], "");
    assert_eq!(result["data"], "ABC");
    assert_eq!(result["workerName"], "message-worker-0");
    for key in ["dequeueElapsedMs", "processElapsedMs", "totalElapsedMs"] {
        assert!(result[key].is_number(), "{key} missing in {body}");
    }
}

#[tokio::test]
async fn multi_thread_refuses_an_unknown_job_type_with_422() {
    let app = spawn_app(test_config()).await;
    let response = app.multi_thread("teleport", "abc").await;
    assert_error(response, 422, "invalid_input").await;
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_probes_are_never_limited() {
    let mut config = test_config();
    config.rate_limit = RateLimitConfig {
        per_minute: 1,
        burst: 2,
    };
    let app = spawn_app(config).await;
    for _ in 0..2 {
        assert_eq!(app.message(json!({"text": "ok"})).await.status(), 200);
    }
    let limited = app.message(json!({"text": "one too many"})).await;
    assert_eq!(limited.status(), 429);
    let retry_after = retry_after(&limited);
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(error_code(limited).await, "rate_limited");

    for path in ["/livez", "/readyz", "/status"] {
        for _ in 0..5 {
            assert_eq!(app.get(path).await.status(), 200, "{path} was limited");
        }
    }
}

#[tokio::test]
async fn a_request_id_is_echoed_when_sent_and_generated_when_not() {
    let app = spawn_app(test_config()).await;
    let response = app.get_with("/livez", ("x-request-id", "abc-123")).await;
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app.get("/livez").await;
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

#[tokio::test]
async fn status_reports_each_queue_and_its_workers() {
    let app = spawn_app(test_config()).await;
    assert_eq!(app.message(json!({"text": "x"})).await.status(), 200);
    let (code, status) = app.get_json("/status").await;
    assert_eq!(code, 200);
    let queue = &status["queues"][0];
    assert_eq!(queue["queue"], "message");
    assert_eq!(queue["live_workers"], 1);
    assert_eq!(queue["jobs"]["ok"], 1);
    assert_eq!(queue["workers"][0]["name"], "message-worker-0");
}
