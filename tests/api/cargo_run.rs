//! The product's own usage: `cargo run` in a checkout, one job, and the
//! pages where the README says they land (`out/<job_id>/page-NNN.png`,
//! relative to the working directory). cargo sets `OUT_DIR` for every run
//! of a package with a build script; the server must not take it for its
//! output folder.
//!
//! `cargo run` is the debug binary the tests already have, started with the
//! environment cargo gives it: the same `OUT_DIR` (cargo hands it to this
//! test crate too, at compile time) and the package variables. Calling
//! cargo itself from here would compile the whole tree a second time,
//! without the dev-dependencies' features, for no more coverage.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{data_dir, temp_dir};

#[test]
fn cargo_run_writes_renders_under_out_in_the_working_directory_not_into_cargos_out_dir() {
    let cwd = temp_dir("cargo-run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobserver"))
        .current_dir(&cwd)
        .env("OUT_DIR", env!("OUT_DIR"))
        .env("CARGO_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_PKG_NAME", env!("CARGO_PKG_NAME"))
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("RATE_LIMIT_PER_MINUTE", "0")
        .env("PDF_WORKERS", "1")
        .env("RUST_LOG", "info")
        .env_remove("OUTPUT_DIR")
        .env_remove("LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo runs");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = Some(rest.trim().to_string());
            break;
        }
    }
    let addr = addr.expect("the server said where it listens");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply: Value = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/jobs/pdf?dpi=36"))
            .header("content-type", "application/pdf")
            .body(std::fs::read(data_dir().join("sample.pdf")).unwrap())
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("the server answers")
            .json()
            .await
            .unwrap()
    });
    let _ = child.kill();
    let _ = child.wait();

    let job_id = reply["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a rendered job, got {reply}"));
    let page = cwd.join("out").join(job_id).join("page-001.png");
    let found = page.is_file();
    let _ = std::fs::remove_dir_all(&cwd);
    let in_target = Path::new(env!("OUT_DIR")).join(job_id);
    assert!(
        !in_target.exists(),
        "nothing may land in cargo's build folder ({})",
        in_target.display()
    );
    assert!(
        found,
        "page 1 should be at {} (reply: {reply})",
        page.display()
    );
}
