//! The servers of a run: the paths they share (binaries, a temporary
//! `DATA_DIR` holding the sample and `OUTPUT_DIR`), one started per
//! scenario with its own settings, stopped with SIGTERM.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::server::{self, Launch, NotReady, Process};

/// How long a server may take to answer `/readyz` (renderers start first).
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Name the sample gets inside the temporary `DATA_DIR`.
pub const SAMPLE_NAME: &str = "sample.pdf";

/// Paths every server of the run shares.
pub struct Setup {
    pub server_bin: PathBuf,
    pub loop_bin: PathBuf,
    pub tmp: TempDir,
}

impl Setup {
    /// The binaries under `CARGO_TARGET_DIR` (or the repository's
    /// `target`), the server's `$JOBSERVER_BIN` if set, and a temporary
    /// folder with `DATA_DIR` (a copy of `sample`) and `OUTPUT_DIR`.
    pub fn new(root: &Path, sample: &Path) -> Result<Setup, String> {
        let target_dir =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let setup = Setup {
            server_bin: server::binary(&target_dir),
            loop_bin: target_dir.join("release/examples/render_loop"),
            tmp: tempfile::Builder::new()
                .prefix("jobserver-bench-")
                .tempdir()
                .map_err(|e| format!("cannot make a temporary folder: {e}"))?,
        };
        for bin in [&setup.server_bin, &setup.loop_bin] {
            if !bin.is_file() {
                return Err(format!(
                    "{bin:?} is missing: cargo build --release --bin jobserver --example render_loop"
                ));
            }
        }
        fs::create_dir_all(setup.data_dir()).map_err(|e| format!("cannot make DATA_DIR: {e}"))?;
        fs::create_dir_all(setup.out_dir()).map_err(|e| format!("cannot make OUTPUT_DIR: {e}"))?;
        // A copy, not a symlink: the server refuses paths that lead out of DATA_DIR.
        fs::copy(sample, setup.data_dir().join(SAMPLE_NAME))
            .map_err(|e| format!("cannot copy the sample {sample:?}: {e}"))?;
        Ok(setup)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    pub fn out_dir(&self) -> PathBuf {
        self.tmp.path().join("out")
    }
}

/// One running `jobserver`; killed if dropped while still running (an
/// error path), stopped with SIGTERM by [`Server::stop`] otherwise.
pub struct Server {
    process: Process,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts the server with `env` on top of the shared settings and waits
    /// until `/readyz` answers 200.
    pub async fn start(
        setup: &Setup,
        client: &reqwest::Client,
        name: &str,
        env: &[(&str, String)],
    ) -> Result<Server, String> {
        let mut all = vec![
            ("RATE_LIMIT_PER_MINUTE", "0".to_string()),
            ("DATA_DIR", setup.data_dir().display().to_string()),
            ("OUTPUT_DIR", setup.out_dir().display().to_string()),
            ("RUST_LOG", "warn".to_string()),
        ];
        all.extend(env.iter().cloned());
        let launch = Launch {
            bin: &setup.server_bin,
            dir: None,
            clean_env: false,
            env: &all,
            log: setup.tmp.path().join(format!("server-{name}.log")),
        };
        let mut process = Process::spawn(&launch, server::free_port()?)?;
        match process.wait_ready(client, READY_DEADLINE).await {
            Ok(()) => Ok(Server {
                base: process.base.clone(),
                log: process.log.clone(),
                process,
            }),
            Err(NotReady::Exited(status)) => Err(format!(
                "server {name} exited at start ({status}); see {:?}",
                process.log
            )),
            Err(NotReady::Timeout) => Err(format!(
                "server {name} was not ready within {READY_DEADLINE:?}; see {:?}",
                process.log
            )),
        }
    }

    /// SIGTERM (the server drains and stops its renderers), SIGKILL after
    /// [`STOP_DEADLINE`].
    pub async fn stop(mut self) {
        self.process.sigterm();
        let sent = Instant::now();
        if self.process.wait_exit(sent, STOP_DEADLINE).await.is_none() {
            eprintln!("[bench] server did not stop within {STOP_DEADLINE:?}; killing it");
            self.process.kill();
        }
    }
}

/// Removes every job folder under `OUTPUT_DIR`, so the disk holds one run's
/// renders at most.
pub fn clear_out_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
