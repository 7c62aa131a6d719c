//! Async jobs end to end: 202 and Location, every state, the event stream,
//! pages before the end, the archive, cancel, idempotency, expiry, TTL
//! cleanup, the primary election between two instances, and recovery after
//! the server is killed.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jobserver::config::{Config, PoolConfig};
use serde_json::{json, Value};

use crate::helpers::{data_dir, error_code, spawn_app, temp_dir, test_config, wait_until, TestApp};

/// Long enough to be caught running: 40 pages at 300 dpi.
const SLOW_PDF: (&str, &str) = ("many-pages.pdf", "?dpi=300&mode=async");

async fn submit_pdf(app: &TestApp, query: &str, file: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/jobs/pdf{query}")))
        .header("content-type", "application/pdf")
        .body(std::fs::read(data_dir().join(file)).unwrap())
        .send()
        .await
        .unwrap()
}

async fn submit_message(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/jobs/message?mode=async", body).await
}

async fn accepted_id(response: reqwest::Response) -> String {
    if response.status() != 202 {
        let status = response.status();
        panic!(
            "async submit answered {status}, not 202: {}",
            response.text().await.unwrap()
        );
    }
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    let id = body["job_id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/jobs/{id}"));
    id
}

async fn job(app: &TestApp, id: &str) -> Value {
    let response = app
        .client
        .get(app.url(&format!("/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls the job until `cond` holds (5 s at most): the state changes on
/// worker threads, and this reads it the way a client does.
async fn until_job(app: &TestApp, id: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = job(app, id).await;
        if cond(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["state"] == state
}

/// A server-sent event.
#[derive(Debug)]
struct Sse {
    name: String,
    id: Option<usize>,
    data: Value,
}

/// Reads the job's event stream to its end (30 s at most).
async fn read_events(app: &TestApp, id: &str, on_event: impl Fn(&Sse)) -> Vec<Sse> {
    let response = app
        .client
        .get(app.url(&format!("/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let (mut name, mut event_id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event_id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                let event = Sse {
                    name,
                    id: event_id,
                    data: serde_json::from_str(&data).unwrap(),
                };
                on_event(&event);
                events.push(event);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the event stream ends with the job");
    events
}

#[tokio::test]
async fn an_async_message_job_answers_202_with_location_and_its_result_matches_the_sync_reply() {
    let app = spawn_app(test_config()).await;
    let response = app
        .client
        .post(app.url("/jobs/message"))
        .header("prefer", "respond-async")
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["preference-applied"], "respond-async");
    let id = accepted_id(response).await;
    let done = until_job(&app, &id, "done", state_is("done")).await;
    let sync: Value = app
        .message(json!({"text": "hello"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        done["result"]["result"], sync["result"],
        "the same output as a sync job"
    );
    assert_eq!(done["result"]["job_id"], id.as_str());
    assert!(done["finished_ms"].as_u64().unwrap() >= done["created_ms"].as_u64().unwrap());
    assert!(done["expires_ms"].as_u64().unwrap() > done["finished_ms"].as_u64().unwrap());

    let unknown = app
        .client
        .get(app.url(&format!("/jobs/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "not_found");
}

#[tokio::test]
async fn a_queued_job_reports_its_place_then_runs_then_is_done() {
    let app = spawn_app(test_config()).await;
    let blocker =
        accepted_id(submit_message(&app, json!({"text": "a", "work_ms": 600})).await).await;
    until_job(&app, &blocker, "the blocker runs", state_is("running")).await;
    let first = accepted_id(submit_message(&app, json!({"text": "b"})).await).await;
    let second = accepted_id(submit_message(&app, json!({"text": "c"})).await).await;
    let queued = job(&app, &second).await;
    assert_eq!(queued["state"], "queued");
    assert_eq!(queued["position"], 1, "one job ahead: {queued}");
    assert_eq!(job(&app, &first).await["position"], 0);
    let running = job(&app, &blocker).await;
    assert_eq!(running["worker"], "message-worker-0");
    assert!(running.get("position").is_none());
    for id in [&blocker, &first, &second] {
        until_job(&app, id, "done", state_is("done")).await;
    }
}

#[tokio::test]
async fn a_bad_pdf_in_async_mode_ends_failed_with_the_sync_error_and_status() {
    let app = spawn_app(test_config()).await;
    let id = accepted_id(submit_pdf(&app, "?mode=async", "bad/truncated.pdf").await).await;
    let failed = until_job(&app, &id, "failed", state_is("failed")).await;
    assert_eq!(failed["error"]["status"], 422, "{failed}");
    assert_eq!(failed["error"]["error"], "invalid_input");
    assert!(failed.get("result").is_none());
}

#[tokio::test]
async fn admission_refuses_async_jobs_exactly_as_sync_ones() {
    let mut config = test_config();
    config.message = PoolConfig::new(1, 1, Duration::from_secs(10));
    let app = spawn_app(config).await;
    let running =
        accepted_id(submit_message(&app, json!({"text": "a", "work_ms": 500})).await).await;
    until_job(&app, &running, "running", state_is("running")).await;
    accepted_id(submit_message(&app, json!({"text": "b"})).await).await;
    let refused = submit_message(&app, json!({"text": "c"})).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "queue_full");
    let bad = submit_message(&app, json!({"text": 1})).await;
    assert_eq!(bad.status(), 422);
    let bad_mode = app
        .post_json("/jobs/message?mode=later", json!({"text": "x"}))
        .await;
    assert_eq!(bad_mode.status(), 400);
}

#[tokio::test]
async fn events_come_in_order_one_per_page_ending_with_the_final_state() {
    let app = spawn_app(test_config()).await;
    let id = accepted_id(submit_pdf(&app, "?dpi=100&mode=async", "many-pages.pdf").await).await;
    let events = read_events(&app, &id, |_| {}).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"state"), "{names:?}");
    assert_eq!(names.last(), Some(&"state"));
    let last = &events.last().unwrap().data;
    assert_eq!(last["state"], "done");
    let page_count = last["result"]["page_count"].as_u64().unwrap();
    // A stream that starts while the job is queued or running sees every
    // page after its first event; each page exactly once.
    let first_done = events[0].data["done"].as_u64().unwrap();
    let mut pages: Vec<u64> = events
        .iter()
        .filter(|e| e.name == "page")
        .map(|e| e.data["page"].as_u64().unwrap())
        .collect();
    assert_eq!(pages.len() as u64, page_count - first_done, "{names:?}");
    let done_counts: Vec<u64> = events
        .iter()
        .filter(|e| e.name == "page")
        .map(|e| e.data["done"].as_u64().unwrap())
        .collect();
    assert!(
        done_counts.windows(2).all(|w| w[1] == w[0] + 1),
        "{done_counts:?}"
    );
    pages.sort();
    pages.dedup();
    assert_eq!(pages.len() as u64, page_count - first_done, "no page twice");
    let ids: Vec<usize> = events.iter().skip(1).map(|e| e.id.unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids count up: {ids:?}"
    );

    // Resuming after the third event replays exactly what followed it.
    let resumed = app
        .client
        .get(app.url(&format!("/jobs/{id}/events")))
        .header("last-event-id", events[2].id.unwrap().to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resumed_ids: Vec<usize> = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect();
    let expected: Vec<usize> =
        (events[2].id.unwrap() + 1..=events.last().unwrap().id.unwrap()).collect();
    assert_eq!(resumed_ids, expected);

    // Late: the current (final) state, and the stream ends.
    let late = read_events(&app, &id, |_| {}).await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].data["state"], "done");
}

#[tokio::test]
async fn a_page_is_served_as_soon_as_it_is_rendered_while_the_job_still_runs() {
    let app = spawn_app(test_config()).await;
    let id = accepted_id(submit_pdf(&app, SLOW_PDF.1, SLOW_PDF.0).await).await;
    let (first_page_tx, first_page) = tokio::sync::oneshot::channel();
    let first_page_tx = std::sync::Mutex::new(Some(first_page_tx));
    let events = {
        let app = &app;
        let id = &id;
        async move {
            read_events(app, id, |e| {
                if e.name == "page" {
                    if let Some(tx) = first_page_tx.lock().unwrap().take() {
                        let _ = tx.send(e.data.clone());
                    }
                }
            })
            .await
        }
    };
    let check = async {
        let page = first_page.await.unwrap();
        let url = page["url"].as_str().unwrap().to_string();
        let png = app.client.get(app.url(&url)).send().await.unwrap();
        let state = job(&app, &id).await["state"].clone();
        assert_eq!(png.status(), 200);
        assert_eq!(png.headers()["content-type"], "image/png");
        assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
        state
    };
    let (_, state_when_fetched) = tokio::join!(events, check);
    assert_eq!(
        state_when_fetched, "running",
        "the page came before the job ended"
    );

    let archive = app
        .client
        .get(app.url(&format!("/jobs/{id}/archive")))
        .send()
        .await
        .unwrap();
    assert_eq!(archive.status(), 200);
    assert_eq!(archive.headers()["content-type"], "application/zip");
    let bytes = archive.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("a valid zip");
    assert_eq!(zip.len(), 40);
    let mut first = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("page-001.png").unwrap(), &mut first).unwrap();
    let on_disk =
        std::fs::read(app.state.config.output_dir.join(&id).join("page-001.png")).unwrap();
    assert_eq!(first, on_disk, "the zip holds the rendered pages");
}

#[tokio::test]
async fn the_archive_of_an_unfinished_job_is_409() {
    let app = spawn_app(test_config()).await;
    let id = accepted_id(submit_pdf(&app, SLOW_PDF.1, SLOW_PDF.0).await).await;
    let early = app
        .client
        .get(app.url(&format!("/jobs/{id}/archive")))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 409);
    assert_eq!(error_code(early).await, "conflict");
    let cancelled = app
        .client
        .delete(app.url(&format!("/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 202);
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_render_and_frees_the_worker_within_100_ms() {
    let app = spawn_app(test_config()).await;
    let id = accepted_id(submit_pdf(&app, SLOW_PDF.1, SLOW_PDF.0).await).await;
    until_job(&app, &id, "a page is rendered", |v| {
        v["done"].as_u64() >= Some(1)
    })
    .await;
    let out = app.state.config.output_dir.join(&id);
    let sent = Instant::now();
    let response = app
        .client
        .delete(app.url(&format!("/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["state"], "cancelled", "{view}");
    wait_until("the worker is free", || {
        app.state.pool("pdf").unwrap().busy() == 0
    })
    .await;
    let freed = sent.elapsed();
    assert!(
        freed < Duration::from_millis(100),
        "the worker was busy for {freed:?} after DELETE"
    );
    assert!(!out.exists(), "a cancelled job leaves no pages");
    let again = app
        .client
        .delete(app.url(&format!("/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        409,
        "an ended job cannot be cancelled again"
    );
    let next = submit_pdf(&app, "?dpi=36&pages=1", "sample.pdf").await;
    assert_eq!(next.status(), 200, "the worker carries on");
}

#[tokio::test]
async fn a_cancelled_queued_job_never_runs() {
    let app = spawn_app(test_config()).await;
    let blocker =
        accepted_id(submit_message(&app, json!({"text": "a", "work_ms": 400})).await).await;
    until_job(&app, &blocker, "running", state_is("running")).await;
    let queued = accepted_id(submit_message(&app, json!({"text": "never"})).await).await;
    let response = app
        .client
        .delete(app.url(&format!("/jobs/{queued}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["state"], "cancelled");
    until_job(&app, &blocker, "done", state_is("done")).await;
    let after = job(&app, &queued).await;
    assert_eq!(after["state"], "cancelled");
    assert!(
        after.get("started_ms").is_none() && after.get("worker").is_none(),
        "it never ran: {after}"
    );
    let stats = app.state.pool("message").unwrap().stats();
    assert_eq!(
        stats.ok.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "only the blocker ran"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job_and_another_request_under_it_is_422() {
    let app = spawn_app(test_config()).await;
    let send = |text: &'static str| {
        app.client
            .post(app.url("/jobs/message?mode=async"))
            .header("idempotency-key", "order-42")
            .json(&json!({"text": text}))
            .send()
    };
    let first = accepted_id(send("once").await.unwrap()).await;
    let again = send("once").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        accepted_id(again).await,
        first,
        "the same job, not a new one"
    );
    let other = send("something else").await.unwrap();
    assert_eq!(other.status(), 422);
    assert_eq!(error_code(other).await, "idempotency_key_reused");
    until_job(&app, &first, "done", state_is("done")).await;
    let stats = app.state.pool("message").unwrap().stats();
    assert_eq!(
        stats.ok.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "it ran once"
    );
}

#[tokio::test]
async fn an_async_job_past_its_async_deadline_ends_expired() {
    let mut config = test_config();
    config.pdf.pool = PoolConfig::new(1, 4, Duration::from_secs(30))
        .with_async_timeout(Duration::from_millis(300));
    let app = spawn_app(config).await;
    let id = accepted_id(submit_pdf(&app, SLOW_PDF.1, SLOW_PDF.0).await).await;
    let expired = until_job(&app, &id, "expired", state_is("expired")).await;
    assert_eq!(expired["error"]["status"], 504, "{expired}");
    wait_until("the worker is free", || {
        app.state.pool("pdf").unwrap().busy() == 0
    })
    .await;
}

#[tokio::test]
async fn results_are_removed_after_their_ttl_and_then_404() {
    let mut config = test_config();
    config.jobs.result_ttl = Duration::from_millis(1000);
    let app = spawn_app(config).await;
    let out = app.state.config.output_dir.clone();
    let async_id = accepted_id(submit_pdf(&app, "?dpi=36&mode=async", "sample.pdf").await).await;
    until_job(&app, &async_id, "done", state_is("done")).await;
    let sync: Value = submit_pdf(&app, "?dpi=36", "sample.pdf")
        .await
        .json()
        .await
        .unwrap();
    let sync_id = sync["job_id"].as_str().unwrap().to_string();
    assert!(out.join(&async_id).exists() && out.join(&sync_id).exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app
            .client
            .get(app.url(&format!("/jobs/{async_id}")))
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 && !out.join(&async_id).exists() && !out.join(&sync_id).exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "results still there after 10 s (status {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = app
        .client
        .get(app.url(&format!("/jobs/{async_id}/pages/1")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
}

#[tokio::test]
async fn past_max_tracked_jobs_async_submits_get_503() {
    let mut config = test_config();
    config.jobs.max_tracked = 2;
    let app = spawn_app(config).await;
    for text in ["a", "b"] {
        accepted_id(submit_message(&app, json!({"text": text})).await).await;
    }
    let refused = submit_message(&app, json!({"text": "c"})).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "too_many_jobs");
    let sync = app
        .message(json!({"text": "sync jobs are not tracked"}))
        .await;
    assert_eq!(sync.status(), 200);
}

#[tokio::test]
async fn concurrent_async_submits_never_pass_max_tracked_jobs_together() {
    let mut config = test_config();
    config.jobs.max_tracked = 3;
    config.message = PoolConfig::new(1, 32, Duration::from_secs(10));
    let app = spawn_app(config).await;
    let answers = futures::future::join_all(
        (0..12).map(|i| submit_message(&app, json!({"text": format!("job {i}")}))),
    )
    .await;
    let accepted = answers.iter().filter(|r| r.status() == 202).count();
    let refused = answers.iter().filter(|r| r.status() == 503).count();
    assert_eq!(
        (accepted, refused),
        (3, 9),
        "exactly MAX_TRACKED_JOBS accepted"
    );
}

#[tokio::test]
async fn a_corrupt_job_database_stops_the_start_with_a_message_naming_it() {
    let config = test_config();
    let db = config.output_dir.join("jobs.db");
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let err = match jobserver::startup::Application::build(config).await {
        Ok(_) => panic!("the server started on a corrupt database"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&db.display().to_string()), "{err}");
}

/// Two instances sharing one `OUTPUT_DIR`, as two processes would.
fn shared(out: &Path) -> Config {
    let mut config = test_config();
    config.output_dir = out.to_path_buf();
    config.jobs.result_ttl = Duration::from_millis(400);
    config
}

#[tokio::test]
async fn one_instance_of_two_sharing_a_folder_is_primary_and_the_role_moves_when_it_stops() {
    let out = temp_dir("shared");
    let first = spawn_app(shared(&out)).await;
    wait_until("the first instance is primary", || {
        first.state.jobs.is_primary()
    })
    .await;
    let second = spawn_app(shared(&out)).await;
    // Both serve requests; only one sweeps.
    let id = accepted_id(submit_message(&second, json!({"text": "x"})).await).await;
    until_job(&second, &id, "done", state_is("done")).await;
    // The other instance answers for it from the shared database.
    until_job(
        &first,
        &id,
        "the other instance sees it done",
        state_is("done"),
    )
    .await;
    let events = read_events(&first, &id, |_| {}).await;
    assert_eq!(
        events.last().map(|e| e.data["state"].clone()),
        Some(json!("done"))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while first
        .state
        .jobs
        .stats
        .removed
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            !second.state.jobs.is_primary(),
            "both instances are primary"
        );
        assert!(
            Instant::now() < deadline,
            "the primary never removed the expired job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        second
            .state
            .jobs
            .stats
            .removed
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the standby removed nothing"
    );
    first.stop().await.unwrap();
    wait_until("the second instance takes over", || {
        second.state.jobs.is_primary()
    })
    .await;
    second.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn async_jobs_run_again_after_the_server_is_killed() {
    let out = temp_dir("recover");
    let port = free_port();
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jobserver"))
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("OUTPUT_DIR", &out)
            .env("DATA_DIR", data_dir())
            .env("PDF_WORKERS", "1")
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut server = start();
        wait_ready(&client, &base).await;
        let submit = |query: &'static str, file: &'static str| {
            client
                .post(format!("{base}/jobs/pdf{query}"))
                .header("content-type", "application/pdf")
                .body(std::fs::read(data_dir().join(file)).unwrap())
                .send()
        };
        let running: Value = submit("?dpi=300&mode=async", "many-pages.pdf")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let queued: Value = submit("?dpi=36&mode=async", "sample.pdf")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids = [
            running["job_id"].as_str().unwrap().to_string(),
            queued["job_id"].as_str().unwrap().to_string(),
        ];
        let view = |id: String| {
            let client = client.clone();
            let url = format!("{base}/jobs/{id}");
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while view(ids[0].clone()).await["done"].as_u64() < Some(1) {
            assert!(
                Instant::now() < deadline,
                "the first job never rendered a page"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(view(ids[1].clone()).await["state"], "queued");
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();

        let mut server = start();
        wait_ready(&client, &base).await;
        for id in &ids {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let v = view(id.clone()).await;
                if v["state"] == "done" {
                    let pages = v["result"]["pages"].as_array().unwrap();
                    for page in pages {
                        let url = format!("{base}{}", page["url"].as_str().unwrap());
                        assert_eq!(client.get(url).send().await.unwrap().status(), 200);
                    }
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "job {id} did not finish after the restart: {v}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(
            std::fs::read_dir(out.join(".jobs/inputs"))
                .unwrap()
                .next()
                .is_none(),
            "kept uploads are removed once their jobs end"
        );
        stop_server(&mut server);
    });
    let _ = std::fs::remove_dir_all(out);
}

fn stop_server(server: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_ends_the_event_stream_of_a_job_kept_for_the_next_start() {
    let app = spawn_app(test_config()).await;
    let running =
        accepted_id(submit_message(&app, json!({"text": "a", "work_ms": 300})).await).await;
    until_job(&app, &running, "running", state_is("running")).await;
    let kept = accepted_id(submit_message(&app, json!({"text": "b"})).await).await;
    let stream = app
        .client
        .get(app.url(&format!("/jobs/{kept}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reader = tokio::spawn(async move { stream.text().await.unwrap() });
    let state = app.state.clone();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("an open event stream does not hold the shutdown")
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the stream ended")
        .unwrap();
    assert!(text.contains("\"state\":\"queued\""), "{text}");
    let record = state
        .jobs
        .records()
        .get(kept.parse().unwrap())
        .await
        .unwrap()
        .expect("the job is kept");
    assert_eq!(
        record.state.as_str(),
        "queued",
        "kept to run at the next start"
    );
}
