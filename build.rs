//! Build script: fetch the pinned libpdfium.so into `<repo>/.pdfium`.
//!
//! Runs `python3 scripts/fetch_pdfium.py <repo>/.pdfium` (pip download of the
//! pypdfium2 wheel, SHA-256 pinned; see that script) unless `PDFIUM_LIB_PATH`
//! or `JOBSERVER_SKIP_PDFIUM_FETCH` is set. A failed fetch never fails the
//! build: it becomes a `cargo:warning`, and the server starts without pdfium
//! and reports not ready until a library is provided.
//!
//! Always exports `JOBSERVER_DEFAULT_PDFIUM_DIR` (absolute path of `.pdfium`)
//! to the crate, as the default place to look for the library at run time.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=scripts/fetch_pdfium.py");
    println!("cargo:rerun-if-changed=scripts/pinned_wheels.py");
    println!("cargo:rerun-if-env-changed=PDFIUM_LIB_PATH");
    println!("cargo:rerun-if-env-changed=JOBSERVER_SKIP_PDFIUM_FETCH");

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let pdfium_dir = manifest_dir.join(".pdfium");
    println!(
        "cargo:rustc-env=JOBSERVER_DEFAULT_PDFIUM_DIR={}",
        pdfium_dir.display()
    );

    if env::var_os("PDFIUM_LIB_PATH").is_some()
        || env::var_os("JOBSERVER_SKIP_PDFIUM_FETCH").is_some()
    {
        return;
    }

    // Re-run (and so re-fetch) when the library is deleted or replaced. While
    // it is missing, e.g. after an offline build, cargo re-runs this script on
    // every build, which retries the fetch.
    println!("cargo:rerun-if-changed=.pdfium/libpdfium.so");

    // Fetch for the target, not the host, when they differ.
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" {
        warn(&format!(
            "pdfium not fetched: no pinned libpdfium for target OS {target_os:?}; \
             set PDFIUM_LIB_PATH to a pdfium library (the server reports not ready without one)"
        ));
        return;
    }
    let libc = if target_env == "musl" {
        "musl"
    } else {
        "glibc"
    };

    let script = manifest_dir.join("scripts").join("fetch_pdfium.py");
    let result = Command::new("python3")
        .arg(&script)
        .arg(&pdfium_dir)
        .args(["--arch", &target_arch, "--libc", libc])
        .current_dir(&manifest_dir)
        .output();
    match result {
        Ok(out) if out.status.success() => {
            // The script's one-line summary lands in the build script's stderr
            // log (target/*/build/jobserver-*/stderr).
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let reason = stderr
                .lines()
                .chain(stdout.lines())
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("python3 exited with {}", out.status));
            warn(&format!("pdfium not fetched: {reason}"));
            warn(
                "the server will start without pdfium and report not ready; retry with \
                 `python3 scripts/fetch_pdfium.py`, or set PDFIUM_LIB_PATH (or \
                 JOBSERVER_SKIP_PDFIUM_FETCH=1 to stop trying)",
            );
        }
        Err(e) => {
            warn(&format!(
                "pdfium not fetched: cannot run python3 ({e}); the server will start without \
                 pdfium and report not ready; set PDFIUM_LIB_PATH or install python3 with pip"
            ));
        }
    }
}

fn warn(msg: &str) {
    // One warning per line: cargo reads the build script's stdout line by line.
    for line in msg.lines() {
        println!("cargo:warning={line}");
    }
}
