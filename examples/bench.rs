//! The benchmark report: starts release servers, drives them with a load
//! generator of its own, and writes `docs/benchmarks.md` and the plots in
//! `docs/bench/*.png`.
//!
//! ```text
//! bash bench/run.sh                     # builds, installs what is missing, runs this
//! cargo run --release --example bench -- [--quick] [--out DIR]
//! ```
//!
//! It builds nothing: it starts `target/release/jobserver` (or
//! `$JOBSERVER_BIN`) once per scenario on 127.0.0.1 with rate limiting off,
//! its own temporary `DATA_DIR` (a copy of the sample PDF: a symlink out of
//! `DATA_DIR` is refused) and `OUTPUT_DIR` (emptied after every run, removed at
//! the end), and `target/release/examples/render_loop` for the bare limit.
//! Every request's status and latency (send to last byte of the body) is
//! recorded, so percentiles are exact and the latency of `503`s is kept apart
//! from that of `200`s, which `hey` cannot do.
//!
//! Scenarios, each measured side by side in one run:
//! 1. closed-loop concurrency sweeps (C clients, each sending its next
//!    request when the previous answer arrives) for message and PDF jobs;
//! 2. PDF pages/s for 1..=nproc workers, beside `render_loop` run as as many
//!    processes in parallel on the same pages at the same dpi;
//! 3. overload: open-loop arrivals at 2x and 10x the server's capacity
//!    against a small queue.
//!
//! Knobs are environment variables (`BENCH_*`, listed in [`Knobs::from_env`]
//! and in the report); `--quick` divides every duration by four, for a trial
//! run, and `--out DIR` writes `DIR/docs/...` instead of the repository's.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temp_dir::TempDir;

use bytes::Bytes;
use plotters::prelude::*;
use tokio::task::JoinSet;

/// Where the plots get their text from: ab_glyph needs a TTF registered at
/// run time (no fontconfig); Debian's `fonts-dejavu-core` ships this one.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// How long a server may take to answer `/readyz` (renderers start first).
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Client-side limit on one request: above every server deadline used here,
/// so a slow answer is measured, not cut off.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
/// Name the sample gets inside the temporary `DATA_DIR`.
const SAMPLE_NAME: &str = "sample.pdf";

// ------------------------------------------------------------------ knobs --

/// Every setting of a run; all of them are printed in the report.
#[derive(Debug, Clone)]
struct Knobs {
    sample: PathBuf,
    /// Worker threads for sweeps and overload; the top of the scaling range.
    workers: usize,
    msg_work_ms: u64,
    msg_levels: Vec<usize>,
    msg_secs: f64,
    pdf_levels: Vec<usize>,
    pdf_pages: String,
    pdf_dpi: u32,
    pdf_secs: f64,
    scale_secs: f64,
    overload_factors: Vec<f64>,
    overload_work_ms: u64,
    overload_queue: usize,
    overload_secs: f64,
    overload_pdf: bool,
    warmup_secs: f64,
}

impl Knobs {
    /// Defaults sized for about ten minutes on 2 cores, overridden by
    /// `BENCH_*` variables; a value that does not parse names its variable.
    fn from_env(quick: bool, nproc: usize) -> Result<Knobs, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let scale = if quick { 0.25 } else { 1.0 };
        let secs = |name: &str, default: f64| env_or(name, default).map(|s: f64| s * scale);
        let knobs = Knobs {
            sample: env_or(
                "BENCH_SAMPLE",
                root.join("../shared/data/regal-17pages.pdf"),
            )?,
            workers: env_or("BENCH_WORKERS", nproc)?,
            msg_work_ms: env_or("BENCH_MSG_WORK_MS", 2)?,
            msg_levels: env_list("BENCH_MSG_LEVELS", "1,2,4,8,16,32,64")?,
            msg_secs: secs("BENCH_MSG_SECS", 5.0)?,
            pdf_levels: env_list("BENCH_PDF_LEVELS", "1,2,4,8")?,
            pdf_pages: env_or("BENCH_PDF_PAGES", "1-4".to_string())?,
            pdf_dpi: env_or("BENCH_PDF_DPI", 100)?,
            pdf_secs: secs("BENCH_PDF_SECS", 12.0)?,
            scale_secs: secs("BENCH_SCALE_SECS", 10.0)?,
            overload_factors: env_list("BENCH_OVERLOAD_FACTORS", "2,10")?,
            overload_work_ms: env_or("BENCH_OVERLOAD_WORK_MS", 20)?,
            overload_queue: env_or("BENCH_OVERLOAD_QUEUE", nproc)?,
            overload_secs: secs("BENCH_OVERLOAD_SECS", 8.0)?,
            overload_pdf: env_or::<u8>("BENCH_OVERLOAD_PDF", 1)? != 0,
            warmup_secs: secs("BENCH_WARMUP_SECS", 2.0)?,
        };
        if knobs.workers == 0 || knobs.msg_levels.contains(&0) || knobs.pdf_levels.contains(&0) {
            return Err("worker counts and concurrency levels must be at least 1".into());
        }
        if knobs.msg_work_ms == 0 || knobs.overload_work_ms == 0 {
            return Err("BENCH_MSG_WORK_MS and BENCH_OVERLOAD_WORK_MS must be at least 1".into());
        }
        if knobs.overload_factors.iter().any(|f| *f <= 0.0) {
            return Err("BENCH_OVERLOAD_FACTORS must be positive".into());
        }
        Ok(knobs)
    }

    /// The knobs as `NAME=value` pairs, for the report.
    fn describe(&self) -> Vec<(&'static str, String)> {
        let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        vec![
            ("BENCH_SAMPLE", sample_display(&self.sample)),
            ("BENCH_WORKERS", self.workers.to_string()),
            ("BENCH_MSG_WORK_MS", self.msg_work_ms.to_string()),
            ("BENCH_MSG_LEVELS", list(&self.msg_levels)),
            ("BENCH_MSG_SECS", format!("{}", self.msg_secs)),
            ("BENCH_PDF_LEVELS", list(&self.pdf_levels)),
            ("BENCH_PDF_PAGES", self.pdf_pages.clone()),
            ("BENCH_PDF_DPI", self.pdf_dpi.to_string()),
            ("BENCH_PDF_SECS", format!("{}", self.pdf_secs)),
            ("BENCH_SCALE_SECS", format!("{}", self.scale_secs)),
            (
                "BENCH_OVERLOAD_FACTORS",
                self.overload_factors
                    .iter()
                    .map(|f| format!("{f}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("BENCH_OVERLOAD_WORK_MS", self.overload_work_ms.to_string()),
            ("BENCH_OVERLOAD_QUEUE", self.overload_queue.to_string()),
            ("BENCH_OVERLOAD_SECS", format!("{}", self.overload_secs)),
            (
                "BENCH_OVERLOAD_PDF",
                u8::from(self.overload_pdf).to_string(),
            ),
            ("BENCH_WARMUP_SECS", format!("{}", self.warmup_secs)),
        ]
    }
}

/// The sample's path, relative to the repository when it is the default
/// (`../shared/...`), so the report does not name this checkout's location.
fn sample_display(sample: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    sample
        .strip_prefix(root)
        .unwrap_or(sample)
        .display()
        .to_string()
}

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {text:?}")),
        _ => Ok(default),
    }
}

