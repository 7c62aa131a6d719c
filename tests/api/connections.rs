//! The connection layer under slow and greedy clients: header, body and
//! keep-alive timeouts, the per-client and total caps, the lingering close
//! that lets a client read an early answer, and client addresses behind a
//! trusted proxy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jobserver::config::{Config, RateLimitConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{eventually, fixture, spawn_app, spawn_binary, test_config, Api};

/// Generous bound for something that must happen "soon" (a timeout of a
/// few hundred ms firing): the test asserts it happens, not how fast.
const SOON: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A test server whose job routes allow `per_minute` requests per client.
fn rate_limited(per_minute: u32) -> Config {
    let mut config = test_config();
    config.rate_limit = RateLimitConfig {
        per_minute,
        burst: 1,
    };
    config
}

fn with_connections(edit: impl FnOnce(&mut jobserver::config::ConnectionConfig)) -> Config {
    let mut config = test_config();
    edit(&mut config.connections);
    config
}

/// A connection from the loopback address `from` (127.0.0.x).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .expect("a loopback source address");
    socket.connect(to).await.expect("the server accepts")
}

/// Reads until the server closes; the bytes read. Fails if it stays open
/// past [`SOON`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = stream.read_to_end(&mut got);
    match tokio::time::timeout(SOON, read).await {
        Ok(_) => got,
        Err(_) => panic!("the server kept the connection open; read so far: {got:?}"),
    }
}

