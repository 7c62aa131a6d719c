//! Client connections: the accept loop that owns every socket the server
//! serves, and the bounds that keep slow or greedy clients from taking the
//! server down.
//!
//! - **Caps.** At most `MAX_CONNECTIONS` client connections at once, and
//!   `MAX_CONNECTIONS_PER_CLIENT` from one address (a trusted proxy counts
//!   only against the total). A connection over a cap gets a one-shot 503
//!   in the JSON error shape and is closed at once, before anything is read.
//!   The total is lowered at start to what the file-descriptor limit allows
//!   beside the server's own files (renderer pipes, spool files, the job
//!   database), after the soft limit is raised to the hard one, so client
//!   sockets never exhaust the process's descriptors.
//! - **Timeouts.** A request head must arrive within `HEADER_READ_TIMEOUT_MS`
//!   of its first byte (on a new connection, of the accept); an idle
//!   keep-alive connection is closed after `KEEP_ALIVE_TIMEOUT_MS`; a request
//!   body may pause at most `BODY_IDLE_TIMEOUT_MS` and take at most
//!   `BODY_TIMEOUT_MS` in all, so a body trickled a byte at a time is cut.
//!   While a request is being answered (a sync job rendering, an event
//!   stream) no connection timeout applies: the job's own deadline does.
//! - **Lingering close.** A response sent before its request body was read
//!   (a 503 or 413 from the headers alone) closes the connection: the write
//!   side is shut first and what the client still sends is read and dropped
//!   for at most [`LINGER`], so the client reads the answer instead of a
//!   reset.
//! - **Client address.** Each request carries [`ClientAddr`]: the peer, or,
//!   when the peer is a trusted proxy, the rightmost address of
//!   `Forwarded` / `X-Forwarded-For` that is not a trusted proxy. Rate limits
//!   key on it.
//!
//! Shutdown: the listener closes, every connection is told to finish its
//! in-flight requests and close, and [`serve`] returns when all have.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use axum::Router;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::config::ConnectionConfig;

/// How long a closing connection reads and drops what its client still
/// sends, so the client reads the answer before the socket goes.
pub const LINGER: Duration = Duration::from_secs(2);

/// The client a request came from (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Counters of the connection layer, for `/metrics` and `/status`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: std::sync::atomic::AtomicU64,
    pub limit: std::sync::atomic::AtomicU64,
    pub refused_total: std::sync::atomic::AtomicU64,
    pub refused_per_client: std::sync::atomic::AtomicU64,
    pub header_timeouts: std::sync::atomic::AtomicU64,
    pub idle_closed: std::sync::atomic::AtomicU64,
    pub body_timeouts: std::sync::atomic::AtomicU64,
}

impl ConnectionStats {
    /// The connection layer's metric families.
    pub fn metrics(&self, out: &mut crate::metrics::Exposition) {
        use crate::metrics::label;
        use std::sync::atomic::Ordering::Relaxed;
        let one = |v: &std::sync::atomic::AtomicU64| [(Vec::new(), v.load(Relaxed) as f64)];
        out.gauge(
            "jobserver_connections_open",
            "Client connections open now.",
            one(&self.open),
        );
        out.gauge(
            "jobserver_connections_limit",
            "Client connections allowed at once (MAX_CONNECTIONS, as the file-descriptor limit allows).",
            one(&self.limit),
        );
        out.counter(
            "jobserver_connections_refused_total",
            "Connections refused at accept: over MAX_CONNECTIONS (total) or MAX_CONNECTIONS_PER_CLIENT (per_client).",
            [
                ("total", &self.refused_total),
                ("per_client", &self.refused_per_client),
            ]
            .map(|(reason, c)| (label("reason", reason), c.load(Relaxed) as f64)),
        );
        out.counter(
            "jobserver_connections_timed_out_total",
            "Connections or request bodies cut by a timeout: a request head not sent in time (header), an idle keep-alive connection (keep_alive), a request body paused or too slow (body).",
            [
                ("header", &self.header_timeouts),
                ("keep_alive", &self.idle_closed),
                ("body", &self.body_timeouts),
            ]
            .map(|(phase, c)| (label("phase", phase), c.load(Relaxed) as f64)),
        );
    }
}

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// File descriptors kept for the server's own use, besides client sockets:
/// the job database, logs, spool and scratch files, plus a few per worker
/// (a renderer's pipes, its page files).
pub fn reserved_fds(workers: usize) -> u64 {
    128 + 8 * workers as u64
}

