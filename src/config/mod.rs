//! Configuration: every knob of the server, its default, and how it is read
//! from the environment.
//!
//! `Config::default()` holds the defaults (each a named constant below),
//! `Config::from_env()` overrides them from environment variables and
//! `Config::validate()` refuses values the server cannot run with. The binary
//! calls `from_env` once at start and logs the effective config; tests build
//! `Config` values directly and never touch the environment.
//!
//! Worker types share one naming pattern: `<TYPE>_WORKERS`,
//! `<TYPE>_QUEUE_CAPACITY`, `<TYPE>_TIMEOUT_MS`, `<TYPE>_QUEUE_TIMEOUT_MS`,
//! `<TYPE>_ASYNC_TIMEOUT_MS`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

mod cluster;
pub use cluster::{ClusterConfig, Dispatch, LaneConfig};

/// Address the HTTP server listens on.
pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8000";
/// Folder whose files `{"path": ...}` requests may name.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Folder renders, the job database and kept uploads are written to.
pub const DEFAULT_OUTPUT_DIR: &str = "out";
/// Free space (MiB) the output folder's filesystem must keep for PDF jobs
/// to be taken; 0 turns the check off.
pub const DEFAULT_MIN_FREE_DISK_MB: u64 = 512;
/// Message workers: one thread is plenty for a demonstration job type.
pub const DEFAULT_MESSAGE_WORKERS: usize = 1;
/// Jobs that may wait for a message worker before new ones get 503.
pub const DEFAULT_MESSAGE_QUEUE_CAPACITY: usize = 10;
/// Total time a message job may take, queue wait included.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 5_000;
/// Total time an async message job may take, queue wait included.
pub const DEFAULT_MESSAGE_ASYNC_TIMEOUT_MS: u64 = 60_000;
/// Total time an async PDF job may take, queue wait included: long
/// documents are what async mode is for.
pub const DEFAULT_PDF_ASYNC_TIMEOUT_MS: u64 = 600_000;
/// How long a finished async job's record and any job's output are kept.
pub const DEFAULT_RESULT_TTL_SECS: u64 = 3_600;
/// Async job records kept at once (queued, running and finished within
/// the TTL); past it, async submits get 503.
pub const DEFAULT_MAX_TRACKED_JOBS: u64 = 10_000;
/// Requests per minute per client IP on job routes; 0 turns limiting off.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;
/// Requests a client may send at once before the per-minute rate applies.
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 50;
/// Time running jobs get to finish after SIGTERM / Ctrl-C.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Largest JSON body accepted on job routes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Jobs that may wait per PDF worker before new ones get 503.
pub const DEFAULT_PDF_QUEUE_PER_WORKER: usize = 4;
/// Total time a PDF job may take, queue wait included.
pub const DEFAULT_PDF_TIMEOUT_MS: u64 = 60_000;
/// Resolution used when a request names none.
pub const DEFAULT_PDF_DPI: u32 = 200;
/// Highest resolution a request may ask for.
pub const DEFAULT_PDF_MAX_DPI: u32 = 600;
/// Most pages one job may render.
pub const DEFAULT_PDF_MAX_PAGES: u32 = 1_000;
/// Most pixels one rendered page may have (checked before rendering):
/// 40 MP holds an A4 page at 600 dpi (35 MP) and refuses poster-sized pages.
pub const DEFAULT_PDF_MAX_PIXELS: u64 = 40_000_000;
/// Request-body bytes all job requests together may be sending at once.
pub const DEFAULT_MAX_UPLOAD_BYTES_IN_FLIGHT: u64 = 1024 * 1024 * 1024;
/// Largest PDF upload accepted.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 100 * 1024 * 1024;
/// Bytes of an upload held in memory; past them it is streamed to a spool
/// file in the output folder (0 spools every upload).
pub const DEFAULT_UPLOAD_SPOOL_THRESHOLD_BYTES: usize = 1024 * 1024;
/// Jobs a renderer process serves before it is replaced by a fresh one.
pub const DEFAULT_PDF_RENDERER_MAX_JOBS: u32 = 500;
/// Resident memory above which a renderer is replaced after its job.
pub const DEFAULT_PDF_RENDERER_MAX_RSS_MB: u64 = 512;
/// Address-space cap of a renderer process (`RLIMIT_AS`); a render that
/// needs more fails that one job instead of exhausting the machine.
pub const DEFAULT_PDF_RENDERER_MEMORY_LIMIT_MB: u64 = 4096;
/// Time a client has to send a whole request head, from its first byte
/// (on a new connection: from the accept).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Time an idle keep-alive connection is kept for its next request.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_MS: u64 = 60_000;
/// Longest pause between two pieces of a request body.
pub const DEFAULT_BODY_IDLE_TIMEOUT_MS: u64 = 10_000;
/// Longest a whole request body may take to arrive (100 MB at 1 MB/s fits).
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 120_000;
/// Client connections open at once; lowered at start to what the process's
/// file-descriptor limit allows beside the server's own files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections one client address may hold open at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
// PDF_RENDERER_MEMORY_BUDGET_MB has no constant: unset, it is derived from
// the memory this process may use (`render::memory::default_budget_mb`).

