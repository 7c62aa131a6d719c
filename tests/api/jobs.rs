//! Async jobs end to end: 202 and Location, every state, the event stream,
//! pages before the end, the archive, cancel, idempotency, expiry, TTL
//! cleanup, the primary election between two instances, and recovery after
//! the server is killed.

use std::path::Path;
use std::time::Duration;

use jobserver::config::{Config, PoolConfig};
use serde_json::{json, Value};

use crate::helpers::{
    accepted_id, assert_error, data_dir, error_code, eventually, fixture, spawn_app, spawn_binary,
    terminate, test_config, wait_until, Api,
};

/// Submits a job long enough to be caught running: 40 pages at 300 dpi.
async fn submit_slow_pdf(api: &Api) -> String {
    api.submit_pdf("?dpi=300", fixture("many-pages.pdf")).await
}

fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["state"] == state
}

#[tokio::test]
async fn an_async_message_job_answers_202_with_location_and_its_result_matches_the_sync_reply() {
    let app = spawn_app(test_config()).await;
    let response = app
        .post_json_with(
            "/jobs/message",
            ("prefer", "respond-async"),
            json!({"text": "hello"}),
        )
        .await;
    assert_eq!(response.headers()["preference-applied"], "respond-async");
    let id = accepted_id(response).await;
    let done = app.job_until(&id, "done", state_is("done")).await;
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

    let unknown = app.get(&format!("/jobs/{}", uuid::Uuid::new_v4())).await;
    assert_error(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn a_queued_job_reports_its_place_then_runs_then_is_done() {
    let app = spawn_app(test_config()).await;
    let blocker = app.submit_running_message(600).await;
    let first = app.submit_message(json!({"text": "b"})).await;
    let second = app.submit_message(json!({"text": "c"})).await;
    let queued = app.job(&second).await;
    assert_eq!(queued["state"], "queued");
    assert_eq!(queued["position"], 1, "one job ahead: {queued}");
    assert_eq!(app.job(&first).await["position"], 0);
    let running = app.job(&blocker).await;
    assert_eq!(running["worker"], "message-worker-0");
    assert!(running.get("position").is_none());
    for id in [&blocker, &first, &second] {
        app.job_until(id, "done", state_is("done")).await;
    }
}

#[tokio::test]
async fn a_bad_pdf_in_async_mode_ends_failed_with_the_sync_error_and_status() {
    let app = spawn_app(test_config()).await;
    let id = app.submit_pdf("", fixture("bad/truncated.pdf")).await;
    let failed = app.job_until(&id, "failed", state_is("failed")).await;
    assert_eq!(failed["error"]["status"], 422, "{failed}");
    assert_eq!(failed["error"]["error"], "invalid_input");
    assert!(failed.get("result").is_none());
}

#[tokio::test]
async fn admission_refuses_async_jobs_exactly_as_sync_ones() {
    let mut config = test_config();
    config.message = PoolConfig::new(1, 1, Duration::from_secs(10));
    let app = spawn_app(config).await;
    app.submit_running_message(500).await;
    app.submit_message(json!({"text": "b"})).await;
    let refused = app.async_message(json!({"text": "c"})).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "queue_full");
    // Admission comes before the body: while the queue is full even a bad
    // body is refused unread.
    let bad = app.async_message(json!({"text": 1})).await;
    assert_eq!(bad.status(), 503);
    let bad_mode = app
        .post_json("/jobs/message?mode=later", json!({"text": "x"}))
        .await;
    assert_eq!(bad_mode.status(), 400);
}

#[tokio::test]
async fn events_come_in_order_one_per_page_ending_with_the_final_state() {
    let app = spawn_app(test_config()).await;
    let id = app.submit_pdf("?dpi=100", fixture("many-pages.pdf")).await;
    let events = app.events(&id).await;
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
    let resumed = app.events_after(&id, events[2].id.unwrap()).await;
    let resumed_ids: Vec<usize> = resumed.iter().map(|e| e.id.unwrap()).collect();
    let expected: Vec<usize> =
        (events[2].id.unwrap() + 1..=events.last().unwrap().id.unwrap()).collect();
    assert_eq!(
        resumed_ids, expected,
        "the events after the third, in order"
    );

    // Late: the current (final) state, and the stream ends.
    let late = app.events(&id).await;
    assert_eq!(late.len(), 1, "a late client gets one event: {late:?}");
    assert_eq!(late[0].data["state"], "done");
}

#[tokio::test]
async fn a_page_is_served_as_soon_as_it_is_rendered_while_the_job_still_runs() {
    let app = spawn_app(test_config()).await;
    let id = submit_slow_pdf(&app).await;
    let (first_page_tx, first_page) = tokio::sync::oneshot::channel();
    let first_page_tx = std::sync::Mutex::new(Some(first_page_tx));
    let events = app.events_with(&id, |e| {
        if e.name == "page" {
            if let Some(tx) = first_page_tx.lock().unwrap().take() {
                let _ = tx.send(e.data.clone());
            }
        }
    });
    let check = async {
        let page = first_page.await.unwrap();
        let url = page["url"].as_str().unwrap().to_string();
        let png = app.get(&url).await;
        let state = app.job(&id).await["state"].clone();
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

    let archive = app.archive(&id).await;
    assert_eq!(archive.status(), 200);
    assert_eq!(archive.headers()["content-type"], "application/zip");
    let bytes = archive.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("a valid zip");
    assert_eq!(zip.len(), 40);
    let mut first = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("page-001.png").unwrap(), &mut first).unwrap();
    let on_disk = std::fs::read(app.output_dir().join(&id).join("page-001.png")).unwrap();
    assert_eq!(first, on_disk, "the zip holds the rendered pages");
}

#[tokio::test]
async fn the_archive_of_an_unfinished_job_is_409() {
    let app = spawn_app(test_config()).await;
    let id = submit_slow_pdf(&app).await;
    let early = app.archive(&id).await;
    assert_error(early, 409, "conflict").await;
    assert_eq!(
        app.cancel(&id).await.status(),
        202,
        "a running job is cancelled"
    );
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_render_before_another_page_and_frees_the_worker() {
    let app = spawn_app(test_config()).await;
    let id = submit_slow_pdf(&app).await;
    app.job_until(&id, "a page is rendered", |v| v["done"].as_u64() >= Some(1))
        .await;
    let out = app.output_dir().join(&id);
    let response = app.cancel(&id).await;
    assert_eq!(response.status(), 202);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["state"], "cancelled", "{view}");
    // The answer comes once the job has stopped: every page it rendered is
    // counted in `done`, and the worker is about to be free.
    let rendered = view["done"].as_u64().unwrap();
    assert!(rendered < 40, "the job was stopped, not finished: {view}");
    wait_until("the worker is free", || app.busy("pdf") == 0).await;
    assert!(!out.exists(), "a cancelled job leaves no pages");
    let again = app.cancel(&id).await;
    assert_eq!(
        again.status(),
        409,
        "an ended job cannot be cancelled again"
    );
    app.assert_pdf_renders("the worker carries on").await;
    assert_eq!(
        app.pages_rendered(),
        rendered + 1,
        "no page of the cancelled job was rendered after its cancel, only the next job's"
    );
}

#[tokio::test]
async fn a_cancelled_queued_job_never_runs() {
    let app = spawn_app(test_config()).await;
    let blocker = app.submit_running_message(400).await;
    let queued = app.submit_message(json!({"text": "never"})).await;
    let response = app.cancel(&queued).await;
    assert_eq!(response.status(), 202);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["state"], "cancelled");
    app.job_until(&blocker, "done", state_is("done")).await;
    let after = app.job(&queued).await;
    assert_eq!(after["state"], "cancelled");
    assert!(
        after.get("started_ms").is_none() && after.get("worker").is_none(),
        "it never ran: {after}"
    );
    assert_eq!(app.jobs_ok("message"), 1, "only the blocker ran");
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job_and_another_request_under_it_is_422() {
    let app = spawn_app(test_config()).await;
    let send = |text: &'static str| {
        app.post_json_with(
            "/jobs/message?mode=async",
            ("idempotency-key", "order-42"),
            json!({"text": text}),
        )
    };
    let first = accepted_id(send("once").await).await;
    let again = send("once").await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        accepted_id(again).await,
        first,
        "the same job, not a new one"
    );
    let other = send("something else").await;
    assert_error(other, 422, "idempotency_key_reused").await;
    app.job_until(&first, "done", state_is("done")).await;
    assert_eq!(app.jobs_ok("message"), 1, "it ran once");
}