/// Sends one complete request and reads the whole response head and body
/// (by Content-Length), leaving the connection open.
async fn request_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
        response.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&response).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_by_the_header_timeout() {
    let app = spawn_app(with_connections(|c| {
        c.header_read_timeout = Duration::from_millis(300);
    }))
    .await;
    let mut half = app.send_raw("GET /livez HTTP/1.1\r\nHost: x\r\n").await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(
        read_until_closed(&mut half).await,
        b"",
        "cut without an answer"
    );
    assert_eq!(read_until_closed(&mut silent).await, b"");
    assert_eq!(app.connection_counter("header_timeouts"), 2);
    assert_eq!(app.get("/livez").await.status(), 200, "others are served");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_timeout_but_a_long_answer_is_not() {
    let app = spawn_app(with_connections(|c| c.keep_alive_timeout = ms(300))).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert!(request_on(&mut stream, "/livez")
        .await
        .starts_with("http/1.1 200"));
    // A job that outlasts both timeouts is answered on its connection.
    let job = json!({"text": "slow", "work_ms": 900}).to_string();
    let post = format!(
        "POST /jobs/message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{job}",
        job.len()
    );
    stream.write_all(post.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200", "the slow job is answered");
    let rest = read_until_closed(&mut stream).await;
    assert!(
        String::from_utf8_lossy(&rest).contains("SLOW"),
        "its body came first"
    );
    assert_eq!(app.connection_counter("idle_closed"), 1);
}

#[tokio::test]
async fn a_body_that_pauses_or_trickles_is_cut_with_a_408() {
    let app = spawn_app(with_connections(|c| {
        c.body_idle_timeout = Duration::from_millis(300);
        c.body_timeout = Duration::from_millis(1_500);
    }))
    .await;
    // Pauses: ten bytes of a hundred, then nothing.
    let head = "POST /jobs/message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    let mut paused = app.send_raw(&format!("{head}{{\"text\": \"")).await;
    let answer = String::from_utf8_lossy(&read_until_closed(&mut paused).await).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(answer.contains("BODY_IDLE_TIMEOUT_MS"), "{answer}");

    // Trickles a byte every 100 ms, inside the idle timeout: the total cuts it.
    let mut trickled = app.send_raw(head).await;
    let started = Instant::now();
    let (mut reader, mut writer) = trickled.split();
    let trickle = async {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut answer = Vec::new();
    tokio::select! {
        _ = reader.read_to_end(&mut answer) => {}
        () = trickle => panic!("the whole trickled body was taken"),
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BODY_TIMEOUT_MS"), "{answer}");
    assert!(started.elapsed() < SOON);
    assert_eq!(app.connection_counter("body_timeouts"), 2);
    assert_eq!(app.jobs_ok("message"), 0, "neither became a job");
}

#[tokio::test]
async fn one_client_over_its_cap_is_refused_while_another_client_is_served() {
    let app = spawn_app(with_connections(|c| c.max_connections_per_client = 3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from("127.0.0.2", app.addr).await;
        // Answered: the connection was admitted and is counted.
        assert!(request_on(&mut stream, "/livez")
            .await
            .starts_with("http/1.1 200"));
        held.push(stream);
    }
    let mut over = connect_from("127.0.0.2", app.addr).await;
    let refused = String::from_utf8_lossy(&read_until_closed(&mut over).await).to_string();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"too_many_connections\""), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");

    let mut other = connect_from("127.0.0.3", app.addr).await;
    assert!(request_on(&mut other, "/livez")
        .await
        .starts_with("http/1.1 200"));
    drop(held.pop());
    // The closed connection's place comes back once the server sees the
    // close; until then a new one may still be refused.
    eventually("a place comes back", SOON, || async {
        let mut stream = connect_from("127.0.0.2", app.addr).await;
        let request = "GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        read_until_closed(&mut stream)
            .await
            .starts_with(b"HTTP/1.1 200")
            .then_some(())
    })
    .await;
    assert!(app.connection_counter("refused_per_client") >= 1);
}

#[tokio::test]
async fn an_answer_sent_before_the_body_is_read_reaches_a_client_still_sending() {
    let mut config = test_config();
    config.pdf.max_upload_bytes = 1024 * 1024;
    let app = spawn_app(config).await;
    // 32 MB declared over a 1 MB limit: answered 413 from the headers. The
    // client writes all of it before it reads anything: had the server
    // closed with the body unread, the client's kernel would be reset and
    // throw the answer away.
    let body = vec![b'%'; 32 * 1024 * 1024];
    for _ in 0..3 {
        let head = format!(
            "POST /jobs/pdf HTTP/1.1\r\nHost: x\r\nContent-Type: application/pdf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut stream = app.send_raw(&head).await;
        let _ = stream.write_all(&body).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(SOON, stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).to_string();
        assert!(
            read.expect("the server closes").is_ok(),
            "reset: {answer:?}"
        );
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("\"payload_too_large\""), "{answer}");
    }
    app.assert_pdf_renders("after refused uploads").await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_rate_limits_key_on_the_forwarded_client() {
    let mut config = rate_limited(1);
    config.connections.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = spawn_app(config).await;
    let status = |client: &'static str| {
        let api = Api::at(app.addr);
        async move {
            api.get_with(
                "/jobs/00000000-0000-0000-0000-000000000000",
                ("x-forwarded-for", client),
            )
            .await
            .status()
            .as_u16()
        }
    };
    assert_eq!(
        status("203.0.113.1").await,
        404,
        "first request of client 1"
    );
    assert_eq!(
        status("203.0.113.2").await,
        404,
        "client 2 has its own budget"
    );
    assert_eq!(
        status("203.0.113.1").await,
        429,
        "client 1 is over its rate"
    );

    // From an untrusted peer the header is the client's own word: ignored.
    let direct = spawn_app(rate_limited(1)).await;
    let api = Api::at(direct.addr);
    let forged = |ip: &'static str| {
        api.get_with(
            "/jobs/00000000-0000-0000-0000-000000000000",
            ("x-forwarded-for", ip),
        )
    };
    assert_eq!(forged("203.0.113.1").await.status(), 404);
    assert_eq!(
        forged("203.0.113.2").await.status(),
        429,
        "one peer, one budget"
    );
}

/// The limit of open files the attacked server runs under: low, so that
/// the attack reaches it cheaply.
const ATTACKED_FD_LIMIT: u64 = 512;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_from_one_client_never_starves_another_or_exhausts_descriptors() {
    let (mut child, addr) = spawn_binary(|command| {
        use std::os::unix::process::CommandExt;
        command
            .env("OUTPUT_DIR", tempfile::tempdir().unwrap().keep())
            .env("DATA_DIR", crate::helpers::data_dir())
            .env("PDF_WORKERS", "1")
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("HEADER_READ_TIMEOUT_MS", "2000")
            .env("MAX_CONNECTIONS_PER_CLIENT", "200");
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: ATTACKED_FD_LIMIT,
                    rlim_max: ATTACKED_FD_LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
    });
    let api = Api::at(addr);
    api.wait_ready().await;
    // The attacker (127.0.0.2) opens twice the file limit in connections,
    // each with half a request head.
    let mut attack = Vec::new();
    for _ in 0..(2 * ATTACKED_FD_LIMIT) {
        let mut stream = match tokio::time::timeout(SOON, connect_from("127.0.0.2", addr)).await {
            Ok(stream) => stream,
            Err(_) => panic!("the server stopped accepting"),
        };
        let _ = stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            .await;
        attack.push(stream);
    }
    // The normal client is served at once while the half heads are held.
    let started = Instant::now();
    assert_eq!(api.get("/livez").await.status(), 200);
    let pdf = api
        .upload_pdf("?dpi=36&pages=1", fixture("sample.pdf"))
        .await;
    assert_eq!(pdf.status(), 200, "a small PDF job is answered");
    assert!(started.elapsed() < SOON);
    // Every attacking connection ends: refused over the cap, or cut by the
    // header timeout.
    let mut refused = 0;
    for stream in &mut attack {
        let answer = read_until_closed(stream).await;
        if answer.starts_with(b"HTTP/1.1 503") {
            refused += 1;
        } else {
            assert_eq!(answer, b"", "a half head gets no answer");
        }
    }
    assert!(refused >= attack.len() - 200, "{refused} refused");
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("jobserver_connections_refused_total{reason=\"per_client\"}"),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
