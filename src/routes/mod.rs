//! HTTP in: the router, and the middleware that owns cross-cutting concerns.
//!
//! ```text
//! request ─▶ request id ─▶ trace ─▶ catch panic ─┬─▶ /livez /readyz /status   (never limited)
//!                                                 └─▶ rate limit ─▶ body limit ─▶ /jobs/*, /multiThread
//! ```
//!
//! Job routes sit behind the per-IP rate limiter and a body limit; health and
//! status routes sit outside both, so probes stay cheap and are never
//! throttled under load. Unknown routes and methods answer in the JSON error
//! shape, and a panicking handler costs one 500, not the connection.

pub mod admission;
mod doc;
mod health;
mod jobs;
mod legacy;
pub mod message;
pub mod pdf;
mod status;
pub mod submit;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, Response};
use axum::response::IntoResponse;
use axum::Router;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::RateLimitConfig;
use crate::error::ApiError;
use crate::state::{AppState, Registry};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application router. Serve it with [`crate::serve::serve`]
/// (or `into_make_service_with_connect_info::<SocketAddr>()`): the rate
/// limiter keys on the client address each request carries.
pub fn router(state: AppState) -> Router {
    let (router, api) = api_router(&state).split_for_parts();
    // Serialized once: the document is fixed for the life of the process.
    let api = OpenApiJson(Arc::from(api.to_pretty_json().unwrap_or_else(|e| {
        tracing::error!("cannot serialize the OpenAPI document: {e}");
        "{}".to_string()
    })));
    router
        .layer(axum::Extension(api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.http),
            crate::metrics::track_http,
        ))
        .layer(axum::middleware::from_fn(close_if_body_unread))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("the request handler panicked".into()).into_response()
        }))
        .layer(
            // Failures are logged where they are understood (ApiError):
            // an expected 503 or 504 is not an error worth a log line.
            TraceLayer::new_for_http().on_failure(()).make_span_with(|req: &Request| {
                let request_id = req
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
}

/// The built-in worker types, each with its routes: `message` and `pdf`.
/// A server with more types registers them on this (or on an empty
/// [`Registry`]) before it starts.
pub fn standard_kinds() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(message::MessageKind::start, message::routes)
        .register(pdf::PdfKind::start, pdf::routes);
    registry
}

/// Every documented route. Routes are registered only through `routes!`,
/// which also records them in the OpenAPI document, so the two cannot drift.
fn api_router(state: &AppState) -> OpenApiRouter<AppState> {
    let mut jobs = OpenApiRouter::new();
    for (kind, routes) in state.kinds.with_routes() {
        let routes = routes(state);
        // Refusals on a type's submit (POST) routes count against its queue.
        for (path, item) in &routes.get_openapi().paths.paths {
            if item.post.is_some() {
                state.http.route_feeds(path, kind.name());
            }
        }
        jobs = jobs.merge(routes);
    }
    // The seed's endpoint feeds both built-in types; it is counted apart.
    if state.kind::<message::MessageKind>().is_some() || state.kind::<pdf::PdfKind>().is_some() {
        jobs = jobs.merge(
            OpenApiRouter::new()
                .routes(routes!(legacy::multi_thread))
                .layer(DefaultBodyLimit::max(state.config.max_body_bytes)),
        );
        state.http.route_feeds("/multiThread", "legacy");
    }
    jobs = jobs
        .routes(routes!(jobs::job_get, jobs::job_cancel))
        .routes(routes!(jobs::job_events))
        .routes(routes!(jobs::job_archive));
    if let Some(governor) = rate_limiter(&state.config.rate_limit) {
        jobs = jobs.layer(governor);
    }
    // Outside the limiter, which keys on the tenant it finds.
    jobs = jobs.layer(axum::middleware::from_fn_with_state(
        Arc::new(state.config.tenants.clone()),
        crate::tenants::require_key,
    ));
    let mut probes = OpenApiRouter::new()
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi_json));
    if state.config.admin_bind_addr.is_none() {
        probes = probes.merge(operator_routes(StatusScope {
            job_ids: !state.config.tenants.enabled(),
        }));
    }
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(jobs)
        .merge(probes)
}

/// What `/status` (and so the dashboard) shows of jobs: their ids, and the
/// tenants holding queue places, are shown on the admin listener, and on
/// the main one only while no API key is configured (anyone may then see
/// any job anyway).
#[derive(Debug, Clone, Copy)]
pub struct StatusScope {
    pub job_ids: bool,
}

/// `/status`, `/metrics` and the dashboard.
fn operator_routes(scope: StatusScope) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status::status))
        .routes(routes!(status::metrics))
        .routes(routes!(dashboard))
        .layer(axum::Extension(scope))
}

