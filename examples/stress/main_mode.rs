//! The main run: two servers, warm-up, load with renderer kills and the
//! hostile phase's attack on A, then settling, judging, disk checks,
//! probes and the report.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::args::Args;
use crate::async_final::{async_views, judge_async};
use crate::checks::{judge_all, load_checks, Checks};
use crate::clients::{inject_faults, probe_client, run_phase, spawn_clients};
use crate::ctx::{Ctx, Fixtures, Target};
use crate::disk::{disk_checks, verifier, DiskReport, Verified};
use crate::hostile::{attack, HostileLog};
use crate::hostile_checks::hostile_checks;
use crate::hostile_watch::{backlog_probe, server_counters};
use crate::probes::{
    early_answer_probe, findings_504, findings_table, idle_kill_probe, slow_head_shutdown_probe,
    Finding,
};
use crate::proc::fd_kinds;
use crate::record::{unshare, Kind, Log};
use crate::report::{async_table, hostile_table, tables};
use crate::rng::Rng;
use crate::servers::{start_server, terminate, Server, EXIT_MARGIN, LIMITED_SERVER, MAIN_SERVER};
use crate::settle::{resources_back, settle, Settled, FD_MARGIN, RSS_MARGIN_KB};

/// One server's row in the resources table.
struct Resources {
    name: &'static str,
    fds: (usize, usize),
    rss_kb: (u64, u64),
    /// Its `/status` once settled after the load.
    status: Value,
}

/// What the report says beside the log and the checks.
struct Outcome {
    load_time: Duration,
    warmup: Duration,
    isolate: bool,
    injected: u64,
    resources: Vec<Resources>,
    findings: Vec<Finding>,
    hostile: HostileLog,
}

