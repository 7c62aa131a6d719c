//! Known server issues probed for and reported as findings, never as
//! violations.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::checks::count;
use crate::clients::{get_json, readyz, renderer_pids};
use crate::hostile::{connect_from, ATTACKER, HALF_HEAD};
use crate::proc::{is_live_child, proc_state, sigkill};
use crate::record::{Log, Res};
use crate::report::strip_ansi;
use crate::servers::{
    start_server, terminate, Server, EXIT_MARGIN, MAX_UPLOAD_BYTES, PROBE_SERVER,
};

/// A known server issue probed for: reported, never a violation.
pub struct Finding {
    pub name: String,
    pub present: bool,
    pub detail: String,
}

pub fn findings_table(findings: &[Finding]) -> String {
    let mut out = String::from(
        "### Findings (known server issues probed for; reported, not counted as violations)\n\n| issue | present | observed |\n|---|---|---|\n",
    );
    for f in findings {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            f.name,
            if f.present { "**yes**" } else { "no" },
            f.detail.replace('|', "\\|")
        );
    }
    out
}

/// Kills one renderer of an idle server and watches what follows: is it
/// reaped, does it leave the pid list, does readiness notice, and does the
/// next job on that worker run or fail for a renderer it never used?
pub async fn idle_kill_probe(probe: &reqwest::Client, server: &Server) -> Finding {
    let name = "renderer killed while idle: zombie, still listed, next job 500".to_string();
    let missing = |detail: String| Finding {
        name: name.clone(),
        present: false,
        detail,
    };
    let status = get_json(probe, &format!("{}/status", server.base)).await;
    let Some(pid) = status.and_then(|s| renderer_pids(&s).first().copied()) else {
        return missing("no renderer pid to kill".into());
    };
    if !is_live_child(pid, server.pid) {
        return missing(format!("pid {pid} is not a live child of the server"));
    }
    sigkill(pid);
    // Give the server a full second to notice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let zombie = proc_state(pid).is_some_and(|(s, _)| s == 'Z');
    let listed = get_json(probe, &format!("{}/status", server.base))
        .await
        .is_some_and(|s| renderer_pids(&s).contains(&pid));
    let ready = readyz(probe, &server.base).await;
    // One-page jobs, one at a time, until the dead renderer's worker takes one.
    let mut answers = Vec::new();
    for _ in 0..6 {
        let r = probe
            .post(format!("{}/jobs/pdf", server.base))
            .json(&json!({"path": "text.pdf", "dpi": 36, "pages": "1"}))
            .send()
            .await;
        let code = r.map(|r| r.status().as_u16()).unwrap_or(0);
        answers.push(code);
        if code != 200 {
            break;
        }
    }
    let reaped = proc_state(pid).is_none_or(|(s, _)| s != 'Z');
    Finding {
        present: zombie || listed || answers.contains(&500),
        name,
        detail: format!(
            "SIGKILL pid {pid}; after 1 s: zombie {zombie}, still in renderer_pids {listed}, /readyz {ready}; next one-page jobs answered {answers:?}; reaped after them {reaped}"
        ),
    }
}

/// Sends an upload over `MAX_UPLOAD_BYTES` the way an HTTP client does
/// (headers, then the body, writing on after an early answer), then a
/// second request on the same connection. Returns the finding's row.
pub async fn early_answer_probe(server: &Server) -> Finding {
    let name = "413 sent before the body is read: connection closed without `Connection: close`"
        .to_string();
    let addr = server.base.trim_start_matches("http://").to_string();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<(bool, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let total = MAX_UPLOAD_BYTES + MAX_UPLOAD_BYTES / 2;
        let first = MAX_UPLOAD_BYTES + 1;
        write!(
            s,
            "POST /jobs/pdf HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/pdf\r\nContent-Length: {total}\r\n\r\n"
        )?;
        s.write_all(&vec![b'%'; first])?;
        let mut head = Vec::new();
        let mut buf = [0u8; 8192];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let status = head.lines().next().unwrap_or("").to_string();
        let close = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("connection: close"));
        let rest = s.write_all(&vec![b'%'; total - first]);
        std::thread::sleep(Duration::from_millis(200));
        let body = br#"{"text":"second"}"#;
        let second = write!(
            s,
            "POST /jobs/message HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .and_then(|()| s.write_all(body))
        .and_then(|()| s.read(&mut buf));
        let second = match second {
            Ok(0) => "connection closed by the server".to_string(),
            Ok(n) => String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            Err(e) => format!("failed: {e}"),
        };
        Ok((
            close,
            format!(
                "first answer {status:?}, `Connection: close` {close}; rest of body {}; next request on the connection: {second}",
                if rest.is_ok() { "written" } else { "refused" }
            ),
        ))
    })
    .await;
    let (present, detail) = match result {
        Ok(Ok((close, text))) => (!close, text),
        Ok(Err(e)) => (true, format!("probe failed: {e}")),
        Err(e) => (true, format!("probe failed: {e}")),
    };
    Finding {
        name,
        present,
        detail,
    }
}

