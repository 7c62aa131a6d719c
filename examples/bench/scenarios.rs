//! The measured scenarios: concurrency sweeps, pages/s against workers
//! beside the bare render loop, and overload.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::knobs::{msg_queue, overload_msg_capacity, pdf_queue, Knobs};
use crate::load::{offer, send, Offer, Target};
use crate::server::{clear_out_dir, Server, Setup};
use crate::stats::{ms, Summary};

/// One concurrency level of a sweep.
pub struct Level {
    pub concurrency: usize,
    pub summary: Summary,
}

/// Section 1: a closed-loop sweep over `levels` on one server.
async fn sweep(b: &Bench<'_>, target: &Target, levels: &[usize], secs: f64) -> Vec<Level> {
    let (client, out_dir) = (b.client, &b.setup.out_dir());
    // Warm-up at the highest level: connections, renderers, caches.
    let top = levels.iter().copied().max().unwrap_or(1);
    let warmup = Duration::from_secs_f64(b.knobs.warmup_secs);
    let closed = |concurrency| Offer::Closed { concurrency };
    offer(client, target, closed(top), warmup).await;
    clear_out_dir(out_dir);
    let mut result = Vec::new();
    for &concurrency in levels {
        let run = offer(
            client,
            target,
            closed(concurrency),
            Duration::from_secs_f64(secs),
        )
        .await;
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
pub struct Scale {
    pub workers: usize,
    pub server: Summary,
    /// Sum of the bare loops' pages/s, one process per worker.
    pub bare_pps: f64,
    pub bare_ms_per_page: f64,
}

/// `render_loop`'s `RESULT` line as (pages, seconds, pages_per_s).
pub fn parse_result(text: &str) -> Option<(f64, f64, f64)> {
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
pub fn bare_loops(
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
pub struct Overload {
    pub factor: f64,
    pub capacity_rps: f64,
    pub summary: Summary,
}

/// Section 3: open-loop runs at every overload factor of `capacity_rps`.
async fn overload(b: &Bench<'_>, target: &Target, capacity_rps: f64) -> Vec<Overload> {
    let (client, out_dir) = (b.client, &b.setup.out_dir());
    let secs = b.knobs.overload_secs;
    let mut result = Vec::new();
    for &factor in &b.knobs.overload_factors {
        let rate = factor * capacity_rps;
        let open = Offer::Open { rate };
        let run = offer(client, target, open, Duration::from_secs_f64(secs)).await;
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

/// What every section uses.
pub struct Bench<'a> {
    pub setup: &'a Setup,
    pub client: &'a reqwest::Client,
    pub knobs: &'a Knobs,
}

/// The variables that size one worker type.
struct Sizing {
    workers: &'static str,
    queue: &'static str,
    timeout: &'static str,
}

const MESSAGE: Sizing = Sizing {
    workers: "MESSAGE_WORKERS",
    queue: "MESSAGE_QUEUE_CAPACITY",
    timeout: "MESSAGE_TIMEOUT_MS",
};

const PDF: Sizing = Sizing {
    workers: "PDF_WORKERS",
    queue: "PDF_QUEUE_CAPACITY",
    timeout: "PDF_TIMEOUT_MS",
};

/// A server for message jobs: `workers` and `queue`, PDF renderers not
/// used (one, idle).
fn msg_env(workers: usize, queue: usize) -> Vec<(&'static str, String)> {
    sized_env(&MESSAGE, &PDF, workers, queue, 120_000)
}

/// A server for PDF jobs: `workers` and `queue`, one message worker.
fn pdf_env(workers: usize, queue: usize) -> Vec<(&'static str, String)> {
    sized_env(&PDF, &MESSAGE, workers, queue, 170_000)
}

/// `workers` and `queue` for the measured type, a deadline longer than
/// any level runs, and one worker for the other type.
fn sized_env(
    measured: &Sizing,
    other: &Sizing,
    workers: usize,
    queue: usize,
    timeout_ms: u64,
) -> Vec<(&'static str, String)> {
    vec![
        (measured.workers, workers.to_string()),
        (measured.queue, queue.to_string()),
        (measured.timeout, timeout_ms.to_string()),
        (other.workers, "1".to_string()),
    ]
}

/// Section 1, message jobs.
pub async fn message_sweep(b: &Bench<'_>) -> Result<Vec<Level>, String> {
    let (knobs, w) = (b.knobs, b.knobs.workers);
    eprintln!(
        "[bench] 1. message jobs, work_ms={}, {w} workers",
        knobs.msg_work_ms
    );
    let env = msg_env(w, msg_queue(knobs));
    let server = Server::start(b.setup, b.client, "message", &env).await?;
    let target = Target::message(&server, knobs.msg_work_ms);
    let levels = sweep(b, &target, &knobs.msg_levels, knobs.msg_secs).await;
    server.stop().await;
    Ok(levels)
}

/// Section 1, PDF jobs; also returns how many pages one job renders.
pub async fn pdf_sweep(b: &Bench<'_>) -> Result<(Vec<Level>, u32), String> {
    let (knobs, w) = (b.knobs, b.knobs.workers);
    eprintln!(
        "[bench] 1. PDF jobs, pages {} at {} dpi, {w} workers",
        knobs.pdf_pages, knobs.pdf_dpi
    );
    let env = pdf_env(w, pdf_queue(knobs));
    let server = Server::start(b.setup, b.client, "pdf", &env).await?;
    let target = Target::pdf(&server, knobs);
    // One job first: checks the request and learns how many pages it renders.
    let probe = send(b.client, &target).await;
    if probe.status != 200 || probe.pages == 0 {
        return Err(format!(
            "a PDF job answered {} with {} pages; see {:?}",
            probe.status, probe.pages, server.log
        ));
    }
    let levels = sweep(b, &target, &knobs.pdf_levels, knobs.pdf_secs).await;
    server.stop().await;
    Ok((levels, probe.pages))
}

/// Section 2: for each worker count, the server's pages/s, then as many
/// bare loops at once, sized to about as long as the server's runs.
pub async fn scaling(b: &Bench<'_>, pdf_pages_per_job: u32) -> Result<Vec<Scale>, String> {
    let (knobs, w) = (b.knobs, b.knobs.workers);
    eprintln!("[bench] 2. pages/s against workers, 1..={w}");
    let mut scales = Vec::new();
    let mut reps = 0;
    for workers in 1..=w {
        let name = format!("scale-{workers}");
        let env = pdf_env(workers, workers * 2);
        let server = Server::start(b.setup, b.client, &name, &env).await?;
        let target = Target::pdf(&server, knobs);
        // Warm every renderer with one job each.
        let closed = Offer::Closed {
            concurrency: workers,
        };
        offer(b.client, &target, closed, Duration::ZERO).await;
        clear_out_dir(&b.setup.out_dir());
        let run = offer(
            b.client,
            &target,
            closed,
            Duration::from_secs_f64(knobs.scale_secs),
        )
        .await;
        clear_out_dir(&b.setup.out_dir());
        server.stop().await;
        let summary = Summary::of(&run);
        if reps == 0 {
            // Size the bare loops to about as long as the server's runs.
            let per_pass = f64::from(pdf_pages_per_job) / summary.pages_per_s.max(1e-9);
            reps = ((knobs.scale_secs / per_pass).round() as u32).max(2);
        }
        let (bare_pps, bare_ms_per_page) = bare_loops(b.setup, knobs, workers, reps)?;
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
    Ok(scales)
}

/// Section 3, message jobs: overload against a small queue.
pub async fn message_overload(b: &Bench<'_>) -> Result<Vec<Overload>, String> {
    let (knobs, w) = (b.knobs, b.knobs.workers);
    let capacity = overload_msg_capacity(knobs);
    eprintln!(
        "[bench] 3. overload, message jobs (capacity {capacity:.0}/s, queue {})",
        knobs.overload_queue
    );
    let env = msg_env(w, knobs.overload_queue);
    let server = Server::start(b.setup, b.client, "overload-message", &env).await?;
    let target = Target::message(&server, knobs.overload_work_ms);
    let warmup = Duration::from_secs_f64(knobs.warmup_secs);
    let closed = Offer::Closed { concurrency: w };
    offer(b.client, &target, closed, warmup).await;
    let runs = overload(b, &target, capacity).await;
    server.stop().await;
    Ok(runs)
}

/// Section 3, PDF jobs, against `capacity` jobs/s (the server's measured
/// rate with every worker in section 2).
pub async fn pdf_overload(b: &Bench<'_>, capacity: f64) -> Result<Vec<Overload>, String> {
    let (knobs, w) = (b.knobs, b.knobs.workers);
    eprintln!(
        "[bench] 3. overload, PDF jobs (capacity {capacity:.2}/s, queue {})",
        knobs.overload_queue
    );
    let env = pdf_env(w, knobs.overload_queue);
    let server = Server::start(b.setup, b.client, "overload-pdf", &env).await?;
    let target = Target::pdf(&server, knobs);
    let closed = Offer::Closed { concurrency: w };
    offer(b.client, &target, closed, Duration::ZERO).await;
    let runs = overload(b, &target, capacity).await;
    server.stop().await;
    Ok(runs)
}
