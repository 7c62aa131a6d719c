//! The two servers under test: their settings, their start (on a free port,
//! retried if the port was taken), their log, and SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::common::server::{self, Launch, NotReady, Process};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Extra time the server may take to exit beyond `SHUTDOWN_GRACE_MS`:
/// killing and reaping renderers, joining threads (polled every 5 ms) and
/// scheduling delay on a loaded two-core machine.
pub const EXIT_MARGIN: Duration = Duration::from_secs(3);
/// How long a server may take to answer `/readyz` 200 at start.
const READY_DEADLINE: Duration = Duration::from_secs(30);

pub const MAX_UPLOAD_BYTES: usize = 1 << 20;
pub const PDF_TIMEOUT_MS: u64 = 8_000;
pub const GRACE_MS: u64 = 5_000;
/// Budgets of async jobs, queue wait included (past them: `expired`):
/// short enough that a client reading a job's events to the end is
/// answered within its own timeout.
pub const PDF_ASYNC_TIMEOUT_MS: u64 = 12_000;
pub const MESSAGE_ASYNC_TIMEOUT_MS: u64 = 8_000;

/// Connection bounds, short so that the hostile phase sees each of them
/// act many times within a run: a request head must arrive within
/// `HEADER_READ_TIMEOUT_MS`, a body may pause `BODY_IDLE_TIMEOUT_MS` and
/// take `BODY_TIMEOUT_MS` in all. The normal clients send a head and its
/// body at once, far inside them.
pub const HEADER_READ_TIMEOUT_MS: u64 = 1_500;
pub const BODY_IDLE_TIMEOUT_MS: u64 = 1_500;
pub const BODY_TIMEOUT_MS: u64 = 5_000;
/// Connections one client address may hold: the attacker (127.0.0.2)
/// holds it all the time; the normal clients (127.0.0.1) stay well under
/// it (about 15 client tasks, a burst of 12, their pooled connections).
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 64;
/// Request-body bytes all clients may be sending at once: two uploads at
/// the limit, so that two or three of the flood's stalled uploads use it
/// up; the normal clients' bodies (at most 170 KB, a few at a time) fit.
pub const MAX_UPLOAD_BYTES_IN_FLIGHT: usize = 2 * MAX_UPLOAD_BYTES;

/// One jobserver process under test.
pub struct Server {
    pub name: &'static str,
    pub process: Process,
    pub pid: u32,
    pub base: String,
    pub out_dir: PathBuf,
    pub log_path: PathBuf,
    pub pdf_workers: usize,
    pub grace: Duration,
    pub limited: bool,
}

pub struct ServerSpec {
    pub name: &'static str,
    pub message_workers: usize,
    pub message_capacity: usize,
    pub pdf_workers: usize,
    pub pdf_capacity: usize,
    pub rate_per_minute: u32,
    pub rate_burst: u32,
}

pub const MAIN_SERVER: ServerSpec = ServerSpec {
    name: "A",
    message_workers: 1,
    message_capacity: 4,
    pdf_workers: 2,
    pdf_capacity: 4,
    rate_per_minute: 0,
    rate_burst: 5,
};

pub const LIMITED_SERVER: ServerSpec = ServerSpec {
    name: "B",
    message_workers: 1,
    message_capacity: 2,
    pdf_workers: 1,
    pdf_capacity: 2,
    rate_per_minute: 60,
    rate_burst: 5,
};

/// A third, small server for the probe of a shutdown with a half-sent
/// request head open ([`crate::probes::slow_head_shutdown_probe`]).
pub const PROBE_SERVER: ServerSpec = ServerSpec {
    name: "C",
    message_workers: 1,
    message_capacity: 1,
    pdf_workers: 1,
    pdf_capacity: 1,
    rate_per_minute: 0,
    rate_burst: 5,
};

