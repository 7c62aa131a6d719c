//! The harness of the end-to-end tests.
//!
//! - `spawn_app` starts the real `Application` on an ephemeral port with a
//!   configuration built in code (tests never set environment variables);
//!   `spawn_binary` starts the real binary as a process.
//! - `Api` speaks HTTP to one server, one method per endpoint; `TestApp`
//!   dereferences to it.
//! - `TestApp`'s own methods are the only place that reads the server's
//!   internals (queues, renderers, the job store): tests name what they
//!   want to know, never a field of `AppState`.
//! - `eventually` waits for state that changes on other threads.

use std::ffi::OsStr;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use jobserver::config::{Config, PdfConfig, PoolConfig, RateLimitConfig};
use jobserver::routes::standard_kinds;
use jobserver::startup::Application;
use jobserver::state::{AppState, Registry};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The repository's `data/` folder (the project's own fixtures).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The bytes of a file under `data/`.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("data/{name}: {e}"))
}

/// A configuration for tests: ephemeral port, no rate limit, one message
/// worker and one PDF worker, short budgets, renderers started from the
/// real binary. `output_dir` is left empty: `spawn_app` then renders into a
/// temp folder the `TestApp` owns (set it to share a folder on purpose).
/// What depends on the machine is off unless a test sets it: the
/// renderers' memory budget (derived from the machine's memory) and the
/// free-disk floor, so that no test's outcome hangs on either.
pub fn test_config() -> Config {
    let pdf = PdfConfig {
        pool: PoolConfig::new(1, 4, Duration::from_secs(30)),
        renderer_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_jobserver"))),
        renderer_memory_budget_mb: 0,
        ..PdfConfig::default()
    };
    Config {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir(),
        output_dir: PathBuf::new(),
        min_free_disk_mb: 0,
        message: PoolConfig::new(1, 4, Duration::from_secs(10)),
        pdf,
        rate_limit: RateLimitConfig {
            per_minute: 0,
            burst: 1,
        },
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

/// Starts the server in this process, on the test's runtime.
pub async fn spawn_app(config: Config) -> TestApp {
    spawn_app_with(config, standard_kinds()).await
}

/// Starts the server with the worker types of `kinds`.
pub async fn spawn_app_with(mut config: Config, kinds: Registry) -> TestApp {
    let output = if config.output_dir.as_os_str().is_empty() {
        let dir = tempfile::Builder::new()
            .prefix("jobserver-test-out-")
            .tempdir()
            .expect("a temp folder for the renders");
        config.output_dir = dir.path().to_path_buf();
        Some(dir)
    } else {
        None
    };
    let app = Application::build_with(config, kinds)
        .await
        .expect("the app starts");
    let addr = app.local_addr().unwrap();
    let admin_addr = app.admin_addr();
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        api: Api::at(addr),
        admin_addr,
        state,
        stop: Some(stop),
        server: Some(server),
        _output: output,
    }
}

/// A server started by `spawn_app`: its HTTP API (through `Deref`) and
/// what the tests may ask of its internals.
pub struct TestApp {
    api: Api,
    admin_addr: Option<SocketAddr>,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    /// The renders' folder, removed when the app is dropped.
    _output: Option<TempDir>,
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Runs `$body` with `$q` bound to the queue named `$name`.
macro_rules! on_queue {
    ($state:expr, $name:expr, |$q:ident| $body:expr) => {{
        let name = $name;
        let $q = $state
            .pool(name)
            .unwrap_or_else(|| panic!("no queue named {name:?}"));
        $body
    }};
}

impl TestApp {
    /// The API as a client that sends `key` (`Authorization: Bearer`).
    pub fn as_key(&self, key: &str) -> Api {
        Api::with_key(self.api.addr, key)
    }

    /// The admin listener (`ADMIN_BIND_ADDR`), which must be configured.
    pub fn admin(&self) -> Api {
        Api::at(self.admin_addr.expect("an admin listener"))
    }

    /// Triggers shutdown and waits for the server to finish draining. The
    /// app can still be asked about its internals afterwards.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        let _ = self.stop.take().expect("stopped once").send(());
        self.server.take().unwrap().await.unwrap()
    }

    /// Stops admitting jobs, as a shutdown does first.
    pub fn begin_drain(&self) {
        self.state.begin_drain();
    }

    /// The folder renders are written to (`OUTPUT_DIR`).
    pub fn output_dir(&self) -> &Path {
        &self.state.config.output_dir
    }

    /// Workers of `queue` running a job now.
    pub fn busy(&self, queue: &str) -> usize {
        on_queue!(self.state, queue, |q| q.busy())
    }

    /// Jobs waiting in `queue`, not yet started.
    pub fn depth(&self, queue: &str) -> usize {
        on_queue!(self.state, queue, |q| q.depth())
    }

    /// Worker threads of `queue` alive now.
    pub fn live_workers(&self, queue: &str) -> usize {
        on_queue!(self.state, queue, |q| q.live_workers())
    }

    /// Workers of `queue` whose status names a job.
    pub fn workers_on_a_job(&self, queue: &str) -> usize {
        on_queue!(self.state, queue, |q| q
            .workers()
            .iter()
            .filter(|w| w.job_id.is_some())
            .count())
    }

    /// Jobs of `queue` that ended `ok`.
    pub fn jobs_ok(&self, queue: &str) -> u64 {
        on_queue!(self.state, queue, |q| q.stats().ok.load(Ordering::Relaxed))
    }

    /// Process ids of the renderers alive now.
    /// A counter of the connection layer (`serve::ConnectionStats`), by
    /// field name.
    pub fn connection_counter(&self, name: &str) -> u64 {
        let c = &self.state.connections;
        let counter = match name {
            "header_timeouts" => &c.header_timeouts,
            "idle_closed" => &c.idle_closed,
            "body_timeouts" => &c.body_timeouts,
            "refused_total" => &c.refused_total,
            "refused_per_client" => &c.refused_per_client,
            other => panic!("no connection counter {other}"),
        };
        counter.load(Ordering::Relaxed)
    }

    pub fn renderer_pids(&self) -> Vec<u32> {
        self.engine().renderer_pids()
    }

    /// Waits until exactly `n` renderers run (5 s at most); their pids.
    pub async fn wait_renderers(&self, n: usize) -> Vec<u32> {
        eventually(
            &format!("{n} renderers run"),
            Duration::from_secs(5),
            || async {
                let pids = self.renderer_pids();
                (pids.len() == n).then_some(pids)
            },
        )
        .await
    }

    /// Pages written by every renderer since the start.
    pub fn pages_rendered(&self) -> u64 {
        self.engine().pages_rendered.load(Ordering::Relaxed)
    }

    /// PDF jobs whose pages were spread over more than one renderer.
    pub fn fanned_out_jobs(&self) -> u64 {
        self.engine().fanned_out_jobs.load(Ordering::Relaxed)
    }

    /// Renderers replaced after their job quota or memory mark.
    pub fn renderer_recycles(&self) -> u64 {
        self.engine().renderer_recycles.load(Ordering::Relaxed)
    }

    /// Renderers that died on their own mid-job.
    pub fn renderer_crashes(&self) -> u64 {
        self.engine().renderer_crashes.load(Ordering::Relaxed)
    }

    /// Renderers killed to stop their job (deadline, cancel, disconnect).
    pub fn renderer_kills(&self) -> u64 {
        self.engine().renderer_kills.load(Ordering::Relaxed)
    }

    /// Whether the server found pdfium unloadable.
    pub fn pdfium_unavailable(&self) -> bool {
        self.engine().unavailable().is_some()
    }

    /// Whether this instance holds the primary role (runs the sweeps).
    pub fn is_primary(&self) -> bool {
        self.state.jobs.is_primary()
    }

    /// Async job records this instance removed after their TTL.
    pub fn removed_jobs(&self) -> u64 {
        self.state.jobs.stats.removed.load(Ordering::Relaxed)
    }

    /// The state the job database holds for job `id`, if it has a record.
    pub async fn stored_state(&self, id: &str) -> Option<String> {
        self.state
            .jobs
            .records()
            .get(id.parse().expect("a job id"))
            .await
            .expect("the job database answers")
            .map(|record| record.state.as_str().to_string())
    }

    /// The PDF worker type's renderers.
    fn engine(&self) -> std::sync::Arc<jobserver::render::engine::EngineStatus> {
        let pdf = self
            .state
            .kind::<jobserver::routes::pdf::PdfKind>()
            .expect("the pdf type is registered");
        std::sync::Arc::clone(pdf.engine())
    }

    /// The queue of a registered worker type.
    pub fn pool(&self, name: &str) -> &dyn jobserver::queue::Pool {
        self.state
            .pool(name)
            .unwrap_or_else(|| panic!("no queue named {name:?}"))
    }
}

/// HTTP to one server (in process or a spawned binary), one method per
/// endpoint. Methods panic when the server does not answer at all.
pub struct Api {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

/// Sends `request`; the server must answer (any status).
async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("the server answers")
}

impl Api {
    pub fn at(addr: SocketAddr) -> Api {
        Api {
            addr,
            client: reqwest::Client::new(),
        }
    }

    /// A client that sends `key` as its API key on every request.
    pub fn with_key(addr: SocketAddr, key: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {key}").parse().expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("a client");
        Api { addr, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        send(self.client.get(self.url(path))).await
    }

    /// GET `path`, whose answer must be JSON.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self.get(path).await;
        let status = response.status();
        let body = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path} answered {status} without JSON: {e}"));
        (status, body)
    }

    /// GET `path` with one more header.
    pub async fn get_with(&self, path: &str, (name, value): (&str, &str)) -> Response {
        send(self.client.get(self.url(path)).header(name, value)).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Response {
        send(self.client.post(self.url(path)).json(&body)).await
    }

    /// POST `body` as JSON to `path` with one more header.
    pub async fn post_json_with(
        &self,
        path: &str,
        (name, value): (&str, &str),
        body: Value,
    ) -> Response {
        send(
            self.client
                .post(self.url(path))
                .header(name, value)
                .json(&body),
        )
        .await
    }

    /// POST `body` as `content_type`, whatever it holds.
    pub async fn post_body(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        send(self.post_request(path, content_type, body)).await
    }

    fn post_request(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> RequestBuilder {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
    }

    /// A sync message job (`POST /jobs/message`).
    pub async fn message(&self, body: Value) -> Response {
        self.post_json("/jobs/message", body).await
    }

    /// Starts a sync message job in the background.
    pub fn spawn_message(&self, body: Value) -> JoinHandle<Response> {
        tokio::spawn(send(
            self.client.post(self.url("/jobs/message")).json(&body),
        ))
    }

    /// A sync PDF job: `bytes` uploaded as `application/pdf`, options in
    /// `query` (`""` or `"?dpi=36&pages=1"`).
    pub async fn upload_pdf(&self, query: &str, bytes: Vec<u8>) -> Response {
        send(self.pdf_request(query, bytes)).await
    }

    /// Starts a sync PDF upload in the background (a job to catch while it
    /// runs).
    pub fn spawn_upload_pdf(&self, query: &str, bytes: Vec<u8>) -> JoinHandle<Response> {
        tokio::spawn(send(self.pdf_request(query, bytes)))
    }

    fn pdf_request(&self, query: &str, bytes: Vec<u8>) -> RequestBuilder {
        self.post_request(&format!("/jobs/pdf{query}"), "application/pdf", bytes)
    }

    /// Page 1 of `sample.pdf` at 36 dpi, which must render (200): the PDF
    /// worker still serves jobs (`what` that shows, for the message).
    pub async fn assert_pdf_renders(&self, what: &str) {
        let response = self
            .upload_pdf("?dpi=36&pages=1", fixture("sample.pdf"))
            .await;
        assert_eq!(response.status(), 200, "{what}");
    }

    /// `POST /multiThread`, the seed's API: `data` for a job of `job_type`.
    pub async fn multi_thread(&self, job_type: &str, data: &str) -> Response {
        self.post_json("/multiThread", json!({"data": data, "jobType": job_type}))
            .await
    }

    /// A PDF job sent as a multipart form.
    pub async fn upload_multipart(&self, form: reqwest::multipart::Form) -> Response {
        send(self.client.post(self.url("/jobs/pdf")).multipart(form)).await
    }

    /// An async message job as sent, whatever the answer.
    pub async fn async_message(&self, body: Value) -> Response {
        self.post_json("/jobs/message?mode=async", body).await
    }

    /// Submits an async message job; its id (the answer must be 202).
    pub async fn submit_message(&self, body: Value) -> String {
        accepted_id(self.async_message(body).await).await
    }

    /// Submits an async message job that holds its worker for `work_ms`,
    /// and waits until it runs; its id.
    pub async fn submit_running_message(&self, work_ms: u64) -> String {
        let id = self
            .submit_message(json!({"text": "a", "work_ms": work_ms}))
            .await;
        self.job_until(&id, "running", |view| view["state"] == "running")
            .await;
        id
    }

    /// Submits an async PDF job (`mode=async` is added to `query`); its id
    /// (the answer must be 202).
    pub async fn submit_pdf(&self, query: &str, bytes: Vec<u8>) -> String {
        let query = match query {
            "" => "?mode=async".to_string(),
            q => format!("{q}&mode=async"),
        };
        accepted_id(self.upload_pdf(&query, bytes).await).await
    }

    /// `GET /jobs/{id}`, which must answer 200.
    pub async fn job(&self, id: &str) -> Value {
        let (status, view) = self.get_json(&format!("/jobs/{id}")).await;
        assert_eq!(status, 200, "GET /jobs/{id}: {view}");
        view
    }

    /// Polls the job the way a client does until `cond` holds (20 s at
    /// most); fails at once if the job ends without it.
    pub async fn job_until(&self, id: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        self.job_until_within(id, what, Duration::from_secs(20), cond)
            .await
    }

    /// `job_until` with another limit.
    pub async fn job_until_within(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let cond = &cond;
        eventually(&format!("{what} (job {id})"), limit, || async move {
            let view = self.job(id).await;
            if cond(&view) {
                return Some(view);
            }
            let ended = ["done", "failed", "cancelled", "expired"]
                .contains(&view["state"].as_str().unwrap_or_default());
            assert!(!ended, "job {id} ended before {what}: {view}");
            None
        })
        .await
    }

    /// The job's event stream, read to its end (30 s at most).
    pub async fn events(&self, id: &str) -> Vec<Sse> {
        self.events_with(id, |_| {}).await
    }

    /// The job's event stream read to its end, `on_event` called on each
    /// event as it arrives.
    pub async fn events_with(&self, id: &str, on_event: impl Fn(&Sse)) -> Vec<Sse> {
        let response = self.get(&format!("/jobs/{id}/events")).await;
        read_events(response, on_event).await
    }

    /// The job's event stream resumed after event `last_event_id`.
    pub async fn events_after(&self, id: &str, last_event_id: usize) -> Vec<Sse> {
        let last = last_event_id.to_string();
        let response = self
            .get_with(&format!("/jobs/{id}/events"), ("last-event-id", &last))
            .await;
        read_events(response, |_| {}).await
    }

    /// `GET /jobs/{id}/pages/{n}`.
    pub async fn page(&self, id: &str, n: u32) -> Response {
        self.get(&format!("/jobs/{id}/pages/{n}")).await
    }

    /// `GET /jobs/{id}/archive`.
    pub async fn archive(&self, id: &str) -> Response {
        self.get(&format!("/jobs/{id}/archive")).await
    }

    /// `DELETE /jobs/{id}`.
    pub async fn cancel(&self, id: &str) -> Response {
        send(self.client.delete(self.url(&format!("/jobs/{id}")))).await
    }

    /// `GET /metrics`: 200, Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain"),
            "metrics as {content_type}"
        );
        response.text().await.unwrap()
    }

    /// Waits until `/readyz` answers 200 (20 s at most).
    pub async fn wait_ready(&self) {
        eventually("the server is ready", Duration::from_secs(20), || async {
            let ready = self.client.get(self.url("/readyz")).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        })
        .await
    }

    /// Writes `request` (raw HTTP/1.1) on a new connection and leaves it
    /// open: dropping the stream is a client going away.
    pub async fn send_raw(&self, request: &str) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .expect("the server accepts a connection");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("the request is written");
        stream
    }

    /// Sends `request` (raw HTTP/1.1) and returns the response's bytes: its
    /// head and the `Content-Length` bytes of body (or all until the server
    /// closes, without one). The connection is not asked to close.
    pub async fn raw_http(&self, request: &str) -> Vec<u8> {
        let mut stream = self.send_raw(request).await;
        let read = async {
            let mut response = Vec::new();
            let mut byte = [0u8; 1];
            while !response.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await.expect("the response reads") == 0 {
                    return response;
                }
                response.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&response).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().expect("a Content-Length"));
            match length {
                Some(n) => {
                    let mut body = vec![0; n];
                    stream.read_exact(&mut body).await.expect("the body reads");
                    response.extend(body);
                }
                None => {
                    stream
                        .read_to_end(&mut response)
                        .await
                        .expect("the body reads");
                }
            }
            response
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the raw response ends within 10 s")
    }
}