pub async fn run(args: &Args, root: &Path, out: &mut String) -> Result<Checks, String> {
    let t0 = Instant::now();
    let duration = args.duration.unwrap_or(Duration::from_secs(60));
    let warmup = Duration::from_secs(5).min(duration);
    let probe = probe_client();
    let fx = Arc::new(Fixtures::load()?);
    let mut a = start_server(&MAIN_SERVER, root, &probe).await?;
    let mut b = start_server(&LIMITED_SERVER, root, &probe).await?;
    let early = early_answer_probe(&a).await;
    let isolate = early.present;
    let load = Load {
        targets: vec![
            Target {
                base: a.base.clone(),
            },
            Target {
                base: b.base.clone(),
            },
        ],
        log: Arc::new(Mutex::new(Log::default())),
        fx,
        isolate,
    };
    let verifying = Arc::new(AtomicBool::new(false));
    let verifier = tokio::spawn(verifier(
        Arc::clone(&load.log),
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
    let (base_a, base_b) = warm_up(&load, &probe, [&a, &b], args.seed, warmup, t0).await?;

    let (load_time, injected, mut hostile) =
        load_with_faults(&load, &a, args.seed, duration, t0).await;
    hostile.counters = server_counters(&probe, &a.base).await;
    verifying.store(true, Ordering::Relaxed);
    let verified = verifier.await.unwrap_or_default();
    eprintln!(
        "stress: load done; {} pages verified during the run; settling and checking",
        verified.pages.iter().sum::<usize>()
    );
    let checking = Instant::now();

    let mut resources = Vec::new();
    for (server, base) in [(&a, &base_a), (&b, &base_b)] {
        if let Some(r) = settle_checks(&mut checks, &probe, server, base, t0).await {
            resources.push(r);
        }
    }

    let mut log = unshare(load.log)?;
    let servers = [(a.name, a.limited), (b.name, b.limited)];
    judge_all(&mut checks, &log, &servers, None);
    let views = async_views(&probe, &a, &log).await;
    judge_async(&mut checks, &mut log, &views, false);
    load_checks(&mut checks, &log, injected);
    hostile_checks(&mut checks, &hostile, &log);
    eprintln!(
        "stress: settled and judged in {:.1} s; checking OUTPUT_DIRs",
        checking.elapsed().as_secs_f64()
    );
    let (disk_a, disk_b) = both_disk_checks(&mut checks, &log, &verified, &a, &b);
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
    // Two probes of issues since fixed: checked, so that they stay fixed.
    let mut fixed = Vec::new();
    if let Some(addr) = server_addr(&a) {
        fixed.push(backlog_probe(addr).await);
    }
    fixed.push(slow_head_shutdown_probe(root, &probe).await);
    for probe in &fixed {
        let name = format!("stays fixed: {}", probe.name);
        checks.check(name, !probe.present, probe.detail.clone());
    }
    findings.extend(fixed);
    findings.extend(findings_504(&a, &log, leftover_504));

    eprintln!(
        "stress: stopping servers at {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Clean exit of both.
    for server in [&mut a, &mut b] {
        stop_check(&mut checks, server).await;
    }

    let outcome = Outcome {
        load_time,
        warmup,
        isolate,
        injected,
        resources,
        findings,
        hostile,
    };
    write_report(out, args, &log, &outcome);
    Ok(checks)
}

/// What every load phase shares: the servers, the log, the fixtures.
struct Load {
    targets: Vec<Target>,
    log: Arc<Mutex<Log>>,
    fx: Arc<Fixtures>,
    isolate: bool,
}

impl Load {
    /// Runs the usual mix of clients, the rate-limited class included, for
    /// `length`, and if given the hostile phase's attack on that server
    /// beside them; their connections close when it ends.
    async fn phase(&self, seed: u64, length: Duration, attacked: Option<SocketAddr>) -> HostileLog {
        let ctx = Ctx::new(
            self.targets.clone(),
            Arc::clone(&self.log),
            Arc::clone(&self.fx),
            self.isolate,
        );
        let tasks = spawn_clients(&ctx, seed, &[Kind::RateLimited]);
        let end = Instant::now() + length;
        let attacker =
            attacked.map(|server| tokio::spawn(attack(Arc::clone(&ctx), server, seed, end)));
        run_phase(&ctx, tasks, length).await;
        match attacker {
            Some(task) => task.await.unwrap_or_default(),
            None => HostileLog::default(),
        }
    }
}

/// Warm-up: the same mix, no faults; then the baseline of both servers.
async fn warm_up(
    load: &Load,
    probe: &reqwest::Client,
    [a, b]: [&Server; 2],
    seed: u64,
    warmup: Duration,
    t0: Instant,
) -> Result<(Settled, Settled), String> {
    load.phase(seed, warmup, None).await;
    eprintln!(
        "stress: warm-up done after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let base_a = baseline(probe, a).await?;
    eprintln!(
        "stress: A settled after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let base_b = baseline(probe, b).await?;
    Ok((base_a, base_b))
}

/// A server settled after the warm-up: the baseline of its resources.
async fn baseline(probe: &reqwest::Client, server: &Server) -> Result<Settled, String> {
    settle(probe, server)
        .await
        .map_err(|e| format!("{} after warm-up: {e}", server.name))
}

/// The load with faults and the attack on A; the injector stops a few
/// seconds early so every renderer it killed has been used (and replaced)
/// before the checks. Returns how long it took, how many renderers were
/// killed, and what the attack saw.
async fn load_with_faults(
    load: &Load,
    a: &Server,
    seed: u64,
    duration: Duration,
    t0: Instant,
) -> (Duration, u64, HostileLog) {
    let kills = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let cooldown = (duration / 4).min(Duration::from_secs(5));
    let injector = tokio::spawn(inject_faults(
        a.base.clone(),
        a.pid,
        Rng(seed ^ 0xFA17),
        started + duration - cooldown,
        Arc::clone(&kills),
    ));
    let hostile = load
        .phase(seed.rotate_left(17), duration, server_addr(a))
        .await;
    eprintln!(
        "stress: clients stopped after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let _ = injector.await;
    (started.elapsed(), kills.load(Ordering::Relaxed), hostile)
}

/// The address a server listens on.
fn server_addr(server: &Server) -> Option<SocketAddr> {
    server.base.trim_start_matches("http://").parse().ok()
}

/// After the load: the server settles, then its fds and RSS come back to
/// their warm-up level. Returns its resources row if it settled.
async fn settle_checks(
    checks: &mut Checks,
    probe: &reqwest::Client,
    server: &Server,
    base: &Settled,
    t0: Instant,
) -> Option<Resources> {
    let name = format!(
        "server {}: settles (workers, renderers, no zombies, ready)",
        server.name
    );
    let end = match settle(probe, server).await {
        Ok(end) => end,
        Err(e) => {
            checks.check(name, false, e);
            return None;
        }
    };
    checks.check(
        name,
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
    Some(Resources {
        name: server.name,
        fds: (base.fds, fds),
        rss_kb: (base.rss_kb, rss),
        status: end.status,
    })
}

/// SIGTERM to an idle server: it must exit 0 within its grace and margin.
async fn stop_check(checks: &mut Checks, server: &mut Server) {
    let limit = server.grace + EXIT_MARGIN;
    let (status, took) = terminate(server, limit).await;
    checks.check(
        format!("server {}: exits 0 on SIGTERM when idle", server.name),
        status.is_some_and(|s| s.success()),
        format!("{status:?} after {} ms", took.as_millis()),
    );
}

/// Both servers' OUTPUT_DIRs, checked on two threads.
fn both_disk_checks(
    checks: &mut Checks,
    log: &Log,
    verified: &Verified,
    a: &Server,
    b: &Server,
) -> (DiskReport, DiskReport) {
    let mut c1 = Checks::new();
    let mut c2 = Checks::new();
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| disk_checks(&mut c1, log, verified, a, 0));
        let hb = s.spawn(|| disk_checks(&mut c2, log, verified, b, 1));
        (ha.join(), hb.join())
    });
    checks.rows.extend(c1.rows.into_iter().chain(c2.rows));
    checks
        .violations
        .extend(c1.violations.into_iter().chain(c2.violations));
    (ra.unwrap_or_default(), rb.unwrap_or_default())
}

fn write_report(out: &mut String, args: &Args, log: &Log, outcome: &Outcome) {
    let _ = writeln!(
        out,
        "## Stress run: {} s load (+{} s warm-up), seed {}\n",
        outcome.load_time.as_secs(),
        outcome.warmup.as_secs(),
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
        if outcome.isolate {
            "on fresh connections (the server closes early-answered connections without `Connection: close`)"
        } else {
            "share the other clients' keep-alive connections"
        }
    );
    tables(out, log, &["A", "B"]);
    async_table(out, log);
    let _ = writeln!(
        out,
        "\n### Faults and resources\n\n| server | renderer SIGKILLs injected | renderer crashes seen | kills (deadline/cancel) | recycles | renderers started | fds warm-up -> end | RSS MiB warm-up -> end |\n|---|---:|---:|---:|---:|---:|---|---|"
    );
    for r in &outcome.resources {
        let e = &r.status["pdf_engine"];
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} -> {} | {} -> {} |",
            r.name,
            if r.name == "A" { outcome.injected } else { 0 },
            e["renderer_crashes"],
            e["renderer_kills"],
            e["renderer_recycles"],
            e["renderers_started"],
            r.fds.0,
            r.fds.1,
            r.rss_kb.0 / 1024,
            r.rss_kb.1 / 1024
        );
    }
    hostile_table(out, &outcome.hostile, log);
    let _ = write!(out, "\n{}", findings_table(&outcome.findings));
}
