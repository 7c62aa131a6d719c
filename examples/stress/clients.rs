//! The load: client tasks looping over their kind of request, the
//! renderer killer, and the phase that runs them for a while.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::async_jobs::{async_job, AsyncSpec, ASYNC_SHARE};
use crate::ctx::Ctx;
use crate::malformed::malformed;
use crate::proc::{is_live_child, sigkill};
use crate::record::{lock, Kind, Res};
use crate::requests::{
    message_job, pdf_job, pdf_json_body, pdf_request, run_pdf, valid_pdf, PdfReq,
};
use crate::rng::Rng;

/// Starts every client of one phase; each loops until `ctx.stop`.
pub fn spawn_clients(
    ctx: &Arc<Ctx>,
    seed: u64,
    extra: &[Kind],
) -> Vec<tokio::task::JoinHandle<()>> {
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

pub async fn one_request(ctx: &Ctx, rng: &mut Rng, kind: Kind) {
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
        Kind::ShortDeadline => short_deadline(ctx, rng, kind).await,
        Kind::Disconnect => disconnect(ctx, rng, kind).await,
        Kind::Malformed => malformed(ctx, rng).await,
        Kind::Burst | Kind::RateLimited => burst(ctx, rng, kind).await,
        Kind::Long => long_job(ctx, rng, kind).await,
        Kind::PageGet
        | Kind::AsyncPdf
        | Kind::AsyncMessage
        | Kind::JobGet
        | Kind::JobEvents
        | Kind::JobArchive
        | Kind::JobCancel => {}
    }
}

/// A job with a deadline of its own, often too short for it.
async fn short_deadline(ctx: &Ctx, rng: &mut Rng, kind: Kind) {
    if rng.chance(0.5) {
        let req = valid_pdf(rng, &ctx.fx);
        let timeout = *rng.pick(&[1, 5, 20, 60, 150, 400]);
        let builder = ctx
            .client
            .post(ctx.url(0, "/jobs/pdf"))
            .json(&pdf_json_body(&req, Some(timeout)));
        run_pdf(ctx, rng, kind, 0, &req, ("pdf", builder), None).await;
    } else {
        let timeout = rng.range(1, 150);
        message_job(ctx, rng, kind, 0, 200, Some(timeout), None).await;
    }
}

/// A client that hangs up after 5-400 ms, mostly on a PDF job long enough
/// to be running then.
async fn disconnect(ctx: &Ctx, rng: &mut Rng, kind: Kind) {
    let hang_up = Some(rng.ms(5, 400));
    if rng.chance(0.3) {
        message_job(ctx, rng, kind, 0, 300, None, hang_up).await;
        return;
    }
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
    // A raw upload or a JSON path.
    let form = if rng.chance(0.5) { 1 } else { 0 };
    let (_, builder) = pdf_request(ctx, 0, &req, form);
    run_pdf(ctx, rng, kind, 0, &req, ("pdf", builder), hang_up).await;
}

/// After a pause of 1.5-3 s, a burst of small jobs at once: 12 to server A
/// (`Burst`), 8 to the rate-limited server B (`RateLimited`).
async fn burst(ctx: &Ctx, rng: &mut Rng, kind: Kind) {
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
                run_pdf(ctx, &mut rng, kind, target, &req, ("pdf", builder), None).await;
            }
        }
    });
    futures::future::join_all(jobs).await;
}

/// Jobs of 1-3 s, so that some are running when SIGTERM comes.
async fn long_job(ctx: &Ctx, rng: &mut Rng, kind: Kind) {
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
        let (_, builder) = pdf_request(ctx, 0, &req, 0);
        run_pdf(ctx, rng, kind, 0, &req, ("pdf", builder), None).await;
    }
}

/// SIGKILLs a random renderer of `server` every 0.5-2 s until `until`.
pub async fn inject_faults(
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
        let pids = renderer_pids(&status);
        if pids.is_empty() {
            continue;
        }
        let pid = *rng.pick(&pids);
        // Only a live child of the server: never a recycled pid.
        if !is_live_child(pid, server_pid) {
            continue;
        }
        if sigkill(pid) {
            kills.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        // A fresh connection per probe: no idle socket to skew fd counts.
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

/// The status `GET /readyz` answers with; 0 if none came.
pub async fn readyz(client: &reqwest::Client, base: &str) -> u16 {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The renderer pids a `/status` answer lists.
pub fn renderer_pids(status: &Value) -> Vec<u32> {
    status["pdf_engine"]["renderer_pids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_u64().map(|p| p as u32))
        .collect()
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// Runs the clients for `length`, then stops them and waits for each to
/// finish its request. Prints progress every 10 s.
pub async fn run_phase(ctx: &Arc<Ctx>, tasks: Vec<tokio::task::JoinHandle<()>>, length: Duration) {
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