/// Every environment variable the server reads (`RUST_LOG` and
/// `LOG_FORMAT` by the telemetry, the rest here), for tools that start a
/// server and must keep the caller's environment out of it. `OUT_DIR` is
/// the old name of `OUTPUT_DIR`.
pub const ALL_VARS: &[&str] = &[
    "BIND_ADDR",
    "DATA_DIR",
    "OUTPUT_DIR",
    "OUT_DIR",
    "MIN_FREE_DISK_MB",
    "MESSAGE_WORKERS",
    "MESSAGE_QUEUE_CAPACITY",
    "MESSAGE_TIMEOUT_MS",
    "MESSAGE_QUEUE_TIMEOUT_MS",
    "MESSAGE_ASYNC_TIMEOUT_MS",
    "PDF_WORKERS",
    "PDF_QUEUE_CAPACITY",
    "PDF_TIMEOUT_MS",
    "PDF_QUEUE_TIMEOUT_MS",
    "PDF_ASYNC_TIMEOUT_MS",
    "PDF_DEFAULT_DPI",
    "PDF_MAX_DPI",
    "PDF_MAX_PAGES",
    "PDF_MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_BYTES_IN_FLIGHT",
    "UPLOAD_SPOOL_THRESHOLD_BYTES",
    "PDFIUM_LIB_PATH",
    "PDF_RENDERER_MAX_JOBS",
    "PDF_RENDERER_MAX_RSS_MB",
    "PDF_RENDERER_MEMORY_LIMIT_MB",
    "PDF_RENDERER_MEMORY_BUDGET_MB",
    "PDF_FAN_OUT",
    "RATE_LIMIT_PER_MINUTE",
    "RATE_LIMIT_BURST",
    "SHUTDOWN_GRACE_MS",
    "MAX_BODY_BYTES",
    "RESULT_TTL_SECS",
    "MAX_TRACKED_JOBS",
    "HEADER_READ_TIMEOUT_MS",
    "KEEP_ALIVE_TIMEOUT_MS",
    "BODY_IDLE_TIMEOUT_MS",
    "BODY_TIMEOUT_MS",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_CLIENT",
    "TRUSTED_PROXIES",
    "API_KEYS",
    "API_KEYS_FILE",
    "TENANT_WEIGHTS",
    "ADMIN_BIND_ADDR",
    "NATS_URL",
    "PAGE_STORE_URL",
    "CLUSTER_PREFIX",
    "CLUSTER_ACK_WAIT_MS",
    "CLUSTER_MAX_DELIVER",
    "CLUSTER_INLINE_MAX_BYTES",
    "CLUSTER_PUBLISH_TIMEOUT_MS",
    "CLUSTER_REPLICAS",
    "CLUSTER_MESSAGE_CAPACITY",
    "CLUSTER_PDF_CAPACITY",
    "MESSAGE_DISPATCH",
    "PDF_DISPATCH",
    "AWS_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "RUST_LOG",
    "LOG_FORMAT",
];

