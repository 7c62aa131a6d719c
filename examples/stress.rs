//! Stress and fault-injection harness for the `jobserver` binary.
//!
//! ```text
//! cargo build --release --bin jobserver --example stress
//! cargo run --release --example stress -- [--duration 60s] [--shutdown] [--seed N] [--keep]
//! ```
//!
//! It builds nothing: it starts `target/release/jobserver` (or `$JOBSERVER_BIN`)
//! on 127.0.0.1 with small queues, drives it at several times its capacity
//! with a mix of concurrent clients (valid PDF jobs as JSON paths, raw and
//! multipart uploads; message jobs; malformed requests; clients that hang up
//! mid-job; short deadlines; bursts; async jobs followed by polling, their
//! events or their archive, some cancelled, some sent again with their
//! idempotency key), SIGKILLs a random renderer every
//! 0.5-2 s, and then checks that the server answered every request once with
//! an expected status, settled back to its configured workers and renderers,
//! leaked no zombies, file descriptors or memory, left no partial output,
//! and brought every accepted async job to a final state.
//! It prints Markdown tables and exits 1 on any violation.
//!
//! Rate limiting: the limiter keys on the client IP and every client here is
//! 127.0.0.1, so limiting on the main server would turn most of the load
//! into 429s and hide the queue and fault behaviour under test. The main
//! server therefore runs with `RATE_LIMIT_PER_MINUTE=0` (a 429 from it is a
//! violation), and the rate-limited client class bursts against a second,
//! small instance with `RATE_LIMIT_PER_MINUTE=60 RATE_LIMIT_BURST=5`, where
//! 429 is expected and at least one is required.
//!
//! `--shutdown` runs the shutdown scenario instead: load for `--duration`,
//! SIGTERM under load, then checks that requests in flight finish or get 503,
//! new ones get 503 or a refused connection, the process exits 0 within
//! `SHUTDOWN_GRACE_MS` plus a margin, its renderers are gone, and nothing
//! partial is left on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Requests started this close to SIGTERM may see either side of it.
const SIGTERM_WINDOW: Duration = Duration::from_millis(250);
/// Extra time the server may take to exit beyond `SHUTDOWN_GRACE_MS`:
/// killing and reaping renderers, joining threads (polled every 5 ms) and
/// scheduling delay on a loaded two-core machine.
const EXIT_MARGIN: Duration = Duration::from_secs(3);
/// File descriptors the server may hold above its warm-up count after the
/// load: a probe connection still being torn down, at most.
const FD_MARGIN: usize = 2;
/// Resident memory the server may hold above its warm-up figure after the
/// load, in KiB. The warm-up already ran every request type, so allocator
/// arenas and caches exist; what remains is glibc malloc keeping freed
/// upload buffers (up to 1.5 MiB each, tens in flight) in its per-thread
/// arenas instead of returning them. A leak of one upload or one response
/// per request would be hundreds of MiB over a run of thousands.
const RSS_MARGIN_KB: u64 = 32 * 1024;
/// How long the server gets to become idle and healthy after the load.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- arguments