/// Raises the soft file-descriptor limit to the hard one; returns the soft
/// limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// The connection cap in force: `MAX_CONNECTIONS`, lowered to what
/// `fd_limit` leaves beside `reserved` descriptors.
pub fn connection_cap(configured: usize, fd_limit: u64, reserved: u64) -> usize {
    let room = fd_limit.saturating_sub(reserved).max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Open connections, in all and per client address.
struct Census {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerClient,
}

/// One admitted connection; gives its place back when dropped.
struct Place {
    census: Arc<Mutex<Census>>,
    stats: Arc<ConnectionStats>,
    client: Option<IpAddr>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut census = self.census.lock();
        census.total -= 1;
        if let Some(ip) = self.client {
            if let Some(n) = census.per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    census.per_client.remove(&ip);
                }
            }
        }
        self.stats
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Admits connections against the caps.
struct Gate {
    census: Arc<Mutex<Census>>,
    stats: Arc<ConnectionStats>,
    max_total: usize,
    max_per_client: usize,
}

impl Gate {
    /// A place for a connection from `peer`, or why there is none. A
    /// trusted proxy's connections count against the total only.
    fn admit(&self, peer: IpAddr, proxy: bool) -> Result<Place, Refusal> {
        let mut census = self.census.lock();
        if census.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let client = (!proxy).then_some(peer);
        if let Some(ip) = client {
            let n = census.per_client.entry(ip).or_insert(0);
            if *n >= self.max_per_client {
                return Err(Refusal::PerClient);
            }
            *n += 1;
        }
        census.total += 1;
        self.stats
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Place {
            census: Arc::clone(&self.census),
            stats: Arc::clone(&self.stats),
            client,
        })
    }
}

