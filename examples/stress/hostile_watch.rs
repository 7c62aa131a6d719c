//! The attacked server as seen from outside: what came back on an
//! attacking connection, `/livez` from a normal client during the attack,
//! the server's connections per client address (kernel view), its own
//! connection counters, and the listen-queue probe.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::hostile::{connect_from, LivezProbe, Seen, ATTACKER, NORMAL};
use crate::probes::Finding;

/// How often `/livez` is asked during the attack.
const LIVEZ_EVERY: Duration = Duration::from_millis(250);

/// Reads until the server closes or one whole answer (head and its
/// Content-Length of body) has come.
pub async fn read_answer<R: AsyncRead + Unpin>(rd: &mut R) -> Seen {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if answer_len(&buf).is_some_and(|n| buf.len() >= n) {
            return parse_answer(&buf);
        }
        match rd.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => return Seen::Closed { reset: false },
            Err(_) if buf.is_empty() => return Seen::Closed { reset: true },
            Ok(0) | Err(_) => return parse_answer(&buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The length of a whole answer once its head has come.
fn answer_len(buf: &[u8]) -> Option<usize> {
    let end = head_end(buf)?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Some(end + length)
}

/// An answer's status, `Retry-After`, and its JSON error's code and
/// message; status 0 if it is not HTTP.
fn parse_answer(buf: &[u8]) -> Seen {
    let end = head_end(buf).unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let retry_after = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("retry-after:"));
    let json: serde_json::Value = serde_json::from_slice(&buf[end..]).unwrap_or_default();
    let field = |k: &str| json[k].as_str().unwrap_or_default().to_string();
    let mut message = field("message");
    if status == 0 {
        message = String::from_utf8_lossy(&buf[..buf.len().min(80)]).into_owned();
    }
    Seen::Answer {
        status,
        code: field("error"),
        message,
        retry_after,
    }
}

/// `GET /livez` from a normal client every [`LIVEZ_EVERY`] on a fresh
/// connection (so each probe also goes through accept), while `attacking`.
pub async fn probe_livez(server: SocketAddr, attacking: Arc<AtomicBool>) -> Vec<LivezProbe> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client");
    let url = format!("http://{server}/livez");
    let mut tick = tokio::time::interval(LIVEZ_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probes = Vec::new();
    while attacking.load(Ordering::Relaxed) {
        tick.tick().await;
        let sent = Instant::now();
        let result = match client.get(&url).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                r.bytes().await.map(|_| status).map_err(|e| e.to_string())
            }
            Err(e) => Err(crate::ctx::error_text(&e)),
        };
        probes.push(LivezProbe {
            took: sent.elapsed(),
            result,
            sockets: server_sockets(server.port()),
        });
    }
    probes
}

/// The server's open connections from [`NORMAL`] and from [`ATTACKER`],
/// as the kernel lists them (`/proc/net/tcp`: established or closed by
/// the client only, which includes the accept backlog).
fn server_sockets(port: u16) -> (usize, usize) {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut counts = (0, 0);
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state)) =
            (fields.get(1), fields.get(2), fields.get(3))
        else {
            continue;
        };
        // 01 ESTABLISHED, 08 CLOSE_WAIT: the server still holds them.
        if !matches!(*state, "01" | "08") || !local.ends_with(&format!(":{port:04X}")) {
            continue;
        }
        let peer = remote
            .split(':')
            .next()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()));
        match peer {
            Some(ip) if ip == NORMAL => counts.0 += 1,
            Some(ip) if ip == ATTACKER => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

/// The label of the server's count of connections refused at accept for
/// `MAX_CONNECTIONS_PER_CLIENT`.
pub const PER_CLIENT_REFUSALS: &str = "refused at accept, per client";

/// The server's connection counters (`/metrics`), read after the load.
pub async fn server_counters(probe: &reqwest::Client, base: &str) -> Vec<(&'static str, f64)> {
    let text = match probe.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    [
        (
            PER_CLIENT_REFUSALS,
            "jobserver_connections_refused_total{reason=\"per_client\"}",
        ),
        (
            "refused at accept, in all",
            "jobserver_connections_refused_total{reason=\"total\"}",
        ),
        (
            "cut by the header timeout",
            "jobserver_connections_timed_out_total{phase=\"header\"}",
        ),
        (
            "bodies cut by a body timeout",
            "jobserver_connections_timed_out_total{phase=\"body\"}",
        ),
    ]
    .into_iter()
    .filter_map(|(label, series)| {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())?;
        Some((label, value))
    })
    .collect()
}