/// One worker type's pool and queue settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolConfig {
    /// Dedicated OS threads serving this queue.
    pub workers: usize,
    /// Jobs that may wait in the queue; the next one is refused with 503.
    pub queue_capacity: usize,
    /// Longest a job may wait in the queue before it is answered 504 unstarted.
    pub queue_timeout: Duration,
    /// Longest a job may take from admission to answer (queue wait included).
    pub timeout: Duration,
    /// The same for an async job, whose caller does not wait on a connection.
    pub async_timeout: Duration,
}

impl PoolConfig {
    /// A pool whose queue budget equals its total budget.
    pub fn new(workers: usize, queue_capacity: usize, timeout: Duration) -> Self {
        PoolConfig {
            workers,
            queue_capacity,
            queue_timeout: timeout,
            timeout,
            async_timeout: timeout,
        }
    }

    pub fn with_async_timeout(mut self, async_timeout: Duration) -> Self {
        self.async_timeout = async_timeout;
        self
    }
}

/// Async jobs: how long results live and how many records may exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobsConfig {
    /// Finished async jobs (record and output) and sync jobs' output are
    /// removed this long after they finished.
    pub result_ttl: Duration,
    pub max_tracked: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            result_ttl: Duration::from_secs(DEFAULT_RESULT_TTL_SECS),
            max_tracked: DEFAULT_MAX_TRACKED_JOBS,
        }
    }
}

/// Per-client-IP rate limit on job routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimitConfig {
    /// Sustained requests per minute; 0 turns limiting off.
    pub per_minute: u32,
    /// Requests allowed at once before the sustained rate applies.
    pub burst: u32,
}

impl RateLimitConfig {
    pub fn enabled(&self) -> bool {
        self.per_minute > 0
    }
}

/// Bounds on client connections, so that slow or greedy clients cannot
/// exhaust the server's sockets and file descriptors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionConfig {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Peers whose `Forwarded` / `X-Forwarded-For` name the client: the
    /// rightmost address not in this list is the client's. Their own
    /// connections count only against `max_connections`.
    #[serde(serialize_with = "display_each")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            keep_alive_timeout: Duration::from_millis(DEFAULT_KEEP_ALIVE_TIMEOUT_MS),
            body_idle_timeout: Duration::from_millis(DEFAULT_BODY_IDLE_TIMEOUT_MS),
            body_timeout: Duration::from_millis(DEFAULT_BODY_TIMEOUT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ConnectionConfig {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

fn display_each<S: serde::Serializer>(items: &[ipnet::IpNet], out: S) -> Result<S::Ok, S::Error> {
    out.collect_seq(items.iter().map(ToString::to_string))
}

/// `TRUSTED_PROXIES`: addresses and CIDR ranges, comma-separated.
fn parse_proxies(raw: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "TRUSTED_PROXIES",
                        raw,
                        format!("{item:?} is not an address or CIDR range"),
                    )
                })
        })
        .collect()
}

/// The PDF worker type: its pool, its limits, and its renderer processes.
#[derive(Clone, Debug, Serialize)]
pub struct PdfConfig {
    pub pool: PoolConfig,
    pub default_dpi: u32,
    pub max_dpi: u32,
    pub max_pages: u32,
    pub max_pixels: u64,
    pub max_upload_bytes: usize,
    /// Upload bytes held in memory; a larger upload is spooled to a file.
    pub upload_spool_threshold_bytes: usize,
    /// `libpdfium.so`, or a folder holding it. `None`: the copy fetched at build.
    pub pdfium_lib_path: Option<PathBuf>,
    /// Program run as the renderer (`<exe> --renderer`). `None`: this binary.
    pub renderer_exe: Option<PathBuf>,
    pub renderer_max_jobs: u32,
    pub renderer_max_rss_mb: u64,
    /// Address-space cap of one renderer, before the budget's share.
    pub renderer_memory_limit_mb: u64,
    /// What all renderers together may map; 0: no budget. Unset, derived
    /// from the memory this process may use (see `render::memory`).
    pub renderer_memory_budget_mb: u64,
    /// Spread a lone job's pages over idle workers' renderers.
    pub fan_out: bool,
}

