//! The hostile phase: while the normal clients run, an attacker on
//! 127.0.0.2 (a client address of its own, as the server sees its peers)
//! floods `POST /jobs/pdf` with uploads it never finishes and opens
//! slowloris connections that send half a request head; a prober on
//! 127.0.0.1 asks for `/livez` meanwhile. Every attacking connection is
//! recorded with what the server did to it and how long it stayed open
//! (`hostile_watch.rs` reads the answers and probes `/livez`);
//! `hostile_checks.rs` judges them.
//!
//! The attack runs from [`LEAD`] after the load starts until [`TAIL`]
//! before it ends, so that its last connections are gone before the
//! clients stop and the server is checked for leaked sockets and memory.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::ctx::Ctx;
use crate::hostile_watch::{listen_overflows, probe_livez, read_answer};
use crate::rng::Rng;
use crate::servers::{
    BODY_IDLE_TIMEOUT_MS, BODY_TIMEOUT_MS, HEADER_READ_TIMEOUT_MS, MAX_UPLOAD_BYTES,
};

/// The attacker's address: on Linux the whole of 127/8 is loopback, and
/// the server counts 127.0.0.2 as a client apart from 127.0.0.1.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The normal clients' address.
pub const NORMAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Uploads sent at once in each wave of the flood.
pub const FLOOD_WAVE: usize = 20;
/// Connections each wave of the slowloris opens: from under the
/// per-client cap (so the flood gets in beside it) to three times it.
pub const SLOWLORIS_WAVE: (u64, u64) = (40, 200);
/// A wave opens its connections [`SLOWLORIS_BURST`] at a time, one burst
/// every [`BURST_GAP`]: the server's listen queue holds 128 connections
/// not yet accepted, and a wave of 200 SYNs at once can overflow it while
/// the server's accept loop waits for a core, so the kernel drops SYNs of
/// every client, normal ones included, who connect only a second later.
/// That is probed on its own ([`crate::hostile_watch::backlog_probe`], a
/// finding); the attack here stays well under it (with a wave of the
/// flood, about 50 connects in 100 ms) so that `/livez` measures the
/// server.
pub const SLOWLORIS_BURST: u64 = 16;
pub const BURST_GAP: Duration = Duration::from_millis(50);
/// Slack beyond the server's own timeouts before a connection counts as
/// kept open too long: accepting a wave of connections, timer and
/// scheduling delay on a loaded two-core machine, in the server and here.
pub const CLOSE_MARGIN: Duration = Duration::from_secs(2);
/// A connect that takes longer failed (the server did not accept).
const CONNECT_LIMIT: Duration = Duration::from_secs(15);
/// How long past its bound a connection is still watched, to tell how
/// long it really stayed open.
const LATE_WATCH: Duration = Duration::from_secs(10);
/// `/livez` must answer within this during the attack.
pub const LIVEZ_LIMIT: Duration = Duration::from_secs(1);
/// The attack starts this long after the load, once its clients are busy.
const LEAD: Duration = Duration::from_secs(2);
/// The shortest attack worth running (a load of about 13 s).
const MIN_ATTACK: Duration = Duration::from_secs(3);
/// No wave starts later than this before the load ends: the longest an
/// attacking connection may last (a trickled body cut at
/// `BODY_TIMEOUT_MS`, plus the margin) and a second.
const TAIL: Duration = Duration::from_millis(BODY_TIMEOUT_MS + 3_000);
/// A trickled body: this many bytes this often, never pausing as long as
/// `BODY_IDLE_TIMEOUT_MS`; well under the smallest declared length by the
/// time `BODY_TIMEOUT_MS` cuts it.
const TRICKLE: (usize, Duration) = (1024, Duration::from_millis(250));
/// Half a request head: no blank line ever ends it.
pub const HALF_HEAD: &[u8] = b"POST /jobs/pdf HTTP/1.1\r\nHost: stress\r\nContent-Type: appli";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attack {
    Flood,
    Slowloris,
}

impl Attack {
    pub fn name(self) -> &'static str {
        match self {
            Attack::Flood => "upload flood",
            Attack::Slowloris => "slowloris",
        }
    }
}

/// What the server did to one attacking connection.
#[derive(Debug)]
pub enum Seen {
    /// An HTTP answer (the body's `error` and `message` if JSON).
    Answer {
        status: u16,
        code: String,
        message: String,
        retry_after: bool,
    },
    /// Closed (or reset) by the server before a byte of answer.
    Closed { reset: bool },
    /// Still open when the watch ended.
    Open,
    /// The attacker could not connect or send: the attack did not run.
    Failed(String),
}

/// One attacking connection.
pub struct HostileConn {
    pub attack: Attack,
    /// How the body was sent (flood) or `half head` (slowloris).
    pub plan: &'static str,
    /// The declared Content-Length is over `MAX_UPLOAD_BYTES`.
    pub over_limit: bool,
    pub seen: Seen,
    /// How long the connect took.
    pub connect: Duration,
    /// From the connect to the answer or the close.
    pub open: Duration,
    /// By when the server must have answered or closed it.
    pub bound: Duration,
}

