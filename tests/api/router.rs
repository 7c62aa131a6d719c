//! The router without a socket: requests go through
//! `tower::ServiceExt::oneshot` straight into `routes::router`, as in
//! axum's `examples/testing`. Covers what is decided before a job runs:
//! extractor rejections in the one error shape, async-mode parsing, PDF
//! options and `DATA_DIR` paths refused before any render.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use jobserver::config::Config;
use jobserver::kind::JobKind;
use jobserver::routes::pdf::PdfKind;
use jobserver::routes::{router, standard_kinds};
use jobserver::state::AppState;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::helpers::{data_dir, fixture, test_config};

/// Bodies are small here; anything larger is a bug in the answer.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// The router over a started `AppState`, its output in a folder of its own.
struct App {
    router: axum::Router,
    state: AppState,
    _output: TempDir,
}

impl App {
    async fn start() -> App {
        App::with(test_config()).await
    }

    async fn with(mut config: Config) -> App {
        let output = tempfile::Builder::new()
            .prefix("jobserver-router-out-")
            .tempdir()
            .unwrap();
        config.output_dir = output.path().to_path_buf();
        let state = AppState::start(config, standard_kinds())
            .await
            .expect("the state starts");
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        let router = router(state.clone()).layer(MockConnectInfo(peer));
        App {
            router,
            state,
            _output: output,
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_REPLY_BYTES)
            .await
            .expect("the body is read");
        Reply {
            status,
            headers,
            bytes: bytes.to_vec(),
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri).await
    }

    /// A request with no body and no content type.
    async fn call(&self, method: Method, uri: &str) -> Reply {
        self.send(request(method, uri, None, Body::empty())).await
    }

    async fn post_json(&self, uri: &str, body: &Value) -> Reply {
        self.send(json_request(uri, body)).await
    }

    async fn post_pdf(&self, uri: &str, pdf: Vec<u8>) -> Reply {
        let request = request(Method::POST, uri, Some("application/pdf"), Body::from(pdf));
        self.send(request).await
    }

    /// Asserts that no PDF job was admitted, rendered or kept: whatever was
    /// refused was refused while the job was being built.
    fn assert_nothing_rendered(&self, what: &str) {
        let pdf = self.state.kind::<PdfKind>().expect("pdf is registered");
        let stats = pdf.queue().stats();
        let answered = [&stats.ok, &stats.failed, &stats.timeout, &stats.cancelled]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>();
        assert_eq!(answered, 0, "{what}: no PDF job was admitted");
        assert_eq!(pdf.queue().depth(), 0, "{what}: none is queued");
        let rendered = pdf.engine().pages_rendered.load(Ordering::Relaxed);
        assert_eq!(rendered, 0, "{what}: no page was rendered");
        assert_eq!(self.state.jobs.tracked(), 0, "{what}: no job was recorded");
        let inputs = self.state.config.output_dir.join(".jobs").join("inputs");
        assert_eq!(
            std::fs::read_dir(inputs).unwrap().count(),
            0,
            "{what}: no upload was kept"
        );
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // Stops the worker threads and their renderers; nothing runs then.
        self.state.join(Duration::ZERO);
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "a {} answer should be JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts the status and the one error shape, `{"error", "message"}`,
    /// and returns the message.
    #[track_caller]
    fn error(&self, status: u16, code: &str) -> String {
        let body = self.json();
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {code}: {body}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "errors are JSON"
        );
        let fields = body.as_object().expect("an error is a JSON object");
        let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error", "message"], "the one error shape: {body}");
        assert_eq!(body["error"], code, "{body}");
        let message = body["message"].as_str().expect("message is a string");
        assert!(!message.is_empty(), "an error says what went wrong");
        message.to_string()
    }
}

fn request(method: Method, uri: &str, content_type: Option<&str>, body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body).unwrap()
}

fn json_request(uri: &str, body: &Value) -> Request<Body> {
    request(
        Method::POST,
        uri,
        Some("application/json"),
        Body::from(body.to_string()),
    )
}

fn with_header(
    mut request: Request<Body>,
    name: &'static str,
    value: HeaderValue,
) -> Request<Body> {
    request.headers_mut().insert(name, value);
    request
}