impl ServerSpec {
    /// The server's environment, but for `BIND_ADDR`.
    fn env(&self, out_dir: &Path) -> Vec<(&'static str, String)> {
        vec![
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
            (
                "MAX_UPLOAD_BYTES_IN_FLIGHT",
                MAX_UPLOAD_BYTES_IN_FLIGHT.to_string(),
            ),
            ("HEADER_READ_TIMEOUT_MS", HEADER_READ_TIMEOUT_MS.to_string()),
            ("BODY_IDLE_TIMEOUT_MS", BODY_IDLE_TIMEOUT_MS.to_string()),
            ("BODY_TIMEOUT_MS", BODY_TIMEOUT_MS.to_string()),
            (
                "MAX_CONNECTIONS_PER_CLIENT",
                MAX_CONNECTIONS_PER_CLIENT.to_string(),
            ),
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

    pub fn describe(&self) -> String {
        format!(
            "MESSAGE_WORKERS={} MESSAGE_QUEUE_CAPACITY={} PDF_WORKERS={} PDF_QUEUE_CAPACITY={} PDF_TIMEOUT_MS={} PDF_ASYNC_TIMEOUT_MS={} MESSAGE_ASYNC_TIMEOUT_MS={} RATE_LIMIT_PER_MINUTE={} RATE_LIMIT_BURST={} MAX_UPLOAD_BYTES={} PDF_RENDERER_MAX_JOBS=40 SHUTDOWN_GRACE_MS={} MAX_UPLOAD_BYTES_IN_FLIGHT={} HEADER_READ_TIMEOUT_MS={} BODY_IDLE_TIMEOUT_MS={} BODY_TIMEOUT_MS={} MAX_CONNECTIONS_PER_CLIENT={}",
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
            GRACE_MS,
            MAX_UPLOAD_BYTES_IN_FLIGHT,
            HEADER_READ_TIMEOUT_MS,
            BODY_IDLE_TIMEOUT_MS,
            BODY_TIMEOUT_MS,
            MAX_CONNECTIONS_PER_CLIENT
        )
    }
}

/// Starts a server and waits for `/readyz`; retries on another port if the
/// one picked was taken in between. The caller's server variables are
/// removed from its environment, so they cannot change the test.
pub async fn start_server(
    spec: &ServerSpec,
    root: &Path,
    probe: &reqwest::Client,
) -> Result<Server, String> {
    let bin = server::binary(&Path::new(REPO).join("target"));
    if !bin.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release --bin jobserver` (or set JOBSERVER_BIN)",
            bin.display()
        ));
    }
    let dir = root.join(spec.name);
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let env = spec.env(&out_dir);
    let mut last_error = String::new();
    for attempt in 0..3 {
        let port = server::free_port()?;
        let launch = Launch {
            bin: &bin,
            dir: Some(Path::new(REPO)),
            clean_env: true,
            env: &env,
            log: dir.join(format!("server-{attempt}.log")),
        };
        let mut process = Process::spawn(&launch, port)?;
        match process.wait_ready(probe, READY_DEADLINE).await {
            Ok(()) => {
                return Ok(Server {
                    name: spec.name,
                    pid: process.pid,
                    base: process.base.clone(),
                    log_path: process.log.clone(),
                    process,
                    out_dir,
                    pdf_workers: spec.pdf_workers,
                    grace: Duration::from_millis(GRACE_MS),
                    limited: spec.rate_per_minute > 0,
                })
            }
            Err(NotReady::Exited(status)) => {
                last_error = format!(
                    "server {} exited at start ({status}); log: {}",
                    spec.name,
                    tail(&process.log, 10)
                );
            }
            Err(NotReady::Timeout) => {
                return Err(format!(
                    "server {} not ready within {} s; log: {}",
                    spec.name,
                    READY_DEADLINE.as_secs(),
                    tail(&process.log, 10)
                ));
            }
        }
    }
    Err(last_error)
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGTERM and waits for the exit, up to `limit`.
pub async fn terminate(server: &mut Server, limit: Duration) -> (Option<ExitStatus>, Duration) {
    let sent = Instant::now();
    server.process.sigterm();
    let status = server.process.wait_exit(sent, limit).await;
    (status, sent.elapsed())
}