/// One `/livez` from a normal client during the attack, and the server's
/// connections from each address at that moment (kernel view).
pub struct LivezProbe {
    pub took: Duration,
    /// The status, or the transport error.
    pub result: Result<u16, String>,
    pub sockets: (usize, usize),
}

#[derive(Default)]
pub struct HostileLog {
    /// False when the load was too short for an attack.
    pub ran: bool,
    pub attack_time: Duration,
    pub conns: Vec<HostileConn>,
    pub livez: Vec<LivezProbe>,
    /// The server's own counters after the load (`/metrics`).
    pub counters: Vec<(&'static str, f64)>,
    /// Listen-queue overflows the kernel counted during the attack.
    pub listen_overflows: Option<u64>,
}

impl HostileLog {
    /// The `/livez` probes' times, in ms, shortest first.
    pub fn livez_ms(&self) -> Vec<f64> {
        let mut took: Vec<f64> = self
            .livez
            .iter()
            .map(|p| p.took.as_secs_f64() * 1000.0)
            .collect();
        took.sort_by(f64::total_cmp);
        took
    }
}

/// The slowloris bound: the header timeout and the margin.
pub fn head_bound() -> Duration {
    Duration::from_millis(HEADER_READ_TIMEOUT_MS) + CLOSE_MARGIN
}

/// One upload of the flood: its declared length and how its body goes.
#[derive(Clone, Copy)]
struct Upload {
    declared: usize,
    body: Body,
}

#[derive(Clone, Copy)]
enum Body {
    /// Not a byte.
    Silent,
    /// This many bytes at once, then nothing.
    Stall(usize),
    /// [`TRICKLE`] until the server stops it.
    Trickle,
}

impl Upload {
    fn random(rng: &mut Rng) -> Self {
        let mib = MAX_UPLOAD_BYTES as u64;
        if rng.chance(0.25) {
            // Over the limit: 413 from the headers.
            let declared = rng.range(2 * mib, 6 * mib) as usize;
            let body = *rng.pick(&[Body::Silent, Body::Stall(64 * 1024)]);
            return Upload { declared, body };
        }
        // Under it: each admitted one holds a quarter to a half of the
        // upload budget (and a queue place) until its body times out.
        let declared = rng.range(mib / 2, mib) as usize;
        let body = match rng.below(3) {
            0 => Body::Silent,
            1 => Body::Stall(rng.range(16, 128) as usize * 1024),
            _ => Body::Trickle,
        };
        Upload { declared, body }
    }

    fn plan(&self) -> &'static str {
        match self.body {
            Body::Silent => "headers only",
            Body::Stall(_) => "part of the body, then nothing",
            Body::Trickle => "body trickled",
        }
    }

    /// The server's timeout for this way of sending, plus the margin.
    fn bound(&self) -> Duration {
        let timeout = match self.body {
            Body::Trickle => BODY_TIMEOUT_MS,
            Body::Silent | Body::Stall(_) => BODY_IDLE_TIMEOUT_MS,
        };
        Duration::from_millis(timeout) + CLOSE_MARGIN
    }
}

/// Runs the attack against `server` (from [`LEAD`] into the phase until
/// [`TAIL`] before `end`) and returns what it saw.
pub async fn attack(ctx: Arc<Ctx>, server: SocketAddr, seed: u64, end: Instant) -> HostileLog {
    let mut log = HostileLog::default();
    let until = end.checked_sub(TAIL).unwrap_or(end);
    ctx.pause(LEAD).await;
    if ctx.stopped() || Instant::now() + MIN_ATTACK > until {
        return log;
    }
    log.ran = true;
    let started = Instant::now();
    let overflows = listen_overflows();
    let attacking = Arc::new(AtomicBool::new(true));
    let prober = tokio::spawn(probe_livez(server, Arc::clone(&attacking)));
    let (flood, slowloris) = tokio::join!(
        flood(&ctx, server, Rng(seed ^ 0xF100_D000), until),
        slowloris(&ctx, server, Rng(seed ^ 0x5105_1015), until)
    );
    attacking.store(false, Ordering::Relaxed);
    log.attack_time = started.elapsed();
    log.listen_overflows = listen_overflows()
        .zip(overflows)
        .map(|(after, before)| after - before);
    log.conns = flood.into_iter().chain(slowloris).collect();
    log.livez = prober.await.unwrap_or_default();
    log
}

/// Waves of [`FLOOD_WAVE`] uploads at once, each wave waiting for the
/// last of its connections, until `until`.
async fn flood(ctx: &Ctx, server: SocketAddr, mut rng: Rng, until: Instant) -> Vec<HostileConn> {
    let mut conns = Vec::new();
    while !ctx.stopped() && Instant::now() < until {
        let wave: Vec<_> = (0..FLOOD_WAVE)
            .map(|_| upload(server, Upload::random(&mut rng)))
            .collect();
        conns.extend(futures::future::join_all(wave).await);
        ctx.pause(rng.ms(300, 1500)).await;
    }
    conns
}