/// Connects opened at once by the listen-queue probe; every tenth is a
/// normal client's. A burst of 300 overflows the queue about one time in
/// three on an idle server, depending on when its accept loop runs; 600
/// nearly always do.
const BACKLOG_BURST: usize = 600;
/// A connect this slow had its SYN dropped and sent again (the kernel's
/// first retransmission comes after 1 s).
const SYN_RETRY: Duration = Duration::from_millis(900);

/// Bursts the listen-queue probe sends before it says the queue held.
const BACKLOG_TRIES: usize = 10;

/// Opens [`BACKLOG_BURST`] connections at once on an idle server, from the
/// attacker and (one in ten) from a normal client, up to [`BACKLOG_TRIES`]
/// times until the queue overflows: connects past what the listen queue
/// holds (128 not yet accepted) have their SYN dropped by the kernel and
/// wait for it to be sent again, normal clients as much as the attacker,
/// since the per-client cap acts only after accept.
pub async fn backlog_probe(server: SocketAddr) -> Finding {
    let mut tries = 0;
    let (conns, overflows) = loop {
        tries += 1;
        let before = listen_overflows();
        let conns = connect_burst(server).await;
        let overflows = listen_overflows().zip(before).map(|(a, b)| a - b);
        let overflowed = overflows.is_some_and(|n| n > 0) || conns.iter().any(|c| c.1 >= SYN_RETRY);
        if overflowed || tries == BACKLOG_TRIES {
            break (conns, overflows);
        }
    };
    let side = |from: Ipv4Addr| {
        let times: Vec<Duration> = conns.iter().filter(|c| c.0 == from).map(|c| c.1).collect();
        let slow = times.iter().filter(|t| **t >= SYN_RETRY).count();
        let longest = times.iter().max().copied().unwrap_or_default();
        (times.len(), slow, longest)
    };
    let (normal, attacker) = (side(NORMAL), side(ATTACKER));
    let connected = conns.iter().filter(|c| c.2).count();
    Finding {
        name: format!(
            "a burst of {BACKLOG_BURST} connects overflows the listen queue: SYNs dropped, connects (a normal client's too) wait ~1 s"
        ),
        present: overflows.is_some_and(|n| n > 0) || normal.1 + attacker.1 > 0,
        detail: format!(
            "burst {tries} of at most {BACKLOG_TRIES}: {connected} of {BACKLOG_BURST} connected; over {} ms: {} of {} from {ATTACKER} (longest {} ms), {} of {} from 127.0.0.1 (longest {} ms); listen-queue overflows (kernel count): {}",
            SYN_RETRY.as_millis(),
            attacker.1,
            attacker.0,
            attacker.2.as_millis(),
            normal.1,
            normal.0,
            normal.2.as_millis(),
            overflows.map_or("unknown".to_string(), |n| n.to_string())
        ),
    }
}

/// One burst of the listen-queue probe: `(from, connect time, connected)`
/// of each connection, closed as soon as it is made.
async fn connect_burst(server: SocketAddr) -> Vec<(Ipv4Addr, Duration, bool)> {
    let burst = (0..BACKLOG_BURST).map(|i| {
        let from = if i % 10 == 9 { NORMAL } else { ATTACKER };
        async move {
            let sent = Instant::now();
            let stream =
                tokio::time::timeout(Duration::from_secs(10), connect_from(from, server)).await;
            (from, sent.elapsed(), matches!(stream, Ok(Ok(_))))
        }
    });
    futures::future::join_all(burst).await
}

/// The kernel's count of connections dropped because a listen queue was
/// full (`TcpExt: ListenOverflows` in `/proc/net/netstat`; all sockets of
/// the machine).
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}
