//! One `jobserver` process under test: started on a free port of 127.0.0.1
//! with a given environment and its output in a log file, waited for until
//! `/readyz` answers 200, stopped with SIGTERM, killed if dropped.
//!
//! Readiness is `/readyz`, not the "listening on http://ADDR" line: that
//! line is logged at `info`, and the harnesses run the server at
//! `RUST_LOG=warn`; `/readyz` also waits for the renderers and pdfium.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often readiness and exit are polled.
const READY_POLL: Duration = Duration::from_millis(50);
const EXIT_POLL: Duration = Duration::from_millis(10);
/// Limit on one `/readyz` request while waiting for the server.
const READY_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The server binary: `$JOBSERVER_BIN`, else `release/jobserver` under
/// `target_dir`.
pub fn binary(target_dir: &Path) -> PathBuf {
    std::env::var_os("JOBSERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir.join("release/jobserver"))
}

/// A port the kernel had free a moment ago. The server does not print the
/// port it bound at `RUST_LOG=warn`, so port 0 would leave it unknown: one
/// is taken here and handed over in `BIND_ADDR` (another process may take
/// it in between; the server then exits at start).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// How to start a server.
pub struct Launch<'a> {
    pub bin: &'a Path,
    /// Folder the server runs in; the caller's when `None`.
    pub dir: Option<&'a Path>,
    /// Remove every variable the server reads
    /// ([`jobserver::config::ALL_VARS`]) from the caller's environment
    /// first, so it cannot change the run; `PDFIUM_LIB_PATH` is kept.
    pub clean_env: bool,
    /// Set after that, `BIND_ADDR` among them.
    pub env: &'a [(&'a str, String)],
    /// Receives the server's stdout and stderr.
    pub log: PathBuf,
}

/// Why a server did not become ready.
pub enum NotReady {
    /// It exited first (a taken port, a bad setting).
    Exited(ExitStatus),
    /// `/readyz` did not answer 200 within the deadline.
    Timeout,
}

/// A started server; killed when dropped while still running.
pub struct Process {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub log: PathBuf,
}

impl Process {
    /// Starts the server on `port`; does not wait for it.
    pub fn spawn(launch: &Launch, port: u16) -> Result<Process, String> {
        let log = File::create(&launch.log)
            .map_err(|e| format!("cannot create {}: {e}", launch.log.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot clone {}: {e}", launch.log.display()))?;
        let mut command = Command::new(launch.bin);
        if let Some(dir) = launch.dir {
            command.current_dir(dir);
        }
        if launch.clean_env {
            for var in jobserver::config::ALL_VARS {
                if *var != "PDFIUM_LIB_PATH" {
                    command.env_remove(var);
                }
            }
        }
        command
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.bin.display()))?;
        Ok(Process {
            pid: child.id(),
            child,
            base: format!("http://127.0.0.1:{port}"),
            log: launch.log.clone(),
        })
    }

    /// Polls `/readyz` until it answers 200, the process exits, or
    /// `deadline` has passed since the call.
    pub async fn wait_ready(
        &mut self,
        client: &reqwest::Client,
        deadline: Duration,
    ) -> Result<(), NotReady> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return Err(NotReady::Exited(status));
            }
            let ready = client
                .get(format!("{}/readyz", self.base))
                .timeout(READY_REQUEST_TIMEOUT)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return Ok(());
            }
            if started.elapsed() > deadline {
                return Err(NotReady::Timeout);
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Sends SIGTERM: the server drains and stops its renderers.
    pub fn sigterm(&self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill only sends a signal to our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }

    /// The exit status, if the process has exited (it is reaped then).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the exit until `limit` has passed since `since`.
    pub async fn wait_exit(&mut self, since: Instant, limit: Duration) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if since.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// SIGKILL, then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            self.kill();
        }
    }
}