#[tokio::test]
async fn an_async_job_past_its_async_deadline_ends_expired() {
    let mut config = test_config();
    config.pdf.pool = PoolConfig::new(1, 4, Duration::from_secs(30))
        .with_async_timeout(Duration::from_millis(300));
    let app = spawn_app(config).await;
    let id = submit_slow_pdf(&app).await;
    let expired = app.job_until(&id, "expired", state_is("expired")).await;
    assert_eq!(expired["error"]["status"], 504, "{expired}");
    wait_until("the worker is free", || app.busy("pdf") == 0).await;
}

#[tokio::test]
async fn results_are_removed_after_their_ttl_and_then_404() {
    let mut config = test_config();
    config.jobs.result_ttl = Duration::from_millis(1000);
    let app = spawn_app(config).await;
    let out = app.output_dir();
    let async_id = app.submit_pdf("?dpi=36", fixture("sample.pdf")).await;
    app.job_until(&async_id, "done", state_is("done")).await;
    let sync: Value = app
        .upload_pdf("?dpi=36", fixture("sample.pdf"))
        .await
        .json()
        .await
        .unwrap();
    let sync_id = sync["job_id"].as_str().unwrap().to_string();
    assert!(
        out.join(&async_id).exists() && out.join(&sync_id).exists(),
        "both jobs' pages are there before the TTL"
    );
    eventually(
        "the async record and both jobs' pages are removed",
        Duration::from_secs(10),
        || async {
            let status = app.get(&format!("/jobs/{async_id}")).await.status();
            let gone = !out.join(&async_id).exists() && !out.join(&sync_id).exists();
            (status == 404 && gone).then_some(())
        },
    )
    .await;
    assert_eq!(
        app.page(&async_id, 1).await.status(),
        404,
        "a removed job's page is 404"
    );
}