/// The answer a connection over a cap gets, written once without reading.
fn refusal_bytes(refusal: Refusal) -> Vec<u8> {
    let (code, message) = match refusal {
        Refusal::Total => (
            "too_many_connections",
            "the server holds MAX_CONNECTIONS connections; retry shortly",
        ),
        Refusal::PerClient => (
            "too_many_connections",
            "this client holds MAX_CONNECTIONS_PER_CLIENT connections; reuse one or close some",
        ),
    };
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Connections the kernel may hold for the accept loop (the kernel caps it
/// at `net.core.somaxconn`). The standard library's (and tokio's) 128 is
/// overrun by a burst of a few hundred connects, and then the kernel drops
/// every client's SYNs, legitimate ones included, for a second or more.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` within `config`'s bounds until `shutdown`
/// resolves, then lets every connection finish its in-flight requests.
/// `max_connections` is the cap in force (see [`connection_cap`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ConnectionConfig,
    max_connections: usize,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    stats
        .limit
        .store(max_connections as u64, std::sync::atomic::Ordering::Relaxed);
    let config = Arc::new(config);
    let gate = Gate {
        census: Arc::new(Mutex::new(Census {
            total: 0,
            per_client: HashMap::new(),
        })),
        stats: Arc::clone(&stats),
        max_total: max_connections,
        max_per_client: config.max_connections_per_client,
    };
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors despite the cap (other files of the
                // process), or a connection reset before it was taken:
                // log at most once a second, pause briefly, go on.
                if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!("accept failed: {e}");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let proxy = config.trusts(peer.ip());
        let place = match gate.admit(peer.ip(), proxy) {
            Ok(place) => place,
            Err(refusal) => {
                bump(match refusal {
                    Refusal::Total => &stats.refused_total,
                    Refusal::PerClient => &stats.refused_per_client,
                });
                // Best effort and never waiting: a client that cannot take
                // these bytes now gets a closed socket.
                let _ = stream.try_write(&refusal_bytes(refusal));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            peer,
            place,
            router.clone(),
            Arc::clone(&config),
            Arc::clone(&stats),
            stopping.clone(),
        ));
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// What one connection is doing, for its timeouts.
struct Activity {
    /// Requests being answered (more than one only on HTTP/2).
    in_flight: usize,
    /// Requests answered so far.
    served: u64,
    /// Since when nothing has been answered or asked.
    idle_since: Instant,
    /// When the first byte of the next request head arrived, if one has.
    head_since: Option<Instant>,
}

struct Watch {
    activity: Mutex<Activity>,
    changed: Notify,
}

impl Watch {
    fn new() -> Self {
        Watch {
            activity: Mutex::new(Activity {
                in_flight: 0,
                served: 0,
                idle_since: Instant::now(),
                head_since: None,
            }),
            changed: Notify::new(),
        }
    }

    /// Bytes arrived: while no request is being answered they start the
    /// next request's head.
    fn saw_bytes(&self) {
        let mut a = self.activity.lock();
        if a.in_flight == 0 && a.head_since.is_none() {
            a.head_since = Some(Instant::now());
            drop(a);
            self.changed();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut a = self.activity.lock();
        a.in_flight += 1;
        a.head_since = None;
        drop(a);
        self.changed();
        InFlight(Arc::clone(self))
    }

    /// Wakes whoever waits on the activity: every waiter now (the idle
    /// watchdog and, on shutdown, [`not_answering`]), and a permit for a
    /// wait that begins just after.
    fn changed(&self) {
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    /// When the connection is to be closed if nothing changes, and why;
    /// `None` while a request is being answered.
    fn deadline(&self, config: &ConnectionConfig) -> Option<(Instant, Idle)> {
        let a = self.activity.lock();
        if a.in_flight > 0 {
            return None;
        }
        Some(match a.head_since {
            Some(t) => (t + config.header_read_timeout, Idle::Head),
            None if a.served == 0 => (a.idle_since + config.header_read_timeout, Idle::Head),
            None => (a.idle_since + config.keep_alive_timeout, Idle::KeepAlive),
        })
    }
}

/// Why an idle connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    Head,
    KeepAlive,
}

/// A request being answered; its end (the response body's end or drop)
/// makes the connection idle again.
struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = self.0.activity.lock();
        a.in_flight -= 1;
        a.served += 1;
        a.idle_since = Instant::now();
        drop(a);
        self.0.changed();
    }
}

/// Resolves when the connection has been idle past its timeout.
async fn idle_timeout(watch: &Watch, config: &ConnectionConfig) -> Idle {
    loop {
        match watch.deadline(config) {
            None => watch.changed.notified().await,
            Some((at, why)) if at <= Instant::now() => return why,
            Some((at, _)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = watch.changed.notified() => {}
                }
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    place: Place,
    router: Router,
    config: Arc<ConnectionConfig>,
    stats: Arc<ConnectionStats>,
    stopping: CancellationToken,
) {
    let watch = Arc::new(Watch::new());
    let io = TokioIo::new(Watched {
        stream,
        watch: Arc::clone(&watch),
        linger: None,
        shut: false,
    });
    let service = {
        let watch = Arc::clone(&watch);
        let config = Arc::clone(&config);
        let stats = Arc::clone(&stats);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = watch.request_started();
            let request = prepare(request, peer, &config, &stats);
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                // The request is answered when its response body ends
                // or is dropped: the guard goes with the body.
                response.map(|response| {
                    response.map(|body| {
                        Body::new(body.map_frame(move |frame| {
                            let _answering = &in_flight;
                            frame
                        }))
                    })
                })
            }
        })
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let idle = idle_timeout(&watch, &config);
    let mut idle = std::pin::pin!(idle);
    let mut stop_asked = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                break;
            }
            why = idle.as_mut(), if !stop_asked => {
                bump(match why {
                    Idle::Head => &stats.header_timeouts,
                    Idle::KeepAlive => &stats.idle_closed,
                });
                tracing::debug!(%peer, ?why, "closing an idle connection");
                break;
            }
            () = stopping.cancelled(), if !stop_asked => {
                stop_asked = true;
                conn.as_mut().graceful_shutdown();
            }
            // Draining: a connection that is not answering a request (idle,
            // or with a head still arriving) has nothing to finish.
            () = not_answering(&watch), if stop_asked => {
                tracing::debug!(%peer, "closing a connection with no request in flight on shutdown");
                break;
            }
        }
    }
    drop(place);
}

/// Resolves once the connection is answering no request.
async fn not_answering(watch: &Watch) {
    loop {
        let notified = watch.changed.notified();
        if watch.activity.lock().in_flight == 0 {
            return;
        }
        notified.await;
    }
}

