//! The dashboard in a real browser: headless Chromium loads `/`, the page's
//! script polls `/status`, and the dumped DOM must show the worker tiles as
//! they are: a busy message worker and an idle PDF worker.
//!
//! Needs Debian's `chromium` (`apt-get install chromium`); without it the
//! test fails and says so.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, test_config, wait_until, wait_with_deadline};

const CHROMIUM: &str = "/usr/bin/chromium";
/// A hard stop for the browser, should it hang.
const BROWSER_DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_busy_message_worker_and_idle_pdf_workers_in_a_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this browser test needs headless Chromium \
         (on Debian: apt-get install chromium)"
    );
    let app = spawn_app(test_config()).await;
    let _running = app.spawn_message(json!({"text": "x", "work_ms": 8000, "timeout_ms": 9000}));
    wait_until("the message worker is busy", || app.busy("message") == 1).await;

    let url = app.url("/");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url))
        .await
        .unwrap();

    assert!(
        dom.contains("data-worker"),
        "the page rendered no worker tiles (did its script fetch /status?):\n{dom}"
    );
    let busy = classes_of(&dom, "message-worker-0");
    assert!(
        busy.iter().any(|c| c == "busy"),
        "message-worker-0 should be shown busy, its classes are {busy:?}"
    );
    let idle = classes_of(&dom, "pdf-worker-0");
    assert!(
        idle.iter().any(|c| c == "idle"),
        "pdf-worker-0 should be shown idle, its classes are {idle:?}"
    );
    assert!(
        !dom.contains("class=\"offline\""),
        "the page says it is disconnected"
    );
}

/// Runs headless Chromium on `url` and returns the DOM after the page's
/// script has run. `--virtual-time-budget` lets the page's timers and
/// fetches play out (virtual time waits for network requests in flight)
/// before `--dump-dom` prints.
fn dump_dom(url: &str) -> String {
    // Removed when it goes out of scope, on a panic too.
    let folder = tempfile::Builder::new()
        .prefix("jobserver-test-chromium-")
        .tempdir()
        .unwrap();
    let profile = folder.path();
    let out_path = profile.join("dom.html");
    let err_path = profile.join("stderr.txt");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .args([
            "--virtual-time-budget=3000",
            "--timeout=15000",
            "--dump-dom",
        ])
        .arg(url)
        .stdin(Stdio::null())
        // Files, not pipes: nothing to drain while we wait with a deadline.
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));

    let Some(status) = wait_with_deadline(&mut child, BROWSER_DEADLINE) else {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        panic!("chromium did not finish within {BROWSER_DEADLINE:?}; stderr:\n{stderr}");
    };
    let dom = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success() && !dom.is_empty(),
        "chromium failed ({status}); stderr:\n{stderr}"
    );
    dom
}

/// The classes of the element whose `data-worker` is `worker`, read from
/// its opening tag in the serialized DOM.
fn classes_of(dom: &str, worker: &str) -> Vec<String> {
    let attr = format!("data-worker=\"{worker}\"");
    let at = dom
        .find(&attr)
        .unwrap_or_else(|| panic!("no tile with {attr} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').expect("an opening tag");
    let end = at + dom[at..].find('>').expect("the tag's end");
    let tag = &dom[start..end];
    let class = tag
        .split("class=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no class on {tag}"));
    class.split_whitespace().map(str::to_string).collect()
}