/// A raw HTTP/1.1 POST of the JSON text `body` to `path`.
pub fn raw_post_json(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The id of an accepted async job: the answer must be 202 with
/// `Location: /jobs/<id>`.
pub async fn accepted_id(response: Response) -> String {
    let status = response.status();
    if status != 202 {
        panic!(
            "async submit answered {status}, not 202: {}",
            response.text().await.unwrap()
        );
    }
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    let id = body["job_id"].as_str().expect("a job_id").to_string();
    assert_eq!(location, format!("/jobs/{id}"), "Location names the job");
    id
}

/// The string `field` of every object in the JSON array `list`.
pub fn field_of_each(list: &Value, field: &str) -> Vec<String> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    let field = |item: &Value| item[field].as_str().map(str::to_string);
    items
        .iter()
        .map(|item| field(item).unwrap_or_else(|| panic!("no string in {item}")))
        .collect()
}

/// The JSON body of an answer that must be 200.
pub async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("the body reads");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("200 without JSON ({e}): {text}"))
}

/// Checks an error answer: its status, the error shape and the code.
pub async fn assert_error(response: Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(error_code(response).await, code);
}

/// The error code of an error answer, checking the error shape.
pub async fn error_code(response: Response) -> String {
    let body: Value = response.json().await.expect("errors are JSON");
    assert!(body["message"].is_string(), "error without message: {body}");
    body["error"].as_str().expect("error code").to_string()
}