/// The request as the router sees it: the client's address, the peer's,
/// and a body under the connection's body timeouts.
fn prepare(
    request: Request<Incoming>,
    peer: SocketAddr,
    config: &ConnectionConfig,
    stats: &Arc<ConnectionStats>,
) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    let client = client_addr(peer.ip(), &parts.headers, config);
    parts.extensions.insert(ConnectInfo(peer));
    parts.extensions.insert(ClientAddr(client));
    let body = Body::new(TimedBody {
        inner: body,
        idle: config.body_idle_timeout,
        pause: None,
        total: Box::pin(tokio::time::sleep(config.body_timeout)),
        stats: Arc::clone(stats),
    });
    Request::from_parts(parts, body)
}

/// The client's address: the peer's, unless the peer is a trusted proxy;
/// then the rightmost forwarded address that is not one (the proxies
/// append, so addresses left of the first untrusted one could be forged).
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, config: &ConnectionConfig) -> IpAddr {
    if !config.trusts(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = forwarded_for(headers);
    forwarded
        .iter()
        .rev()
        .find(|ip| !config.trusts(**ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// The addresses of `Forwarded: for=` (RFC 7239) if present, else of
/// `X-Forwarded-For`, in order; names that are not addresses are skipped.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .collect()
    };
    let forwarded: Vec<IpAddr> = values("forwarded")
        .iter()
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            key.eq_ignore_ascii_case("for").then(|| parse_node(value))?
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    values("x-forwarded-for")
        .iter()
        .filter_map(|v| parse_node(v))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:80`, `"[2001:db8::1]:80"`, `2001:db8::1`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim().trim_matches('"');
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let inner = raw.strip_prefix('[')?.split(']').next()?;
    inner.parse().ok()
}

/// The request-body bytes the server may be receiving at once
/// (`MAX_UPLOAD_BYTES_IN_FLIGHT`): each admitted job request holds its
/// declared length (or the largest body a route takes, for a body of
/// unknown length) until its job is queued or the request ends.
#[derive(Debug)]
pub struct UploadBudget {
    limit: u64,
    used: std::sync::atomic::AtomicU64,
}

impl UploadBudget {
    pub fn new(limit: u64) -> Self {
        UploadBudget {
            limit,
            used: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes `bytes` of the budget, or `None` when they do not fit now.
    pub fn take(self: &Arc<Self>, bytes: u64) -> Option<UploadBytes> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .ok()?;
        Some(UploadBytes {
            budget: Arc::clone(self),
            bytes,
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held by requests now.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Bytes of the [`UploadBudget`] held by one request; given back on drop.
#[derive(Debug)]
pub struct UploadBytes {
    budget: Arc<UploadBudget>,
    bytes: u64,
}

impl Drop for UploadBytes {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The error a request body ends with when the client stops sending.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyTimedOut(&'static str);

/// A request body under the idle and total timeouts.
struct TimedBody {
    inner: Incoming,
    idle: Duration,
    pause: Option<Pin<Box<Sleep>>>,
    total: Pin<Box<Sleep>>,
    stats: Arc<ConnectionStats>,
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.pause = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.total.as_mut().poll(cx).is_ready() {
            bump(&this.stats.body_timeouts);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(
                "the request body took longer than BODY_TIMEOUT_MS",
            )))));
        }
        let idle = this.idle;
        let pause = this
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if pause.as_mut().poll(cx).is_ready() {
            bump(&this.stats.body_timeouts);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(
                "the request body paused for longer than BODY_IDLE_TIMEOUT_MS",
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it: reads tell the watch that bytes came, and
/// shutting down lingers (see [`LINGER`]).
struct Watched {
    stream: TcpStream,
    watch: Arc<Watch>,
    linger: Option<Pin<Box<Sleep>>>,
    shut: bool,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.saw_bytes();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// Shuts the write side, then reads and drops what the client still
    /// sends until it closes or [`LINGER`] passes.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.shut {
            std::task::ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.shut = true;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 16 * 1024];
        // Bounded work per poll: a fast sender must not hold the thread.
        let mut waiting = false;
        for _ in 0..64 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    waiting = true;
                    break;
                }
            }
        }
        let lingering = this
            .linger
            .as_mut()
            .is_some_and(|linger| linger.as_mut().poll(cx).is_pending());
        if !lingering {
            return Poll::Ready(Ok(()));
        }
        if !waiting {
            // A full round of reads and more to come: poll again soon.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