impl PdfConfig {
    /// The library to load: the configured path (a file, or a folder holding
    /// `libpdfium.so`), else the copy the build fetched.
    pub fn pdfium_library(&self) -> PathBuf {
        let name = "libpdfium.so";
        match &self.pdfium_lib_path {
            Some(path) if path.is_dir() => path.join(name),
            Some(path) => path.clone(),
            None => PathBuf::from(option_env!("JOBSERVER_DEFAULT_PDFIUM_DIR").unwrap_or(".pdfium"))
                .join(name),
        }
    }

    /// Each renderer's address-space cap in MiB: the smaller of
    /// `PDF_RENDERER_MEMORY_LIMIT_MB` and the budget's share per worker.
    pub fn renderer_cap_mb(&self) -> u64 {
        crate::render::memory::per_renderer_mb(
            self.renderer_memory_limit_mb,
            self.renderer_memory_budget_mb,
            self.pool.workers,
        )
    }
}

/// Cores this process may use, 1 if unknown.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for PdfConfig {
    fn default() -> Self {
        let workers = available_cores();
        PdfConfig {
            pool: PoolConfig::new(
                workers,
                workers * DEFAULT_PDF_QUEUE_PER_WORKER,
                Duration::from_millis(DEFAULT_PDF_TIMEOUT_MS),
            )
            .with_async_timeout(Duration::from_millis(DEFAULT_PDF_ASYNC_TIMEOUT_MS)),
            default_dpi: DEFAULT_PDF_DPI,
            max_dpi: DEFAULT_PDF_MAX_DPI,
            max_pages: DEFAULT_PDF_MAX_PAGES,
            max_pixels: DEFAULT_PDF_MAX_PIXELS,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            upload_spool_threshold_bytes: DEFAULT_UPLOAD_SPOOL_THRESHOLD_BYTES,
            pdfium_lib_path: None,
            renderer_exe: None,
            renderer_max_jobs: DEFAULT_PDF_RENDERER_MAX_JOBS,
            renderer_max_rss_mb: DEFAULT_PDF_RENDERER_MAX_RSS_MB,
            renderer_memory_limit_mb: DEFAULT_PDF_RENDERER_MEMORY_LIMIT_MB,
            renderer_memory_budget_mb: crate::render::memory::default_budget_mb(),
            fan_out: true,
        }
    }
}

