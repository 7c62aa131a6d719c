//! The harness of the end-to-end tests.
//!
//! - `spawn_app` starts the real `Application` on an ephemeral port with a
//!   configuration built in code (tests never set environment variables).
//! - `Api` speaks HTTP to one server, one method per endpoint; `TestApp`
//!   dereferences to it.
//! - `TestApp`'s own methods are the only place that reads the server's
//!   internals (queues, renderers, the job store): tests name what they
//!   want to know, never a field of `AppState`.
//! - `eventually` waits for state that changes on other threads.

use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jobserver::config::{Config, PdfConfig, PoolConfig, RateLimitConfig};
use jobserver::startup::Application;
use jobserver::state::AppState;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
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

/// A fresh, empty folder under the system temp dir.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jobserver-test-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A configuration for tests: ephemeral port, no rate limit, one message
/// worker and one PDF worker, short budgets, renders into a temp folder,
/// renderers started from the real binary.
pub fn test_config() -> Config {
    let pdf = PdfConfig {
        pool: PoolConfig::new(1, 4, Duration::from_secs(30)),
        renderer_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_jobserver"))),
        ..PdfConfig::default()
    };
    Config {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir(),
        output_dir: temp_dir("out"),
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
    let app = Application::build(config).await.expect("the app starts");
    let addr = app.local_addr().unwrap();
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        api: Api::at(addr),
        state,
        stop: Some(stop),
        server: Some(server),
    }
}

/// A server started by `spawn_app`: its HTTP API (through `Deref`) and
/// what the tests may ask of its internals.
pub struct TestApp {
    api: Api,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Renders go to a per-test temp folder; leave nothing behind.
        if self
            .state
            .config
            .output_dir
            .starts_with(std::env::temp_dir())
        {
            let _ = std::fs::remove_dir_all(&self.state.config.output_dir);
        }
    }
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Runs `$body` with `$q` bound to the queue named `$name`.
macro_rules! on_queue {
    ($state:expr, $name:expr, |$q:ident| $body:expr) => {
        match $name {
            "message" => {
                let $q = &$state.message;
                $body
            }
            "pdf" => {
                let $q = &$state.pdf;
                $body
            }
            other => panic!("no queue named {other:?}"),
        }
    };
}

impl TestApp {
    /// Triggers shutdown and waits for the server to finish draining.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().expect("stopped once").send(());
        self.server.take().unwrap().await.unwrap()
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

    /// Workers of `queue` whose status names a job.
    pub fn workers_on_a_job(&self, queue: &str) -> usize {
        on_queue!(self.state, queue, |q| q
            .workers()
            .iter()
            .filter(|w| w.job_id.is_some())
            .count())
    }

    /// Process ids of the renderers alive now.
    pub fn renderer_pids(&self) -> Vec<u32> {
        self.state.engine.renderer_pids()
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
        self.state.engine.pages_rendered.load(Ordering::Relaxed)
    }

    /// PDF jobs whose pages were spread over more than one renderer.
    pub fn fanned_out_jobs(&self) -> u64 {
        self.state.engine.fanned_out_jobs.load(Ordering::Relaxed)
    }

    /// Renderers replaced after their job quota or memory mark.
    pub fn renderer_recycles(&self) -> u64 {
        self.state.engine.renderer_recycles.load(Ordering::Relaxed)
    }

    /// Renderers that died on their own mid-job.
    pub fn renderer_crashes(&self) -> u64 {
        self.state.engine.renderer_crashes.load(Ordering::Relaxed)
    }

    /// Renderers killed to stop their job (deadline, cancel, disconnect).
    pub fn renderer_kills(&self) -> u64 {
        self.state.engine.renderer_kills.load(Ordering::Relaxed)
    }

    /// Whether the server found pdfium unloadable.
    pub fn pdfium_unavailable(&self) -> bool {
        self.state.engine.unavailable().is_some()
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

    pub async fn post_json(&self, path: &str, body: Value) -> Response {
        send(self.client.post(self.url(path)).json(&body)).await
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

    /// A PDF job sent as a multipart form.
    pub async fn upload_multipart(&self, form: reqwest::multipart::Form) -> Response {
        send(self.client.post(self.url("/jobs/pdf")).multipart(form)).await
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
