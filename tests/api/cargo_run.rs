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

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{fixture, spawn_binary, Api};

#[test]
fn cargo_run_writes_renders_under_out_in_the_working_directory_not_into_cargos_out_dir() {
    let cwd = tempfile::Builder::new()
        .prefix("jobserver-test-cargo-run-")
        .tempdir()
        .unwrap();
    let (mut child, addr) = spawn_binary(|c| {
        c.current_dir(cwd.path())
            .env("OUT_DIR", env!("OUT_DIR"))
            .env("CARGO_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_PKG_NAME", env!("CARGO_PKG_NAME"))
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("PDF_WORKERS", "1")
            .env_remove("OUTPUT_DIR")
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply: Value = runtime.block_on(async {
        let api = Api::at(addr);
        let upload = api.upload_pdf("?dpi=36", fixture("sample.pdf"));
        tokio::time::timeout(Duration::from_secs(60), upload)
            .await
            .expect("the server answers within 60 s")
            .json()
            .await
            .unwrap()
    });
    let _ = child.kill();
    let _ = child.wait();

    let job_id = reply["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a rendered job, got {reply}"));
    let page = cwd.path().join("out").join(job_id).join("page-001.png");
    let in_target = Path::new(env!("OUT_DIR")).join(job_id);
    assert!(
        !in_target.exists(),
        "nothing may land in cargo's build folder ({})",
        in_target.display()
    );
    assert!(
        page.is_file(),
        "page 1 should be at {} (reply: {reply})",
        page.display()
    );
}