/// Everything the server needs to start.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub bind_addr: SocketAddr,
    /// Folder whose files `{"path": ...}` requests may name.
    pub data_dir: PathBuf,
    /// Folder renders are written to, one sub-folder per job; also holds
    /// the job database and `.jobs/`.
    pub output_dir: PathBuf,
    /// Free MiB the output folder's filesystem must keep for PDF jobs to
    /// be taken (below it: `/readyz` fails, submits get 503); 0: no check.
    pub min_free_disk_mb: u64,
    pub message: PoolConfig,
    pub pdf: PdfConfig,
    pub rate_limit: RateLimitConfig,
    pub shutdown_grace: Duration,
    pub max_body_bytes: usize,
    /// Request-body bytes admitted job requests may be sending at once.
    pub max_upload_bytes_in_flight: u64,
    pub jobs: JobsConfig,
    pub connections: ConnectionConfig,
    /// API keys (`API_KEYS`, `API_KEYS_FILE`) and their weights
    /// (`TENANT_WEIGHTS`); none: the job routes are open.
    pub tenants: crate::tenants::Tenants,
    /// A second listener for `/status`, `/metrics` and the dashboard
    /// (`ADMIN_BIND_ADDR`); `None`: they are served on `bind_addr`.
    pub admin_bind_addr: Option<SocketAddr>,
    /// Cluster mode (`NATS_URL`, `PAGE_STORE_URL`, `CLUSTER_*`).
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind_addr: DEFAULT_BIND_ADDR
                .parse()
                .expect("DEFAULT_BIND_ADDR is a valid socket address"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            output_dir: PathBuf::from(DEFAULT_OUTPUT_DIR),
            min_free_disk_mb: DEFAULT_MIN_FREE_DISK_MB,
            message: PoolConfig::new(
                DEFAULT_MESSAGE_WORKERS,
                DEFAULT_MESSAGE_QUEUE_CAPACITY,
                Duration::from_millis(DEFAULT_MESSAGE_TIMEOUT_MS),
            )
            .with_async_timeout(Duration::from_millis(DEFAULT_MESSAGE_ASYNC_TIMEOUT_MS)),
            pdf: PdfConfig::default(),
            rate_limit: RateLimitConfig {
                per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
                burst: DEFAULT_RATE_LIMIT_BURST,
            },
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes_in_flight: DEFAULT_MAX_UPLOAD_BYTES_IN_FLIGHT,
            jobs: JobsConfig::default(),
            connections: ConnectionConfig::default(),
            tenants: crate::tenants::Tenants::default(),
            admin_bind_addr: None,
            cluster: ClusterConfig::new(
                DEFAULT_MESSAGE_WORKERS + DEFAULT_MESSAGE_QUEUE_CAPACITY,
                available_cores() * (1 + DEFAULT_PDF_QUEUE_PER_WORKER),
            ),
        }
    }
}

impl Config {
    /// The largest request body any job route takes.
    pub fn largest_body(&self) -> usize {
        self.pdf.max_upload_bytes.max(self.max_body_bytes)
    }
}

