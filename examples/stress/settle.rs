//! After the load: waiting until a server is idle and whole again, and
//! until its fds and memory are back near the warm-up level.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::{get_json, readyz, renderer_pids};
use crate::proc::{children, fd_count, fd_kinds, rss_kb};
use crate::servers::Server;

/// File descriptors the server may hold above its warm-up count after the
/// load: a probe connection still being torn down, at most.
pub const FD_MARGIN: usize = 2;
/// Resident memory the server may hold above its warm-up figure after the
/// load, in KiB. The warm-up already ran every request type, so allocator
/// arenas and caches exist; what remains is glibc malloc keeping freed
/// upload buffers (up to 1.5 MiB each, tens in flight) in its per-thread
/// arenas instead of returning them. A leak of one upload or one response
/// per request would be hundreds of MiB over a run of thousands.
pub const RSS_MARGIN_KB: u64 = 32 * 1024;
/// How long the server gets to become idle and healthy after the load.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

pub struct Settled {
    pub fds: usize,
    pub fd_kinds: String,
    pub rss_kb: u64,
    pub status: Value,
    pub took: Duration,
}

/// Waits until the server is idle and whole again: every worker alive, no
/// job running or queued, one live renderer per PDF worker (the pids it
/// reports are exactly its live renderer children), no zombie child,
/// ready. Polls; fails after `SETTLE_DEADLINE`.
pub async fn settle(probe: &reqwest::Client, server: &Server) -> Result<Settled, String> {
    let start = Instant::now();
    loop {
        let status = get_json(probe, &format!("{}/status", server.base)).await;
        let ready = readyz(probe, &server.base).await;
        let last = if let Some(status) = status {
            let problems = problems(server, &status, ready);
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

/// What keeps a server from being settled, given its `/status` and
/// `/readyz` answers and its children now; empty when it is.
fn problems(server: &Server, status: &Value, ready: u16) -> Vec<String> {
    let kids = children(server.pid);
    let zombies: Vec<u32> = kids.iter().filter(|k| k.1 == 'Z').map(|k| k.0).collect();
    let live: BTreeSet<u32> = kids.iter().filter(|k| k.1 != 'Z').map(|k| k.0).collect();
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
    let pids: BTreeSet<u32> = renderer_pids(status).into_iter().collect();
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
    problems
}

/// Polls until fds and RSS are within their margins of the baseline (fds
/// fall as closed connections are torn down); returns the last reading.
pub async fn resources_back(server: &Server, base: &Settled) -> (usize, u64, bool) {
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
