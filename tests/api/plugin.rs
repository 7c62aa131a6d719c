//! A worker type defined only here, registered through the library's
//! public API beside the built-in ones, and driven over HTTP: sync,
//! async, a full queue (503), a deadline (504); `/metrics` and `/status`
//! show it like any other type.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use jobserver::config::PoolConfig;
use jobserver::error::ApiError;
use jobserver::extract::ApiJson;
use jobserver::kind::JobKind;
use jobserver::queue::{Completed, JobContext, JobError, JobQueue, SubmitOptions, Worker};
use jobserver::routes::admission::Admission;
use jobserver::routes::standard_kinds;
use jobserver::state::{AppState, StartContext};
use jobserver::storage::JobInput;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::helpers::{field_of_each, spawn_app_with, test_config, wait_until, TestApp};

/// Upper-cases a text after holding the worker for `hold_ms`.
struct EchoWorker;

struct EchoJob {
    text: String,
    hold: Duration,
}

impl Worker for EchoWorker {
    type Job = EchoJob;
    type Output = String;
    type Error = JobError;

    fn process(&mut self, job: EchoJob, ctx: &JobContext) -> Result<String, JobError> {
        crossbeam_channel::select! {
            recv(ctx.cancelled()) -> _ => Err(JobError::Cancelled),
            default(job.hold) => Ok(job.text.to_uppercase()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EchoParams {
    text: String,
    #[serde(default)]
    hold_ms: u64,
    timeout_ms: Option<u64>,
}

#[derive(Serialize)]
struct EchoReply {
    job_id: uuid::Uuid,
    echo: String,
}

struct EchoKind {
    queue: JobQueue<EchoWorker>,
}

impl EchoKind {
    fn start(_: &StartContext) -> std::io::Result<Self> {
        let pool = PoolConfig::new(1, 1, Duration::from_secs(10));
        Ok(EchoKind {
            queue: JobQueue::start(Self::NAME, pool, |_| EchoWorker)?,
        })
    }
}

impl JobKind for EchoKind {
    type Worker = EchoWorker;
    type Params = EchoParams;
    type Reply = EchoReply;
    const NAME: &'static str = "echo";

    fn queue(&self) -> &JobQueue<EchoWorker> {
        &self.queue
    }

    fn build(
        &self,
        params: &EchoParams,
        _: Option<&JobInput>,
    ) -> Result<(EchoJob, SubmitOptions), ApiError> {
        let job = EchoJob {
            text: params.text.clone(),
            hold: Duration::from_millis(params.hold_ms),
        };
        let options = SubmitOptions {
            timeout: params.timeout_ms.map(Duration::from_millis),
            ..SubmitOptions::default()
        };
        Ok((job, options))
    }

    fn reply(&self, done: Completed<String>) -> EchoReply {
        EchoReply {
            job_id: done.job_id,
            echo: done.output,
        }
    }
}

/// Its route, in the shape every type's route module has.
#[utoipa::path(post, path = "/jobs/echo", tag = "jobs",
    responses((status = 200, description = "Echoed")))]
async fn echo_submit(
    State(state): State<AppState>,
    admission: Admission<EchoKind>,
    ApiJson(params): ApiJson<EchoParams>,
) -> Result<Response, ApiError> {
    admission.run_or_accept(&state, params, None).await
}

fn echo_routes(_: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(echo_submit))
}

async fn spawn_with_echo() -> TestApp {
    let mut kinds = standard_kinds();
    kinds.register(EchoKind::start, echo_routes);
    spawn_app_with(test_config(), kinds).await
}

async fn echo(app: &TestApp, query: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/jobs/echo{query}")))
        .json(&body)
        .send()
        .await
        .expect("the server answers")
}

#[tokio::test]
async fn a_worker_type_from_outside_the_crate_runs_sync_async_and_is_refused_and_timed_like_the_others(
) {
    let app = spawn_with_echo().await;

    let ok = echo(&app, "", json!({"text": "hi"})).await;
    assert_eq!(ok.status(), 200);
    let ok: Value = ok.json().await.unwrap();
    assert_eq!(ok["echo"], "HI", "{ok}");

    let late = echo(
        &app,
        "",
        json!({"text": "x", "hold_ms": 5000, "timeout_ms": 100}),
    )
    .await;
    assert_eq!(late.status(), 504, "the deadline ends a held job");
    let late: Value = late.json().await.unwrap();
    assert_eq!(late["error"], "timeout", "{late}");

    // One worker, one place in the queue: a third job is refused at once.
    let busy = app.pool("echo");
    wait_until("the timed-out job has left the worker", || busy.busy() == 0).await;
    let client = app.client.clone();
    let url = app.url("/jobs/echo");
    let running = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = json!({"text": "a", "hold_ms": 600});
            client.post(url).json(&body).send().await.unwrap().status()
        }
    });
    wait_until("the first job runs", || busy.busy() == 1).await;
    let queued = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"text": "b"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    wait_until("the second job waits", || busy.depth() == 1).await;
    let refused = echo(&app, "", json!({"text": "c"})).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"], "queue_full", "{refused}");
    assert_eq!(running.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);

    let accepted = echo(&app, "?mode=async", json!({"text": "later"})).await;
    assert_eq!(accepted.status(), 202);
    let location = accepted.headers()["location"].to_str().unwrap().to_string();
    let id = location.trim_start_matches("/jobs/").to_string();
    let job = app
        .job_until(&id, "the echo job is done", |j| j["state"] == "done")
        .await;
    assert_eq!(job["kind"], "echo");
    assert_eq!(job["result"]["echo"], "LATER", "{job}");
    assert!(
        job["links"].get("archive").is_none(),
        "an echo job has no pages"
    );

    let metrics = app.metrics().await;
    for line in [
        "jobserver_jobs_total{queue=\"echo\",outcome=\"ok\"} 4",
        "jobserver_jobs_total{queue=\"echo\",outcome=\"timeout\"} 1",
        "jobserver_rejections_total{queue=\"echo\",reason=\"queue_full\"} 1",
        "jobserver_queue_capacity{queue=\"echo\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in /metrics");
    }
    let (_, status) = app.get_json("/status").await;
    let queues = field_of_each(&status["queues"], "queue");
    assert_eq!(queues, ["message", "pdf", "echo"], "registration order");
    let echo_queue = &status["queues"][2];
    assert_eq!(echo_queue["jobs"]["ok"], 4, "{echo_queue}");
    assert_eq!(echo_queue["rejections"]["queue_full"], 1, "{echo_queue}");
}