/// The two 504 findings: 504s logged at ERROR by server A, and 504s whose
/// pages stayed on disk.
pub fn findings_504(a: &Server, log: &Log, leftover_504: usize) -> [Finding; 2] {
    let error_504 = strip_ansi(&std::fs::read_to_string(&a.log_path).unwrap_or_default())
        .lines()
        .filter(|l| {
            l.contains("ERROR")
                && (l.contains("error=\"timeout\"") || l.contains("error=\"queue_timeout\""))
        })
        .count();
    let answered_504 = count(log, |r| {
        r.target == 0 && matches!(r.res, Res::Http { status: 504, .. })
    });
    [
        Finding {
            name: "504 answers logged at ERROR (README: expected 504s are not)".into(),
            present: error_504 > 0,
            detail: format!(
                "{error_504} ERROR lines for {answered_504} answers 504 (RUST_LOG=warn)"
            ),
        },
        Finding {
            name: "504 whose pages stay on disk (job finished as its deadline fired)".into(),
            present: leftover_504 > 0,
            detail: format!("{leftover_504} folders"),
        },
    ]
}

/// SIGTERM to an idle server (a third one, [`PROBE_SERVER`]) while one
/// client holds a connection on which it sent half a request head: there
/// is no request to drain, so the server is to exit within
/// `SHUTDOWN_GRACE_MS` and the exit margin. If it is still running then,
/// the client closes the connection and the probe watches for the exit.
pub async fn slow_head_shutdown_probe(root: &Path, probe: &reqwest::Client) -> Finding {
    let name = "a half-sent request head open at SIGTERM keeps the server from exiting".to_string();
    let not_run = |why: String| Finding {
        name: name.clone(),
        present: false,
        detail: format!("probe not run: {why}"),
    };
    let mut server = match start_server(&PROBE_SERVER, root, probe).await {
        Ok(server) => server,
        Err(e) => return not_run(e),
    };
    let Ok(addr) = server
        .base
        .trim_start_matches("http://")
        .parse::<SocketAddr>()
    else {
        return not_run(format!("no address in {}", server.base));
    };
    let mut stream = match connect_from(ATTACKER, addr).await {
        Ok(stream) => stream,
        Err(e) => return not_run(format!("connect from {ATTACKER}: {e}")),
    };
    if let Err(e) = stream.write_all(HALF_HEAD).await {
        return not_run(format!("write: {e}"));
    }
    // SIGTERM once the server holds the connection (the count includes
    // the `/metrics` request asking).
    let held = Instant::now() + Duration::from_secs(2);
    while connections_open(probe, &server.base).await < 2 && Instant::now() < held {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let limit = server.grace + EXIT_MARGIN;
    let (status, took) = terminate(&mut server, limit).await;
    let mut byte = [0u8; 1];
    let closed = matches!(
        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    );
    drop(stream);
    let detail = match status {
        Some(status) => format!(
            "{status} {} ms after SIGTERM (limit {} ms); the connection closed by then: {closed}",
            took.as_millis(),
            limit.as_millis()
        ),
        None => {
            let dropped = Instant::now();
            let exit = server.process.wait_exit(dropped, EXIT_MARGIN).await;
            format!(
                "still running {} ms after SIGTERM (SHUTDOWN_GRACE_MS {} + {} ms), the connection still open: {}; once the client closed it: {}",
                took.as_millis(),
                server.grace.as_millis(),
                EXIT_MARGIN.as_millis(),
                !closed,
                match exit {
                    Some(s) => format!("{s} after {} ms", dropped.elapsed().as_millis()),
                    None => format!("still running after {} ms (killed)", dropped.elapsed().as_millis()),
                }
            )
        }
    };
    Finding {
        name,
        present: status.is_none(),
        detail,
    }
}

/// `jobserver_connections_open` from `/metrics`; 0 if unread.
async fn connections_open(probe: &reqwest::Client, base: &str) -> u64 {
    let Ok(response) = probe.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("jobserver_connections_open "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