/// Waves of half-sent heads (in bursts, see [`SLOWLORIS_BURST`]), each
/// wave waiting for the server to close all of its connections, until
/// `until`.
async fn slowloris(
    ctx: &Ctx,
    server: SocketAddr,
    mut rng: Rng,
    until: Instant,
) -> Vec<HostileConn> {
    let mut conns = Vec::new();
    while !ctx.stopped() && Instant::now() < until {
        let n = rng.range(SLOWLORIS_WAVE.0, SLOWLORIS_WAVE.1);
        let wave: Vec<_> = (0..n)
            .map(|i| half_head(server, BURST_GAP * (i / SLOWLORIS_BURST) as u32))
            .collect();
        conns.extend(futures::future::join_all(wave).await);
        ctx.pause(rng.ms(300, 2000)).await;
    }
    conns
}

/// A TCP connection to `server` from the address `from`.
pub async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(server).await
}

/// Connects from the attacker and runs `exchange` on the connection for
/// at most `watch`. Returns what the server did, how long the connect
/// took, and how long the connection then stayed open: the server's
/// bounds count from its accept, so a connect delayed by the kernel (a
/// SYN sent again when a wave overflows the listen queue) is kept apart.
async fn attacking<F, Fut>(
    server: SocketAddr,
    watch: Duration,
    exchange: F,
) -> (Seen, Duration, Duration)
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: Future<Output = Seen>,
{
    let connecting = Instant::now();
    let stream = match tokio::time::timeout(CONNECT_LIMIT, connect_from(ATTACKER, server)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let failed = Seen::Failed(format!("connect from {ATTACKER}: {e}"));
            return (failed, connecting.elapsed(), Duration::ZERO);
        }
        Err(_) => {
            let failed = Seen::Failed(format!(
                "connect from {ATTACKER}: not connected within {} s",
                CONNECT_LIMIT.as_secs()
            ));
            return (failed, connecting.elapsed(), Duration::ZERO);
        }
    };
    let connect = connecting.elapsed();
    let opened = Instant::now();
    let seen = tokio::time::timeout(watch, exchange(stream))
        .await
        .unwrap_or(Seen::Open);
    (seen, connect, opened.elapsed())
}

/// One upload of the flood: the head declaring `declared` bytes, then the
/// body as planned, while reading what the server answers.
async fn upload(server: SocketAddr, plan: Upload) -> HostileConn {
    let bound = plan.bound();
    let (seen, connect, open) = attacking(server, bound, |stream| async move {
        let (mut rd, mut wr) = stream.into_split();
        let send = send_upload(&mut wr, server, plan);
        let read = read_answer(&mut rd);
        tokio::pin!(send, read);
        tokio::select! {
            seen = &mut read => return seen,
            // Writing failed: the server closed; read what it sent first.
            () = &mut send => {}
        }
        read.await
    })
    .await;
    HostileConn {
        attack: Attack::Flood,
        plan: plan.plan(),
        over_limit: plan.declared > MAX_UPLOAD_BYTES,
        seen,
        connect,
        open,
        bound,
    }
}

/// Sends an upload's head and as much of its body as planned; returns only
/// when a write fails (the server closed), else waits forever.
async fn send_upload<W: AsyncWrite + Unpin>(wr: &mut W, server: SocketAddr, plan: Upload) {
    let head = format!(
        "POST /jobs/pdf?dpi=36&pages=1 HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\n\r\n",
        plan.declared
    );
    if wr.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    match plan.body {
        Body::Silent => {}
        Body::Stall(n) => {
            if wr.write_all(&vec![b'%'; n]).await.is_err() {
                return;
            }
        }
        Body::Trickle => {
            let (chunk, every) = TRICKLE;
            let mut sent = 0;
            // Never the whole body: stop short of it and stall.
            while sent + chunk < plan.declared {
                tokio::time::sleep(every).await;
                if wr.write_all(&vec![b'%'; chunk]).await.is_err() {
                    return;
                }
                sent += chunk;
            }
        }
    }
    std::future::pending::<()>().await;
}

/// One slowloris connection, opened `after` into its wave: half a request
/// head, then nothing; watched until the server closes it, up to
/// [`LATE_WATCH`] past its bound.
async fn half_head(server: SocketAddr, after: Duration) -> HostileConn {
    tokio::time::sleep(after).await;
    let bound = head_bound();
    let (seen, connect, open) = attacking(server, bound + LATE_WATCH, |mut stream| async move {
        // A failed write means the server closed already: read that.
        let _ = stream.write_all(HALF_HEAD).await;
        read_answer(&mut stream).await
    })
    .await;
    HostileConn {
        attack: Attack::Slowloris,
        plan: "half head",
        over_limit: false,
        seen,
        connect,
        open,
        bound,
    }
}
