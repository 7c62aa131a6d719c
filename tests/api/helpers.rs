//! `spawn_app`: start the real `Application` on an ephemeral port with a
//! configuration built in code (tests never set environment variables).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobserver::config::{Config, PdfConfig, PoolConfig, RateLimitConfig};
use jobserver::startup::Application;
use jobserver::state::AppState;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
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

/// The repository's `data/` folder (the project's own fixtures).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
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

pub async fn spawn_app(config: Config) -> TestApp {
    let app = Application::build(config).await.expect("the app starts");
    let addr = app.local_addr().unwrap();
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        state,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("the server answers")
    }

    pub async fn message(&self, body: Value) -> reqwest::Response {
        self.post_json("/jobs/message", body).await
    }

    /// Starts a message job in the background.
    pub fn spawn_message(&self, body: Value) -> JoinHandle<reqwest::Response> {
        let client = self.client.clone();
        let url = self.url("/jobs/message");
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap() })
    }

    /// Triggers shutdown and waits for the server to finish draining.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap()
    }
}

/// Waits until `cond` holds, failing the test after 5 s. For state that
/// changes on another thread and has no signal to await (a worker picking a
/// job up); it checks every millisecond, it does not sleep a guessed time.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The JSON body, asserting the error shape's code when `code` is given.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("errors are JSON");
    assert!(body["message"].is_string(), "error without message: {body}");
    body["error"].as_str().expect("error code").to_string()
}
