//! The cluster suite's services: one nats-server and one S3 server
//! (SeaweedFS `weed mini`) per test, on 127.0.0.1 ports picked here, in a
//! temporary folder; and nodes, each the server binary as a process.
//! The binaries come from `scripts/fetch_engines.py` (`.engines/`, or
//! `NATS_BIN` / `WEED_BIN`). Everything is killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{data_dir, send_signal, spawn_binary};

pub const BUCKET: &str = "jobserver";
const KEY_ID: &str = "cluster-test";
const SECRET: &str = "cluster-test-secret";

fn engine(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".engines")
            .join(name)
    });
    assert!(
        path.is_file(),
        "{} is missing: run python3 scripts/fetch_engines.py (or set {var})",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1 (held until returned, so two differ).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A port P with P + 10000 free too (weed's admin dials its gRPC there).
fn free_pair() -> u16 {
    for _ in 0..200 {
        let port = 20_000 + (rand_u16() % 20_000);
        let a = TcpListener::bind(("127.0.0.1", port));
        let b = TcpListener::bind(("127.0.0.1", port + 10_000));
        if a.is_ok() && b.is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

fn rand_u16() -> u16 {
    uuid::Uuid::new_v4().as_bytes()[0] as u16 * 256 + uuid::Uuid::new_v4().as_bytes()[1] as u16
}

pub struct Engines {
    pub dir: TempDir,
    nats: Option<Child>,
    weed: Child,
    nats_port: u16,
    monitor_port: u16,
    pub s3_port: u16,
    /// Every test has its own names in the engine and the bucket.
    pub prefix: String,
}

/// Tests start their engines one at a time: ports are picked and taken
/// without another test's picks racing them.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Tries at engine start before the test fails (a port taken meanwhile).
const START_TRIES: usize = 3;

impl Engines {
    pub async fn start() -> Engines {
        let _one_at_a_time = STARTING.lock().await;
        for attempt in 1..=START_TRIES {
            let engines = Engines::try_start();
            if engines.wait_ready().await {
                return engines;
            }
            eprintln!(
                "engines not ready (try {attempt} of {START_TRIES}); their logs:\n{}",
                engines.logs()
            );
        }
        panic!("the engines did not start in {START_TRIES} tries");
    }

    /// The end of each engine's log, for a failed start.
    fn logs(&self) -> String {
        ["nats.log", "weed.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let lines: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {name}\n{}", lines.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn try_start() -> Engines {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2);
        let (nats_port, monitor_port) = (ports[0], ports[1]);
        let nats = start_nats(&dir, nats_port, monitor_port);
        let p = free_ports(8);
        let admin = free_pair();
        std::fs::create_dir_all(dir.path().join("s3")).unwrap();
        let d = dir.path().display().to_string();
        let weed = Command::new(engine("WEED_BIN", "weed"))
            .current_dir(dir.path())
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .args(["-logtostderr", "mini", &format!("-dir={d}/s3")])
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-bucket={BUCKET}"),
            ])
            .arg(format!("-s3.port={}", p[0]))
            .arg(format!("-s3.port.grpc={}", p[1]))
            .arg(format!("-master.port={}", p[2]))
            .arg(format!("-master.port.grpc={}", p[3]))
            .arg(format!("-volume.port={}", p[4]))
            .arg(format!("-volume.port.grpc={}", p[5]))
            .arg(format!("-filer.port={}", p[6]))
            .arg(format!("-filer.port.grpc={}", p[7]))
            .args(["-admin.ui=false", &format!("-admin.port={admin}")])
            .arg(format!("-admin.port.grpc={}", admin + 10_000))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"])
            .arg("-master.telemetry=false")
            .arg(format!("-s3.localSocket={d}/s3.sock"))
            .arg(format!("-filer.localSocket={d}/filer.sock"))
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "weed.log"))
            .spawn()
            .expect("weed starts");
        let engines = Engines {
            dir,
            nats: Some(nats),
            weed,
            nats_port,
            monitor_port,
            s3_port: p[0],
            prefix: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
        };
        engines
    }

    /// Whether both engines answer within 30 s.
    async fn wait_ready(&self) -> bool {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let healthz = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            self.monitor_port
        );
        // Unsigned requests are refused (403) once the S3 gateway is up.
        let s3 = format!("http://127.0.0.1:{}/{BUCKET}/", self.s3_port);
        loop {
            let nats_ok = http
                .get(&healthz)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let s3_ok = http.get(&s3).send().await.is_ok_and(|r| r.status() == 403);
            if nats_ok && s3_ok {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    pub fn nats_pid(&self) -> u32 {
        self.nats.as_ref().expect("nats runs").id()
    }

    /// kill -9 of nats-server, then a start on the same store.
    pub async fn restart_nats(&mut self) {
        if let Some(mut nats) = self.nats.take() {
            let _ = nats.kill();
            let _ = nats.wait();
        }
        self.nats = Some(start_nats(&self.dir, self.nats_port, self.monitor_port));
        assert!(
            self.wait_ready().await,
            "nats-server did not restart:\n{}",
            self.logs()
        );
    }

    pub fn stop_s3(&self) {
        send_signal(self.weed.id(), "STOP");
    }

    pub fn resume_s3(&self) {
        send_signal(self.weed.id(), "CONT");
    }

    /// A node with one worker of each type, a 3 s ack wait and the
    /// test's own names; `env` adds or overrides.
    pub fn node(&self, name: &str, env: &[(&str, &str)]) -> Node {
        let out = self.dir.path().join(format!("node-{name}"));
        let store = format!("s3://{BUCKET}/{}", self.prefix);
        let endpoint = format!("http://127.0.0.1:{}", self.s3_port);
        let prefix = self.prefix.clone();
        let nats = self.nats_url();
        let cluster = [
            ("NATS_URL", nats.as_str()),
            ("PAGE_STORE_URL", store.as_str()),
            ("AWS_ENDPOINT", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("CLUSTER_PREFIX", prefix.as_str()),
            ("CLUSTER_ACK_WAIT_MS", "3000"),
            ("PDF_WORKERS", "1"),
            ("MESSAGE_WORKERS", "1"),
            ("RUST_LOG", "info,async_nats=warn"),
        ];
        let (child, addr) = spawn_server(&out, &[&cluster, env]);
        Node {
            name: name.to_string(),
            child: Some(child),
            addr,
        }
    }
}

/// The server binary with the suite's settings (its own output folder,
/// the sample data, no disk floor, no rate limit, no fan-out), then each
/// of `envs` in turn (later ones win).
pub fn spawn_server(
    out: &std::path::Path,
    envs: &[&[(&str, &str)]],
) -> (Child, std::net::SocketAddr) {
    spawn_binary(|c| {
        c.env("OUTPUT_DIR", out)
            .env("DATA_DIR", data_dir())
            .env("PDF_FAN_OUT", "false")
            .env("MIN_FREE_DISK_MB", "0")
            .env("RATE_LIMIT_PER_MINUTE", "0");
        for (k, v) in envs.iter().flat_map(|e| e.iter()) {
            c.env(k, v);
        }
        c
    })
}

/// An engine's log in the test's folder (appended: a restart keeps it).
fn log_file(dir: &TempDir, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join(name))
        .unwrap()
}

fn start_nats(dir: &TempDir, port: u16, monitor: u16) -> Child {
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "jetstream { sync_interval: always }\n").unwrap();
    Command::new(engine("NATS_BIN", "nats-server"))
        .args(["-js", "-a", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-m", &monitor.to_string()])
        .arg("-sd")
        .arg(dir.path().join("js"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log_file(dir, "nats.log"))
        .spawn()
        .expect("nats-server starts")
}

impl Drop for Engines {
    fn drop(&mut self) {
        if let Some(nats) = self.nats.as_mut() {
            let _ = nats.kill();
            let _ = nats.wait();
        }
        let _ = self.weed.kill();
        let _ = self.weed.wait();
    }
}

/// One server of the cluster.
pub struct Node {
    pub name: String,
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn status(&self) -> Value {
        reqwest::get(self.url("/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The node's figures for worker type `kind` in `/status`.
    pub async fn queue(&self, kind: &str) -> Value {
        let status = self.status().await;
        status["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == kind)
            .cloned()
            .unwrap()
    }

    /// Cluster jobs this node answered.
    pub async fn answered(&self) -> u64 {
        self.status().await["cluster"]["ran"]["answered"]
            .as_u64()
            .unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