#[tokio::test]
async fn a_json_route_refuses_another_content_type_with_415() {
    let app = App::start().await;
    let body = r#"{"text": "hi"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        for uri in ["/jobs/message", "/multiThread"] {
            app.send(request(Method::POST, uri, content_type, Body::from(body)))
                .await
                .error(415, "unsupported_media_type");
        }
    }
    let reply = app
        .send(request(
            Method::POST,
            "/jobs/pdf",
            Some("image/png"),
            Body::from("not a pdf"),
        ))
        .await;
    let message = reply.error(415, "unsupported_media_type");
    assert!(
        message.contains("application/pdf"),
        "says what it takes: {message}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_malformed_json() {
    let app = App::start().await;
    for body in [
        r#"{"text": "#,
        "{text: 'hi'}",
        r#"{"text": "hi",}"#,
        "\u{feff}{}",
        // Broken JSON whose first token would also mismatch the shape.
        "[1, 2",
    ] {
        for uri in ["/jobs/message", "/jobs/pdf", "/multiThread"] {
            app.send(request(
                Method::POST,
                uri,
                Some("application/json"),
                Body::from(body),
            ))
            .await
            .error(400, "malformed_json");
        }
    }
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_a_422_invalid_input() {
    let app = App::start().await;
    for body in [
        json!({"text": 5}),
        json!({"txt": "hi"}),
        json!({"text": "hi", "extra": 1}),
        json!({"text": "hi", "work_ms": -1}),
        json!(["hi"]),
    ] {
        app.post_json("/jobs/message", &body)
            .await
            .error(422, "invalid_input");
    }
    app.post_json("/jobs/pdf", &json!({"file": "sample.pdf"}))
        .await
        .error(422, "invalid_input");
    app.assert_nothing_rendered("a PDF body of the wrong shape");
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_a_413_and_one_at_the_limit_is_taken() {
    let app = App::start().await;
    let limit = app.state.config.max_body_bytes;
    // `{"text":"aaa…"}` of exactly `len` bytes.
    let body = |len: usize| format!(r#"{{"text":"{}"}}"#, "a".repeat(len - 11));
    assert_eq!(body(limit).len(), limit);

    let over = request(
        Method::POST,
        "/jobs/message",
        Some("application/json"),
        Body::from(body(limit + 1)),
    );
    app.send(over).await.error(413, "payload_too_large");
    let declared = with_header(
        request(
            Method::POST,
            "/jobs/message",
            Some("application/json"),
            Body::from(body(limit + 1)),
        ),
        "content-length",
        HeaderValue::from(limit + 1),
    );
    app.send(declared).await.error(413, "payload_too_large");

    let at_limit = app
        .send(request(
            Method::POST,
            "/jobs/message",
            Some("application/json"),
            Body::from(body(limit)),
        ))
        .await;
    assert_eq!(
        at_limit.status,
        StatusCode::OK,
        "the limit itself is allowed"
    );
    assert_eq!(at_limit.json()["result"]["text"], "A".repeat(limit - 11));
}

#[tokio::test]
async fn a_bad_query_is_a_400_bad_request() {
    let app = App::start().await;
    for query in ["?dpi=many", "?dpi=-1", "?timeout_ms=soon", "?colour=red"] {
        app.post_pdf(&format!("/jobs/pdf{query}"), fixture("sample.pdf"))
            .await
            .error(400, "bad_request");
    }
    app.assert_nothing_rendered("a bad query");
}

#[tokio::test]
async fn a_path_that_is_not_a_job_id_is_a_400_and_an_unknown_job_a_404() {
    let app = App::start().await;
    for (method, uri) in [
        (Method::GET, "/jobs/not-a-job"),
        (Method::DELETE, "/jobs/not-a-job"),
        (Method::GET, "/jobs/not-a-job/events"),
        (Method::GET, "/jobs/not-a-job/archive"),
        (Method::GET, "/jobs/12345/pages/1"),
    ] {
        let reply = app.call(method.clone(), uri).await;
        let message = reply.error(400, "bad_request");
        assert!(
            message.contains("not a job id"),
            "{method} {uri}: {message}"
        );
    }
    let unknown = uuid::Uuid::new_v4();
    app.get(&format!("/jobs/{unknown}"))
        .await
        .error(404, "not_found");
    app.get(&format!("/jobs/{unknown}/pages/zero"))
        .await
        .error(400, "bad_request");
}

#[tokio::test]
async fn an_unknown_route_is_a_404_and_a_wrong_method_a_405() {
    let app = App::start().await;
    for uri in ["/nothing-here", "/jobs", "/jobs/message/extra/parts"] {
        app.get(uri).await.error(404, "not_found");
    }
    for (method, uri) in [
        (Method::GET, "/jobs/message"),
        (Method::PUT, "/jobs/pdf"),
        (Method::POST, "/livez"),
        (Method::DELETE, "/status"),
        (Method::PATCH, "/jobs/00000000-0000-0000-0000-000000000000"),
    ] {
        app.call(method.clone(), uri)
            .await
            .error(405, "method_not_allowed");
    }
}

#[tokio::test]
async fn prefer_respond_async_answers_202_with_location_and_preference_applied() {
    let app = App::start().await;
    let request = with_header(
        json_request("/jobs/message", &json!({"text": "later"})),
        "prefer",
        HeaderValue::from_static("respond-async"),
    );
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json());
    assert_eq!(
        reply.header("preference-applied"),
        Some("respond-async"),
        "the preference is acknowledged"
    );
    let job = reply.json();
    let id = job["job_id"].as_str().expect("the job's id");
    assert_eq!(job["kind"], "message");
    assert_eq!(
        reply.header("location"),
        Some(format!("/jobs/{id}").as_str()),
        "Location names the job"
    );
    let polled = app.get(&format!("/jobs/{id}")).await;
    assert_eq!(polled.status, StatusCode::OK, "the job can be polled");
    assert_eq!(polled.json()["job_id"], id);

    let query = app
        .post_json("/jobs/message?mode=async", &json!({"text": "later"}))
        .await;
    assert_eq!(query.status, StatusCode::ACCEPTED);
    assert_eq!(
        query.header("preference-applied"),
        None,
        "nothing was preferred"
    );
}

#[tokio::test]
async fn mode_sync_in_the_query_overrides_prefer_respond_async() {
    let app = App::start().await;
    let request = with_header(
        json_request("/jobs/message?mode=sync", &json!({"text": "now"})),
        "prefer",
        HeaderValue::from_static("respond-async"),
    );
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "answered when done");
    assert_eq!(reply.header("preference-applied"), None, "not applied");
    assert_eq!(reply.header("location"), None);
    assert_eq!(reply.json()["result"]["text"], "NOW");
    assert_eq!(app.state.jobs.tracked(), 0, "a sync job is never recorded");
}

#[tokio::test]
async fn an_unknown_mode_is_a_400() {
    let app = App::start().await;
    let reply = app
        .post_json("/jobs/message?mode=bogus", &json!({"text": "hi"}))
        .await;
    let message = reply.error(400, "bad_request");
    assert!(message.contains("bogus"), "names the mode: {message}");
    app.post_pdf("/jobs/pdf?mode=later", fixture("sample.pdf"))
        .await
        .error(400, "bad_request");
    app.post_json("/jobs/pdf", &json!({"path": "sample.pdf", "mode": "bogus"}))
        .await
        .error(400, "bad_request");
    app.assert_nothing_rendered("an unknown mode");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_400_and_a_good_one_replays() {
    let app = App::start().await;
    let too_long = "k".repeat(256);
    let bad_keys = [
        HeaderValue::from_static(""),
        HeaderValue::from_static("tab\there"),
        HeaderValue::from_str(&too_long).unwrap(),
        HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
    ];
    for key in bad_keys {
        for uri in ["/jobs/message?mode=async", "/jobs/message"] {
            let request = with_header(
                json_request(uri, &json!({"text": "hi"})),
                "idempotency-key",
                key.clone(),
            );
            let reply = app.send(request).await;
            let message = reply.error(400, "bad_request");
            assert!(message.contains("Idempotency-Key"), "{key:?}: {message}");
        }
    }
    assert_eq!(app.state.jobs.tracked(), 0, "nothing was recorded");

    let keyed = |text: &str| {
        with_header(
            json_request("/jobs/message?mode=async", &json!({ "text": text })),
            "idempotency-key",
            HeaderValue::from_static("order-17"),
        )
    };
    let first = app.send(keyed("hi")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = app.send(keyed("hi")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.json()["job_id"],
        first.json()["job_id"],
        "the same job"
    );
    let other = app.send(keyed("bye")).await;
    other.error(422, "idempotency_key_reused");
    assert_eq!(app.state.jobs.tracked(), 1, "one job for the key");
}

#[tokio::test]
async fn pdf_options_out_of_range_are_refused_before_any_render() {
    let app = App::start().await;
    let max_dpi = app.state.config.pdf.max_dpi;
    let over = format!("?dpi={}", max_dpi + 1);
    for (query, names) in [
        ("?dpi=0", "dpi"),
        (over.as_str(), "dpi"),
        ("?pages=0", "page numbers start at 1"),
        ("?pages=3-1", "backwards"),
        ("?pages=one", "not a page"),
        ("?pages=", "empty"),
        ("?password=a%00b", "NUL"),
        ("?timeout_ms=0", "timeout_ms"),
    ] {
        for mode in ["", "&mode=async"] {
            let uri = format!("/jobs/pdf{query}{mode}");
            let reply = app.post_pdf(&uri, fixture("sample.pdf")).await;
            let code = if query.starts_with("?timeout") {
                "invalid_input"
            } else {
                "bad_request"
            };
            let status = if code == "bad_request" { 400 } else { 422 };
            let message = reply.error(status, code);
            assert!(message.contains(names), "{uri}: {message}");
        }
    }
    // The limits themselves pass; a zero deadline, checked after them,
    // then stops the job.
    let at_limits = app
        .post_pdf(
            &format!("/jobs/pdf?dpi={max_dpi}&pages=1-&timeout_ms=0"),
            fixture("sample.pdf"),
        )
        .await;
    let message = at_limits.error(422, "invalid_input");
    assert!(
        message.contains("timeout_ms"),
        "dpi and pages passed: {message}"
    );
    let password = app
        .post_json(
            "/jobs/pdf",
            &json!({"path": "sample.pdf", "password": "se\u{0}cret"}),
        )
        .await;
    password.error(400, "bad_request");
    app.assert_nothing_rendered("out-of-range options");
}

#[tokio::test]
async fn an_empty_pdf_body_is_a_422() {
    let app = App::start().await;
    for uri in ["/jobs/pdf", "/jobs/pdf?mode=async"] {
        let reply = app.post_pdf(uri, Vec::new()).await;
        let message = reply.error(422, "invalid_input");
        assert!(message.contains("empty"), "{message}");
    }
    app.assert_nothing_rendered("an empty body");
}

/// A data folder with one PDF inside and links that lead out of it.
struct DataDir {
    data: TempDir,
    outside: TempDir,
}

fn data_with_escapes() -> DataDir {
    let data = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let sample = data_dir().join("sample.pdf");
    std::fs::copy(&sample, data.path().join("inside.pdf")).unwrap();
    std::fs::copy(&sample, outside.path().join("secret.pdf")).unwrap();
    std::fs::create_dir(data.path().join("folder")).unwrap();
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, data.path().join(name)).unwrap()
    };
    link(&outside.path().join("secret.pdf"), "escape.pdf");
    link(outside.path(), "out");
    link(&data.path().join("inside.pdf"), "alias.pdf");
    DataDir { data, outside }
}

#[tokio::test]
async fn a_data_path_that_could_leave_data_dir_is_a_400_and_a_missing_file_a_422() {
    let dirs = data_with_escapes();
    let config = Config {
        data_dir: dirs.data.path().to_path_buf(),
        ..test_config()
    };
    let app = App::with(config).await;
    let secret = dirs.outside.path().join("secret.pdf");
    let absolute = secret.to_str().unwrap();
    let parent_name = dirs.outside.path().file_name().unwrap().to_str().unwrap();
    let climbing = format!("../{parent_name}/secret.pdf");
    for (path, names) in [
        ("../secret.pdf", "without `..`"),
        (climbing.as_str(), "without `..`"),
        ("folder/../inside.pdf", "without `..`"),
        ("./inside.pdf", "without `..`"),
        (absolute, "leading `/`"),
        ("", "inside the data folder"),
        ("escape.pdf", "leads out of the data folder"),
        ("out/secret.pdf", "leads out of the data folder"),
    ] {
        let reply = app.post_json("/jobs/pdf", &json!({ "path": path })).await;
        let message = reply.error(400, "bad_request");
        assert!(message.contains(names), "{path:?}: {message}");
    }
    for (path, names) in [
        ("missing.pdf", "no file named"),
        ("folder/missing.pdf", "no file named"),
        ("folder", "is not a file"),
    ] {
        let reply = app.post_json("/jobs/pdf", &json!({ "path": path })).await;
        let message = reply.error(422, "invalid_input");
        assert!(message.contains(names), "{path:?}: {message}");
    }
    // Files inside resolve (a link within the folder too); a dpi of 0
    // then stops the job before it renders, which tells they resolved.
    for path in ["inside.pdf", "alias.pdf"] {
        let reply = app
            .post_json("/jobs/pdf", &json!({ "path": path, "dpi": 0 }))
            .await;
        let message = reply.error(400, "bad_request");
        assert!(message.contains("dpi"), "{path:?} resolved: {message}");
    }
    app.assert_nothing_rendered("paths refused");
    assert!(secret.is_file(), "the file outside was never touched");
}