#[tokio::test]
async fn past_max_tracked_jobs_async_submits_get_503() {
    let mut config = test_config();
    config.jobs.max_tracked = 2;
    let app = spawn_app(config).await;
    for text in ["a", "b"] {
        app.submit_message(json!({"text": text})).await;
    }
    let refused = app.async_message(json!({"text": "c"})).await;
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
        (0..12).map(|i| app.async_message(json!({"text": format!("job {i}")}))),
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
    let out = tempfile::tempdir().unwrap();
    let db = out.path().join("jobs.db");
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let mut config = test_config();
    config.output_dir = out.path().to_path_buf();
    let err = match jobserver::startup::Application::build(config).await {
        Ok(_) => panic!("the server started on a corrupt database"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&db.display().to_string()),
        "the error names the database: {err}"
    );
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
    let out = tempfile::tempdir().unwrap();
    let mut first = spawn_app(shared(out.path())).await;
    wait_until("the first instance is primary", || first.is_primary()).await;
    let mut second = spawn_app(shared(out.path())).await;
    // Both serve requests; only one sweeps.
    let id = second.submit_message(json!({"text": "x"})).await;
    second.job_until(&id, "done", state_is("done")).await;
    // The other instance answers for it from the shared database.
    first
        .job_until(&id, "the other instance sees it done", state_is("done"))
        .await;
    let events = first.events(&id).await;
    assert_eq!(
        events.last().map(|e| e.data["state"].clone()),
        Some(json!("done")),
        "the other instance's event stream ends done"
    );
    eventually(
        "the primary removes the expired job",
        Duration::from_secs(10),
        || async {
            assert!(!second.is_primary(), "both instances are primary");
            (first.removed_jobs() > 0).then_some(())
        },
    )
    .await;
    assert_eq!(second.removed_jobs(), 0, "the standby removed nothing");
    first.stop().await.unwrap();
    wait_until("the second instance takes over", || second.is_primary()).await;
    second.stop().await.unwrap();
}

#[test]
fn async_jobs_run_again_after_the_server_is_killed() {
    let out = tempfile::tempdir().unwrap();
    let start = || {
        spawn_binary(|c| {
            c.env("OUTPUT_DIR", out.path())
                .env("DATA_DIR", data_dir())
                .env("PDF_WORKERS", "1")
                .env("RATE_LIMIT_PER_MINUTE", "0")
        })
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mut server, addr) = start();
        let api = Api::at(addr);
        api.wait_ready().await;
        let running = submit_slow_pdf(&api).await;
        let queued = api.submit_pdf("?dpi=36", fixture("sample.pdf")).await;
        api.job_until(&running, "the first job renders a page", |v| {
            v["done"].as_u64() >= Some(1)
        })
        .await;
        assert_eq!(
            api.job(&queued).await["state"],
            "queued",
            "the second job waits behind the first"
        );
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();

        let (mut server, addr) = start();
        let api = Api::at(addr);
        api.wait_ready().await;
        for id in [&running, &queued] {
            let done = api
                .job_until_within(
                    id,
                    "it finishes after the restart",
                    Duration::from_secs(60),
                    state_is("done"),
                )
                .await;
            for page in done["result"]["pages"].as_array().unwrap() {
                let url = page["url"].as_str().unwrap();
                assert_eq!(api.get(url).await.status(), 200, "{url} is served");
            }
        }
        assert!(
            std::fs::read_dir(out.path().join(".jobs/inputs"))
                .unwrap()
                .next()
                .is_none(),
            "kept uploads are removed once their jobs end"
        );
        terminate(&mut server);
    });
}

#[tokio::test]
async fn shutdown_ends_the_event_stream_of_a_job_kept_for_the_next_start() {
    let mut app = spawn_app(test_config()).await;
    app.submit_running_message(300).await;
    let kept = app.submit_message(json!({"text": "b"})).await;
    let stream = app.get(&format!("/jobs/{kept}/events")).await;
    assert_eq!(stream.status(), 200);
    let reader = tokio::spawn(async move { stream.text().await.unwrap() });
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("an open event stream does not hold the shutdown")
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the stream ended")
        .unwrap();
    assert!(text.contains("\"state\":\"queued\""), "{text}");
    assert_eq!(
        app.stored_state(&kept).await.as_deref(),
        Some("queued"),
        "kept to run at the next start"
    );
}
