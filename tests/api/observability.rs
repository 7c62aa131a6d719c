//! What operators see: the OpenAPI document, Prometheus metrics (checked
//! with `promtool`), and counters that move with each outcome.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use jobserver::config::PoolConfig;
use serde_json::json;

use crate::helpers::{fixture, spawn_app, test_config, wait_until};

/// The value of the series whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_listed_route_exists() {
    let app = spawn_app(test_config()).await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                listed.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let expected: BTreeSet<String> = [
        "GET /",
        "GET /livez",
        "GET /readyz",
        "GET /status",
        "GET /metrics",
        "GET /openapi.json",
        "POST /jobs/message",
        "POST /jobs/pdf",
        "GET /jobs/{job_id}/pages/{page}",
        "GET /jobs/{job_id}",
        "DELETE /jobs/{job_id}",
        "GET /jobs/{job_id}/events",
        "GET /jobs/{job_id}/archive",
        "POST /multiThread",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(listed, expected);

    // And each one is served: neither 404 for the path nor 405 for the method.
    for route in &listed {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{job_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{page}", "1");
        let request = match method {
            "GET" => app.client.get(app.url(&path)),
            "DELETE" => app.client.delete(app.url(&path)),
            _ => app.client.post(app.url(&path)).json(&json!({})),
        };
        let response = request.send().await.unwrap();
        let body = response.text().await.unwrap_or_default();
        assert!(
            !body.contains("\"not_found\"") || path.starts_with("/jobs/0"),
            "{route} is documented but not routed"
        );
        assert!(
            !body.contains("method_not_allowed"),
            "{route}: wrong method"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn job_counters_move_with_each_outcome_and_rejection() {
    let mut config = test_config();
    config.message = PoolConfig::new(1, 1, Duration::from_secs(10));
    let app = spawn_app(config).await;
    let before = app.metrics().await;
    let series = |queue: &str, outcome: &str| {
        format!("jobserver_jobs_total{{queue=\"{queue}\",outcome=\"{outcome}\"}}")
    };

    // ok
    assert_eq!(app.message(json!({"text": "ok"})).await.status(), 200);
    // timeout
    let slow = app
        .message(json!({"text": "slow", "work_ms": 5000, "timeout_ms": 50}))
        .await;
    assert_eq!(slow.status(), 504);
    wait_until("the timed-out job lets go of the worker", || {
        app.busy("message") == 0
    })
    .await;
    // failed (an unreadable PDF is the job's failure, with 422)
    let bad = app.upload_pdf("", fixture("bad/random.pdf")).await;
    assert_eq!(bad.status(), 422);
    // rejected (queue full)
    let running = app.spawn_message(json!({"text": "a", "work_ms": 10_000, "timeout_ms": 2_000}));
    wait_until("a job runs", || app.busy("message") == 1).await;
    let queued = app.spawn_message(json!({"text": "b"}));
    wait_until("a job waits", || app.depth("message") == 1).await;
    assert_eq!(app.message(json!({"text": "c"})).await.status(), 503);
    running.await.unwrap();
    queued.await.unwrap();
    // invalid input: admitted from its headers, refused once its body is
    // read (while the queue is full, it would be refused unread, 503)
    assert_eq!(app.message(json!({"text": 1})).await.status(), 422);

    let after = app.metrics().await;
    let moved = |s: &str| value(&after, s) - value(&before, s);
    assert_eq!(
        moved(&series("message", "ok")),
        2.0,
        "ok and the queued job"
    );
    assert_eq!(
        moved(&series("message", "timeout")),
        2.0,
        "slow and the occupier"
    );
    assert_eq!(moved(&series("message", "rejected")), 1.0);
    assert_eq!(moved(&series("pdf", "failed")), 1.0);
    assert_eq!(
        moved("jobserver_rejections_total{queue=\"message\",reason=\"queue_full\"}"),
        1.0
    );
    assert_eq!(
        moved("jobserver_rejections_total{queue=\"message\",reason=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        moved("jobserver_rejections_total{queue=\"pdf\",reason=\"invalid\"}"),
        1.0
    );
    assert!(
        value(
            &after,
            "jobserver_http_requests_total{route=\"/jobs/message\",status=\"200\"}"
        ) >= 2.0
    );
    assert!(value(&after, "jobserver_job_run_seconds_count{queue=\"message\"}") >= 3.0);
}

#[tokio::test]
async fn the_metrics_pass_promtool_check_metrics() {
    let app = spawn_app(test_config()).await;
    assert_eq!(app.message(json!({"text": "x"})).await.status(), 200);
    let pdf = app
        .post_json("/jobs/pdf", json!({"path": "text.pdf", "dpi": 36}))
        .await;
    assert_eq!(pdf.status(), 200);
    let text = app.metrics().await;
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = promtool.expect(
        "promtool is missing: run the tests with scripts/test.sh, which installs Debian's prometheus package",
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn status_shows_a_busy_worker_with_its_job_and_recent_jobs() {
    let app = spawn_app(test_config()).await;
    assert_eq!(app.message(json!({"text": "first"})).await.status(), 200);
    let running = app.spawn_message(json!({"text": "x", "work_ms": 2_000, "timeout_ms": 3_000}));
    wait_until("the job runs", || app.busy("message") == 1).await;
    let (code, status) = app.get_json("/status").await;
    assert_eq!(code, 200);
    let message = &status["queues"][0];
    assert_eq!(message["queue"], "message");
    assert_eq!(message["busy_workers"], 1);
    let worker = &message["workers"][0];
    assert!(worker["job_id"].is_string(), "{worker}");
    assert!(worker["since_ms"].as_u64().unwrap() > 0);
    assert_eq!(message["recent_jobs"][0]["outcome"], "ok");
    assert_eq!(message["recent"]["answered"], 1);
    assert_eq!(status["queues"][1]["queue"], "pdf");
    assert_eq!(status["pdf_engine"]["available"], true);
    running.abort();
}
