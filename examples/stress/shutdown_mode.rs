//! The shutdown run: load, SIGTERM under load, then the drain, the exit,
//! the renderers, the answers around SIGTERM and the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::args::Args;
use crate::async_final::{async_rows, judge_async};
use crate::checks::{judge_all, phase, Checks, Phase, SIGTERM_WINDOW};
use crate::clients::{get_json, inject_faults, probe_client, renderer_pids, spawn_clients};
use crate::ctx::{Ctx, Fixtures, Target};
use crate::disk::{disk_checks, Verified};
use crate::probes::early_answer_probe;
use crate::proc::{children, is_renderer, proc_state};
use crate::record::{unshare, Expect, Kind, Log, Res};
use crate::report::{async_table, outcome_label, tables};
use crate::rng::Rng;
use crate::servers::{start_server, Server, EXIT_MARGIN, MAIN_SERVER};

/// Answers to job requests by when they were sent, against SIGTERM: counts
/// per outcome label.
#[derive(Default)]
struct Around {
    in_flight: BTreeMap<String, usize>,
    window: BTreeMap<String, usize>,
    after: BTreeMap<String, usize>,
}

/// How the server went: its exit and when, after SIGTERM.
struct Exit {
    status: Option<ExitStatus>,
    after: Duration,
}

pub async fn run(args: &Args, root: &Path, out: &mut String) -> Result<Checks, String> {
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
    let (running, renderers) = wait_for_running_job(&probe, &a.base).await;
    let mut descendants: BTreeSet<u32> = children(a.pid).into_iter().map(|c| c.0).collect();
    descendants.extend(&renderers);

    let term = Instant::now();
    let exit = drain(&mut a, ctx, tasks, term, &mut descendants).await;
    exit_checks(&mut checks, &a, &exit, &descendants);

    let mut log = unshare(log)?;
    judge_all(&mut checks, &log, &[(a.name, false)], Some(term));
    match async_rows(&a.out_dir) {
        Ok(rows) => judge_async(&mut checks, &mut log, &rows, true),
        Err(e) => checks.check(
            "async jobs: ended, or kept queued in jobs.db for the next start",
            false,
            e,
        ),
    }
    let around = around_sigterm(&log, term);
    around_checks(&mut checks, &around);
    running_check(&mut checks, &log, &running);
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
        "- exit: {:?} {} ms after SIGTERM\n",
        exit.status,
        exit.after.as_millis()
    );
    around_table(out, &around);
    tables(out, &log, &["A"]);
    async_table(out, &log);
    Ok(checks)
}

