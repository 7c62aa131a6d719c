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

#[path = "../common/mod.rs"]
mod common;

mod knobs;
mod load;
mod machine;
mod plots;
mod report;
mod scenarios;
mod server;
mod stats;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use knobs::Knobs;
use machine::{load_1min, load_average, Machine};
use report::Results;
use scenarios::Bench;
use server::Setup;

/// Client-side limit on one request: above every server deadline used here,
/// so a slow answer is measured, not cut off.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("[bench] error: {e}");
        std::process::exit(1);
    }
}

/// `--quick` and `--out DIR` (default: the repository).
fn parse_args() -> Result<(bool, PathBuf), String> {
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
    Ok((quick, out_root))
}

async fn run() -> Result<(), String> {
    let (quick, out_root) = parse_args()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let machine = Machine::probe(root);
    let knobs = Knobs::from_env(quick, machine.nproc)?;
    let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        format!("cargo run --release --example bench -- {}", args.join(" "))
            .trim_end()
            .to_string()
    });
    plots::register_font()?;
    let setup = Setup::new(root, &knobs.sample)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(CLIENT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let started = Instant::now();
    eprintln!(
        "[bench] {} cores, {}; load {}; temporary files in {:?}",
        machine.nproc,
        machine.cpu,
        machine.load_start,
        setup.tmp.path()
    );
    let bench = Bench {
        setup: &setup,
        client: &client,
        knobs: &knobs,
    };
    let mut section_load = Vec::new();
    section_load.push(("1 message", load_1min()));
    let message = scenarios::message_sweep(&bench).await?;
    section_load.push(("1 PDF", load_1min()));
    let (pdf, pdf_pages_per_job) = scenarios::pdf_sweep(&bench).await?;
    section_load.push(("2", load_1min()));
    let scales = scenarios::scaling(&bench, pdf_pages_per_job).await?;
    section_load.push(("3 message", load_1min()));
    let msg_overload = scenarios::message_overload(&bench).await?;
    let pdf_capacity = scales
        .last()
        .filter(|_| knobs.overload_pdf)
        .map(|s| s.server.ok_per_s);
    let mut pdf_overload = Vec::new();
    if let Some(capacity) = pdf_capacity {
        section_load.push(("3 PDF", load_1min()));
        pdf_overload = scenarios::pdf_overload(&bench, capacity).await?;
    }

    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let results = Results {
        message,
        pdf,
        pdf_pages_per_job,
        scales,
        msg_overload,
        pdf_overload,
        pdf_capacity,
        section_load,
        load_end: load_average(),
        minutes,
    };
    let docs = out_root.join("docs");
    let plots = docs.join("bench");
    plots::draw_all(&plots, &results)?;
    let text = report::report(&machine, &knobs, &command, &results);
    let doc = docs.join("benchmarks.md");
    fs::write(&doc, text).map_err(|e| format!("cannot write {doc:?}: {e}"))?;
    eprintln!(
        "[bench] done in {minutes:.1} min: {} and {}",
        doc.display(),
        plots.display()
    );
    Ok(())
}
