//! Message jobs through the whole path: 200, 503 with Retry-After, 504, and
//! a worker freed on time after a deadline or a disconnect.

use std::time::{Duration, Instant};

use jobserver::config::PoolConfig;
use serde_json::{json, Value};

use crate::helpers::{
    answered_in_order, assert_error, error_code, ok_json, raw_post_json, retry_after, spawn_app,
    test_config, wait_until,
};

#[tokio::test]
async fn a_message_job_answers_200_with_its_worker_result_and_timings() {
    let app = spawn_app(test_config()).await;
    let response = app.message(json!({"text": "hello", "work_ms": 20})).await;
    let body = ok_json(response).await;
    assert_eq!(body["worker"], "message-worker-0");
    assert_eq!(body["result"]["text"], "HELLO");
    assert!(body["result"]["rounds"].as_u64().unwrap() > 0);
    let job_id = body["job_id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(job_id).unwrap().get_version_num(), 4);
    let run_ms = body["run_ms"].as_f64().unwrap();
    assert!(
        run_ms >= 20.0,
        "run_ms {run_ms} is below the requested work"
    );
    assert!(
        body["total_ms"].as_f64().unwrap() >= run_ms + body["queue_ms"].as_f64().unwrap() - 0.01
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_at_once_with_retry_after() {
    let mut config = test_config();
    config.message = PoolConfig::new(1, 1, Duration::from_secs(10));
    let app = spawn_app(config).await;
    let running = app.spawn_message(json!({"text": "a", "work_ms": 10_000, "timeout_ms": 3_000}));
    wait_until("the first job runs", || app.busy("message") == 1).await;
    let queued = app.spawn_message(json!({"text": "b", "work_ms": 0}));
    wait_until("the second job is queued", || app.depth("message") == 1).await;

    let response = app.message(json!({"text": "c"})).await;
    assert_eq!(response.status(), 503);
    assert!(retry_after(&response) >= 1, "Retry-After of a full queue");
    assert_eq!(error_code(response).await, "queue_full");

    assert_eq!(running.await.unwrap().status(), 504);
    assert_eq!(queued.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_job_past_its_deadline_answers_504_and_the_next_job_runs_without_waiting_for_its_work() {
    let app = spawn_app(test_config()).await;
    let started = Instant::now();
    // A minute of work against a 300 ms deadline; the next job's whole
    // budget (10 s) is far shorter than that minute.
    let slow = app.spawn_message(json!({"text": "slow", "work_ms": 60_000, "timeout_ms": 300}));
    wait_until("the slow job runs", || app.busy("message") == 1).await;
    let next = app.spawn_message(json!({"text": "next", "work_ms": 0}));

    // Queued behind the slow job, the next one is answered after its 504.
    let (slow, next) = answered_in_order(slow, next).await;
    assert_eq!(slow.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5), "504 came late");
    let body: Value = slow.json().await.unwrap();
    assert_eq!(body["error"], "timeout");
    assert!(body["job_id"].is_string(), "a 504 names its job: {body}");

    let status = next.status();
    let next: Value = next.json().await.unwrap();
    assert_eq!(
        status, 200,
        "the worker let go of the slow job at its deadline and ran the next one: {next}"
    );
    assert_eq!(next["worker"], "message-worker-0");
}

#[tokio::test]
async fn a_job_still_queued_at_its_queue_budget_answers_504_unstarted() {
    let mut config = test_config();
    config.message.queue_timeout = Duration::from_millis(200);
    let app = spawn_app(config).await;
    let busy = app.spawn_message(json!({"text": "busy", "work_ms": 1_000}));
    wait_until("the first job runs", || app.busy("message") == 1).await;

    let response = app.message(json!({"text": "waits"})).await;
    assert_error(response, 504, "queue_timeout").await;
    assert_eq!(busy.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_client_that_disconnects_frees_the_worker() {
    let app = spawn_app(test_config()).await;
    let body = json!({"text": "abandoned", "work_ms": 10_000}).to_string();
    let stream = app.send_raw(&raw_post_json("/jobs/message", &body)).await;
    wait_until("the job runs", || app.busy("message") == 1).await;
    let dropped = Instant::now();
    drop(stream);
    wait_until("the worker is free", || app.busy("message") == 0).await;
    assert!(dropped.elapsed() < Duration::from_secs(1));

    let next = app.message(json!({"text": "next"})).await;
    assert_eq!(next.status(), 200);
}

#[tokio::test]
async fn two_workers_serve_two_jobs_at_once() {
    let mut config = test_config();
    config.message = PoolConfig::new(2, 4, Duration::from_secs(10));
    let app = spawn_app(config).await;
    let a = app.spawn_message(json!({"text": "a", "work_ms": 300}));
    let b = app.spawn_message(json!({"text": "b", "work_ms": 300}));
    let a: Value = a.await.unwrap().json().await.unwrap();
    let b: Value = b.await.unwrap().json().await.unwrap();
    assert_ne!(a["worker"], b["worker"], "both jobs ran on one thread");
}
