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
//! idempotency key), SIGKILLs a random renderer every 0.5-2 s, attacks it
//! from a second address (127.0.0.2) with an upload flood and a
//! slowloris, and then checks that the server answered every request once
//! with an expected status, settled back to its configured workers and
//! renderers, leaked no zombies, file descriptors or memory, left no
//! partial output, and brought every accepted async job to a final state;
//! and that every attacking connection was answered or closed within the
//! server's timeouts while `/livez` kept answering within 1 s.
//! It prints Markdown tables and exits 1 on any violation.
//!
//! Rate limiting: the limiter keys on the client IP and every normal client is
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

#[path = "../common/mod.rs"]
mod common;

mod args;
mod async_final;
mod async_jobs;
mod checks;
mod clients;
mod ctx;
mod disk;
mod events;
mod hostile;
mod hostile_checks;
mod hostile_watch;
mod main_mode;
mod malformed;
mod probes;
mod proc;
mod record;
mod report;
mod requests;
mod rng;
mod servers;
mod settle;
mod shutdown_mode;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use checks::Checks;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match args::parse_args() {
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
        shutdown_mode::run(&args, &root, &mut out).await
    } else {
        main_mode::run(&args, &root, &mut out).await
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
    let passed = verdict(&mut out, &checks);
    println!("{out}");
    clean_up(&root, passed, args.keep);
    std::process::exit(if passed { 0 } else { 1 });
}

/// The checks table and PASS, or FAIL with the first violations; true on
/// PASS.
fn verdict(out: &mut String, checks: &Checks) -> bool {
    report::checks_table(out, checks);
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
    passed
}

/// Removes the run's files after a pass (unless `--keep`); after a failure
/// keeps them and prints the tail of every server log.
fn clean_up(root: &Path, passed: bool, keep: bool) {
    if passed && !keep {
        let removing = Instant::now();
        let _ = std::fs::remove_dir_all(root);
        eprintln!(
            "stress: removed the run's files in {:.1} s",
            removing.elapsed().as_secs_f64()
        );
        return;
    }
    eprintln!(
        "stress: server logs and OUTPUT_DIRs kept in {}",
        root.display()
    );
    if passed {
        return;
    }
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for log in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = log.path();
            if path.extension().is_some_and(|e| e == "log") {
                eprintln!(
                    "--- {} (tail)\n{}",
                    path.display(),
                    servers::tail(&path, 20)
                );
            }
        }
    }
}