fn env_list<T: FromStr>(name: &str, default: &str) -> Result<Vec<T>, String> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    let list = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse()
                .map_err(|_| format!("{name}: cannot parse {part:?} in {text:?}"))
        })
        .collect::<Result<Vec<T>, String>>()?;
    if list.is_empty() {
        return Err(format!("{name} is empty"));
    }
    Ok(list)
}

// ---------------------------------------------------------------- machine --

/// What the report says about the host.
struct Machine {
    nproc: usize,
    cpu: String,
    date: String,
    commit: String,
    load_start: String,
}

impl Machine {
    fn probe(root: &Path) -> Machine {
        // `nproc` honours CPU affinity, as the server's default worker count does.
        let nproc = command_line("nproc", &[])
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
        let mut commit = command_line(
            "git",
            &[
                "-C",
                &root.display().to_string(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        )
        .unwrap_or_else(|| "?".into());
        let dirty = Command::new("git")
            .args([
                "-C",
                &root.display().to_string(),
                "diff",
                "--quiet",
                "HEAD",
                "--",
                "src",
            ])
            .status()
            .map(|s| !s.success())
            .unwrap_or(false);
        if dirty {
            commit.push_str(" (src modified)");
        }
        Machine {
            nproc,
            cpu,
            date,
            commit,
            load_start: load_average(),
        }
    }
}

/// The first line a command prints, if it runs and succeeds.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `/proc/loadavg`'s 1, 5 and 15-minute figures.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ----------------------------------------------------------------- server --

/// Paths every server of the run shares.
struct Setup {
    server_bin: PathBuf,
    loop_bin: PathBuf,
    tmp: TempDir,
}

impl Setup {
    fn data_dir(&self) -> PathBuf {
        self.tmp.0.join("data")
    }
    fn out_dir(&self) -> PathBuf {
        self.tmp.0.join("out")
    }
}

/// One running `jobserver`; killed if dropped while still running (an
/// error path), stopped with SIGTERM by [`Server::stop`] otherwise.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    /// Starts the server with `env` on top of the shared settings and waits
    /// until `/readyz` answers 200.
    async fn start(
        setup: &Setup,
        client: &reqwest::Client,
        name: &str,
        env: &[(&str, String)],
    ) -> Result<Server, String> {
        // Port 0 would be simplest, but the server does not print the port
        // it bound: take a free one from the kernel and hand it over.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        let log = setup.tmp.0.join(format!("server-{name}.log"));
        let log_file = fs::File::create(&log).map_err(|e| format!("cannot create {log:?}: {e}"))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("cannot clone {log:?}: {e}"))?;
        let mut command = Command::new(&setup.server_bin);
        command
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("DATA_DIR", setup.data_dir())
            .env("OUTPUT_DIR", setup.out_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", setup.server_bin))?;
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "server {name} exited at start ({status}); see {:?}",
                    server.log
                ));
            }
            let ready = client
                .get(format!("{}/readyz", server.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(server);
            }
            if started.elapsed() > READY_DEADLINE {
                return Err(format!(
                    "server {name} was not ready within {READY_DEADLINE:?}; see {:?}",
                    server.log
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM (the server drains and stops its renderers), SIGKILL after
    /// [`STOP_DEADLINE`].
    async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill only sends a signal to our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let started = Instant::now();
        while started.elapsed() < STOP_DEADLINE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("[bench] server did not stop within {STOP_DEADLINE:?}; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes every job folder under `OUTPUT_DIR`, so the disk holds one run's
/// renders at most.
fn clear_out_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

// ------------------------------------------------------------------- load --

/// What a request asks for: a prepared URL and JSON body.
#[derive(Clone)]
struct Target {
    url: String,
    body: Bytes,
    /// PDF replies list their pages: count them for pages/s.
    count_pages: bool,
}

impl Target {
    fn message(server: &Server, work_ms: u64) -> Target {
        Target {
            url: format!("{}/jobs/message", server.base),
            body: Bytes::from(format!(r#"{{"text":"bench","work_ms":{work_ms}}}"#)),
            count_pages: false,
        }
    }

    fn pdf(server: &Server, knobs: &Knobs) -> Target {
        Target {
            url: format!("{}/jobs/pdf", server.base),
            body: Bytes::from(
                serde_json::json!({
                    "path": SAMPLE_NAME,
                    "dpi": knobs.pdf_dpi,
                    "pages": knobs.pdf_pages,
                })
                .to_string(),
            ),
            count_pages: true,
        }
    }
}

/// One request's outcome.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// HTTP status; 0 for a transport error (refused, reset, timed out).
    status: u16,
    /// From just before sending to the last byte of the body.
    latency: Duration,
    /// Pages a 200 PDF reply lists; 0 otherwise.
    pages: u32,
}

/// Every sample of one measured run and its wall time (first send to last
/// answer).
struct Run {
    samples: Vec<Sample>,
    wall: Duration,
    /// Open loop only: the arrival rate actually achieved.
    offered_rps: Option<f64>,
}

async fn send(client: &reqwest::Client, target: &Target) -> Sample {
    let started = Instant::now();
    let result = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(target.body.clone())
        .send()
        .await;
    let (status, pages) = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(body) if status == 200 && target.count_pages => (status, count_pages(&body)),
                Ok(_) => (status, 0),
                Err(_) => (0, 0),
            }
        }
        Err(_) => (0, 0),
    };
    Sample {
        status,
        latency: started.elapsed(),
        pages,
    }
}

fn count_pages(body: &[u8]) -> u32 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("pages")?.as_array().map(Vec::len))
        .map_or(0, |n| n as u32)
}

/// `concurrency` clients, each sending its next request as soon as the
/// previous answer arrives, until `duration` has passed (each sends at least
/// one); requests in flight at the end are waited for and counted.
async fn closed_loop(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let started = Instant::now();
    let target = Arc::new(target.clone());
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let target = Arc::clone(&target);
        clients.spawn(async move {
            let mut samples = Vec::new();
            loop {
                samples.push(send(&client, &target).await);
                if started.elapsed() >= duration {
                    return samples;
                }
            }
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = clients.join_next().await {
        // A client task cannot panic short of a bug in this file.
        samples.extend(done.expect("a load client panicked"));
    }
    Run {
        samples,
        wall: started.elapsed(),
        offered_rps: None,
    }
}

/// Requests sent at a fixed rate whatever the answers (an open loop, like
/// independent users), for `duration`; latency is measured from each
/// request's actual send. The achieved rate is reported, since on a busy
/// host the sender can fall behind its schedule.
async fn open_loop(
    client: &reqwest::Client,
    target: &Target,
    rate: f64,
    duration: Duration,
) -> Run {
    let started = Instant::now();
    let target = Arc::new(target.clone());
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let mut requests = JoinSet::new();
    for i in 0..count {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        let target = Arc::clone(&target);
        requests.spawn(async move { send(&client, &target).await });
    }
    let sent_in = started.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    while let Some(done) = requests.join_next().await {
        samples.push(done.expect("a load request panicked"));
    }
    Run {
        samples,
        wall: started.elapsed(),
        offered_rps: Some(count as f64 / sent_in.max(1e-9)),
    }
}

// ------------------------------------------------------------------ stats --

/// Exact nearest-rank percentile of sorted values (ms).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A run reduced to the figures the report shows.
#[derive(Debug, Clone)]
struct Summary {
    requests: usize,
    ok: usize,
    rejected: usize,
    /// Status (0: transport error) to count, for everything but 200 and 503.
    others: BTreeMap<u16, usize>,
    ok_per_s: f64,
    pages_per_s: f64,
    ok_p50: Option<f64>,
    ok_p99: Option<f64>,
    ok_max: Option<f64>,
    rej_p50: Option<f64>,
    rej_p99: Option<f64>,
    offered_rps: Option<f64>,
}

impl Summary {
    fn of(run: &Run) -> Summary {
        let ms = |status: u16| {
            let mut v: Vec<f64> = run
                .samples
                .iter()
                .filter(|s| s.status == status)
                .map(|s| s.latency.as_secs_f64() * 1000.0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let ok = ms(200);
        let rejected = ms(503);
        let mut others = BTreeMap::new();
        for s in run
            .samples
            .iter()
            .filter(|s| s.status != 200 && s.status != 503)
        {
            *others.entry(s.status).or_insert(0) += 1;
        }
        let wall_s = run.wall.as_secs_f64();
        let pages: u64 = run.samples.iter().map(|s| u64::from(s.pages)).sum();
        Summary {
            requests: run.samples.len(),
            ok: ok.len(),
            rejected: rejected.len(),
            others,
            ok_per_s: ok.len() as f64 / wall_s,
            pages_per_s: pages as f64 / wall_s,
            ok_p50: percentile(&ok, 50.0),
            ok_p99: percentile(&ok, 99.0),
            ok_max: ok.last().copied(),
            rej_p50: percentile(&rejected, 50.0),
            rej_p99: percentile(&rejected, 99.0),
            offered_rps: run.offered_rps,
        }
    }

    fn share(&self, n: usize) -> f64 {
        100.0 * n as f64 / self.requests.max(1) as f64
    }

    /// Statuses other than 200 and 503, e.g. `504: 3, error: 1`, or `-`.
    fn others_text(&self) -> String {
        if self.others.is_empty() {
            return "-".into();
        }
        self.others
            .iter()
            .map(|(status, n)| match status {
                0 => format!("error: {n}"),
                s => format!("{s}: {n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

// -------------------------------------------------------------- scenarios --

/// One concurrency level of a sweep.
struct Level {
    concurrency: usize,
    summary: Summary,
}

/// Section 1: a closed-loop sweep over `levels` on one server.
async fn sweep(
    client: &reqwest::Client,
    target: &Target,
    levels: &[usize],
    secs: f64,
    warmup_secs: f64,
    out_dir: &Path,
) -> Vec<Level> {
    // Warm-up at the highest level: connections, renderers, caches.
    let top = levels.iter().copied().max().unwrap_or(1);
    closed_loop(client, target, top, Duration::from_secs_f64(warmup_secs)).await;
    clear_out_dir(out_dir);
    let mut result = Vec::new();
    for &concurrency in levels {
        let run = closed_loop(client, target, concurrency, Duration::from_secs_f64(secs)).await;
        clear_out_dir(out_dir);
        let summary = Summary::of(&run);
        eprintln!(
            "[bench]   c={concurrency}: {} requests, {:.1}/s ok, p50 {} ms, p99 {} ms, other {}",
            summary.requests,
            summary.ok_per_s,
            ms(summary.ok_p50),
            ms(summary.ok_p99),
            summary.others_text()
        );
        result.push(Level {
            concurrency,
            summary,
        });
    }
    result
}

/// One worker count of section 2.
struct Scale {
    workers: usize,
    server: Summary,
    /// Sum of the bare loops' pages/s, one process per worker.
    bare_pps: f64,
    bare_ms_per_page: f64,
}

/// `render_loop`'s `RESULT` line as (pages, seconds, pages_per_s).
fn parse_result(text: &str) -> Option<(f64, f64, f64)> {
    let line = text.lines().find(|l| l.starts_with("RESULT"))?;
    let field = |name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some((field("pages")?, field("seconds")?, field("pages_per_s")?))
}

/// `processes` bare loops at once on the same pages and dpi; the sum of
/// their pages/s and the mean ms per page.
fn bare_loops(
    setup: &Setup,
    knobs: &Knobs,
    processes: usize,
    reps: u32,
) -> Result<(f64, f64), String> {
    let children = (0..processes)
        .map(|_| {
            Command::new(&setup.loop_bin)
                .args(["--dpi", &knobs.pdf_dpi.to_string()])
                .args(["--pages", &knobs.pdf_pages])
                .args(["--reps", &reps.to_string(), "--warmup", "1"])
                .arg(&knobs.sample)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {:?}: {e}", setup.loop_bin))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut pps = 0.0;
    let mut seconds = 0.0;
    let mut pages = 0.0;
    for child in children {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("render_loop: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (p, s, r) = parse_result(&text).ok_or_else(|| {
            format!(
                "render_loop printed no RESULT line: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        pps += r;
        seconds += s;
        pages += p;
    }
    Ok((pps, seconds * 1000.0 / pages.max(1.0)))
}

/// One factor of section 3.
struct Overload {
    factor: f64,
    capacity_rps: f64,
    summary: Summary,
}

async fn overload(
    client: &reqwest::Client,
    target: &Target,
    factors: &[f64],
    capacity_rps: f64,
    secs: f64,
    out_dir: &Path,
) -> Vec<Overload> {
    let mut result = Vec::new();
    for &factor in factors {
        let run = open_loop(
            client,
            target,
            factor * capacity_rps,
            Duration::from_secs_f64(secs),
        )
        .await;
        clear_out_dir(out_dir);
        let summary = Summary::of(&run);
        eprintln!(
            "[bench]   {factor}x ({:.1}/s offered): {} requests, {:.1} % 503, 200 p50 {} p99 {} ms, 503 p50 {} p99 {} ms, other {}",
            summary.offered_rps.unwrap_or(0.0),
            summary.requests,
            summary.share(summary.rejected),
            ms(summary.ok_p50),
            ms(summary.ok_p99),
            ms(summary.rej_p50),
            ms(summary.rej_p99),
            summary.others_text()
        );
        result.push(Overload {
            factor,
            capacity_rps,
            summary,
        });
        // Let the queue drain so the next factor starts from an idle server.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    result
}

// ------------------------------------------------------------------ plots --

type PlotResult = Result<(), String>;

fn plot_err<E: std::fmt::Display>(e: E) -> String {
    format!("plot: {e}")
}

/// A line with its points, `(x, y)` in data units.
struct Series {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Axis extent with some headroom; log axes need positive bounds.
fn extent(series: &[Series], log: bool) -> (f64, f64) {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo > hi {
        return if log { (0.1, 1.0) } else { (0.0, 1.0) };
    }
    if log {
        ((lo * 0.7).max(1e-3), (hi * 1.5).max(lo * 2.0))
    } else {
        (0.0, (hi * 1.15).max(1e-3))
    }
}

/// One panel: lines with points. The x axis is categorical: `x_labels`
/// names the positions the points sit at (concurrency levels, worker counts
/// and load factors are few and unevenly spaced, and a log axis would label
/// only its powers of ten).
#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_labels: &[(f64, String)],
    y_log: bool,
    series: &[Series],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let (y_lo, y_hi) = extent(series, y_log);
    let x_lo = x_labels.iter().map(|l| l.0).fold(f64::MAX, f64::min) - 0.5;
    let x_hi = x_labels.iter().map(|l| l.0).fold(f64::MIN, f64::max) + 0.5;
    let x_label = |x: &f64| {
        x_labels
            .iter()
            .find(|(at, _)| (at - x).abs() < 1e-6)
            .map(|(_, label)| label.clone())
            .unwrap_or_default()
    };
    let y_label = |y: &f64| match y.abs() {
        v if v >= 10.0 || v == 0.0 => format!("{y:.0}"),
        v if v >= 1.0 => format!("{y:.1}"),
        _ => format!("{y:.2}"),
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    // A log and a linear y axis are two chart types in plotters.
    macro_rules! draw {
        ($y:expr) => {{
            let mut chart = builder
                .build_cartesian_2d(x_lo..x_hi, $y)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_labels(x_labels.len() * 2 + 1)
                .x_label_formatter(&x_label)
                .y_label_formatter(&y_label)
                .x_desc(x_desc)
                .y_desc(y_desc)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .light_line_style(WHITE)
                .draw()
                .map_err(plot_err)?;
            for s in series {
                let color = s.color;
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_err)?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }};
    }
    if y_log {
        draw!((y_lo..y_hi).log_scale());
    } else {
        draw!(y_lo..y_hi);
    }
    Ok(())
}

fn register_font() -> Result<(), String> {
    let bytes = fs::read(FONT).map_err(|e| {
        format!("cannot read the plot font {FONT}: {e} (Debian package fonts-dejavu-core)")
    })?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{FONT} is not a usable TTF"))
}

/// Throughput on the left, p50/p99 on the right, against concurrency.
fn plot_sweep(path: &Path, what: &str, levels: &[Level], pages: bool) -> PlotResult {
    let root = BitMapBackend::new(path, (1200, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    let x_labels: Vec<(f64, String)> = levels
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64, l.concurrency.to_string()))
        .collect();
    let point = |f: &dyn Fn(&Summary) -> Option<f64>| -> Vec<(f64, f64)> {
        levels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i as f64, f(&l.summary)?)))
            .collect()
    };
    let mut rates = vec![Series {
        label: "requests/s (200)".into(),
        color: BLUE,
        points: point(&|s| Some(s.ok_per_s)),
    }];
    if pages {
        rates.push(Series {
            label: "pages/s".into(),
            color: GREEN,
            points: point(&|s| Some(s.pages_per_s)),
        });
    }
    panel(
        &left,
        &format!("{what}: throughput"),
        "concurrent clients",
        "per second",
        &x_labels,
        false,
        &rates,
    )?;
    let latency = [
        Series {
            label: "p50".into(),
            color: BLUE,
            points: point(&|s| s.ok_p50),
        },
        Series {
            label: "p99".into(),
            color: RED,
            points: point(&|s| s.ok_p99),
        },
    ];
    panel(
        &right,
        &format!("{what}: latency of 200s"),
        "concurrent clients",
        "ms (log)",
        &x_labels,
        true,
        &latency,
    )?;
    root.present().map_err(plot_err)
}

fn plot_scaling(path: &Path, scales: &[Scale]) -> PlotResult {
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let x_labels: Vec<(f64, String)> = scales
        .iter()
        .map(|s| (s.workers as f64, s.workers.to_string()))
        .collect();
    let one = scales.first().map_or(0.0, |s| s.bare_pps);
    let series = [
        Series {
            label: "server, W workers, W clients".into(),
            color: BLUE,
            points: scales
                .iter()
                .map(|s| (s.workers as f64, s.server.pages_per_s))
                .collect(),
        },
        Series {
            label: "bare render loop, W processes".into(),
            color: RED,
            points: scales
                .iter()
                .map(|s| (s.workers as f64, s.bare_pps))
                .collect(),
        },
        Series {
            label: "W x one bare loop (linear)".into(),
            color: RGBColor(150, 150, 150),
            points: scales
                .iter()
                .map(|s| (s.workers as f64, one * s.workers as f64))
                .collect(),
        },
    ];
    panel(
        &root,
        "PDF pages/s against workers",
        "workers W",
        "pages/s",
        &x_labels,
        false,
        &series,
    )?;
    root.present().map_err(plot_err)
}

/// Per job type a latency panel (200 and 503, p50 and p99), then one panel
/// of 503 shares.
fn plot_overload(path: &Path, kinds: &[(&str, &[Overload])]) -> PlotResult {
    let width = 520 * (kinds.len() as u32 + 1);
    let root = BitMapBackend::new(path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let areas = root.split_evenly((1, kinds.len() + 1));
    // Every job type runs the same factors, in the same order.
    let x_labels: Vec<(f64, String)> = kinds
        .first()
        .map(|(_, runs)| {
            runs.iter()
                .enumerate()
                .map(|(i, o)| (i as f64, format!("{}x", o.factor)))
                .collect()
        })
        .unwrap_or_default();
    let colors = [BLUE, RED, GREEN, MAGENTA];
    let mut shares = Vec::new();
    for (i, (name, runs)) in kinds.iter().enumerate() {
        let pick = |f: &dyn Fn(&Summary) -> Option<f64>| -> Vec<(f64, f64)> {
            runs.iter()
                .enumerate()
                .filter_map(|(i, o)| Some((i as f64, f(&o.summary)?)))
                .collect()
        };
        let series = [
            Series {
                label: "200 p50".into(),
                color: BLUE,
                points: pick(&|s| s.ok_p50),
            },
            Series {
                label: "200 p99".into(),
                color: RGBColor(0, 0, 120),
                points: pick(&|s| s.ok_p99),
            },
            Series {
                label: "503 p50".into(),
                color: RED,
                points: pick(&|s| s.rej_p50),
            },
            Series {
                label: "503 p99".into(),
                color: RGBColor(140, 0, 0),
                points: pick(&|s| s.rej_p99),
            },
        ];
        panel(
            &areas[i],
            &format!("{name}: latency under overload"),
            "offered load / capacity",
            "ms (log)",
            &x_labels,
            true,
            &series,
        )?;
        shares.push(Series {
            label: format!("{name}: 503 share"),
            color: colors[i % colors.len()],
            points: pick(&|s| Some(s.share(s.rejected))),
        });
    }
    panel(
        &areas[kinds.len()],
        "share of requests answered 503",
        "offered load / capacity",
        "% of requests",
        &x_labels,
        false,
        &shares,
    )?;
    root.present().map_err(plot_err)
}

// ----------------------------------------------------------------- report --

struct Results {
    message: Vec<Level>,
    pdf: Vec<Level>,
    pdf_pages_per_job: u32,
    scales: Vec<Scale>,
    msg_overload: Vec<Overload>,
    pdf_overload: Vec<Overload>,
    /// 1-minute load average at the start of each section.
    section_load: Vec<(&'static str, String)>,
}

fn sweep_table(out: &mut String, levels: &[Level], pdf: bool) {
    if pdf {
        out.push_str("| clients | requests | jobs/s (200) | pages/s | p50 ms | p99 ms | max ms | other statuses |\n|---:|---:|---:|---:|---:|---:|---:|---|\n");
    } else {
        out.push_str("| clients | requests | requests/s (200) | p50 ms | p99 ms | max ms | other statuses |\n|---:|---:|---:|---:|---:|---:|---|\n");
    }
    for l in levels {
        let s = &l.summary;
        let pages = if pdf {
            format!(" {:.1} |", s.pages_per_s)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} |{pages} {} | {} | {} | {} |",
            l.concurrency,
            s.requests,
            s.ok_per_s,
            ms(s.ok_p50),
            ms(s.ok_p99),
            ms(s.ok_max),
            s.others_text()
        );
    }
}

fn overload_table(out: &mut String, runs: &[Overload]) {
    out.push_str("| offered | offered requests/s (achieved) | requests | 200s/s | 503 share | 200 p50 ms | 200 p99 ms | 503 p50 ms | 503 p99 ms | other statuses |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for o in runs {
        let s = &o.summary;
        let _ = writeln!(
            out,
            "| {}x | {:.1} ({:.1}) | {} | {:.1} | {:.1} % | {} | {} | {} | {} | {} |",
            o.factor,
            o.factor * o.capacity_rps,
            s.offered_rps.unwrap_or(0.0),
            s.requests,
            s.ok_per_s,
            s.share(s.rejected),
            ms(s.ok_p50),
            ms(s.ok_p99),
            ms(s.rej_p50),
            ms(s.rej_p99),
            s.others_text()
        );
    }
}

/// The concurrency level with the highest 200 throughput.
fn peak(levels: &[Level]) -> Option<&Level> {
    levels
        .iter()
        .max_by(|a, b| a.summary.ok_per_s.total_cmp(&b.summary.ok_per_s))
}

#[allow(clippy::too_many_arguments)]
fn report(
    machine: &Machine,
    knobs: &Knobs,
    command: &str,
    results: &Results,
    load_end: &str,
    minutes: f64,
    msg_capacity: f64,
    pdf_capacity: Option<f64>,
) -> String {
    let mut out = String::new();
    let w = knobs.workers;
    let _ = write!(
        out,
        "# Benchmarks\n\n\
         Generated by `{command}` (`examples/bench.rs`); rerun it rather than editing this file. \
         Every figure below comes from one run, so the comparisons in each table were measured \
         side by side on the same machine within minutes of each other.\n\n\
         ## Machine and run\n\n\
         | | |\n|---|---|\n\
         | machine | {} cores (`nproc`), {} |\n\
         | date | {} |\n\
         | commit | {} |\n\
         | command | `{command}` |\n\
         | duration | {minutes:.1} min, build excluded |\n\
         | load average (1, 5, 15 min) at start | {} |\n\
         | load average at end | {} |\n\
         | load average (1 min) at each section's start | {} |\n\n",
        machine.nproc,
        machine.cpu,
        machine.date,
        machine.commit,
        machine.load_start,
        load_end,
        results
            .section_load
            .iter()
            .map(|(name, l)| format!("{name}: {l}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    let _ = write!(
        out,
        "The load generator (this benchmark, a tokio client), the server, its worker threads and \
         its renderer processes all share these {} cores, and anything else running on the \
         machine competes with them too (the load averages above show how much): on a small \
         machine the figures are a lower bound of what the server does with the cores to itself. \
         The server is the release build, started once per scenario on 127.0.0.1 with \
         `RATE_LIMIT_PER_MINUTE=0`, `RUST_LOG=warn`, and its own temporary `DATA_DIR` \
         (a copy of the sample) and `OUTPUT_DIR` (emptied after every run). \
         Latency is measured by the client, from just before a request is sent to the last byte \
         of its answer; percentiles are exact (nearest rank over every request of the run). \
         Throughput counts 200 answers over the run's wall time, from the first send to the last \
         answer.\n\n\
         Knobs (environment variables of `bench/run.sh`):\n\n",
        machine.nproc
    );
    for (name, value) in knobs.describe() {
        let _ = writeln!(out, "- `{name}={value}`");
    }

    // Section 1.
    let _ = write!(
        out,
        "\n## 1. Throughput and latency against concurrency\n\n\
         Closed loop: C clients, each on its own keep-alive connection, send their next request \
         as soon as the previous answer arrives, for the given time (requests in flight at the \
         end are waited for and counted), after a warm-up at the highest level. The queues are \
         large enough that nothing is refused.\n\n\
         ### Message jobs\n\n\
         `POST /jobs/message` with `work_ms={}` (CPU-bound hashing for {} ms of CPU time per job), \
         `MESSAGE_WORKERS={w}`, `MESSAGE_QUEUE_CAPACITY={}`, {} s per level. \
         The workers' capacity is {w} x 1000 / {} = {:.0} jobs/s if they had the cores to \
         themselves.\n\n",
        knobs.msg_work_ms,
        knobs.msg_work_ms,
        msg_queue(knobs),
        knobs.msg_secs,
        knobs.msg_work_ms,
        msg_capacity,
    );
    sweep_table(&mut out, &results.message, false);
    if let Some(p) = peak(&results.message) {
        let _ = write!(
            out,
            "\nPeak: {:.0} requests/s at {} clients ({:.0} % of the nominal capacity).",
            p.summary.ok_per_s,
            p.concurrency,
            100.0 * p.summary.ok_per_s / msg_capacity
        );
    }
    out.push_str(
        "\n\n![message jobs: throughput and latency against concurrency](bench/message.png)\n\n",
    );
    let _ = write!(
        out,
        "### PDF jobs\n\n\
         `POST /jobs/pdf` with `{{\"path\": \"{SAMPLE_NAME}\", \"dpi\": {}, \"pages\": \"{}\"}}` \
         ({} pages of `{}` per job), `PDF_WORKERS={w}`, `PDF_QUEUE_CAPACITY={}`, {} s per level. \
         Fan-out is on (the default): with fewer jobs than workers a job spreads its pages over \
         the idle renderers.\n\n",
        knobs.pdf_dpi,
        knobs.pdf_pages,
        results.pdf_pages_per_job,
        file_name(&knobs.sample),
        pdf_queue(knobs),
        knobs.pdf_secs,
    );
    sweep_table(&mut out, &results.pdf, true);
    if let Some(p) = peak(&results.pdf) {
        let _ = write!(
            out,
            "\nPeak: {:.2} jobs/s ({:.1} pages/s) at {} clients.",
            p.summary.ok_per_s, p.summary.pages_per_s, p.concurrency
        );
    }
    out.push_str("\n\n![PDF jobs: throughput and latency against concurrency](bench/pdf.png)\n\n");

    // Section 2.
    let _ = write!(
        out,
        "## 2. PDF pages/s against workers\n\n\
         For each W in 1..={w}: a server with `PDF_WORKERS=W` driven by W closed-loop clients \
         for {} s (after a warm-up of W jobs), the same job as in section 1; beside it, W \
         processes of `examples/render_loop.rs` at once (pdfium loaded once per process, the \
         renderer's own render function in a loop, no server, queue, pipe or HTTP), on the same \
         pages at the same dpi, each after one untimed pass; their pages/s are summed. \
         The linear column is W times one bare loop.\n\n\
         | workers W | server pages/s | bare loop, W processes, pages/s | linear (W x 1 bare loop) | server / bare | server job p50 ms | bare ms/page |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
        knobs.scale_secs
    );
    let one = results.scales.first().map_or(0.0, |s| s.bare_pps);
    for s in &results.scales {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} |",
            s.workers,
            s.server.pages_per_s,
            s.bare_pps,
            one * s.workers as f64,
            s.server.pages_per_s / s.bare_pps.max(1e-9),
            ms(s.server.ok_p50),
            s.bare_ms_per_page,
        );
    }
    if let (Some(first), Some(last)) = (results.scales.first(), results.scales.last()) {
        if last.workers > 1 {
            let _ = write!(
                out,
                "\nThe bare loop reached {:.2}x one process with {} processes (linear: {}x), \
                 the server {:.2}x its 1-worker rate with {} workers.",
                last.bare_pps / first.bare_pps.max(1e-9),
                last.workers,
                last.workers,
                last.server.pages_per_s / first.server.pages_per_s.max(1e-9),
                last.workers,
            );
        }
    }
    let _ = write!(
        out,
        "\nA render takes one core, so pages/s can grow with W only up to the number of cores \
         ({} here), and less where the load generator and other processes take CPU: on this \
         machine the row for W = {} is limited by its {} cores (shared with the client and \
         anything else running), not by the server.\n\n\
         ![PDF pages/s against workers](bench/scaling.png)\n\n",
        machine.nproc,
        machine.nproc.min(w),
        machine.nproc
    );

    // Section 3.
    let _ = write!(
        out,
        "## 3. Overload\n\n\
         Open loop: requests arrive at a fixed rate whatever the answers (like independent \
         users), at {} times the server's capacity, for {} s each. Capacity here is what the \
         workers can finish per second; with {w} workers it means {w} jobs in service at once, \
         so an offered load of Nx keeps N x {w} jobs wanting service at any time against \
         {w} workers and a queue of {}. Everything above that must be refused at once with 503. \
         The achieved rate shows whether the client kept to its schedule.\n\n\
         ### Message jobs\n\n\
         `work_ms={}`, `MESSAGE_WORKERS={w}`, `MESSAGE_QUEUE_CAPACITY={}`: capacity \
         {w} x 1000 / {} = {:.0} jobs/s.\n\n",
        knobs
            .overload_factors
            .iter()
            .map(|f| format!("{f}"))
            .collect::<Vec<_>>()
            .join(" and "),
        knobs.overload_secs,
        knobs.overload_queue,
        knobs.overload_work_ms,
        knobs.overload_queue,
        knobs.overload_work_ms,
        overload_msg_capacity(knobs),
    );
    overload_table(&mut out, &results.msg_overload);
    if let Some(capacity) = pdf_capacity {
        let _ = write!(
            out,
            "\n### PDF jobs\n\n\
             The same job as above, `PDF_WORKERS={w}`, `PDF_QUEUE_CAPACITY={}`: capacity \
             {capacity:.2} jobs/s, the server's measured rate with {w} workers and {w} clients \
             in section 2.\n\n",
            knobs.overload_queue
        );
        overload_table(&mut out, &results.pdf_overload);
    }
    out.push_str(
        "\nThe 503 share is of all requests sent; a 200's latency includes its wait in the \
         queue, so under overload it sits near (1 + queue / workers) job times; a 503 is answered \
         without queueing, so its latency is the cost of the request path alone plus whatever \
         the busy cores add.\n\n\
         ![latency and 503 share under overload](bench/overload.png)\n",
    );
    out
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

/// Queue sizes for the sweeps: room for every client, so nothing is refused.
fn msg_queue(knobs: &Knobs) -> usize {
    knobs.msg_levels.iter().copied().max().unwrap_or(1) * 2
}
fn pdf_queue(knobs: &Knobs) -> usize {
    knobs.pdf_levels.iter().copied().max().unwrap_or(1) * 2
}
fn overload_msg_capacity(knobs: &Knobs) -> f64 {
    knobs.workers as f64 * 1000.0 / knobs.overload_work_ms as f64
}

// ------------------------------------------------------------------- main --

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("[bench] error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let mut quick = false;
    let mut out_root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--out" => out_root = PathBuf::from(args.next().ok_or("--out needs a folder")?),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: bench [--quick] [--out DIR]"
                ))
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let machine = Machine::probe(root);
    let knobs = Knobs::from_env(quick, machine.nproc)?;
    let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        format!("cargo run --release --example bench -- {}", args.join(" "))
            .trim_end()
            .to_string()
    });
    register_font()?;

    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let setup = Setup {
        server_bin: std::env::var_os("JOBSERVER_BIN")
            .map_or_else(|| target_dir.join("release/jobserver"), PathBuf::from),
        loop_bin: target_dir.join("release/examples/render_loop"),
        tmp: TempDir::new("jobserver-bench")
            .map_err(|e| format!("cannot make a temporary folder: {e}"))?,
    };
    for bin in [&setup.server_bin, &setup.loop_bin] {
        if !bin.is_file() {
            return Err(format!(
                "{bin:?} is missing: cargo build --release --bin jobserver --example render_loop"
            ));
        }
    }
    fs::create_dir_all(setup.data_dir()).map_err(|e| format!("cannot make DATA_DIR: {e}"))?;
    fs::create_dir_all(setup.out_dir()).map_err(|e| format!("cannot make OUTPUT_DIR: {e}"))?;
    // A copy, not a symlink: the server refuses paths that lead out of DATA_DIR.
    fs::copy(&knobs.sample, setup.data_dir().join(SAMPLE_NAME))
        .map_err(|e| format!("cannot copy the sample {:?}: {e}", knobs.sample))?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(CLIENT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let started = Instant::now();
    let w = knobs.workers;
    let mut section_load = Vec::new();
    eprintln!(
        "[bench] {} cores, {}; load {}; temporary files in {:?}",
        machine.nproc, machine.cpu, machine.load_start, setup.tmp.0
    );

    // Section 1, message jobs.
    section_load.push(("1 message", load_1min()));
    eprintln!(
        "[bench] 1. message jobs, work_ms={}, {w} workers",
        knobs.msg_work_ms
    );
    let server = Server::start(
        &setup,
        &client,
        "message",
        &[
            ("MESSAGE_WORKERS", w.to_string()),
            ("MESSAGE_QUEUE_CAPACITY", msg_queue(&knobs).to_string()),
            ("MESSAGE_TIMEOUT_MS", "120000".into()),
            // PDF renderers are not used here: keep one, idle.
            ("PDF_WORKERS", "1".into()),
        ],
    )
    .await?;
    let target = Target::message(&server, knobs.msg_work_ms);
    let message = sweep(
        &client,
        &target,
        &knobs.msg_levels,
        knobs.msg_secs,
        knobs.warmup_secs,
        &setup.out_dir(),
    )
    .await;
    server.stop().await;

    // Section 1, PDF jobs.
    section_load.push(("1 PDF", load_1min()));
    eprintln!(
        "[bench] 1. PDF jobs, pages {} at {} dpi, {w} workers",
        knobs.pdf_pages, knobs.pdf_dpi
    );
    let pdf_env = |workers: usize, queue: usize| {
        vec![
            ("PDF_WORKERS", workers.to_string()),
            ("PDF_QUEUE_CAPACITY", queue.to_string()),
            ("PDF_TIMEOUT_MS", "170000".to_string()),
            ("MESSAGE_WORKERS", "1".to_string()),
        ]
    };
    let server = Server::start(&setup, &client, "pdf", &pdf_env(w, pdf_queue(&knobs))).await?;
    let target = Target::pdf(&server, &knobs);
    // One job first: checks the request and learns how many pages it renders.
    let probe = send(&client, &target).await;
    if probe.status != 200 || probe.pages == 0 {
        return Err(format!(
            "a PDF job answered {} with {} pages; see {:?}",
            probe.status, probe.pages, server.log
        ));
    }
    let pdf_pages_per_job = probe.pages;
    let pdf = sweep(
        &client,
        &target,
        &knobs.pdf_levels,
        knobs.pdf_secs,
        knobs.warmup_secs,
        &setup.out_dir(),
    )
    .await;
    server.stop().await;

    // Section 2.
    section_load.push(("2", load_1min()));
    eprintln!("[bench] 2. pages/s against workers, 1..={w}");
    let mut scales = Vec::new();
    let mut reps = 0;
    for workers in 1..=w {
        let server = Server::start(
            &setup,
            &client,
            &format!("scale-{workers}"),
            &pdf_env(workers, workers * 2),
        )
        .await?;
        let target = Target::pdf(&server, &knobs);
        // Warm every renderer with one job each.
        closed_loop(&client, &target, workers, Duration::ZERO).await;
        clear_out_dir(&setup.out_dir());
        let run = closed_loop(
            &client,
            &target,
            workers,
            Duration::from_secs_f64(knobs.scale_secs),
        )
        .await;
        clear_out_dir(&setup.out_dir());
        server.stop().await;
        let summary = Summary::of(&run);
        if reps == 0 {
            // Size the bare loops to about as long as the server's runs.
            let per_pass = f64::from(pdf_pages_per_job) / summary.pages_per_s.max(1e-9);
            reps = ((knobs.scale_secs / per_pass).round() as u32).max(2);
        }
        let (bare_pps, bare_ms_per_page) = bare_loops(&setup, &knobs, workers, reps)?;
        eprintln!(
            "[bench]   W={workers}: server {:.2} pages/s ({} jobs, other {}), bare {:.2} pages/s",
            summary.pages_per_s,
            summary.ok,
            summary.others_text(),
            bare_pps
        );
        scales.push(Scale {
            workers,
            server: summary,
            bare_pps,
            bare_ms_per_page,
        });
    }

    // Section 3.
    section_load.push(("3 message", load_1min()));
    let msg_capacity_overload = overload_msg_capacity(&knobs);
    eprintln!(
        "[bench] 3. overload, message jobs (capacity {msg_capacity_overload:.0}/s, queue {})",
        knobs.overload_queue
    );
    let server = Server::start(
        &setup,
        &client,
        "overload-message",
        &[
            ("MESSAGE_WORKERS", w.to_string()),
            ("MESSAGE_QUEUE_CAPACITY", knobs.overload_queue.to_string()),
            ("MESSAGE_TIMEOUT_MS", "120000".into()),
            ("PDF_WORKERS", "1".into()),
        ],
    )
    .await?;
    let target = Target::message(&server, knobs.overload_work_ms);
    closed_loop(
        &client,
        &target,
        w,
        Duration::from_secs_f64(knobs.warmup_secs),
    )
    .await;
    let msg_overload = overload(
        &client,
        &target,
        &knobs.overload_factors,
        msg_capacity_overload,
        knobs.overload_secs,
        &setup.out_dir(),
    )
    .await;
    server.stop().await;

    let pdf_capacity = scales
        .last()
        .filter(|_| knobs.overload_pdf)
        .map(|s| s.server.ok_per_s);
    let mut pdf_overload = Vec::new();
    if let Some(capacity) = pdf_capacity {
        section_load.push(("3 PDF", load_1min()));
        eprintln!(
            "[bench] 3. overload, PDF jobs (capacity {capacity:.2}/s, queue {})",
            knobs.overload_queue
        );
        let server = Server::start(
            &setup,
            &client,
            "overload-pdf",
            &pdf_env(w, knobs.overload_queue),
        )
        .await?;
        let target = Target::pdf(&server, &knobs);
        closed_loop(&client, &target, w, Duration::ZERO).await;
        pdf_overload = overload(
            &client,
            &target,
            &knobs.overload_factors,
            capacity,
            knobs.overload_secs,
            &setup.out_dir(),
        )
        .await;
        server.stop().await;
    }

    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let results = Results {
        message,
        pdf,
        pdf_pages_per_job,
        scales,
        msg_overload,
        pdf_overload,
        section_load,
    };

    let docs = out_root.join("docs");
    let plots = docs.join("bench");
    fs::create_dir_all(&plots).map_err(|e| format!("cannot make {plots:?}: {e}"))?;
    plot_sweep(
        &plots.join("message.png"),
        "message jobs",
        &results.message,
        false,
    )?;
    plot_sweep(&plots.join("pdf.png"), "PDF jobs", &results.pdf, true)?;
    plot_scaling(&plots.join("scaling.png"), &results.scales)?;
    let mut kinds: Vec<(&str, &[Overload])> = vec![("message", &results.msg_overload)];
    if !results.pdf_overload.is_empty() {
        kinds.push(("PDF", &results.pdf_overload));
    }
    plot_overload(&plots.join("overload.png"), &kinds)?;
    let text = report(
        &machine,
        &knobs,
        &command,
        &results,
        &load_average(),
        minutes,
        w as f64 * 1000.0 / knobs.msg_work_ms as f64,
        pdf_capacity,
    );
    let doc = docs.join("benchmarks.md");
    fs::write(&doc, text).map_err(|e| format!("cannot write {doc:?}: {e}"))?;
    eprintln!(
        "[bench] done in {minutes:.1} min: {} and {}",
        doc.display(),
        plots.display()
    );
    Ok(())
}

fn load_1min() -> String {
    load_average()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}