/// A configuration value the server refuses to start with.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(var: &str, value: impl ToString, reason: impl ToString) -> Self {
        ConfigError {
            var: var.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl Config {
    /// Defaults overridden by the process environment, then validated.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Defaults overridden by `lookup` (the environment in production, a map
    /// in tests), then validated.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let mut config = Config::default();
        env.parse("BIND_ADDR", &mut config.bind_addr)?;
        env.parse("DATA_DIR", &mut config.data_dir)?;
        config.output_dir = output_dir(&lookup);
        env.parse("MIN_FREE_DISK_MB", &mut config.min_free_disk_mb)?;
        env.pool("MESSAGE", &mut config.message)?;
        let pdf = &mut config.pdf;
        let default_workers = pdf.pool.workers;
        env.pool("PDF", &mut pdf.pool)?;
        if pdf.pool.workers != default_workers && (lookup)("PDF_QUEUE_CAPACITY").is_none() {
            pdf.pool.queue_capacity = pdf.pool.workers * DEFAULT_PDF_QUEUE_PER_WORKER;
        }
        env.parse("PDF_DEFAULT_DPI", &mut pdf.default_dpi)?;
        env.parse("PDF_MAX_DPI", &mut pdf.max_dpi)?;
        env.parse("PDF_MAX_PAGES", &mut pdf.max_pages)?;
        env.parse("PDF_MAX_PIXELS", &mut pdf.max_pixels)?;
        env.parse("MAX_UPLOAD_BYTES", &mut pdf.max_upload_bytes)?;
        let spool = &mut pdf.upload_spool_threshold_bytes;
        env.parse("UPLOAD_SPOOL_THRESHOLD_BYTES", spool)?;
        if let Some(path) = (lookup)("PDFIUM_LIB_PATH").filter(|p| !p.is_empty()) {
            pdf.pdfium_lib_path = Some(PathBuf::from(path));
        }
        env.parse("PDF_RENDERER_MAX_JOBS", &mut pdf.renderer_max_jobs)?;
        env.parse("PDF_RENDERER_MAX_RSS_MB", &mut pdf.renderer_max_rss_mb)?;
        let (limit, budget) = (
            &mut pdf.renderer_memory_limit_mb,
            &mut pdf.renderer_memory_budget_mb,
        );
        env.parse("PDF_RENDERER_MEMORY_LIMIT_MB", limit)?;
        env.parse("PDF_RENDERER_MEMORY_BUDGET_MB", budget)?;
        env.parse("PDF_FAN_OUT", &mut pdf.fan_out)?;
        env.parse("RATE_LIMIT_PER_MINUTE", &mut config.rate_limit.per_minute)?;
        env.parse("RATE_LIMIT_BURST", &mut config.rate_limit.burst)?;
        env.millis("SHUTDOWN_GRACE_MS", &mut config.shutdown_grace)?;
        env.parse("MAX_BODY_BYTES", &mut config.max_body_bytes)?;
        let in_flight = &mut config.max_upload_bytes_in_flight;
        env.parse("MAX_UPLOAD_BYTES_IN_FLIGHT", in_flight)?;
        let mut ttl_secs = config.jobs.result_ttl.as_secs();
        env.parse("RESULT_TTL_SECS", &mut ttl_secs)?;
        config.jobs.result_ttl = Duration::from_secs(ttl_secs);
        env.parse("MAX_TRACKED_JOBS", &mut config.jobs.max_tracked)?;
        let conn = &mut config.connections;
        env.millis("HEADER_READ_TIMEOUT_MS", &mut conn.header_read_timeout)?;
        env.millis("KEEP_ALIVE_TIMEOUT_MS", &mut conn.keep_alive_timeout)?;
        env.millis("BODY_IDLE_TIMEOUT_MS", &mut conn.body_idle_timeout)?;
        env.millis("BODY_TIMEOUT_MS", &mut conn.body_timeout)?;
        env.parse("MAX_CONNECTIONS", &mut conn.max_connections)?;
        env.parse(
            "MAX_CONNECTIONS_PER_CLIENT",
            &mut conn.max_connections_per_client,
        )?;
        if let Some(raw) = (lookup)("TRUSTED_PROXIES") {
            conn.trusted_proxies = parse_proxies(&raw)?;
        }
        config.tenants = crate::tenants::Tenants::from_lookup(&lookup)?;
        if let Some(raw) = (lookup)("ADMIN_BIND_ADDR").filter(|v| !v.trim().is_empty()) {
            let addr = raw
                .trim()
                .parse()
                .map_err(|e| ConfigError::new("ADMIN_BIND_ADDR", &raw, e))?;
            config.admin_bind_addr = Some(addr);
        }
        let (message, pdf) = (&config.message, &config.pdf.pool);
        config.cluster.message.capacity = message.workers + message.queue_capacity;
        config.cluster.pdf.capacity = pdf.workers + pdf.queue_capacity;
        config.cluster.read(&env)?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the server cannot run with, naming the variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_pool("MESSAGE", &self.message)?;
        validate_pool("PDF", &self.pdf.pool)?;
        let pdf = &self.pdf;
        if pdf.max_dpi == 0 {
            return Err(ConfigError::new("PDF_MAX_DPI", 0, "must be at least 1"));
        }
        if pdf.default_dpi == 0 || pdf.default_dpi > pdf.max_dpi {
            return Err(ConfigError::new(
                "PDF_DEFAULT_DPI",
                pdf.default_dpi,
                format!("must be between 1 and PDF_MAX_DPI ({})", pdf.max_dpi),
            ));
        }
        for (var, value) in [
            ("PDF_MAX_PAGES", u64::from(pdf.max_pages)),
            ("PDF_MAX_PIXELS", pdf.max_pixels),
            ("MAX_UPLOAD_BYTES", pdf.max_upload_bytes as u64),
            ("PDF_RENDERER_MAX_JOBS", u64::from(pdf.renderer_max_jobs)),
            ("PDF_RENDERER_MAX_RSS_MB", pdf.renderer_max_rss_mb),
        ] {
            if value == 0 {
                return Err(ConfigError::new(var, 0, "must be at least 1"));
            }
        }
        validate_memory_budget(pdf)?;
        if self.rate_limit.enabled() && self.rate_limit.burst == 0 {
            return Err(ConfigError::new(
                "RATE_LIMIT_BURST",
                0,
                "must be at least 1 while RATE_LIMIT_PER_MINUTE > 0",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("MAX_BODY_BYTES", 0, "must be at least 1"));
        }
        if self.max_upload_bytes_in_flight < self.largest_body() as u64 {
            return Err(ConfigError::new(
                "MAX_UPLOAD_BYTES_IN_FLIGHT",
                self.max_upload_bytes_in_flight,
                format!(
                    "must hold at least one whole body: MAX_UPLOAD_BYTES and MAX_BODY_BYTES ({} bytes)",
                    self.largest_body()
                ),
            ));
        }
        if let Some(admin) = self.admin_bind_addr {
            if admin == self.bind_addr && admin.port() != 0 {
                return Err(ConfigError::new(
                    "ADMIN_BIND_ADDR",
                    admin,
                    "must differ from BIND_ADDR",
                ));
            }
        }
        let conn = &self.connections;
        for (var, value) in [
            (
                "HEADER_READ_TIMEOUT_MS",
                conn.header_read_timeout.as_millis() as u64,
            ),
            (
                "KEEP_ALIVE_TIMEOUT_MS",
                conn.keep_alive_timeout.as_millis() as u64,
            ),
            (
                "BODY_IDLE_TIMEOUT_MS",
                conn.body_idle_timeout.as_millis() as u64,
            ),
            ("BODY_TIMEOUT_MS", conn.body_timeout.as_millis() as u64),
            ("MAX_CONNECTIONS", conn.max_connections as u64),
            (
                "MAX_CONNECTIONS_PER_CLIENT",
                conn.max_connections_per_client as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(var, 0, "must be at least 1"));
            }
        }
        if self.jobs.result_ttl.is_zero() {
            return Err(ConfigError::new("RESULT_TTL_SECS", 0, "must be at least 1"));
        }
        if self.jobs.max_tracked == 0 {
            return Err(ConfigError::new(
                "MAX_TRACKED_JOBS",
                0,
                "must be at least 1",
            ));
        }
        self.cluster.validate()
    }
}

