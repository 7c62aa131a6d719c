//! Graceful shutdown, in-process and as a real process receiving SIGTERM.

use std::process::Command;

use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_binary, terminate, test_config, wait_until};

#[tokio::test]
async fn shutdown_lets_the_running_job_finish_and_answers_the_queued_one_503() {
    let mut app = spawn_app(test_config()).await;
    let running = app.spawn_message(json!({"text": "running", "work_ms": 500}));
    wait_until("the first job runs", || app.busy("message") == 1).await;
    let queued = app.spawn_message(json!({"text": "queued"}));
    wait_until("the second job is queued", || app.depth("message") == 1).await;

    app.stop().await.expect("the server drains cleanly");

    assert_eq!(running.await.unwrap().status(), 200);
    let queued = queued.await.unwrap();
    assert_error(queued, 503, "shutting_down").await;
    assert_eq!(app.live_workers("message"), 0, "worker threads were joined");
}

#[tokio::test]
async fn readiness_turns_503_while_draining() {
    let app = spawn_app(test_config()).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.begin_drain();
    assert_eq!(app.get("/readyz").await.status(), 503);
    let refused = app.message(json!({"text": "late"})).await;
    assert_error(refused, 503, "shutting_down").await;
}

#[test]
fn the_binary_exits_0_on_sigterm() {
    let out = tempfile::tempdir().unwrap();
    let (mut child, _) = spawn_binary(|c| c.env("OUTPUT_DIR", out.path()));
    let status = terminate(&mut child);
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}

#[test]
fn the_binary_refuses_an_invalid_variable_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_jobserver"))
        .env("MESSAGE_WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MESSAGE_WORKERS"), "stderr: {stderr}");
}

#[tokio::test]
async fn shutdown_closes_a_connection_whose_head_is_still_arriving_but_finishes_a_request_in_flight(
) {
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    let mut config = test_config();
    // Longer than the wait below: only the drain may close the connection.
    config.connections.header_read_timeout = Duration::from_secs(60);
    config.shutdown_grace = Duration::from_secs(60);
    let mut app = spawn_app(config).await;
    let mut half = app.send_raw("GET /livez HTTP/1.1\r\nHost: x\r\n").await;
    let running = app.spawn_message(json!({"text": "running", "work_ms": 300}));
    wait_until("the job runs", || app.busy("message") == 1).await;
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the drain does not wait for a half-sent head")
        .expect("the server drains cleanly");
    assert_eq!(
        running.await.unwrap().status(),
        200,
        "the request in flight is answered"
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), half.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the half-sent connection was closed");
}