/// The message of an error answer, which must have `status` and the error
/// shape.
pub async fn error_message(response: Response, status: u16) -> String {
    let got = response.status();
    let body: Value = response.json().await.expect("errors are JSON");
    assert_eq!(got, status, "the answer's status: {body}");
    assert!(body["error"].is_string(), "error without code: {body}");
    body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error without message: {body}"))
        .to_string()
}

/// The `Retry-After` header in whole seconds.
pub fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds")
}

/// A server-sent event.
#[derive(Debug)]
pub struct Sse {
    pub name: String,
    pub id: Option<usize>,
    pub data: Value,
}

/// Reads an event stream to its end (30 s at most).
async fn read_events(response: Response, on_event: impl Fn(&Sse)) -> Vec<Sse> {
    assert_eq!(response.status(), 200, "the event stream opens");
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

/// Awaits two requests started in the background, checking that `first`
/// was answered before `second`; both answers, in that order.
pub async fn answered_in_order(
    first: JoinHandle<Response>,
    second: JoinHandle<Response>,
) -> (Response, Response) {
    let mut pending: FuturesUnordered<_> = [(1, first), (2, second)]
        .into_iter()
        .map(|(n, request)| async move { (n, request.await.expect("the request ran")) })
        .collect();
    let (came_first, a) = pending.next().await.unwrap();
    let (_, b) = pending.next().await.unwrap();
    assert_eq!(
        came_first, 1,
        "the second request was answered before the first"
    );
    (a, b)
}

/// Calls `probe` until it returns `Some`, failing the test after `limit`.
/// For state that changes on another thread or process and has no signal
/// to await: it looks again after 1 ms, then less often (at most every
/// 20 ms), and never sleeps a guessed time before looking.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Some(found)) => return found,
            Ok(None) if tokio::time::Instant::now() < deadline => {}
            _ => panic!("timed out after {limit:?} waiting until {what}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Waits until `cond` holds (5 s at most).
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let cond = &cond;
    eventually(what, Duration::from_secs(5), || async move {
        cond().then_some(())
    })
    .await
}

/// Starts the server binary on `127.0.0.1:0`, text logs at `info` on a
/// piped stdout, and returns it with the address it printed
/// (`listening on http://ADDR`). `configure` adds the test's environment
/// and may override these. The rest of stdout is read and dropped so the
/// server never blocks on a full pipe.
pub fn spawn_binary(configure: impl FnOnce(&mut Command) -> &mut Command) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jobserver"));
    command
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    configure(&mut command);
    let mut child = command.spawn().expect("the server binary starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (found, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on http://").nth(1) {
                if let Some(found) = found.take() {
                    let _ = found.send(addr.trim().to_string());
                }
            }
        }
    });
    let addr = match listening.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => addr,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("the server never said where it listens ({e}); it ended {status:?}");
        }
    };
    let addr = addr
        .parse()
        .unwrap_or_else(|e| panic!("not an address: {addr:?}: {e}"));
    (child, addr)
}

/// Sends `signal` (`"TERM"`, `"KILL"`, ...) to process `pid`.
pub fn send_signal(pid: u32, signal: impl AsRef<OsStr>) {
    let sent = Command::new("kill")
        .arg("-s")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill of {pid} failed");
}

/// Waits for `child` to exit, `limit` at most; past it the child is
/// killed and reaped, and the answer is `None`.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM to `child`, then waits for it to exit (10 s at most, after which
/// it is killed and the test fails).
pub fn terminate(child: &mut Child) -> ExitStatus {
    send_signal(child.id(), "TERM");
    let limit = Duration::from_secs(10);
    wait_with_deadline(child, limit)
        .unwrap_or_else(|| panic!("the server did not exit within {limit:?} of SIGTERM"))
}