/// `OUTPUT_DIR`, else the old name `OUT_DIR` (with a warning), else the
/// default. cargo sets `OUT_DIR` for every `cargo run` of a package with a
/// build script, pointing into its target folder
/// (`target/<profile>/build/<package>-<hash>/out`): that value is the
/// build's, not the user's, and is ignored.
fn output_dir(lookup: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = lookup("OUTPUT_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match lookup("OUT_DIR").filter(|d| !d.is_empty()) {
        Some(dir) if is_cargo_build_out_dir(Path::new(&dir)) => {
            tracing::debug!(OUT_DIR = %dir, "ignoring cargo's OUT_DIR (a build-script folder)");
            PathBuf::from(DEFAULT_OUTPUT_DIR)
        }
        Some(dir) => {
            tracing::warn!(OUT_DIR = %dir, "OUT_DIR is deprecated: set OUTPUT_DIR instead");
            PathBuf::from(dir)
        }
        None => PathBuf::from(DEFAULT_OUTPUT_DIR),
    }
}

/// True for cargo's build-script output folder: `.../build/<name>-<hash>/out`.
fn is_cargo_build_out_dir(dir: &Path) -> bool {
    let mut up = dir
        .components()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy());
    let (Some(out), Some(unit), Some(build)) = (up.next(), up.next(), up.next()) else {
        return false;
    };
    let hashed = unit
        .rsplit_once('-')
        .is_some_and(|(_, hash)| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    out == "out" && build == "build" && hashed
}