/// Waits (up to 10 s) until some job has been running for 500 ms, so that
/// the drain has a running job to wait for (and, under this load, queued
/// ones to refuse). Disconnecting clients hang up within 400 ms, so that
/// job's client is still waiting for its answer. Returns the jobs running
/// then and the renderer pids last listed.
async fn wait_for_running_job(probe: &reqwest::Client, base: &str) -> (BTreeSet<String>, Vec<u32>) {
    let mut renderers: Vec<u32> = Vec::new();
    let wait_start = Instant::now();
    while wait_start.elapsed() < Duration::from_secs(10) {
        if let Some(s) = get_json(probe, &format!("{base}/status")).await {
            renderers = renderer_pids(&s);
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
                let running = workers
                    .iter()
                    .filter_map(|w| w["job_id"].as_str().map(str::to_string))
                    .collect();
                return (running, renderers);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (BTreeSet::new(), renderers)
}

/// Sends SIGTERM at `term` and keeps the clients going while the server
/// drains, noting its children as they change (replacements started during
/// the drain); then 500 ms more of requests, which must be refused, before
/// the clients stop. A server still running 5 s past the limit is killed.
async fn drain(
    a: &mut Server,
    ctx: Arc<Ctx>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    term: Instant,
    descendants: &mut BTreeSet<u32>,
) -> Exit {
    ctx.terminated.store(true, Ordering::Relaxed);
    a.process.sigterm();
    let limit = a.grace + EXIT_MARGIN;
    let status = loop {
        if let Some(status) = a.process.try_exit() {
            break Some(status);
        }
        if term.elapsed() > limit {
            break None;
        }
        descendants.extend(children(a.pid).into_iter().map(|c| c.0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let after = term.elapsed();
    // Requests after the exit must be refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    drop(ctx);
    if status.is_some() {
        return Exit { status, after };
    }
    let status = a
        .process
        .wait_exit(term, limit + Duration::from_secs(5))
        .await;
    let after = term.elapsed();
    if status.is_none() {
        a.process.kill();
    }
    Exit { status, after }
}

/// Exit code, exit time, and no renderer left running.
fn exit_checks(checks: &mut Checks, a: &Server, exit: &Exit, descendants: &BTreeSet<u32>) {
    checks.check(
        "exit code 0",
        exit.status.is_some_and(|s| s.success()),
        format!("{:?}", exit.status),
    );
    checks.check(
        format!(
            "exits within SHUTDOWN_GRACE_MS + {} s",
            EXIT_MARGIN.as_secs()
        ),
        exit.status.is_some() && exit.after <= a.grace + EXIT_MARGIN,
        format!(
            "{} ms after SIGTERM (grace {} ms)",
            exit.after.as_millis(),
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
}

/// Job requests in flight at SIGTERM, sent around it, and after it.
fn around_sigterm(log: &Log, term: Instant) -> Around {
    let mut around = Around::default();
    for r in &log.records {
        let label = outcome_label(&r.res);
        let is_job = matches!(
            r.expect,
            Expect::Job { .. } | Expect::JobInvalid { .. } | Expect::Async
        );
        match phase(r, Some(term)) {
            Phase::InFlight if is_job => *around.in_flight.entry(label).or_default() += 1,
            Phase::Window if is_job => *around.window.entry(label).or_default() += 1,
            Phase::After if is_job => *around.after.entry(label).or_default() += 1,
            _ => {}
        }
    }
    around
}

/// The sum of the counts whose label passes `keep`.
fn count(map: &BTreeMap<String, usize>, keep: impl Fn(&str) -> bool) -> usize {
    map.iter().filter(|(l, _)| keep(l)).map(|(_, n)| n).sum()
}

fn around_checks(checks: &mut Checks, around: &Around) {
    let flying = count(&around.in_flight, |_| true);
    let finished_or_503 = count(&around.in_flight, |l| {
        l.starts_with("200") || l == "503 shutting_down"
    });
    checks.check(
        "jobs in flight at SIGTERM finish (200) or get 503",
        flying > 0,
        format!("{flying} in flight: {finished_or_503} answered 200 or 503 shutting_down, the rest with their own expected status (judged above)"),
    );
    let refused = count(&around.after, |l| {
        l == "503 shutting_down" || l.starts_with("connection ")
    });
    // A client that hung up on purpose before any answer chose not to
    // learn it: neither a refusal nor a violation.
    let after_total = count(&around.after, |l| l != "dropped on purpose");
    checks.check(
        "new jobs after SIGTERM get 503 or connection refused",
        after_total > 0 && refused == after_total,
        format!("{refused} of {after_total}"),
    );
}

/// Jobs that were running at SIGTERM: answered with their own outcome
/// (200, their own 4xx such as an unreadable PDF's 422, 500 if their
/// renderer was killed, 504 at their deadline), never dropped by the
/// shutdown (503) or cut off (connection error).
fn running_check(checks: &mut Checks, log: &Log, running: &BTreeSet<String>) {
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
    let answered = count(&running_answers, |_| true);
    let running_bad = count(&running_answers, |l| {
        l.starts_with("503") || l.starts_with("connection ")
    });
    checks.check(
        "jobs running at SIGTERM finish with their own outcome",
        answered > 0 && running_bad == 0,
        format!(
            "{} running, {answered} of them answered (others' clients hung up): {running_answers:?}",
            running.len()
        ),
    );
}

fn around_table(out: &mut String, around: &Around) {
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
            &around.in_flight,
        ),
        (
            format!("within {} ms", SIGTERM_WINDOW.as_millis()),
            &around.window,
        ),
        (
            format!("> {} ms after", SIGTERM_WINDOW.as_millis()),
            &around.after,
        ),
    ] {
        for (answer, n) in map {
            let _ = writeln!(out, "| {label} | {answer} | {n} |");
        }
    }
}