struct Args {
    duration: Option<Duration>,
    shutdown: bool,
    seed: u64,
    keep: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: None,
        shutdown: false,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--duration" => {
                let v = it.next().ok_or("--duration needs a value")?;
                args.duration = Some(parse_duration(&v)?);
            }
            "--shutdown" => args.shutdown = true,
            "--seed" => {
                let v = it.next().ok_or("--seed needs a value")?;
                args.seed = v.parse().map_err(|_| format!("bad seed {v:?}"))?;
            }
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!(
                    "usage: stress [--duration 60s] [--shutdown] [--seed N] [--keep]\n\
                     env: JOBSERVER_BIN (default target/release/jobserver), STRESS_SERVER_LOG (server RUST_LOG, default warn)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

// ---------------------------------------------------------------- randomness

/// SplitMix64: small, seedable, good enough to pick requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

// ---------------------------------------------------------------- servers

/// One jobserver process under test.
struct Server {
    name: &'static str,
    child: Child,
    pid: u32,
    base: String,
    out_dir: PathBuf,
    log_path: PathBuf,
    pdf_workers: usize,
    grace: Duration,
    limited: bool,
    exited: Option<ExitStatus>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every variable the server reads; unset first so the caller's
/// environment cannot change the test (PDFIUM_LIB_PATH is kept).
const SERVER_VARS: &[&str] = &[
    "BIND_ADDR",
    "MESSAGE_WORKERS",
    "MESSAGE_QUEUE_CAPACITY",
    "MESSAGE_TIMEOUT_MS",
    "MESSAGE_QUEUE_TIMEOUT_MS",
    "PDF_WORKERS",
    "PDF_QUEUE_CAPACITY",
    "PDF_TIMEOUT_MS",
    "PDF_QUEUE_TIMEOUT_MS",
    "MESSAGE_ASYNC_TIMEOUT_MS",
    "PDF_ASYNC_TIMEOUT_MS",
    "RESULT_TTL_SECS",
    "MAX_TRACKED_JOBS",
    "PDF_DEFAULT_DPI",
    "PDF_MAX_DPI",
    "PDF_MAX_PAGES",
    "PDF_MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "MAX_BODY_BYTES",
    "DATA_DIR",
    "OUTPUT_DIR",
    "PDF_RENDERER_MAX_JOBS",
    "PDF_RENDERER_MAX_RSS_MB",
    "PDF_RENDERER_MEMORY_LIMIT_MB",
    "PDF_FAN_OUT",
    "RATE_LIMIT_PER_MINUTE",
    "RATE_LIMIT_BURST",
    "SHUTDOWN_GRACE_MS",
    "RUST_LOG",
    "LOG_FORMAT",
];

const MAX_UPLOAD_BYTES: usize = 1 << 20;
const PDF_TIMEOUT_MS: u64 = 8_000;
const GRACE_MS: u64 = 5_000;
/// Budgets of async jobs, queue wait included (past them: `expired`):
/// short enough that a client reading a job's events to the end is
/// answered within its own timeout.
const PDF_ASYNC_TIMEOUT_MS: u64 = 12_000;
const MESSAGE_ASYNC_TIMEOUT_MS: u64 = 8_000;

struct ServerSpec {
    name: &'static str,
    message_workers: usize,
    message_capacity: usize,
    pdf_workers: usize,
    pdf_capacity: usize,
    rate_per_minute: u32,
    rate_burst: u32,
}

const MAIN_SERVER: ServerSpec = ServerSpec {
    name: "A",
    message_workers: 1,
    message_capacity: 4,
    pdf_workers: 2,
    pdf_capacity: 4,
    rate_per_minute: 0,
    rate_burst: 5,
};

const LIMITED_SERVER: ServerSpec = ServerSpec {
    name: "B",
    message_workers: 1,
    message_capacity: 2,
    pdf_workers: 1,
    pdf_capacity: 2,
    rate_per_minute: 60,
    rate_burst: 5,
};

impl ServerSpec {
    fn env(&self, port: u16, out_dir: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("BIND_ADDR", format!("127.0.0.1:{port}")),
            ("MESSAGE_WORKERS", self.message_workers.to_string()),
            ("MESSAGE_QUEUE_CAPACITY", self.message_capacity.to_string()),
            ("MESSAGE_TIMEOUT_MS", "4000".into()),
            ("PDF_WORKERS", self.pdf_workers.to_string()),
            ("PDF_QUEUE_CAPACITY", self.pdf_capacity.to_string()),
            ("PDF_TIMEOUT_MS", PDF_TIMEOUT_MS.to_string()),
            ("PDF_ASYNC_TIMEOUT_MS", PDF_ASYNC_TIMEOUT_MS.to_string()),
            (
                "MESSAGE_ASYNC_TIMEOUT_MS",
                MESSAGE_ASYNC_TIMEOUT_MS.to_string(),
            ),
            ("PDF_DEFAULT_DPI", "72".into()),
            // Recycling is part of what must not leak: make it happen.
            ("PDF_RENDERER_MAX_JOBS", "40".into()),
            ("MAX_UPLOAD_BYTES", MAX_UPLOAD_BYTES.to_string()),
            ("MAX_BODY_BYTES", "65536".into()),
            ("DATA_DIR", format!("{REPO}/data")),
            ("OUTPUT_DIR", out_dir.display().to_string()),
            ("RATE_LIMIT_PER_MINUTE", self.rate_per_minute.to_string()),
            ("RATE_LIMIT_BURST", self.rate_burst.to_string()),
            ("SHUTDOWN_GRACE_MS", GRACE_MS.to_string()),
            (
                "RUST_LOG",
                std::env::var("STRESS_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ]
    }

    fn describe(&self) -> String {
        format!(
            "MESSAGE_WORKERS={} MESSAGE_QUEUE_CAPACITY={} PDF_WORKERS={} PDF_QUEUE_CAPACITY={} PDF_TIMEOUT_MS={} PDF_ASYNC_TIMEOUT_MS={} MESSAGE_ASYNC_TIMEOUT_MS={} RATE_LIMIT_PER_MINUTE={} RATE_LIMIT_BURST={} MAX_UPLOAD_BYTES={} PDF_RENDERER_MAX_JOBS=40 SHUTDOWN_GRACE_MS={}",
            self.message_workers,
            self.message_capacity,
            self.pdf_workers,
            self.pdf_capacity,
            PDF_TIMEOUT_MS,
            PDF_ASYNC_TIMEOUT_MS,
            MESSAGE_ASYNC_TIMEOUT_MS,
            self.rate_per_minute,
            self.rate_burst,
            MAX_UPLOAD_BYTES,
            GRACE_MS
        )
    }
}

fn server_binary() -> PathBuf {
    std::env::var_os("JOBSERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target/release/jobserver"))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a server and waits for `/readyz`; retries on another port if the
/// one picked was taken in between.
async fn start_server(
    spec: &ServerSpec,
    root: &Path,
    probe: &reqwest::Client,
) -> Result<Server, String> {
    let bin = server_binary();
    if !bin.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release --bin jobserver` (or set JOBSERVER_BIN)",
            bin.display()
        ));
    }
    let dir = root.join(spec.name);
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mut last_error = String::new();
    for attempt in 0..3 {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let log_path = dir.join(format!("server-{attempt}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.current_dir(REPO);
        for var in SERVER_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(spec.env(port, &out_dir))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = Server {
            name: spec.name,
            pid: child.id(),
            child,
            base: format!("http://127.0.0.1:{port}"),
            out_dir: out_dir.clone(),
            log_path,
            pdf_workers: spec.pdf_workers,
            grace: Duration::from_millis(GRACE_MS),
            limited: spec.rate_per_minute > 0,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                server.exited = Some(status);
                last_error = format!(
                    "server {} exited at start ({status}); log: {}",
                    spec.name,
                    tail(&server.log_path, 10)
                );
                break;
            }
            if let Ok(r) = probe.get(format!("{}/readyz", server.base)).send().await {
                if r.status() == 200 {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "server {} not ready within 30 s; log: {}",
                    spec.name,
                    tail(&server.log_path, 10)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Err(last_error)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGTERM and waits for the exit, up to `limit`.
async fn terminate(server: &mut Server, limit: Duration) -> (Option<ExitStatus>, Duration) {
    let sent = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &server.pid.to_string()])
        .status();
    wait_exit(server, sent, limit).await
}

async fn wait_exit(
    server: &mut Server,
    since: Instant,
    limit: Duration,
) -> (Option<ExitStatus>, Duration) {
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            server.exited = Some(status);
            return (Some(status), since.elapsed());
        }
        if since.elapsed() > limit {
            return (None, since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- /proc

/// `(state, ppid)` of a process, from `/proc/<pid>/stat`.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Children of `parent`: `(pid, state)`.
fn children(parent: u32) -> Vec<(u32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (state, ppid) = proc_state(pid)?;
            (ppid == parent).then_some((pid, state))
        })
        .collect()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Open fds of a process by kind (socket, pipe, anon inode, file).
fn fd_kinds(pid: u32) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let kind = match target.split_once(':') {
            Some((k @ ("socket" | "pipe"), _)) => k.to_string(),
            Some(("anon_inode", what)) => what.trim_matches(|c| c == '[' || c == ']').to_string(),
            _ => "file".to_string(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn is_renderer(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0)
                .any(|arg| arg == b"--renderer".as_slice())
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    PdfJson,
    PdfRaw,
    PdfMultipart,
    Message,
    ShortDeadline,
    Disconnect,
    Malformed,
    Burst,
    RateLimited,
    PageGet,
    Long,
    AsyncPdf,
    AsyncMessage,
    JobGet,
    JobEvents,
    JobArchive,
    JobCancel,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::PdfJson => "pdf json path",
            Kind::PdfRaw => "pdf raw upload",
            Kind::PdfMultipart => "pdf multipart",
            Kind::Message => "message",
            Kind::ShortDeadline => "short deadline",
            Kind::Disconnect => "disconnect mid-job",
            Kind::Malformed => "malformed",
            Kind::Burst => "burst",
            Kind::RateLimited => "rate-limited burst (B)",
            Kind::PageGet => "page fetch",
            Kind::Long => "long job (shutdown run)",
            Kind::AsyncPdf => "pdf async (submit, replay)",
            Kind::AsyncMessage => "message async (submit, replay)",
            Kind::JobGet => "job state (GET /jobs/{id})",
            Kind::JobEvents => "job events (SSE)",
            Kind::JobArchive => "job archive (zip)",
            Kind::JobCancel => "job cancel (DELETE)",
        }
    }
}

/// What a request may be answered with.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A valid job: 200, or the server's load answers (503 queue full or
    /// shutting down, 504), or for PDF jobs 500 when its renderer was killed.
    Job { pdf: bool },
    /// A job the worker refuses (unreadable PDF, pages it lacks): 422 in
    /// place of 200, otherwise as `Job`.
    JobInvalid { pdf: bool },
    /// Refused before the queue with exactly this status.
    Before(u16),
    /// `GET /jobs/{id}/pages/{n}` with this status.
    Page(u16),
    /// An async submit: 202, or the load answers of admission (503
    /// `queue_full` or `too_many_jobs` with `Retry-After`, 503
    /// `shutting_down` while draining); never 500 or 504, which belong to
    /// the job's record.
    Async,
    /// A request about an async job (state, events, archive, cancel):
    /// one of these statuses.
    AnyOf(&'static [u16]),
}

#[derive(Debug)]
enum Res {
    Http {
        status: u16,
        code: Option<String>,
        message: String,
        job_id: Option<String>,
        shape: Result<(), String>,
        retry_after: bool,
    },
    /// Dropped on purpose by a disconnecting client.
    Dropped,
    /// Transport failure: refused, reset, closed, timed out.
    Conn(String),
}

struct Record {
    kind: Kind,
    case: &'static str,
    target: usize,
    expect: Expect,
    started: Instant,
    finished: Instant,
    res: Res,
}

/// A 200 PDF answer, checked against the disk at the end.
#[derive(Clone)]
struct PdfOk {
    target: usize,
    job_id: String,
    /// `(page, width, height, bytes)`.
    pages: Vec<(u32, u32, u32, u64)>,
    /// When the answer (and the client's page fetches) were done.
    at: Instant,
}

/// An async job a client got a 202 for, checked at the end of the run.
#[derive(Clone)]
struct AsyncJob {
    job_id: String,
    pdf: bool,
    /// Pages a PDF job must render, in order.
    expected: Vec<u32>,
    /// A DELETE was answered 202 `cancelled`: the job must end so.
    cancelled: bool,
    /// The final state its client saw (polling or reading events).
    seen_final: Option<String>,
    /// Its pages went to the verifier (its client saw it done).
    verified: bool,
}

#[derive(Default)]
struct Log {
    records: Vec<Record>,
    pdf_ok: Vec<PdfOk>,
    /// Problems the clients saw in answers' content.
    problems: Vec<String>,
    /// Async jobs accepted by server A (async jobs go to A only).
    async_jobs: Vec<AsyncJob>,
    /// Filled by the end-of-run check: accepted async jobs by final
    /// state, and those not ended (kept queued by a shutdown).
    async_final: BTreeMap<String, String>,
    async_open: BTreeSet<String>,
    /// Async jobs that ended without a result: `(id, status, error)`.
    async_failed: Vec<(String, u16, String)>,
}

struct Fixtures {
    docs: Vec<(&'static str, Bytes, u32)>,
    truncated: Bytes,
    not_a_pdf: Bytes,
}

impl Fixtures {
    fn load() -> Result<Self, String> {
        let read = |name: &str| {
            std::fs::read(Path::new(REPO).join("data").join(name))
                .map(Bytes::from)
                .map_err(|e| format!("data/{name}: {e}"))
        };
        Ok(Fixtures {
            docs: vec![
                ("sample.pdf", read("sample.pdf")?, 6),
                ("text.pdf", read("text.pdf")?, 3),
                ("many-pages.pdf", read("many-pages.pdf")?, 40),
                ("encrypted.pdf", read("encrypted.pdf")?, 2),
                ("bad/broken-xref.pdf", read("bad/broken-xref.pdf")?, 6),
            ],
            truncated: read("bad/truncated.pdf")?,
            not_a_pdf: read("bad/not-a-pdf.pdf")?,
        })
    }
}

struct Target {
    base: String,
}

/// Shared by the clients of one load phase; dropping it closes the
/// clients' connections.
struct Ctx {
    client: reqwest::Client,
    /// A client that never reuses a connection, for requests the server
    /// may answer before reading their body (see [`Ctx::http`]).
    fresh: reqwest::Client,
    /// Whether to send those requests on fresh connections.
    isolate: bool,
    targets: Vec<Target>,
    log: Arc<Mutex<Log>>,
    fx: Arc<Fixtures>,
    stop: AtomicBool,
    /// SIGTERM was sent (shutdown run): an event stream may then end
    /// before its job does (a job kept queued for the next start).
    terminated: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn error_text(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text.chars().take(240).collect()
}

/// States of an async job; the last four are final.
const STATES: [&str; 6] = [
    "queued",
    "running",
    "done",
    "failed",
    "cancelled",
    "expired",
];

fn is_final(state: &str) -> bool {
    STATES[2..].contains(&state)
}

/// Checks an answer's body against the server's shapes.
fn body_shape(status: u16, kind: Kind, body: &[u8], json: Option<&Value>) -> Result<(), String> {
    if status == 200 && kind == Kind::PageGet {
        return if body.starts_with(b"\x89PNG") {
            Ok(())
        } else {
            Err("page is not a PNG".into())
        };
    }
    if status == 200 && kind == Kind::JobEvents {
        return if body.starts_with(b"event:") || body.starts_with(b"id:") || body.starts_with(b":")
        {
            Ok(())
        } else {
            Err(format!(
                "event stream does not start with an event: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ))
        };
    }
    if status == 200 && kind == Kind::JobArchive {
        return if body.starts_with(b"PK") {
            Ok(())
        } else {
            Err("archive is not a zip".into())
        };
    }
    let Some(v) = json.filter(|v| v.is_object()) else {
        return Err(format!(
            "body is not a JSON object: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        ));
    };
    if status == 200 {
        return if v["job_id"].is_string() {
            Ok(())
        } else {
            Err(format!("200 without job_id: {v}"))
        };
    }
    if status == 202 {
        // An async job's view: its id, its state and where to follow it.
        return if v["job_id"].is_string()
            && v["state"].as_str().is_some_and(|s| STATES.contains(&s))
            && v["links"]["self"].is_string()
        {
            Ok(())
        } else {
            Err(format!("202 without job_id, state or links: {v}"))
        };
    }
    let ok = v["error"].is_string()
        && v["message"].is_string()
        && (v.get("job_id").is_none() || v["job_id"].is_string())
        && v.as_object().is_some_and(|o| {
            o.keys()
                .all(|k| matches!(k.as_str(), "error" | "message" | "job_id"))
        });
    if ok {
        Ok(())
    } else {
        Err(format!("error body not {{error, message, job_id?}}: {v}"))
    }
}

impl Ctx {
    fn new(
        targets: Vec<Target>,
        log: Arc<Mutex<Log>>,
        fx: Arc<Fixtures>,
        isolate: bool,
    ) -> Arc<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            // Far above any deadline the server gives a job: hitting it
            // means a request that was never answered.
            .timeout(Duration::from_millis(PDF_TIMEOUT_MS + 12_000))
            .build()
            .expect("reqwest client");
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(PDF_TIMEOUT_MS + 12_000))
            .pool_max_idle_per_host(0)
            .build()
            .expect("reqwest client");
        Arc::new(Ctx {
            client,
            fresh,
            isolate,
            targets,
            log,
            fx,
            stop: AtomicBool::new(false),
            terminated: AtomicBool::new(false),
        })
    }

    /// The client for a kind of request. A server that answers before
    /// reading a request's body (413, 415, a 400 from the query, a 429)
    /// cannot reuse the connection; unless it says `Connection: close`, a
    /// client that reuses it fails its next request. The run probes this
    /// first ([`early_answer_probe`]); if the server lacks the header,
    /// malformed and rate-limited requests go on fresh connections so the
    /// other clients' pooled connections stay out of that race (the issue
    /// is reported as a finding), and every transport error still counts.
    fn http(&self, kind: Kind) -> &reqwest::Client {
        match kind {
            Kind::Malformed | Kind::RateLimited if self.isolate => &self.fresh,
            _ => &self.client,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn url(&self, target: usize, path: &str) -> String {
        format!("{}{}", self.targets[target].base, path)
    }

    /// Sleeps, waking early when the phase stops.
    async fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() && Instant::now() < end {
            let left = end.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// Sends one request, records its outcome, and returns the status and
    /// body of an HTTP answer. `hang_up` drops the request after that long.
    async fn exec(
        &self,
        kind: Kind,
        case: &'static str,
        target: usize,
        expect: Expect,
        request: reqwest::RequestBuilder,
        hang_up: Option<Duration>,
    ) -> Option<(u16, Bytes)> {
        self.exec_with_headers(kind, case, target, expect, request, hang_up)
            .await
            .map(|(status, _, body)| (status, body))
    }

    /// As [`Ctx::exec`], also returning the answer's headers.
    async fn exec_with_headers(
        &self,
        kind: Kind,
        case: &'static str,
        target: usize,
        expect: Expect,
        request: reqwest::RequestBuilder,
        hang_up: Option<Duration>,
    ) -> Option<(u16, reqwest::header::HeaderMap, Bytes)> {
        let started = Instant::now();
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        let outcome = match hang_up {
            Some(after) => tokio::time::timeout(after, exchange).await.ok(),
            None => Some(exchange.await),
        };
        let finished = Instant::now();
        let (res, answer) = match outcome {
            None => (Res::Dropped, None),
            Some(Err(e)) => (Res::Conn(error_text(&e)), None),
            Some(Ok((status, headers, body))) => {
                let retry_after = headers.contains_key("retry-after");
                let json: Option<Value> = serde_json::from_slice(&body).ok();
                let field = |name: &str| {
                    json.as_ref()
                        .and_then(|v| v.get(name))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                let res = Res::Http {
                    status,
                    code: if status < 300 { None } else { field("error") },
                    message: if status < 300 {
                        String::new()
                    } else {
                        field("message").unwrap_or_default()
                    },
                    job_id: field("job_id"),
                    shape: body_shape(status, kind, &body, json.as_ref()),
                    retry_after,
                };
                (res, Some((status, headers, body)))
            }
        };
        lock(&self.log).records.push(Record {
            kind,
            case,
            target,
            expect,
            started,
            finished,
            res,
        });
        answer
    }

    fn problem(&self, text: String) {
        lock(&self.log).problems.push(text);
    }
}

/// A valid PDF request: document, options, and the pages it must return.
#[derive(Clone)]
struct PdfReq {
    doc: &'static str,
    bytes: Bytes,
    dpi: u32,
    pages: Option<String>,
    expected: Vec<u32>,
    password: Option<&'static str>,
}

fn valid_pdf(rng: &mut Rng, fx: &Fixtures) -> PdfReq {
    let (doc, bytes, n) = rng.pick(&fx.docs).clone();
    let (pages, expected): (Option<String>, Vec<u32>) = match rng.below(5) {
        0 => (None, (1..=n).collect()),
        1 => (Some("1".into()), vec![1]),
        2 => (Some("1-2".into()), vec![1, 2]),
        3 => (Some(format!("{}-", n - 1)), vec![n - 1, n]),
        _ => (Some(format!("1,{n}")), vec![1, n]),
    };
    // Keep whole 40-page documents cheap; two cores render everything.
    let dpi = if expected.len() > 6 {
        *rng.pick(&[20, 36])
    } else {
        *rng.pick(&[36, 50, 72])
    };
    PdfReq {
        doc,
        bytes,
        dpi,
        pages,
        expected,
        password: (doc == "encrypted.pdf").then_some("secret"),
    }
}

fn pdf_json_body(req: &PdfReq, timeout_ms: Option<u64>) -> Value {
    let mut body = json!({"path": req.doc, "dpi": req.dpi});
    if let Some(p) = &req.pages {
        body["pages"] = json!(p);
    }
    if let Some(pw) = req.password {
        body["password"] = json!(pw);
    }
    if let Some(t) = timeout_ms {
        body["timeout_ms"] = json!(t);
    }
    body
}

fn pdf_query(req: &PdfReq) -> Vec<(&'static str, String)> {
    let mut q = vec![("dpi", req.dpi.to_string())];
    if let Some(p) = &req.pages {
        q.push(("pages", p.clone()));
    }
    if let Some(pw) = req.password {
        q.push(("password", pw.to_string()));
    }
    q
}

/// Runs a valid PDF job in one of the three input forms, then checks the
/// answer and sometimes fetches a page.
async fn pdf_job(ctx: &Ctx, rng: &mut Rng, kind: Kind, target: usize, form: u64) {
    let req = valid_pdf(rng, &ctx.fx);
    if target == 0 && rng.chance(ASYNC_SHARE) {
        return async_job(ctx, rng, AsyncSpec::Pdf { req, form }).await;
    }
    let (case, builder) = pdf_request(ctx, target, &req, form);
    let answer = ctx
        .exec(kind, case, target, Expect::Job { pdf: true }, builder, None)
        .await;
    if let Some((200, body)) = answer {
        check_pdf_answer(ctx, rng, target, &req, &body).await;
    }
}

/// A valid PDF job as JSON naming a path (form 0), a raw upload (1) or a
/// multipart upload (2).
fn pdf_request(
    ctx: &Ctx,
    target: usize,
    req: &PdfReq,
    form: u64,
) -> (&'static str, reqwest::RequestBuilder) {
    let url = ctx.url(target, "/jobs/pdf");
    match form {
        0 => (
            "json",
            ctx.client.post(&url).json(&pdf_json_body(req, None)),
        ),
        1 => (
            "raw",
            ctx.client
                .post(&url)
                .query(&pdf_query(req))
                .header("content-type", "application/pdf")
                .body(req.bytes.clone()),
        ),
        _ => {
            let part = reqwest::multipart::Part::stream_with_length(
                req.bytes.clone(),
                req.bytes.len() as u64,
            )
            .file_name("upload.pdf")
            .mime_str("application/pdf")
            .expect("mime");
            let mut form = reqwest::multipart::Form::new()
                .part("file", part)
                .text("dpi", req.dpi.to_string());
            if let Some(p) = &req.pages {
                form = form.text("pages", p.clone());
            }
            if let Some(pw) = req.password {
                form = form.text("password", pw);
            }
            ("multipart", ctx.client.post(&url).multipart(form))
        }
    }
}

async fn check_pdf_answer(ctx: &Ctx, rng: &mut Rng, target: usize, req: &PdfReq, body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return; // already recorded as a shape violation
    };
    let job_id = v["job_id"].as_str().unwrap_or_default().to_string();
    let pages: Vec<(u32, u32, u32, u64)> = v["pages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let n = |k: &str| p[k].as_u64().unwrap_or(0);
                    (
                        n("page") as u32,
                        n("width") as u32,
                        n("height") as u32,
                        n("bytes"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let numbers: Vec<u32> = pages.iter().map(|p| p.0).collect();
    if numbers != req.expected {
        ctx.problem(format!(
            "job {job_id} ({} pages={:?}) returned pages {numbers:?}, expected {:?}",
            req.doc, req.pages, req.expected
        ));
    }
    if v["dpi"].as_u64() != Some(u64::from(req.dpi)) {
        ctx.problem(format!("job {job_id}: dpi {} != {}", v["dpi"], req.dpi));
    }
    // Fetch a rendered page over HTTP now and then, and a missing one.
    if !pages.is_empty() && rng.chance(0.25) {
        let &(page, w, h, bytes) = rng.pick(&pages);
        let url = ctx.url(target, &format!("/jobs/{job_id}/pages/{page}"));
        let got = ctx
            .exec(
                Kind::PageGet,
                "rendered page",
                target,
                Expect::Page(200),
                ctx.client.get(url),
                None,
            )
            .await;
        if let Some((200, png)) = got {
            match decode_png(&png) {
                Ok((pw, ph)) if (pw, ph) == (w, h) && png.len() as u64 == bytes => {}
                Ok((pw, ph)) => ctx.problem(format!(
                    "GET page {page} of {job_id}: {pw}x{ph} px, {} bytes; reply said {w}x{h}, {bytes}",
                    png.len()
                )),
                Err(e) => ctx.problem(format!("GET page {page} of {job_id}: {e}")),
            }
        }
    }
    if rng.chance(0.05) {
        let missing = req.expected.iter().max().copied().unwrap_or(0) + 1;
        let url = ctx.url(target, &format!("/jobs/{job_id}/pages/{missing}"));
        ctx.exec(
            Kind::PageGet,
            "page not rendered",
            target,
            Expect::Page(404),
            ctx.client.get(url),
            None,
        )
        .await;
    }
    lock(&ctx.log).pdf_ok.push(PdfOk {
        target,
        job_id,
        pages,
        at: Instant::now(),
    });
}

fn decode_png(data: &[u8]) -> Result<(u32, u32), String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(data));
    let mut reader = decoder.read_info().map_err(|e| format!("bad PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("PNG too large to decode")?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("bad PNG data: {e}"))?;
    Ok((info.width, info.height))
}

async fn message_job(
    ctx: &Ctx,
    rng: &mut Rng,
    kind: Kind,
    target: usize,
    work_ms: u64,
    timeout_ms: Option<u64>,
    hang_up: Option<Duration>,
) {
    let mut body = json!({"text": format!("stress {}", rng.next()), "work_ms": work_ms});
    if let Some(t) = timeout_ms {
        body["timeout_ms"] = json!(t);
    }
    let builder = ctx
        .http(kind)
        .post(ctx.url(target, "/jobs/message"))
        .json(&body);
    ctx.exec(
        kind,
        "message",
        target,
        Expect::Job { pdf: false },
        builder,
        hang_up,
    )
    .await;
}

/// One malformed or refused request, chosen at random.
async fn malformed(ctx: &Ctx, rng: &mut Rng) {
    let c = ctx.http(Kind::Malformed);
    let msg = ctx.url(0, "/jobs/message");
    let pdf = ctx.url(0, "/jobs/pdf");
    let json_type = ("content-type", "application/json");
    let pdf_type = ("content-type", "application/pdf");
    let job_invalid = Expect::JobInvalid { pdf: true };
    let (case, expect, builder): (&'static str, Expect, reqwest::RequestBuilder) =
        match rng.below(22) {
            0 => (
                "bad json (message)",
                Expect::Before(400),
                c.post(&msg)
                    .header(json_type.0, json_type.1)
                    .body("{\"text\": "),
            ),
            1 => (
                "bad json (pdf)",
                Expect::Before(400),
                c.post(&pdf)
                    .header(json_type.0, json_type.1)
                    .body("{\"path\": \"sample.pdf\","),
            ),
            2 => (
                "text/plain to message",
                Expect::Before(415),
                c.post(&msg)
                    .header("content-type", "text/plain")
                    .body("hello"),
            ),
            3 => (
                "image/png to pdf",
                Expect::Before(415),
                c.post(&pdf)
                    .header("content-type", "image/png")
                    .body(ctx.fx.not_a_pdf.clone()),
            ),
            4 => {
                let mut bytes: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
                bytes[0] = b'X';
                (
                    "random bytes as pdf",
                    job_invalid,
                    c.post(&pdf).header(pdf_type.0, pdf_type.1).body(bytes),
                )
            }
            5 => (
                "pages 3-1",
                Expect::Before(400),
                c.post(format!("{pdf}?pages=3-1"))
                    .json(&json!({"path": "sample.pdf"})),
            ),
            6 => (
                "pages the document lacks",
                job_invalid,
                c.post(&pdf)
                    .json(&json!({"path": "sample.pdf", "pages": "7-9", "dpi": 36})),
            ),
            7 => (
                "dpi 0",
                Expect::Before(400),
                c.post(&pdf).json(&json!({"path": "sample.pdf", "dpi": 0})),
            ),
            8 => (
                "dpi 100000",
                Expect::Before(400),
                c.post(format!("{pdf}?dpi=100000"))
                    .header(pdf_type.0, pdf_type.1)
                    .body(ctx.fx.docs[0].1.clone()),
            ),
            9 => (
                "oversized json",
                Expect::Before(413),
                c.post(&msg).json(&json!({"text": "x".repeat(100 * 1024)})),
            ),
            10 => (
                "oversized upload",
                Expect::Before(413),
                c.post(&pdf).header(pdf_type.0, pdf_type.1).body(vec![
                    b'%';
                    MAX_UPLOAD_BYTES
                        + MAX_UPLOAD_BYTES / 2
                ]),
            ),
            11 => (
                "encrypted, no password",
                job_invalid,
                c.post(&pdf).json(&json!({"path": "encrypted.pdf"})),
            ),
            12 => (
                "huge page",
                job_invalid,
                c.post(&pdf).json(&json!({"path": "huge-page.pdf"})),
            ),
            13 => (
                "path out of data dir",
                Expect::Before(400),
                c.post(&pdf).json(&json!({"path": "../Cargo.toml"})),
            ),
            14 => (
                "missing file",
                Expect::Before(422),
                c.post(&pdf).json(&json!({"path": "no-such.pdf"})),
            ),
            15 => (
                "timeout_ms 0",
                Expect::Before(422),
                c.post(&msg).json(&json!({"text": "t", "timeout_ms": 0})),
            ),
            16 => (
                "wrong json shape",
                Expect::Before(422),
                c.post(&msg).json(&json!({"text": 42})),
            ),
            17 => (
                "unknown field",
                Expect::Before(422),
                c.post(&pdf)
                    .json(&json!({"path": "sample.pdf", "bogus": true})),
            ),
            18 => (
                "empty upload",
                Expect::Before(422),
                c.post(&pdf).header(pdf_type.0, pdf_type.1).body(""),
            ),
            19 => (
                "multipart without file",
                Expect::Before(400),
                c.post(&pdf)
                    .multipart(reqwest::multipart::Form::new().text("dpi", "72")),
            ),
            20 => (
                "bad query",
                Expect::Before(400),
                c.post(format!("{pdf}?dpi=abc"))
                    .json(&json!({"path": "sample.pdf"})),
            ),
            _ => (
                "truncated pdf",
                job_invalid,
                c.post(format!("{pdf}?dpi=36"))
                    .header(pdf_type.0, pdf_type.1)
                    .body(ctx.fx.truncated.clone()),
            ),
        };
    ctx.exec(Kind::Malformed, case, 0, expect, builder, None)
        .await;
}

// ---------------------------------------------------------------- async jobs

/// Share of the PDF and message clients' jobs sent in async mode.
const ASYNC_SHARE: f64 = 0.25;
/// How long a client polls its async job before leaving it to the
/// end-of-run check.
const POLL_LIMIT: Duration = Duration::from_secs(15);
/// How long accepted async jobs get to reach a final state once the
/// server has settled after the load.
const ASYNC_FINAL_DEADLINE: Duration = Duration::from_secs(30);

/// The request of an async job, kept to send it again.
enum AsyncSpec {
    Pdf { req: PdfReq, form: u64 },
    Message { body: Value },
}

/// The submit of an async job: `?mode=async` or `Prefer: respond-async`,
/// with an `Idempotency-Key` if given. `altered` changes the request (the
/// dpi, the text) but not the key.
fn async_request(
    ctx: &Ctx,
    spec: &AsyncSpec,
    prefer: bool,
    key: Option<&str>,
    altered: bool,
) -> reqwest::RequestBuilder {
    let builder = match spec {
        AsyncSpec::Pdf { req, form } => {
            let mut req = req.clone();
            if altered {
                req.dpi += 1;
            }
            pdf_request(ctx, 0, &req, *form).1
        }
        AsyncSpec::Message { body } => {
            let mut body = body.clone();
            if altered {
                body["text"] = json!(format!("{} (altered)", body["text"]));
            }
            ctx.client.post(ctx.url(0, "/jobs/message")).json(&body)
        }
    };
    let builder = if prefer {
        builder.header("prefer", "respond-async")
    } else {
        builder.query(&[("mode", "async")])
    };
    match key {
        Some(key) => builder.header("idempotency-key", key),
        None => builder,
    }
}

/// One async job: submit (sometimes with an idempotency key, replayed or
/// reused with another request), sometimes a DELETE at a random moment,
/// then follow it by polling or by its events (or leave it to the
/// end-of-run check), and check what a done job produced.
async fn async_job(ctx: &Ctx, rng: &mut Rng, spec: AsyncSpec) {
    let (kind, pdf) = match spec {
        AsyncSpec::Pdf { .. } => (Kind::AsyncPdf, true),
        AsyncSpec::Message { .. } => (Kind::AsyncMessage, false),
    };
    let prefer = rng.chance(0.5);
    let key = rng
        .chance(0.3)
        .then(|| format!("stress-{:016x}", rng.next()));
    let request = async_request(ctx, &spec, prefer, key.as_deref(), false);
    let answer = ctx
        .exec_with_headers(kind, "submit", 0, Expect::Async, request, None)
        .await;
    let Some((202, headers, body)) = answer else {
        return;
    };
    let Some(job_id) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["job_id"].as_str().map(str::to_string))
    else {
        return; // recorded as a shape violation
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("location") != Some(format!("/jobs/{job_id}").as_str()) {
        ctx.problem(format!(
            "202 for job {job_id}: Location {:?}, expected /jobs/{job_id}",
            header("location")
        ));
    }
    if prefer && header("preference-applied") != Some("respond-async") {
        ctx.problem(format!(
            "202 for job {job_id} sent with Prefer: respond-async lacks Preference-Applied"
        ));
    }
    let mut job = AsyncJob {
        job_id: job_id.clone(),
        pdf,
        expected: match &spec {
            AsyncSpec::Pdf { req, .. } => req.expected.clone(),
            AsyncSpec::Message { .. } => Vec::new(),
        },
        cancelled: false,
        seen_final: None,
        verified: false,
    };
    if let Some(key) = &key {
        if rng.chance(0.3) {
            let again = async_request(ctx, &spec, prefer, Some(key), false);
            let answer = ctx
                .exec_with_headers(
                    kind,
                    "idempotent replay",
                    0,
                    Expect::AnyOf(&[202]),
                    again,
                    None,
                )
                .await;
            if let Some((202, headers, body)) = answer {
                let replayed = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["job_id"].as_str().map(str::to_string));
                if replayed.as_deref() != Some(job_id.as_str())
                    || headers
                        .get("idempotent-replayed")
                        .is_none_or(|v| v != "true")
                {
                    ctx.problem(format!(
                        "Idempotency-Key {key} sent again with the same request: job {replayed:?}, Idempotent-Replayed {:?}; expected job {job_id}, true",
                        headers.get("idempotent-replayed")
                    ));
                }
            }
        }
        if rng.chance(0.15) {
            let other = async_request(ctx, &spec, prefer, Some(key), true);
            let answer = ctx
                .exec(kind, "key reused", 0, Expect::AnyOf(&[422]), other, None)
                .await;
            if let Some((422, body)) = answer {
                let code = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string));
                if code.as_deref() != Some("idempotency_key_reused") {
                    ctx.problem(format!(
                        "Idempotency-Key {key} reused with another request: 422 {code:?}, expected idempotency_key_reused"
                    ));
                }
            }
        }
    }
    if rng.chance(0.15) {
        ctx.pause(rng.ms(0, 400)).await;
        job.cancelled = cancel_job(ctx, &job_id, &[202, 409]).await;
    }
    let view = match rng.below(10) {
        0..=3 => poll_job(ctx, rng, &job_id).await,
        4..=7 => follow_events(ctx, &job_id).await,
        _ => None,
    };
    if let Some(view) = view {
        job.seen_final = view["state"].as_str().map(str::to_string);
        check_final_view(ctx, rng, &spec, &mut job, &view).await;
    }
    if rng.chance(0.03) {
        // Jobs that do not exist: 404, and only there.
        let unknown = uuid::Uuid::new_v4();
        for (case, request) in [
            (
                "unknown job",
                ctx.client.get(ctx.url(0, &format!("/jobs/{unknown}"))),
            ),
            (
                "unknown job",
                ctx.client.delete(ctx.url(0, &format!("/jobs/{unknown}"))),
            ),
        ] {
            ctx.exec(Kind::JobGet, case, 0, Expect::AnyOf(&[404]), request, None)
                .await;
        }
    }
    lock(&ctx.log).async_jobs.push(job);
}

/// `DELETE /jobs/{id}`; true if it was answered 202 `cancelled`.
async fn cancel_job(ctx: &Ctx, job_id: &str, expect: &'static [u16]) -> bool {
    let url = ctx.url(0, &format!("/jobs/{job_id}"));
    let answer = ctx
        .exec(
            Kind::JobCancel,
            "cancel",
            0,
            Expect::AnyOf(expect),
            ctx.client.delete(url),
            None,
        )
        .await;
    let Some((202, body)) = answer else {
        return false;
    };
    let state = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string));
    if state.as_deref() == Some("cancelled") {
        true
    } else {
        ctx.problem(format!(
            "DELETE /jobs/{job_id} answered 202 with state {state:?}; expected cancelled (or 409 if it had ended)"
        ));
        false
    }
}

/// Polls `GET /jobs/{id}` until the job's state is final; `None` if the
/// load stops or `POLL_LIMIT` passes first.
async fn poll_job(ctx: &Ctx, rng: &mut Rng, job_id: &str) -> Option<Value> {
    let end = Instant::now() + POLL_LIMIT;
    let url = ctx.url(0, &format!("/jobs/{job_id}"));
    loop {
        let answer = ctx
            .exec(
                Kind::JobGet,
                "poll",
                0,
                Expect::AnyOf(&[200]),
                ctx.client.get(&url),
                None,
            )
            .await;
        let Some((200, body)) = answer else {
            return None;
        };
        let view: Value = serde_json::from_slice(&body).ok()?;
        let state = view["state"].as_str().unwrap_or_default();
        if view["job_id"] != job_id || !STATES.contains(&state) {
            ctx.problem(format!("GET /jobs/{job_id}: {view}"));
            return None;
        }
        if is_final(state) {
            return Some(view);
        }
        if ctx.stopped() || Instant::now() > end {
            return None;
        }
        ctx.pause(rng.ms(50, 200)).await;
    }
}

/// Reads `GET /jobs/{id}/events` to its end and checks the stream: it ends
/// with the one `state` event whose state is final, and the `page` events'
/// `done` counts up by one from the state before them. Returns that last
/// state.
async fn follow_events(ctx: &Ctx, job_id: &str) -> Option<Value> {
    let url = ctx.url(0, &format!("/jobs/{job_id}/events"));
    let answer = ctx
        .exec(
            Kind::JobEvents,
            "events",
            0,
            Expect::AnyOf(&[200]),
            ctx.client.get(url),
            None,
        )
        .await;
    let Some((200, body)) = answer else {
        return None;
    };
    let text = String::from_utf8_lossy(&body).replace("\r\n", "\n");
    let mut events: Vec<(String, Value)> = Vec::new();
    for block in text.split("\n\n") {
        let mut name = "message";
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if data.is_empty() {
            continue; // a keep-alive comment
        }
        match serde_json::from_str(&data) {
            Ok(v) => events.push((name.to_string(), v)),
            Err(e) => ctx.problem(format!("events of {job_id}: bad data {data:?}: {e}")),
        }
    }
    let mut problems = Vec::new();
    let mut done: Option<u64> = None;
    for (i, (name, v)) in events.iter().enumerate() {
        let n = v["done"].as_u64();
        match name.as_str() {
            "state" => {
                let state = v["state"].as_str().unwrap_or_default();
                if is_final(state) && i + 1 != events.len() {
                    problems.push(format!(
                        "final state {state} is event {i} of {}",
                        events.len()
                    ));
                }
                done = n;
            }
            "page" => {
                if let (Some(prev), Some(n)) = (done, n) {
                    if n != prev + 1 {
                        problems.push(format!("page event with done {n} after done {prev}"));
                    }
                }
                done = n;
            }
            other => problems.push(format!("unknown event {other:?}")),
        }
    }
    let last = events.last().map(|(name, v)| (name.as_str(), v));
    let end = match last {
        Some(("state", v)) if v["state"].as_str().is_some_and(is_final) => Some(v.clone()),
        // The server stopped with the job unfinished: it is kept in the
        // job database, where the end-of-run check judges it.
        _ if ctx.terminated.load(Ordering::Relaxed) => None,
        _ => {
            problems.push(format!(
                "stream of {} events does not end with a final state: last {:?}",
                events.len(),
                last.map(|(n, v)| format!("{n} {}", v["state"]))
            ));
            None
        }
    };
    if !problems.is_empty() {
        ctx.problem(format!("events of {job_id}: {}", problems.join("; ")));
    }
    end
}

/// Checks the final view a client saw: a done job's result (a PDF job's
/// pages, sometimes fetched as the archive, then verified on disk like a
/// sync answer's), a failed one's error.
async fn check_final_view(
    ctx: &Ctx,
    rng: &mut Rng,
    spec: &AsyncSpec,
    job: &mut AsyncJob,
    view: &Value,
) {
    let job_id = job.job_id.clone();
    match view["state"].as_str().unwrap_or_default() {
        "done" => {
            let result = &view["result"];
            if result["job_id"] != job_id.as_str() {
                ctx.problem(format!("job {job_id} done with result {result}"));
                return;
            }
            if let AsyncSpec::Pdf { req, .. } = spec {
                if rng.chance(0.5) {
                    check_archive(ctx, rng, &job_id, result).await;
                }
                let body = serde_json::to_vec(result).unwrap_or_default();
                check_pdf_answer(ctx, rng, 0, req, &body).await;
                job.verified = true;
            } else if rng.chance(0.2) {
                // A message job has no pages: its archive does not exist.
                let url = ctx.url(0, &format!("/jobs/{job_id}/archive"));
                ctx.exec(
                    Kind::JobArchive,
                    "message job",
                    0,
                    Expect::AnyOf(&[404]),
                    ctx.client.get(url),
                    None,
                )
                .await;
            }
        }
        state => {
            let error = &view["error"];
            if !error["status"].is_u64() || !error["error"].is_string() {
                ctx.problem(format!(
                    "job {job_id} {state} without an error status: {view}"
                ));
            }
        }
    }
    if rng.chance(0.1) {
        // Ended: a DELETE now is a conflict.
        cancel_job(ctx, &job_id, &[409]).await;
    }
}

/// Fetches a done PDF job's archive: a zip whose entries are exactly the
/// result's pages; one of them, chosen at random, decodes at its size.
async fn check_archive(ctx: &Ctx, rng: &mut Rng, job_id: &str, result: &Value) {
    let url = ctx.url(0, &format!("/jobs/{job_id}/archive"));
    let answer = ctx
        .exec(
            Kind::JobArchive,
            "archive",
            0,
            Expect::AnyOf(&[200]),
            ctx.client.get(url),
            None,
        )
        .await;
    let Some((200, zip)) = answer else {
        return;
    };
    let pages: Vec<(String, u32, u32)> = result["pages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(0) as u32;
            (
                format!("page-{:03}.png", n("page")),
                n("width"),
                n("height"),
            )
        })
        .collect();
    let entries = match read_zip(&zip) {
        Ok(entries) => entries,
        Err(e) => return ctx.problem(format!("archive of {job_id}: {e}")),
    };
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let expected: Vec<&str> = pages.iter().map(|p| p.0.as_str()).collect();
    if names != expected {
        return ctx.problem(format!(
            "archive of {job_id} holds {names:?}, expected {expected:?}"
        ));
    }
    if entries.is_empty() {
        return;
    }
    let i = rng.below(entries.len() as u64) as usize;
    let (name, w, h) = &pages[i];
    match decode_png(&entries[i].1) {
        Ok(dims) if dims == (*w, *h) => {}
        Ok(dims) => ctx.problem(format!(
            "archive of {job_id}: {name} is {dims:?}, result says {w}x{h}"
        )),
        Err(e) => ctx.problem(format!("archive of {job_id}: {name}: {e}")),
    }
}

/// Every entry of a zip: name and contents.
fn read_zip(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    use std::io::Read as _;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| format!("not a zip: {e}"))?;
    let mut entries = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(|e| format!("{}: {e}", file.name()))?;
        entries.push((file.name().to_string(), contents));
    }
    Ok(entries)
}

// ---------------------------------------------------------------- clients

/// Starts every client of one phase; each loops until `ctx.stop`.
fn spawn_clients(ctx: &Arc<Ctx>, seed: u64, extra: &[Kind]) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let mut n = 0u64;
    let mut client = |tasks: &mut Vec<_>, kind: Kind| {
        n += 1;
        let ctx = Arc::clone(ctx);
        let mut rng = Rng(seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D));
        tasks.push(tokio::spawn(async move {
            while !ctx.stopped() {
                one_request(&ctx, &mut rng, kind).await;
                let think = match kind {
                    Kind::Burst | Kind::RateLimited => Duration::ZERO,
                    _ => rng.ms(5, 60),
                };
                ctx.pause(think).await;
            }
        }));
    };
    for kind in [
        Kind::PdfJson,
        Kind::PdfJson,
        Kind::PdfJson,
        Kind::PdfRaw,
        Kind::PdfRaw,
        Kind::PdfMultipart,
        Kind::Message,
        Kind::Message,
        Kind::ShortDeadline,
        Kind::Disconnect,
        Kind::Disconnect,
        Kind::Malformed,
        Kind::Malformed,
        Kind::Burst,
    ] {
        client(&mut tasks, kind);
    }
    for &kind in extra {
        client(&mut tasks, kind);
    }
    tasks
}

async fn one_request(ctx: &Ctx, rng: &mut Rng, kind: Kind) {
    match kind {
        Kind::PdfJson => pdf_job(ctx, rng, kind, 0, 0).await,
        Kind::PdfRaw => pdf_job(ctx, rng, kind, 0, 1).await,
        Kind::PdfMultipart => pdf_job(ctx, rng, kind, 0, 2).await,
        Kind::Message => {
            let work = rng.range(0, 60);
            if rng.chance(ASYNC_SHARE) {
                let body = json!({"text": format!("stress {}", rng.next()), "work_ms": work});
                async_job(ctx, rng, AsyncSpec::Message { body }).await;
            } else {
                message_job(ctx, rng, kind, 0, work, None, None).await;
            }
        }
        Kind::ShortDeadline => {
            if rng.chance(0.5) {
                let req = valid_pdf(rng, &ctx.fx);
                let timeout = *rng.pick(&[1, 5, 20, 60, 150, 400]);
                let builder = ctx
                    .client
                    .post(ctx.url(0, "/jobs/pdf"))
                    .json(&pdf_json_body(&req, Some(timeout)));
                let answer = ctx
                    .exec(kind, "pdf", 0, Expect::Job { pdf: true }, builder, None)
                    .await;
                if let Some((200, body)) = answer {
                    check_pdf_answer(ctx, rng, 0, &req, &body).await;
                }
            } else {
                let timeout = rng.range(1, 150);
                message_job(ctx, rng, kind, 0, 200, Some(timeout), None).await;
            }
        }
        Kind::Disconnect => {
            let hang_up = Some(rng.ms(5, 400));
            if rng.chance(0.3) {
                message_job(ctx, rng, kind, 0, 300, None, hang_up).await;
            } else {
                let (doc, dpi) = if rng.chance(0.5) { (2, 50) } else { (0, 100) };
                let (name, bytes, n) = ctx.fx.docs[doc].clone();
                let req = PdfReq {
                    doc: name,
                    bytes,
                    dpi,
                    pages: Some(format!("1-{n}")),
                    expected: (1..=n).collect(),
                    password: None,
                };
                let builder = if rng.chance(0.5) {
                    ctx.client
                        .post(ctx.url(0, "/jobs/pdf"))
                        .query(&pdf_query(&req))
                        .header("content-type", "application/pdf")
                        .body(req.bytes.clone())
                } else {
                    ctx.client
                        .post(ctx.url(0, "/jobs/pdf"))
                        .json(&pdf_json_body(&req, None))
                };
                let answer = ctx
                    .exec(kind, "pdf", 0, Expect::Job { pdf: true }, builder, hang_up)
                    .await;
                if let Some((200, body)) = answer {
                    check_pdf_answer(ctx, rng, 0, &req, &body).await;
                }
            }
        }
        Kind::Malformed => malformed(ctx, rng).await,
        Kind::Burst | Kind::RateLimited => {
            let target = usize::from(kind == Kind::RateLimited);
            let size = if target == 0 { 12 } else { 8 };
            ctx.pause(rng.ms(1500, 3000)).await;
            if ctx.stopped() {
                return;
            }
            let jobs = (0..size).map(|i| {
                let mut rng = Rng(rng.next() ^ i);
                async move {
                    if rng.chance(0.5) {
                        message_job(ctx, &mut rng, kind, target, 20, None, None).await;
                    } else {
                        let req = PdfReq {
                            doc: "text.pdf",
                            bytes: Bytes::new(),
                            dpi: 36,
                            pages: Some("1".into()),
                            expected: vec![1],
                            password: None,
                        };
                        let builder = ctx
                            .http(kind)
                            .post(ctx.url(target, "/jobs/pdf"))
                            .json(&pdf_json_body(&req, None));
                        let answer = ctx
                            .exec(
                                kind,
                                "pdf",
                                target,
                                Expect::Job { pdf: true },
                                builder,
                                None,
                            )
                            .await;
                        if let Some((200, body)) = answer {
                            check_pdf_answer(ctx, &mut rng, target, &req, &body).await;
                        }
                    }
                }
            });
            futures::future::join_all(jobs).await;
        }
        Kind::Long => {
            // Jobs of 1-3 s, so that some are running when SIGTERM comes.
            if rng.chance(0.5) {
                let work = rng.range(800, 2500);
                message_job(ctx, rng, kind, 0, work, None, None).await;
            } else {
                let (doc, bytes, n) = ctx.fx.docs[2].clone();
                let req = PdfReq {
                    doc,
                    bytes,
                    dpi: 150,
                    pages: None,
                    expected: (1..=n).collect(),
                    password: None,
                };
                let builder = ctx
                    .client
                    .post(ctx.url(0, "/jobs/pdf"))
                    .json(&pdf_json_body(&req, None));
                let answer = ctx
                    .exec(kind, "pdf", 0, Expect::Job { pdf: true }, builder, None)
                    .await;
                if let Some((200, body)) = answer {
                    check_pdf_answer(ctx, rng, 0, &req, &body).await;
                }
            }
        }
        Kind::PageGet
        | Kind::AsyncPdf
        | Kind::AsyncMessage
        | Kind::JobGet
        | Kind::JobEvents
        | Kind::JobArchive
        | Kind::JobCancel => {}
    }
}

/// SIGKILLs a random renderer of `server` every 0.5-2 s until `until`.
async fn inject_faults(
    base: String,
    server_pid: u32,
    mut rng: Rng,
    until: Instant,
    kills: Arc<AtomicU64>,
) {
    let probe = probe_client();
    loop {
        let wait = rng.ms(500, 2000);
        if Instant::now() + wait >= until {
            break;
        }
        tokio::time::sleep(wait).await;
        let Some(status) = get_json(&probe, &format!("{base}/status")).await else {
            continue;
        };
        let pids: Vec<u32> = status["pdf_engine"]["renderer_pids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_u64())
                    .map(|p| p as u32)
                    .collect()
            })
            .unwrap_or_default();
        if pids.is_empty() {
            continue;
        }
        let pid = *rng.pick(&pids);
        // Only a live child of the server: never a recycled pid.
        if !matches!(proc_state(pid), Some((s, ppid)) if ppid == server_pid && s != 'Z') {
            continue;
        }
        let killed = tokio::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if killed {
            kills.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        // A fresh connection per probe: no idle socket to skew fd counts.
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// Runs the clients for `length`, then stops them and waits for each to
/// finish its request. Prints progress every 10 s.
async fn run_phase(ctx: &Arc<Ctx>, tasks: Vec<tokio::task::JoinHandle<()>>, length: Duration) {
    let start = Instant::now();
    let mut next_report = Duration::from_secs(10);
    while start.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(200).min(length - start.elapsed().min(length)))
            .await;
        if start.elapsed() >= next_report {
            next_report += Duration::from_secs(10);
            let log = lock(&ctx.log);
            let ok = log
                .records
                .iter()
                .filter(|r| matches!(r.res, Res::Http { status: 200, .. }))
                .count();
            eprintln!(
                "  {:>4.0} s: {} requests, {} answered 200",
                start.elapsed().as_secs_f64(),
                log.records.len(),
                ok
            );
        }
    }
    ctx.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
}

// ---------------------------------------------------------------- checks

struct Checks {
    rows: Vec<(String, bool, String)>,
    violations: Vec<String>,
}

impl Checks {
    fn new() -> Self {
        Checks {
            rows: Vec::new(),
            violations: Vec::new(),
        }
    }
    fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        let (name, detail) = (name.into(), detail.into());
        if !ok {
            self.violations.push(format!("{name}: {detail}"));
        }
        self.rows.push((name, ok, detail));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Normal,
    /// Answered before SIGTERM.
    Before,
    /// Sent well before SIGTERM, answered after it.
    InFlight,
    /// Sent within `SIGTERM_WINDOW` of it.
    Window,
    /// Sent well after it.
    After,
}

fn phase(r: &Record, term: Option<Instant>) -> Phase {
    let Some(t) = term else {
        return Phase::Normal;
    };
    if r.started + SIGTERM_WINDOW < t {
        if r.finished > t {
            Phase::InFlight
        } else {
            Phase::Before
        }
    } else if r.started < t + SIGTERM_WINDOW {
        Phase::Window
    } else {
        Phase::After
    }
}

/// Whether a record's outcome is one the server may give.
fn judge(r: &Record, limited: bool, term: Option<Instant>) -> Result<(), String> {
    let phase = phase(r, term);
    let (status, code, message, shape, retry_after) = match &r.res {
        Res::Dropped if r.kind == Kind::Disconnect => return Ok(()),
        Res::Dropped => return Err("dropped".into()),
        Res::Conn(e) => {
            // An event stream open at SIGTERM may be cut: its job can be
            // one the shutdown keeps queued for the next start.
            let cut_stream = r.kind == Kind::JobEvents && phase == Phase::InFlight;
            return if cut_stream || matches!(phase, Phase::Window | Phase::After) {
                Ok(())
            } else {
                Err(format!("connection error: {e}"))
            };
        }
        Res::Http {
            status,
            code,
            message,
            shape,
            retry_after,
            ..
        } => (
            *status,
            code.as_deref().unwrap_or(""),
            message,
            shape,
            *retry_after,
        ),
    };
    shape.clone()?;
    if status == 429 {
        return match (limited, retry_after) {
            (true, true) => Ok(()),
            (true, false) => Err("429 without Retry-After".into()),
            (false, _) => Err("429 from a server with rate limiting off".into()),
        };
    }
    let (ok_status, pdf) = match r.expect {
        Expect::Before(s) | Expect::Page(s) => {
            return if status == s {
                Ok(())
            } else {
                Err(format!("{status} {code} ({message}); expected {s}"))
            };
        }
        Expect::AnyOf(statuses) => {
            let draining = status == 503 && code == "shutting_down" && phase != Phase::Before;
            return if statuses.contains(&status) || (draining && term.is_some()) {
                Ok(())
            } else {
                Err(format!(
                    "{status} {code} ({message}); expected {statuses:?}"
                ))
            };
        }
        Expect::Async => {
            return match status {
                202 if phase != Phase::After => Ok(()),
                503 if matches!(code, "queue_full" | "too_many_jobs")
                    && retry_after
                    && phase != Phase::After =>
                {
                    Ok(())
                }
                503 if code == "shutting_down" && term.is_some() => Ok(()),
                _ => Err(format!("unexpected {status} {code} ({message})")),
            };
        }
        Expect::Job { pdf } => (200, pdf),
        Expect::JobInvalid { pdf } => (422, pdf),
    };
    if phase == Phase::After && !(status == 503 && code == "shutting_down") {
        return Err(format!(
            "{status} {code} for a job sent {} ms after SIGTERM; expected 503 shutting_down",
            (r.started - term.unwrap_or(r.started)).as_millis()
        ));
    }
    match status {
        s if s == ok_status => Ok(()),
        503 if code == "queue_full" && retry_after => Ok(()),
        503 if code == "shutting_down" && term.is_some() => Ok(()),
        // Still running when the grace period ended: cancelled, as documented.
        503 if code == "cancelled"
            && term.is_some_and(|t| {
                r.finished + Duration::from_millis(100) >= t + Duration::from_millis(GRACE_MS)
            }) =>
        {
            Ok(())
        }
        504 if code == "timeout" || code == "queue_timeout" => Ok(()),
        500 if pdf && message.contains("renderer process died") => Ok(()),
        _ => Err(format!("unexpected {status} {code} ({message})")),
    }
}

struct Settled {
    fds: usize,
    fd_kinds: String,
    rss_kb: u64,
    status: Value,
    took: Duration,
}

/// Waits until the server is idle and whole again: every worker alive, no
/// job running or queued, one live renderer per PDF worker (the pids it
/// reports are exactly its live renderer children), no zombie child,
/// ready. Polls; fails after `SETTLE_DEADLINE`.
async fn settle(probe: &reqwest::Client, server: &Server) -> Result<Settled, String> {
    let start = Instant::now();
    loop {
        let status = get_json(probe, &format!("{}/status", server.base)).await;
        let ready = probe
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        let kids = children(server.pid);
        let zombies: Vec<u32> = kids.iter().filter(|k| k.1 == 'Z').map(|k| k.0).collect();
        let live: BTreeSet<u32> = kids.iter().filter(|k| k.1 != 'Z').map(|k| k.0).collect();
        let last = if let Some(status) = status {
            let mut problems = Vec::new();
            for q in status["queues"].as_array().into_iter().flatten() {
                let name = q["queue"].as_str().unwrap_or("?");
                if q["live_workers"] != q["configured_workers"] {
                    problems.push(format!(
                        "{name}: live_workers {} != configured {}",
                        q["live_workers"], q["configured_workers"]
                    ));
                }
                if q["busy_workers"] != 0 || q["depth"] != 0 {
                    problems.push(format!(
                        "{name}: busy {} depth {}",
                        q["busy_workers"], q["depth"]
                    ));
                }
            }
            let pids: BTreeSet<u32> = status["pdf_engine"]["renderer_pids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_u64().map(|p| p as u32))
                .collect();
            if pids.len() != server.pdf_workers {
                problems.push(format!(
                    "renderer_pids {pids:?}, expected {} renderers",
                    server.pdf_workers
                ));
            }
            if pids != live {
                problems.push(format!("renderer_pids {pids:?} != live children {live:?}"));
            }
            if !zombies.is_empty() {
                problems.push(format!("zombie children {zombies:?}"));
            }
            if ready != 200 {
                problems.push(format!("/readyz {ready}"));
            }
            if problems.is_empty() {
                return Ok(Settled {
                    fds: fd_count(server.pid),
                    fd_kinds: fd_kinds(server.pid),
                    rss_kb: rss_kb(server.pid),
                    status,
                    took: start.elapsed(),
                });
            }
            problems.join("; ")
        } else {
            "GET /status failed".to_string()
        };
        if start.elapsed() > SETTLE_DEADLINE {
            return Err(format!(
                "not settled after {} s: {last}",
                SETTLE_DEADLINE.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until fds and RSS are within their margins of the baseline (fds
/// fall as closed connections are torn down); returns the last reading.
async fn resources_back(server: &Server, base: &Settled) -> (usize, u64, bool) {
    let start = Instant::now();
    loop {
        let (fds, rss) = (fd_count(server.pid), rss_kb(server.pid));
        let ok = fds <= base.fds + FD_MARGIN && rss <= base.rss_kb + RSS_MARGIN_KB;
        if ok || start.elapsed() > Duration::from_secs(10) {
            return (fds, rss, ok);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct DiskReport {
    pages_checked: usize,
    bytes: u64,
    job_dirs: usize,
    orphan_dirs: usize,
    leftover_504: usize,
    /// Folders and kept uploads of async jobs not ended (shutdown run).
    open_dirs: usize,
    inputs_kept: usize,
    problems: Vec<String>,
}

/// Checks one server's OUTPUT_DIR against its answers: no partial file, no
/// spooled upload left, every page of every 200 present with its size and
/// decoding to its reported dimensions, no folder of a failed job left.
/// Reads and decodes every page of a 200 answer, checking size and
/// dimensions against the answer. Returns pages, bytes, problems.
fn verify_job(out_dir: &Path, job: &PdfOk) -> (usize, u64, Vec<String>) {
    let mut problems = Vec::new();
    let mut bytes_total = 0;
    for &(page, w, h, bytes) in &job.pages {
        let path = out_dir
            .join(&job.job_id)
            .join(format!("page-{page:03}.png"));
        bytes_total += bytes;
        match std::fs::read(&path) {
            Err(e) => problems.push(format!("{}: {e}", path.display())),
            Ok(data) => match decode_png(&data) {
                Ok(dims) if dims == (w, h) && data.len() as u64 == bytes => {}
                Ok(dims) => problems.push(format!(
                    "{}: {dims:?} px, {} bytes; reply said {w}x{h}, {bytes} bytes",
                    path.display(),
                    data.len()
                )),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            },
        }
    }
    (job.pages.len(), bytes_total, problems)
}

/// Pages of 200 answers verified while the load ran.
#[derive(Default)]
struct Verified {
    /// `Log::pdf_ok[..upto]` are verified.
    upto: usize,
    /// Per target: pages and bytes verified.
    pages: [usize; 2],
    bytes: [u64; 2],
    problems: Vec<String>,
}

/// Verifies the pages of 200 answers as the load runs (two seconds after
/// each answer, once its client has fetched what it wanted) and, unless
/// the run keeps its files, removes their folders: the disk holds only
/// recent output, and the end of the run has little left to check.
async fn verifier(
    log: Arc<Mutex<Log>>,
    out_dirs: Vec<PathBuf>,
    keep: bool,
    stop: Arc<AtomicBool>,
) -> Verified {
    let mut v = Verified::default();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let batch: Vec<PdfOk> = {
            let log = lock(&log);
            let mut end = v.upto;
            while end < log.pdf_ok.len() && log.pdf_ok[end].at.elapsed() > Duration::from_secs(2) {
                end += 1;
            }
            let batch = log.pdf_ok[v.upto..end].to_vec();
            v.upto = end;
            batch
        };
        if !batch.is_empty() {
            let dirs = out_dirs.clone();
            let done = tokio::task::spawn_blocking(move || {
                let mut out = (Vec::new(), Vec::new());
                for job in &batch {
                    let dir = &dirs[job.target];
                    let (pages, bytes, problems) = verify_job(dir, job);
                    if !keep && problems.is_empty() {
                        let _ = std::fs::remove_dir_all(dir.join(&job.job_id));
                    }
                    out.0.push((job.target, pages, bytes));
                    out.1.extend(problems);
                }
                out
            })
            .await;
            if let Ok((counts, problems)) = done {
                for (target, pages, bytes) in counts {
                    v.pages[target] += pages;
                    v.bytes[target] += bytes;
                }
                v.problems.extend(problems);
            }
        }
        if stopping {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The async jobs' database and folder in OUTPUT_DIR.
fn is_job_store(name: &str) -> bool {
    matches!(name, "jobs.db" | "jobs.db-wal" | "jobs.db-shm" | ".jobs")
}

/// `OUTPUT_DIR/.jobs/inputs`: an upload is kept there while its async job
/// may still run (queued at a shutdown), never once it has ended.
fn check_inputs(out_dir: &Path, log: &Log, target: usize, report: &mut DiskReport) {
    let dir = out_dir.join(".jobs").join("inputs");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let id = name.strip_suffix(".pdf").unwrap_or(&name);
        if target == 0 && log.async_open.contains(id) {
            report.inputs_kept += 1;
        } else if let Some(state) = log.async_final.get(id).filter(|_| target == 0) {
            report.problems.push(format!(
                "upload of job {id} kept in {} after it ended ({state})",
                dir.display()
            ));
        } else {
            report.problems.push(format!(
                "upload {name} in {} belongs to no accepted async job",
                dir.display()
            ));
        }
    }
}

fn check_disk(
    out_dir: &Path,
    oks: &[&PdfOk],
    ok_ids: &BTreeSet<&str>,
    failed_ids: &[(String, u16, String)],
    hung_up: usize,
    open_ids: &BTreeSet<String>,
) -> DiskReport {
    let mut report = DiskReport::default();
    // Partial files anywhere, and stray files.
    let mut stack = vec![out_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            report
                .problems
                .push(format!("cannot read {}", dir.display()));
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if dir == out_dir && is_job_store(&name) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".partial") {
                report
                    .problems
                    .push(format!("partial file {}", path.display()));
            } else if dir.ends_with(".spool") {
                report
                    .problems
                    .push(format!("spooled upload left: {}", path.display()));
            } else if !(name.starts_with("page-") && name.ends_with(".png")) {
                report
                    .problems
                    .push(format!("stray file {}", path.display()));
            }
        }
    }
    // Every page of every 200 not verified during the run, on two threads.
    let half = oks.len().div_ceil(2);
    let results: Vec<(usize, u64, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = oks
            .chunks(half.max(1))
            .map(|chunk| {
                s.spawn(move || {
                    let mut total = (0, 0, Vec::new());
                    for job in chunk {
                        let (pages, bytes, problems) = verify_job(out_dir, job);
                        total.0 += pages;
                        total.1 += bytes;
                        total.2.extend(problems);
                    }
                    total
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (checked, bytes, problems) in results {
        report.pages_checked += checked;
        report.bytes += bytes;
        report.problems.extend(problems);
    }
    // Folders: those of 200s, of failed jobs (must be gone), and others.
    let mut failed: HashMap<&str, (u16, &str)> = HashMap::new();
    for (id, status, code) in failed_ids {
        failed.insert(id.as_str(), (*status, code.as_str()));
    }
    for entry in std::fs::read_dir(out_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == ".spool" || is_job_store(&name) {
            continue;
        }
        report.job_dirs += 1;
        if ok_ids.contains(name.as_str()) {
            continue;
        }
        if open_ids.contains(&name) {
            // An async job the shutdown kept for the next start.
            report.open_dirs += 1;
            continue;
        }
        match failed.get(name.as_str()) {
            // The worker finished just as the caller's deadline fired: the
            // pages are complete (checked above for partials) but orphaned.
            Some((504, _)) => report.leftover_504 += 1,
            Some((status, code)) => report.problems.push(format!(
                "folder of failed job {name} ({status} {code}) was not removed"
            )),
            None => report.orphan_dirs += 1,
        }
    }
    if report.orphan_dirs > hung_up {
        report.problems.push(format!(
            "{} job folders belong to no answer, more than the {hung_up} requests dropped on purpose",
            report.orphan_dirs
        ));
    }
    report
}

// ---------------------------------------------------------------- report

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn outcome_label(res: &Res) -> String {
    match res {
        Res::Http { status, code, .. } => match code {
            Some(c) => format!("{status} {c}"),
            None => status.to_string(),
        },
        Res::Dropped => "dropped on purpose".into(),
        Res::Conn(e) => format!("connection {}", conn_kind(e)),
    }
}

/// A transport error, in a word.
fn conn_kind(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("refused") {
        "refused"
    } else if e.contains("reset") {
        "reset"
    } else if e.contains("closed") || e.contains("incomplete") {
        "closed"
    } else if e.contains("timed out") {
        "timed out"
    } else {
        "error"
    }
}

fn status_column(res: &Res) -> String {
    match res {
        Res::Http { status, .. } => status.to_string(),
        Res::Dropped => "dropped".into(),
        Res::Conn(_) => "conn err".into(),
    }
}

fn tables(out: &mut String, log: &Log, names: &[&str]) {
    // Per status (with error code) and server.
    let mut by_status: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in &log.records {
        by_status
            .entry(outcome_label(&r.res))
            .or_insert_with(|| vec![0; names.len()])[r.target] += 1;
    }
    let _ = writeln!(out, "\n### Answers by status\n");
    let _ = write!(out, "| status | error |");
    for n in names {
        let _ = write!(out, " server {n} |");
    }
    let _ = write!(out, "\n|---|---|");
    for _ in names {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (label, counts) in &by_status {
        let (status, code) = label.split_once(' ').unwrap_or((label, ""));
        let _ = write!(out, "| {status} | {code} |");
        for c in counts {
            let _ = write!(out, " {c} |");
        }
        out.push('\n');
    }
    let _ = write!(out, "| **total** | |");
    for t in 0..names.len() {
        let n = log.records.iter().filter(|r| r.target == t).count();
        let _ = write!(out, " **{n}** |");
    }
    out.push('\n');

    // Per kind x status.
    let mut columns: BTreeSet<String> = BTreeSet::new();
    let mut by_kind: BTreeMap<Kind, BTreeMap<String, usize>> = BTreeMap::new();
    for r in &log.records {
        let col = status_column(&r.res);
        columns.insert(col.clone());
        *by_kind.entry(r.kind).or_default().entry(col).or_default() += 1;
    }
    let _ = writeln!(out, "\n### Requests by kind\n");
    let _ = write!(out, "| kind | sent |");
    for c in &columns {
        let _ = write!(out, " {c} |");
    }
    let _ = write!(out, "\n|---|---:|");
    for _ in &columns {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (kind, counts) in &by_kind {
        let total: usize = counts.values().sum();
        let _ = write!(out, "| {} | {total} |", kind.name());
        for c in &columns {
            let _ = write!(out, " {} |", counts.get(c).copied().unwrap_or(0));
        }
        out.push('\n');
    }

    // Latency of accepted jobs.
    let _ = writeln!(
        out,
        "\n### Latency of accepted jobs (200), request to full answer\n"
    );
    let _ = writeln!(
        out,
        "| jobs | n | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|"
    );
    for (label, pdf) in [("message", false), ("pdf", true)] {
        let mut ms: Vec<f64> = log
            .records
            .iter()
            .filter(|r| {
                matches!(r.res, Res::Http { status: 200, .. })
                    && matches!(r.expect, Expect::Job { pdf: p } if p == pdf)
            })
            .map(|r| (r.finished - r.started).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "| {label} | {} | {:.0} | {:.0} | {:.0} |",
            ms.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN)
        );
    }
}

/// Removes terminal colour codes (`ESC [ ... m`) from log text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A known server issue probed for: reported, never a violation.
struct Finding {
    name: String,
    present: bool,
    detail: String,
}

fn findings_table(findings: &[Finding]) -> String {
    let mut out = String::from(
        "### Findings (known server issues probed for; reported, not counted as violations)\n\n| issue | present | observed |\n|---|---|---|\n",
    );
    for f in findings {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            f.name,
            if f.present { "**yes**" } else { "no" },
            f.detail.replace('|', "\\|")
        );
    }
    out
}

/// Kills one renderer of an idle server and watches what follows: is it
/// reaped, does it leave the pid list, does readiness notice, and does the
/// next job on that worker run or fail for a renderer it never used?
async fn idle_kill_probe(probe: &reqwest::Client, server: &Server) -> Finding {
    let name = "renderer killed while idle: zombie, still listed, next job 500".to_string();
    let missing = |detail: String| Finding {
        name: name.clone(),
        present: false,
        detail,
    };
    let status = get_json(probe, &format!("{}/status", server.base)).await;
    let Some(pid) = status.as_ref().and_then(|s| {
        s["pdf_engine"]["renderer_pids"]
            .as_array()?
            .first()?
            .as_u64()
            .map(|p| p as u32)
    }) else {
        return missing("no renderer pid to kill".into());
    };
    if !matches!(proc_state(pid), Some((s, ppid)) if ppid == server.pid && s != 'Z') {
        return missing(format!("pid {pid} is not a live child of the server"));
    }
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
    // Give the server a full second to notice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let zombie = proc_state(pid).is_some_and(|(s, _)| s == 'Z');
    let listed = get_json(probe, &format!("{}/status", server.base))
        .await
        .and_then(|s| {
            s["pdf_engine"]["renderer_pids"]
                .as_array()
                .map(|a| a.iter().any(|p| p.as_u64() == Some(u64::from(pid))))
        })
        .unwrap_or(false);
    let ready = probe
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    // One-page jobs, one at a time, until the dead renderer's worker takes one.
    let mut answers = Vec::new();
    for _ in 0..6 {
        let r = probe
            .post(format!("{}/jobs/pdf", server.base))
            .json(&json!({"path": "text.pdf", "dpi": 36, "pages": "1"}))
            .send()
            .await;
        let code = r.map(|r| r.status().as_u16()).unwrap_or(0);
        answers.push(code);
        if code != 200 {
            break;
        }
    }
    let reaped = proc_state(pid).is_none_or(|(s, _)| s != 'Z');
    Finding {
        present: zombie || listed || answers.contains(&500),
        name,
        detail: format!(
            "SIGKILL pid {pid}; after 1 s: zombie {zombie}, still in renderer_pids {listed}, /readyz {ready}; next one-page jobs answered {answers:?}; reaped after them {reaped}"
        ),
    }
}

/// Sends an upload over `MAX_UPLOAD_BYTES` the way an HTTP client does
/// (headers, then the body, writing on after an early answer), then a
/// second request on the same connection. Returns the finding's row.
async fn early_answer_probe(server: &Server) -> Finding {
    let name = "413 sent before the body is read: connection closed without `Connection: close`"
        .to_string();
    let addr = server.base.trim_start_matches("http://").to_string();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<(bool, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let total = MAX_UPLOAD_BYTES + MAX_UPLOAD_BYTES / 2;
        let first = MAX_UPLOAD_BYTES + 1;
        write!(
            s,
            "POST /jobs/pdf HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/pdf\r\nContent-Length: {total}\r\n\r\n"
        )?;
        s.write_all(&vec![b'%'; first])?;
        let mut head = Vec::new();
        let mut buf = [0u8; 8192];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let status = head.lines().next().unwrap_or("").to_string();
        let close = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("connection: close"));
        let rest = s.write_all(&vec![b'%'; total - first]);
        std::thread::sleep(Duration::from_millis(200));
        let body = br#"{"text":"second"}"#;
        let second = write!(
            s,
            "POST /jobs/message HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .and_then(|()| s.write_all(body))
        .and_then(|()| s.read(&mut buf));
        let second = match second {
            Ok(0) => "connection closed by the server".to_string(),
            Ok(n) => String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            Err(e) => format!("failed: {e}"),
        };
        Ok((
            close,
            format!(
                "first answer {status:?}, `Connection: close` {close}; rest of body {}; next request on the connection: {second}",
                if rest.is_ok() { "written" } else { "refused" }
            ),
        ))
    })
    .await;
    let (present, detail) = match result {
        Ok(Ok((close, text))) => (!close, text),
        Ok(Err(e)) => (true, format!("probe failed: {e}")),
        Err(e) => (true, format!("probe failed: {e}")),
    };
    Finding {
        name,
        present,
        detail,
    }
}

fn checks_table(out: &mut String, checks: &Checks) {
    let _ = writeln!(
        out,
        "\n### Checks\n\n| check | result | observed |\n|---|---|---|"
    );
    for (name, ok, detail) in &checks.rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} |",
            if *ok { "pass" } else { "**FAIL**" },
            detail.replace('|', "\\|")
        );
    }
}

/// Judges every record; adds one check row per server.
fn judge_all(checks: &mut Checks, log: &Log, servers: &[(&str, bool)], term: Option<Instant>) {
    for (t, (name, limited)) in servers.iter().enumerate() {
        let mut bad: Vec<String> = Vec::new();
        let mut n = 0;
        for r in log.records.iter().filter(|r| r.target == t) {
            n += 1;
            if let Err(e) = judge(r, *limited, term) {
                bad.push(format!("[{} / {}] {e}", r.kind.name(), r.case));
            }
        }
        let detail = if bad.is_empty() {
            format!("{n} requests, each answered once with an expected status")
        } else {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for b in &bad {
                *counts.entry(b.as_str()).or_default() += 1;
            }
            let sample: Vec<String> = counts
                .iter()
                .take(6)
                .map(|(b, c)| format!("{c}x {b}"))
                .collect();
            format!("{} of {n} unexpected: {}", bad.len(), sample.join("; "))
        };
        checks.check(
            format!("server {name}: every answer expected"),
            bad.is_empty(),
            detail,
        );
        for b in bad {
            checks.violations.push(format!("server {name}: {b}"));
        }
    }
    let problems = &log.problems;
    checks.check(
        "answers' content (pages, dpi, fetched PNGs)",
        problems.is_empty(),
        if problems.is_empty() {
            "consistent".to_string()
        } else {
            format!(
                "{} problems: {}",
                problems.len(),
                problems[..problems.len().min(3)].join("; ")
            )
        },
    );
}

fn failed_ids(log: &Log, target: usize) -> Vec<(String, u16, String)> {
    let async_failed = log.async_failed.iter().filter(|_| target == 0).cloned();
    log.records
        .iter()
        .filter(|r| r.target == target)
        .filter_map(|r| match &r.res {
            Res::Http {
                status,
                code,
                job_id: Some(id),
                ..
            } if *status >= 300 => Some((id.clone(), *status, code.clone().unwrap_or_default())),
            _ => None,
        })
        .chain(async_failed)
        .collect()
}

fn disk_checks(
    checks: &mut Checks,
    log: &Log,
    verified: &Verified,
    server: &Server,
    target: usize,
) -> DiskReport {
    let ok_ids: BTreeSet<&str> = log
        .pdf_ok
        .iter()
        .filter(|j| j.target == target)
        .map(|j| j.job_id.as_str())
        .collect();
    let oks: Vec<&PdfOk> = log.pdf_ok[verified.upto..]
        .iter()
        .filter(|j| j.target == target)
        .collect();
    let hung_up = log
        .records
        .iter()
        .filter(|r| r.target == target && matches!(r.res, Res::Dropped))
        .count();
    let no_open = BTreeSet::new();
    let mut report = check_disk(
        &server.out_dir,
        &oks,
        &ok_ids,
        &failed_ids(log, target),
        hung_up,
        if target == 0 {
            &log.async_open
        } else {
            &no_open
        },
    );
    check_inputs(&server.out_dir, log, target, &mut report);
    report.pages_checked += verified.pages[target];
    report.bytes += verified.bytes[target];
    let prefix = format!("{}", server.out_dir.display());
    report.problems.extend(
        verified
            .problems
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .cloned(),
    );
    checks.check(
        format!("server {}: OUTPUT_DIR (no *.partial, pages decode)", server.name),
        report.problems.is_empty(),
        if report.problems.is_empty() {
            format!(
                "{} pages ({} MiB) of {} answers and done async jobs decoded at their reported size; {} job folders left at the end, {} of them of hung-up clients, {} of 504s that finished as the deadline fired, {} of async jobs kept queued; {} uploads kept in .jobs/inputs, all of jobs not ended",
                report.pages_checked,
                report.bytes >> 20,
                ok_ids.len(),
                report.job_dirs,
                report.orphan_dirs,
                report.leftover_504,
                report.open_dirs,
                report.inputs_kept
            )
        } else {
            format!(
                "{} problems: {}",
                report.problems.len(),
                report.problems[..report.problems.len().min(3)].join("; ")
            )
        },
    );
    report
}

/// Follows every accepted async job to a final state with `GET /jobs/{id}`,
/// for up to `ASYNC_FINAL_DEADLINE`; returns the last view of each.
async fn async_views(
    probe: &reqwest::Client,
    server: &Server,
    log: &Log,
) -> BTreeMap<String, Value> {
    let start = Instant::now();
    let mut views = BTreeMap::new();
    let mut pending: Vec<String> = log.async_jobs.iter().map(|j| j.job_id.clone()).collect();
    loop {
        let mut still = Vec::new();
        for id in pending {
            let view = get_json(probe, &format!("{}/jobs/{id}", server.base)).await;
            let ended = view
                .as_ref()
                .is_some_and(|v| v["state"].as_str().is_some_and(is_final));
            if let Some(v) = view {
                views.insert(id.clone(), v);
            }
            if !ended {
                still.push(id);
            }
        }
        pending = still;
        if pending.is_empty() || start.elapsed() > ASYNC_FINAL_DEADLINE {
            return views;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The accepted async jobs' rows in `OUTPUT_DIR/jobs.db` after the server
/// exited, as views: `state`, `result`, `error`.
fn async_rows(out_dir: &Path) -> Result<BTreeMap<String, Value>, String> {
    let path = out_dir.join("jobs.db");
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut query = db
        .prepare("SELECT id, state, result, error FROM jobs")
        .map_err(|e| e.to_string())?;
    let rows = query
        .query_map([], |row| {
            let json = |text: Option<String>| {
                text.and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .unwrap_or(Value::Null)
            };
            Ok((
                row.get::<_, String>(0)?,
                json!({
                    "state": row.get::<_, String>(1)?,
                    "result": json(row.get(2)?),
                    "error": json(row.get(3)?),
                }),
            ))
        })
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
}

/// Judges how every accepted async job ended, from `views` (its last
/// `GET /jobs/{id}`, or its row in the database after a shutdown): final
/// (or, after a shutdown, kept queued for the next start), as its client
/// saw it; cancelled exactly when a DELETE said so; done with the pages
/// asked for (queued for the disk check unless its client already
/// verified them); failed, cancelled or expired with an error and its
/// status, and no unexpected 500. Fills `log.async_*`.
fn judge_async(
    checks: &mut Checks,
    log: &mut Log,
    views: &BTreeMap<String, Value>,
    shutdown: bool,
) {
    let mut problems = Vec::new();
    let jobs = log.async_jobs.clone();
    for job in &jobs {
        let id = &job.job_id;
        let Some(view) = views.get(id) else {
            problems.push(if shutdown {
                format!("job {id} was accepted (202) but is not in jobs.db")
            } else {
                format!("job {id}: GET /jobs/{id} failed")
            });
            continue;
        };
        let state = view["state"].as_str().unwrap_or("?").to_string();
        if !is_final(&state) {
            if shutdown && matches!(state.as_str(), "queued" | "running") {
                log.async_open.insert(id.clone());
            } else {
                problems.push(format!(
                    "job {id} still {state} {} s after the load: {view}",
                    ASYNC_FINAL_DEADLINE.as_secs()
                ));
            }
            if let Some(seen) = &job.seen_final {
                problems.push(format!("job {id} is {state}, its client saw it {seen}"));
            }
            continue;
        }
        log.async_final.insert(id.clone(), state.clone());
        if job.seen_final.as_ref().is_some_and(|s| *s != state) {
            problems.push(format!(
                "job {id} ended {state}, its client saw it {}",
                job.seen_final.as_deref().unwrap_or_default()
            ));
        }
        if job.cancelled != (state == "cancelled") && !(shutdown && state == "cancelled") {
            problems.push(format!(
                "job {id} ended {state}; a DELETE was{} answered 202 cancelled",
                if job.cancelled { "" } else { " not" }
            ));
        }
        if state == "done" {
            let result = &view["result"];
            if !job.pdf {
                if !result.is_object() {
                    problems.push(format!("job {id} done without a result"));
                }
                continue;
            }
            let pages: Vec<(u32, u32, u32, u64)> = result["pages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let n = |k: &str| p[k].as_u64().unwrap_or(0);
                    (
                        n("page") as u32,
                        n("width") as u32,
                        n("height") as u32,
                        n("bytes"),
                    )
                })
                .collect();
            let numbers: Vec<u32> = pages.iter().map(|p| p.0).collect();
            if numbers != job.expected {
                problems.push(format!(
                    "job {id} done with pages {numbers:?}, expected {:?}",
                    job.expected
                ));
            }
            if !job.verified {
                log.pdf_ok.push(PdfOk {
                    target: 0,
                    job_id: id.clone(),
                    pages,
                    at: Instant::now(),
                });
            }
            continue;
        }
        let error = &view["error"];
        let status = error["status"].as_u64().unwrap_or(0) as u16;
        let code = error["error"].as_str().unwrap_or_default().to_string();
        let message = error["message"].as_str().unwrap_or_default();
        let fitting = match state.as_str() {
            "failed" => status == 500 && job.pdf && message.contains("renderer process died"),
            "expired" => status == 504,
            _ => status >= 400,
        };
        if status == 0 || code.is_empty() || !fitting {
            problems.push(format!("job {id} {state} with error {error}"));
        }
        log.async_failed.push((id.clone(), status, code));
    }
    let ended = log.async_final.len();
    checks.check(
        if shutdown {
            "async jobs: ended, or kept queued in jobs.db for the next start"
        } else {
            "async jobs: each reaches a final state, as its client saw it"
        },
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{} accepted: {ended} ended (done with their pages, others with an error and its status), {} kept for the next start",
                jobs.len(),
                log.async_open.len()
            )
        } else {
            format!(
                "{} of {} jobs: {}",
                problems.len(),
                jobs.len(),
                problems[..problems.len().min(3)].join("; ")
            )
        },
    );
    for p in problems {
        checks.violations.push(format!("async jobs: {p}"));
    }
}

/// Async jobs by how they ended (server A).
fn async_table(out: &mut String, log: &Log) {
    let mut counts: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
    for job in &log.async_jobs {
        let state = match log.async_final.get(&job.job_id) {
            Some(s) => s.as_str(),
            None if log.async_open.contains(&job.job_id) => "not ended (kept for the next start)",
            None => "not ended",
        };
        counts.entry(state).or_default()[usize::from(!job.pdf)] += 1;
    }
    let _ = writeln!(
        out,
        "\n### Async jobs by final state (server A)\n\n| state | pdf | message |\n|---|---:|---:|"
    );
    for (state, [pdf, message]) in &counts {
        let _ = writeln!(out, "| {state} | {pdf} | {message} |");
    }
    let pdf = log.async_jobs.iter().filter(|j| j.pdf).count();
    let _ = writeln!(
        out,
        "| **accepted** | **{pdf}** | **{}** |",
        log.async_jobs.len() - pdf
    );
}

// ---------------------------------------------------------------- modes

async fn main_mode(args: &Args, root: &Path, out: &mut String) -> Result<Checks, String> {
    let t0 = Instant::now();
    let duration = args.duration.unwrap_or(Duration::from_secs(60));
    let warmup = Duration::from_secs(5).min(duration);
    let probe = probe_client();
    let fx = Arc::new(Fixtures::load()?);
    let mut a = start_server(&MAIN_SERVER, root, &probe).await?;
    let mut b = start_server(&LIMITED_SERVER, root, &probe).await?;
    let early = early_answer_probe(&a).await;
    let isolate = early.present;
    let servers = [(a.name, a.limited), (b.name, b.limited)];
    let targets = || {
        vec![
            Target {
                base: a.base.clone(),
            },
            Target {
                base: b.base.clone(),
            },
        ]
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let verifying = Arc::new(AtomicBool::new(false));
    let verifier = tokio::spawn(verifier(
        Arc::clone(&log),
        vec![a.out_dir.clone(), b.out_dir.clone()],
        args.keep,
        Arc::clone(&verifying),
    ));
    let mut checks = Checks::new();

    eprintln!(
        "stress: seed {}, servers A {} and B {}, {} s warm-up, {} s load",
        args.seed,
        a.base,
        b.base,
        warmup.as_secs(),
        duration.as_secs()
    );
    // Warm-up: the same mix, no faults; then the baseline.
    {
        let ctx = Ctx::new(targets(), Arc::clone(&log), Arc::clone(&fx), isolate);
        let tasks = spawn_clients(&ctx, args.seed, &[Kind::RateLimited]);
        run_phase(&ctx, tasks, warmup).await;
        eprintln!(
            "stress: warm-up done after {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let base_a = settle(&probe, &a)
        .await
        .map_err(|e| format!("A after warm-up: {e}"))?;
    eprintln!(
        "stress: A settled after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let base_b = settle(&probe, &b)
        .await
        .map_err(|e| format!("B after warm-up: {e}"))?;

    // Load with faults; the injector stops a few seconds early so every
    // renderer it killed has been used (and replaced) before the checks.
    let kills = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let cooldown = (duration / 4).min(Duration::from_secs(5));
    let injector = tokio::spawn(inject_faults(
        a.base.clone(),
        a.pid,
        Rng(args.seed ^ 0xFA17),
        started + duration - cooldown,
        Arc::clone(&kills),
    ));
    {
        let ctx = Ctx::new(targets(), Arc::clone(&log), Arc::clone(&fx), isolate);
        let tasks = spawn_clients(&ctx, args.seed.rotate_left(17), &[Kind::RateLimited]);
        run_phase(&ctx, tasks, duration).await;
        eprintln!(
            "stress: clients stopped after {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let _ = injector.await;
    let load_time = started.elapsed();
    verifying.store(true, Ordering::Relaxed);
    let verified = verifier.await.unwrap_or_default();
    eprintln!(
        "stress: load done; {} pages verified during the run; settling and checking",
        verified.pages.iter().sum::<usize>()
    );
    let checking = Instant::now();

    let mut resources = Vec::new();
    for (server, base) in [(&a, &base_a), (&b, &base_b)] {
        match settle(&probe, server).await {
            Ok(end) => {
                checks.check(
                    format!("server {}: settles (workers, renderers, no zombies, ready)", server.name),
                    true,
                    format!(
                        "in {} ms: live_workers = configured, {} renderer(s) alive and no zombie child",
                        end.took.as_millis(),
                        server.pdf_workers
                    ),
                );
                let (fds, rss, ok) = resources_back(server, base).await;
                eprintln!(
                    "stress: {} resources read after {:.1} s",
                    server.name,
                    t0.elapsed().as_secs_f64()
                );
                checks.check(
                    format!("server {}: fds and RSS back to warm-up level", server.name),
                    ok,
                    format!(
                        "fds {} ({}) -> {fds} ({}) (margin {FD_MARGIN}), RSS {} -> {} MiB (margin {} MiB)",
                        base.fds,
                        base.fd_kinds,
                        fd_kinds(server.pid),
                        base.rss_kb / 1024,
                        rss / 1024,
                        RSS_MARGIN_KB / 1024
                    ),
                );
                resources.push((server.name, base.fds, fds, base.rss_kb, rss, end.status));
            }
            Err(e) => checks.check(
                format!(
                    "server {}: settles (workers, renderers, no zombies, ready)",
                    server.name
                ),
                false,
                e,
            ),
        }
    }

    let mut log = Arc::try_unwrap(log)
        .map_err(|_| "log still shared".to_string())?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    judge_all(&mut checks, &log, &servers, None);
    let views = async_views(&probe, &a, &log).await;
    judge_async(&mut checks, &mut log, &views, false);
    let count = |f: &dyn Fn(&Record) -> bool| log.records.iter().filter(|r| f(r)).count();
    let queue_full = count(&|r| {
        r.target == 0 && matches!(&r.res, Res::Http { code: Some(c), .. } if c == "queue_full")
    });
    checks.check(
        "server A overloaded (some 503 queue_full)",
        queue_full > 0,
        format!("{queue_full} refused with queue_full"),
    );
    let limited = count(&|r| r.target == 1 && matches!(r.res, Res::Http { status: 429, .. }));
    checks.check(
        "server B rate-limits bursts (some 429)",
        limited > 0,
        format!("{limited} answered 429"),
    );
    let died = count(
        &|r| matches!(&r.res, Res::Http { status: 500, message, .. } if message.contains("renderer process died")),
    );
    let injected = kills.load(Ordering::Relaxed);
    checks.check(
        "faults injected",
        injected > 0,
        format!("{injected} renderers SIGKILLed; {died} jobs answered 500 renderer died"),
    );
    eprintln!(
        "stress: settled and judged in {:.1} s; checking OUTPUT_DIRs",
        checking.elapsed().as_secs_f64()
    );
    let (disk_a, disk_b) = {
        let log = &log;
        let verified = &verified;
        let (a_ref, b_ref) = (&a, &b);
        let mut c1 = Checks::new();
        let mut c2 = Checks::new();
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| disk_checks(&mut c1, log, verified, a_ref, 0));
            let hb = s.spawn(|| disk_checks(&mut c2, log, verified, b_ref, 1));
            (ha.join(), hb.join())
        });
        checks.rows.extend(c1.rows.into_iter().chain(c2.rows));
        checks
            .violations
            .extend(c1.violations.into_iter().chain(c2.violations));
        (ra.unwrap_or_default(), rb.unwrap_or_default())
    };
    eprintln!(
        "stress: OUTPUT_DIRs checked ({} pages) after {:.1} s",
        disk_a.pages_checked + disk_b.pages_checked,
        checking.elapsed().as_secs_f64()
    );
    let leftover_504 = disk_a.leftover_504 + disk_b.leftover_504;

    // Known issues: observed and reported, not counted as violations.
    let mut findings = vec![early];
    eprintln!("stress: probes at {:.1} s", t0.elapsed().as_secs_f64());
    findings.push(idle_kill_probe(&probe, &a).await);
    let error_504 = strip_ansi(&std::fs::read_to_string(&a.log_path).unwrap_or_default())
        .lines()
        .filter(|l| {
            l.contains("ERROR")
                && (l.contains("error=\"timeout\"") || l.contains("error=\"queue_timeout\""))
        })
        .count();
    let answered_504 = count(&|r| r.target == 0 && matches!(r.res, Res::Http { status: 504, .. }));
    findings.push(Finding {
        name: "504 answers logged at ERROR (README: expected 504s are not)".into(),
        present: error_504 > 0,
        detail: format!("{error_504} ERROR lines for {answered_504} answers 504 (RUST_LOG=warn)"),
    });
    findings.push(Finding {
        name: "504 whose pages stay on disk (job finished as its deadline fired)".into(),
        present: leftover_504 > 0,
        detail: format!("{leftover_504} folders"),
    });

    eprintln!(
        "stress: stopping servers at {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Clean exit of both.
    for server in [&mut a, &mut b] {
        let limit = server.grace + EXIT_MARGIN;
        let (status, took) = terminate(server, limit).await;
        checks.check(
            format!("server {}: exits 0 on SIGTERM when idle", server.name),
            status.is_some_and(|s| s.success()),
            format!("{status:?} after {} ms", took.as_millis()),
        );
    }

    // Report.
    let _ = writeln!(
        out,
        "## Stress run: {} s load (+{} s warm-up), seed {}\n",
        load_time.as_secs(),
        warmup.as_secs(),
        args.seed
    );
    let _ = writeln!(out, "- server A: {}", MAIN_SERVER.describe());
    let _ = writeln!(
        out,
        "- server B (rate-limited class only): {}",
        LIMITED_SERVER.describe()
    );
    let _ = writeln!(
        out,
        "- malformed and rate-limited requests {}",
        if isolate {
            "on fresh connections (the server closes early-answered connections without `Connection: close`)"
        } else {
            "share the other clients' keep-alive connections"
        }
    );
    tables(out, &log, &["A", "B"]);
    async_table(out, &log);
    let _ = writeln!(
        out,
        "\n### Faults and resources\n\n| server | renderer SIGKILLs injected | renderer crashes seen | kills (deadline/cancel) | recycles | renderers started | fds warm-up -> end | RSS MiB warm-up -> end |\n|---|---:|---:|---:|---:|---:|---|---|"
    );
    for (name, fd0, fd1, rss0, rss1, status) in &resources {
        let e = &status["pdf_engine"];
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {fd0} -> {fd1} | {} -> {} |",
            if *name == "A" { injected } else { 0 },
            e["renderer_crashes"],
            e["renderer_kills"],
            e["renderer_recycles"],
            e["renderers_started"],
            rss0 / 1024,
            rss1 / 1024
        );
    }
    let _ = write!(out, "\n{}", findings_table(&findings));
    Ok(checks)
}

async fn shutdown_mode(args: &Args, root: &Path, out: &mut String) -> Result<Checks, String> {
    let duration = args.duration.unwrap_or(Duration::from_secs(10));
    let probe = probe_client();
    let fx = Arc::new(Fixtures::load()?);
    let mut a = start_server(&MAIN_SERVER, root, &probe).await?;
    let isolate = early_answer_probe(&a).await.present;
    let log = Arc::new(Mutex::new(Log::default()));
    let mut checks = Checks::new();
    eprintln!(
        "stress --shutdown: seed {}, server {}, {} s load, then SIGTERM under load",
        args.seed,
        a.base,
        duration.as_secs()
    );
    let kills = Arc::new(AtomicU64::new(0));
    let injector = tokio::spawn(inject_faults(
        a.base.clone(),
        a.pid,
        Rng(args.seed ^ 0x5167),
        Instant::now() + duration,
        Arc::clone(&kills),
    ));
    let ctx = Ctx::new(
        vec![Target {
            base: a.base.clone(),
        }],
        Arc::clone(&log),
        Arc::clone(&fx),
        isolate,
    );
    let tasks = spawn_clients(&ctx, args.seed, &[Kind::Long, Kind::Long]);
    tokio::time::sleep(duration).await;
    let _ = injector.await;
    // SIGTERM once some job has been running for 500 ms, so that the drain
    // has a running job to wait for (and, under this load, queued ones to
    // refuse). Disconnecting clients hang up within 400 ms, so that job's
    // client is still waiting for its answer.
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut renderers: Vec<u32> = Vec::new();
    let wait_start = Instant::now();
    while wait_start.elapsed() < Duration::from_secs(10) {
        if let Some(s) = get_json(&probe, &format!("{}/status", a.base)).await {
            renderers = s["pdf_engine"]["renderer_pids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_u64().map(|p| p as u32))
                        .collect()
                })
                .unwrap_or_default();
            let workers: Vec<&Value> = s["queues"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|q| q["workers"].as_array().into_iter().flatten())
                .collect();
            if workers
                .iter()
                .any(|w| w["running_ms"].as_u64().unwrap_or(0) >= 500)
            {
                running = workers
                    .iter()
                    .filter_map(|w| w["job_id"].as_str().map(str::to_string))
                    .collect();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut descendants: BTreeSet<u32> = children(a.pid).into_iter().map(|c| c.0).collect();
    descendants.extend(&renderers);

    let term = Instant::now();
    ctx.terminated.store(true, Ordering::Relaxed);
    let _ = Command::new("kill")
        .args(["-TERM", &a.pid.to_string()])
        .status();
    let limit = a.grace + EXIT_MARGIN;
    // Keep the clients going while the server drains; note its children
    // as they change (replacements started during the drain).
    let exit = loop {
        if let Ok(Some(status)) = a.child.try_wait() {
            a.exited = Some(status);
            break Some(status);
        }
        if term.elapsed() > limit {
            break None;
        }
        descendants.extend(children(a.pid).into_iter().map(|c| c.0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let exit_after = term.elapsed();
    // Requests after the exit must be refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    drop(ctx);
    let (exit, exit_after) = match exit {
        Some(s) => (Some(s), exit_after),
        None => {
            let r = wait_exit(&mut a, term, limit + Duration::from_secs(5)).await;
            if r.0.is_none() {
                let _ = a.child.kill();
            }
            r
        }
    };

    checks.check(
        "exit code 0",
        exit.is_some_and(|s| s.success()),
        format!("{exit:?}"),
    );
    checks.check(
        format!(
            "exits within SHUTDOWN_GRACE_MS + {} s",
            EXIT_MARGIN.as_secs()
        ),
        exit.is_some() && exit_after <= limit,
        format!(
            "{} ms after SIGTERM (grace {} ms)",
            exit_after.as_millis(),
            a.grace.as_millis()
        ),
    );
    let left: Vec<u32> = descendants
        .iter()
        .copied()
        .filter(|&pid| proc_state(pid).is_some_and(|(s, _)| s != 'Z') && is_renderer(pid))
        .collect();
    checks.check(
        "renderers gone with the server",
        left.is_empty(),
        format!(
            "{} renderer pids seen, {} still running {left:?}",
            descendants.len(),
            left.len()
        ),
    );

    let mut log = Arc::try_unwrap(log)
        .map_err(|_| "log still shared".to_string())?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    judge_all(&mut checks, &log, &[(a.name, false)], Some(term));
    match async_rows(&a.out_dir) {
        Ok(rows) => judge_async(&mut checks, &mut log, &rows, true),
        Err(e) => checks.check(
            "async jobs: ended, or kept queued in jobs.db for the next start",
            false,
            e,
        ),
    }

    // In flight at SIGTERM, and after it.
    let mut in_flight: BTreeMap<String, usize> = BTreeMap::new();
    let mut after: BTreeMap<String, usize> = BTreeMap::new();
    let mut window: BTreeMap<String, usize> = BTreeMap::new();
    for r in &log.records {
        let label = outcome_label(&r.res);
        let is_job = matches!(
            r.expect,
            Expect::Job { .. } | Expect::JobInvalid { .. } | Expect::Async
        );
        match phase(r, Some(term)) {
            Phase::InFlight if is_job => *in_flight.entry(label).or_default() += 1,
            Phase::Window if is_job => *window.entry(label).or_default() += 1,
            Phase::After if is_job => *after.entry(label).or_default() += 1,
            _ => {}
        }
    }
    let flying: usize = in_flight.values().sum();
    let finished_or_503 = in_flight
        .iter()
        .filter(|(l, _)| l.starts_with("200") || l.as_str() == "503 shutting_down")
        .map(|(_, n)| n)
        .sum::<usize>();
    checks.check(
        "jobs in flight at SIGTERM finish (200) or get 503",
        flying > 0,
        format!("{flying} in flight: {finished_or_503} answered 200 or 503 shutting_down, the rest with their own expected status (judged above)"),
    );
    let refused: usize = after
        .iter()
        .filter(|(l, _)| l.as_str() == "503 shutting_down" || l.starts_with("connection "))
        .map(|(_, n)| n)
        .sum();
    // A client that hung up on purpose before any answer chose not to
    // learn it: neither a refusal nor a violation.
    let after_total: usize = after
        .iter()
        .filter(|(l, _)| l.as_str() != "dropped on purpose")
        .map(|(_, n)| n)
        .sum();
    checks.check(
        "new jobs after SIGTERM get 503 or connection refused",
        after_total > 0 && refused == after_total,
        format!("{refused} of {after_total}"),
    );
    // Jobs that were running at SIGTERM: answered with their own outcome
    // (200, their own 4xx such as an unreadable PDF's 422, 500 if their
    // renderer was killed, 504 at their deadline), never dropped by the
    // shutdown (503) or cut off (connection error).
    let mut running_answers: BTreeMap<String, usize> = BTreeMap::new();
    for r in &log.records {
        if let Res::Http {
            job_id: Some(id), ..
        } = &r.res
        {
            if running.contains(id) {
                *running_answers.entry(outcome_label(&r.res)).or_default() += 1;
            }
        }
    }
    let answered: usize = running_answers.values().sum();
    let running_bad: usize = running_answers
        .iter()
        .filter(|(l, _)| l.starts_with("503") || l.starts_with("connection "))
        .map(|(_, n)| n)
        .sum();
    checks.check(
        "jobs running at SIGTERM finish with their own outcome",
        answered > 0 && running_bad == 0,
        format!(
            "{} running, {answered} of them answered (others' clients hung up): {running_answers:?}",
            running.len()
        ),
    );
    disk_checks(&mut checks, &log, &Verified::default(), &a, 0);

    let _ = writeln!(
        out,
        "## Shutdown run: SIGTERM after {} s of load, seed {}\n",
        duration.as_secs(),
        args.seed
    );
    let _ = writeln!(out, "- server: {}", MAIN_SERVER.describe());
    let _ = writeln!(
        out,
        "- renderer SIGKILLs injected before SIGTERM: {}",
        kills.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "- exit: {exit:?} {} ms after SIGTERM\n",
        exit_after.as_millis()
    );
    let _ = writeln!(
        out,
        "### Job requests around SIGTERM\n\n| sent | answer | n |\n|---|---|---:|"
    );
    for (label, map) in [
        (
            format!(
                "> {} ms before, answered after (in flight)",
                SIGTERM_WINDOW.as_millis()
            ),
            &in_flight,
        ),
        (format!("within {} ms", SIGTERM_WINDOW.as_millis()), &window),
        (format!("> {} ms after", SIGTERM_WINDOW.as_millis()), &after),
    ] {
        for (answer, n) in map {
            let _ = writeln!(out, "| {label} | {answer} | {n} |");
        }
    }
    tables(out, &log, &["A"]);
    async_table(out, &log);
    Ok(checks)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stress: {e}");
            std::process::exit(2);
        }
    };
    let root = std::env::temp_dir().join(format!("jobserver-stress-{}", uuid::Uuid::new_v4()));
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("stress: {}: {e}", root.display());
        std::process::exit(2);
    }
    let mut out = String::new();
    let result = if args.shutdown {
        shutdown_mode(&args, &root, &mut out).await
    } else {
        main_mode(&args, &root, &mut out).await
    };
    let checks = match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "stress: cannot run: {e}\n(files kept in {})",
                root.display()
            );
            std::process::exit(1);
        }
    };
    checks_table(&mut out, &checks);
    let passed = checks.violations.is_empty();
    if passed {
        let _ = writeln!(out, "\n**PASS**");
    } else {
        let _ = writeln!(
            out,
            "\n**FAIL**: {} violations (first 30):\n",
            checks.violations.len()
        );
        for v in checks.violations.iter().take(30) {
            let _ = writeln!(out, "- {v}");
        }
    }
    println!("{out}");
    if passed && !args.keep {
        let removing = Instant::now();
        let _ = std::fs::remove_dir_all(&root);
        eprintln!(
            "stress: removed the run's files in {:.1} s",
            removing.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "stress: server logs and OUTPUT_DIRs kept in {}",
            root.display()
        );
        if !passed {
            for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                for log in std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let path = log.path();
                    if path.extension().is_some_and(|e| e == "log") {
                        eprintln!("--- {} (tail)\n{}", path.display(), tail(&path, 20));
                    }
                }
            }
        }
    }
    std::process::exit(if passed { 0 } else { 1 });
}
