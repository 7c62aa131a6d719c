//! Graceful shutdown, in-process and as a real process receiving SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{error_code, spawn_app, test_config, wait_until};

#[tokio::test]
async fn shutdown_lets_the_running_job_finish_and_answers_the_queued_one_503() {
    let app = spawn_app(test_config()).await;
    let running = app.spawn_message(json!({"text": "running", "work_ms": 500}));
    wait_until("the first job runs", || {
        app.state.pool("message").unwrap().busy() == 1
    })
    .await;
    let queued = app.spawn_message(json!({"text": "queued"}));
    wait_until("the second job is queued", || {
        app.state.pool("message").unwrap().depth() == 1
    })
    .await;
    let state = app.state.clone();

    app.stop().await.expect("the server drains cleanly");

    assert_eq!(running.await.unwrap().status(), 200);
    let queued = queued.await.unwrap();
    assert_eq!(queued.status(), 503);
    assert_eq!(error_code(queued).await, "shutting_down");
    assert_eq!(
        state.pool("message").unwrap().live_workers(),
        0,
        "worker threads were joined"
    );
}

#[tokio::test]
async fn readiness_turns_503_while_draining() {
    let app = spawn_app(test_config()).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.state.begin_drain();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let refused = app.message(json!({"text": "late"})).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(error_code(refused).await, "shutting_down");
}

#[test]
fn the_binary_exits_0_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobserver"))
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut listening = false;
    for line in stdout.lines() {
        if line.unwrap().contains("listening on") {
            listening = true;
            break;
        }
    }
    assert!(listening, "the server never said it was listening");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
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

fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