/// The admin listener's router (`ADMIN_BIND_ADDR`): the operators' routes,
/// with job ids, and the probes. Never behind an API key.
pub fn admin_router(state: AppState) -> Router {
    let (router, _) = OpenApiRouter::<AppState>::new()
        .merge(operator_routes(StatusScope { job_ids: true }))
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .split_for_parts();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("the request handler panicked".into()).into_response()
        }))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "jobserver",
        description = "Runs CPU-heavy jobs (PDF rendering with pdfium) on dedicated worker threads behind bounded queues. Every error has the shape of ErrorBody."
    ),
    components(schemas(crate::error::ErrorBody, view::JobView)),
    tags(
        (name = "jobs", description = "Submit jobs and fetch their output (rate-limited per client IP)"),
        (name = "health", description = "Probes, status, metrics, documentation (never rate-limited)")
    )
)]
struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3 document of every route", body = Object)))]
async fn openapi_json(axum::Extension(api): axum::Extension<OpenApiJson>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        api.0.to_string(),
    )
}

/// The serialized OpenAPI document.
#[derive(Clone)]
struct OpenApiJson(Arc<str>);

type Governor = GovernorLayer<ClientKey, governor::middleware::NoOpMiddleware, Body>;

/// Rate limits key on the request's tenant when API keys are on
/// ([`crate::tenants::Caller`]), else on the client's address as the
/// connection layer tells it ([`crate::serve::ClientAddr`]: behind a
/// trusted proxy, the forwarded one), else on the peer's.
#[derive(Debug, Clone, Copy)]
pub struct ClientKey;

/// Who a rate limit counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    Tenant(Arc<str>),
    Addr(std::net::IpAddr),
}

impl KeyExtractor for ClientKey {
    type Key = Client;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<Self::Key, GovernorError> {
        let extensions = req.extensions();
        if let Some(name) = extensions
            .get::<crate::tenants::Caller>()
            .and_then(|c| c.tenant())
        {
            return Ok(Client::Tenant(Arc::clone(&name.name)));
        }
        extensions
            .get::<crate::serve::ClientAddr>()
            .map(|client| client.0)
            .or_else(|| {
                extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|info| info.0.ip())
            })
            .map(Client::Addr)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// The per-IP limiter, or `None` when limiting is off. Its keyed state is
/// pruned once a minute so that a stream of new addresses cannot grow it
/// without bound.
fn rate_limiter(limit: &RateLimitConfig) -> Option<Governor> {
    if !limit.enabled() {
        return None;
    }
    // tower_governor takes a replenish *period*: one token per period.
    let period = Duration::from_nanos(60_000_000_000 / u64::from(limit.per_minute));
    let config = Arc::new(
        GovernorConfigBuilder::default()
            .key_extractor(ClientKey)
            .period(period)
            .burst_size(limit.burst)
            .finish()?,
    );
    let limiter = Arc::clone(config.limiter());
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limiter.retain_recent();
            }
        });
    }
    Some(GovernorLayer::new(config).error_handler(governor_error))
}

fn governor_error(err: GovernorError) -> Response<Body> {
    match err {
        GovernorError::TooManyRequests { wait_time, .. } => ApiError::RateLimited {
            retry_after: wait_time.max(1),
        },
        GovernorError::UnableToExtractKey => {
            ApiError::Internal("cannot tell the client's address for rate limiting".into())
        }
        GovernorError::Other { msg, .. } => ApiError::Internal(msg.unwrap_or_default()),
    }
    .into_response()
}

/// The live dashboard: one self-contained page (HTML, CSS and JS embedded
/// in the binary, nothing fetched from elsewhere) that polls `/status`.
#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, description = "The dashboard", content_type = "text/html", body = String)))]
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../dashboard.html"))
}

/// The largest unread request body left for the connection to discard by
/// itself after an answer sent from the headers alone (a refused small JSON
/// submit); past it, or when the client waits for `100 Continue`, the
/// answer says `Connection: close`.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// Says `Connection: close` on a response sent before its request body was
/// read to the end (a 503, 413, 415 or 429 answered from the headers alone)
/// when the server cannot reuse the connection: without the header a
/// keep-alive client would send its next request into a closed socket.
///
/// A small declared body is the exception: hyper reads and discards an
/// unread body that has already arrived (a client that sends a small JSON
/// body sends it with its headers), so the connection stays open for the
/// next request; were the body not there yet, hyper closes the connection
/// after the answer as it would with the header.
async fn close_if_body_unread(request: Request, next: axum::middleware::Next) -> Response<Body> {
    use axum::body::HttpBody as _;
    let body = request.body();
    if body.is_end_stream() {
        return next.run(request).await;
    }
    let small = body.size_hint().exact().is_some_and(|n| n <= DRAIN_LIMIT)
        && !request.headers().contains_key(axum::http::header::EXPECT);
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let body = Body::new(WatchEnd {
        inner: body,
        finished: Arc::clone(&finished),
    });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if !small && !finished.load(std::sync::atomic::Ordering::Acquire) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A request body that records when it has been read to the end.
struct WatchEnd {
    inner: Body,
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl axum::body::HttpBody for WatchEnd {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished
                .store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Shared by job kinds: a caller may shorten a deadline, never lengthen it.
pub(crate) fn timeout_from(timeout_ms: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match timeout_ms {
        Some(0) => Err(ApiError::Invalid("timeout_ms must be at least 1".into())),
        other => Ok(other.map(Duration::from_millis)),
    }
}