/// A budget must leave every renderer its floor.
fn validate_memory_budget(pdf: &PdfConfig) -> Result<(), ConfigError> {
    use crate::render::memory::MIN_RENDERER_MB;
    let budget = pdf.renderer_memory_budget_mb;
    let workers = pdf.pool.workers;
    // A per-renderer limit set below the floor is the operator's choice;
    // the budget only has to give each renderer that much.
    let floor = MIN_RENDERER_MB.min(pdf.renderer_memory_limit_mb);
    if budget == 0 || pdf.renderer_cap_mb() >= floor {
        return Ok(());
    }
    Err(ConfigError::new(
        "PDF_RENDERER_MEMORY_BUDGET_MB",
        budget,
        format!(
            "split over {workers} renderers (one per PDF_WORKERS) it leaves each {} MB, below the {floor} MB a renderer needs; raise PDF_RENDERER_MEMORY_BUDGET_MB to at least {} (unset, it is 3/4 of the memory this process may use), lower PDF_WORKERS, or set it to 0 for no budget",
            pdf.renderer_cap_mb(),
            floor * workers as u64,
        ),
    ))
}

fn validate_pool(prefix: &str, pool: &PoolConfig) -> Result<(), ConfigError> {
    if pool.workers == 0 {
        return Err(ConfigError::new(
            &format!("{prefix}_WORKERS"),
            0,
            "must be at least 1",
        ));
    }
    if pool.queue_capacity == 0 {
        return Err(ConfigError::new(
            &format!("{prefix}_QUEUE_CAPACITY"),
            0,
            "must be at least 1",
        ));
    }
    if pool.timeout.is_zero() {
        return Err(ConfigError::new(
            &format!("{prefix}_TIMEOUT_MS"),
            0,
            "must be at least 1",
        ));
    }
    if pool.queue_timeout.is_zero() || pool.queue_timeout > pool.timeout {
        return Err(ConfigError::new(
            &format!("{prefix}_QUEUE_TIMEOUT_MS"),
            pool.queue_timeout.as_millis(),
            format!(
                "must be between 1 and {prefix}_TIMEOUT_MS ({})",
                pool.timeout.as_millis()
            ),
        ));
    }
    if pool.async_timeout.is_zero() {
        return Err(ConfigError::new(
            &format!("{prefix}_ASYNC_TIMEOUT_MS"),
            0,
            "must be at least 1",
        ));
    }
    Ok(())
}

/// Typed reads of optional variables; an unset variable keeps the default.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
    }

    fn parse<T>(&self, var: &str, slot: &mut T) -> Result<(), ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        if let Some(raw) = (self.0)(var) {
            *slot = raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::new(var, &raw, e))?;
        }
        Ok(())
    }

    fn millis(&self, var: &str, slot: &mut Duration) -> Result<(), ConfigError> {
        let mut ms = slot.as_millis() as u64;
        self.parse(var, &mut ms)?;
        *slot = Duration::from_millis(ms);
        Ok(())
    }

    /// `<PREFIX>_WORKERS`, `_QUEUE_CAPACITY`, `_TIMEOUT_MS`, `_QUEUE_TIMEOUT_MS`,
    /// `_ASYNC_TIMEOUT_MS`.
    /// The queue budget follows the total budget unless set on its own.
    pub fn pool(&self, prefix: &str, pool: &mut PoolConfig) -> Result<(), ConfigError> {
        self.parse(&format!("{prefix}_WORKERS"), &mut pool.workers)?;
        self.parse(
            &format!("{prefix}_QUEUE_CAPACITY"),
            &mut pool.queue_capacity,
        )?;
        let queue_follows_total = pool.queue_timeout == pool.timeout;
        self.millis(&format!("{prefix}_TIMEOUT_MS"), &mut pool.timeout)?;
        if queue_follows_total {
            pool.queue_timeout = pool.timeout;
        }
        self.millis(
            &format!("{prefix}_QUEUE_TIMEOUT_MS"),
            &mut pool.queue_timeout,
        )?;
        self.millis(
            &format!("{prefix}_ASYNC_TIMEOUT_MS"),
            &mut pool.async_timeout,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
