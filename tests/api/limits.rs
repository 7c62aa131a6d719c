//! Server-wide limits a hostile or unlucky load runs into: the free-space
//! floor of the output folder (`MIN_FREE_DISK_MB`), a disk that fills up
//! while a job renders, and the renderers' shared memory budget
//! (`PDF_RENDERER_MEMORY_BUDGET_MB`).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use jobserver::config::{Config, PoolConfig};
use jobserver::routes::standard_kinds;
use jobserver::storage::{
    ImageFormat, InputRef, JobInput, Layout, LocalInput, LocalPages, PageStore, Scratch, SpoolFile,
    SpoolWriter, StoreOp, StoredPage,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    error_message, fixture, ok_json, retry_after, spawn_app, spawn_app_with, test_config, TestApp,
};

/// Every top-level entry of the output folder named like a job id (a
/// job's pages), and every entry of its scratch, spool and kept-upload
/// folders.
fn leftovers(output: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let jobs = names(output)
        .into_iter()
        .filter(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| Uuid::parse_str(n).is_ok())
        })
        .collect::<Vec<_>>();
    let kept = [".scratch", ".spool", ".jobs/inputs"]
        .iter()
        .flat_map(|d| names(&output.join(d)));
    jobs.into_iter().chain(kept).collect()
}

/// The error body of an answer with `status`, checking its code.
async fn error_body(response: reqwest::Response, status: u16, code: &str) -> Value {
    let got = response.status();
    let body: Value = response.json().await.expect("errors are JSON");
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    body
}

#[tokio::test]
async fn below_the_disk_floor_pdf_jobs_get_503_and_readiness_fails_while_messages_still_run() {
    let mut config = test_config();
    // More free space than any filesystem has.
    config.min_free_disk_mb = u64::MAX >> 20;
    let app = spawn_app(config).await;

    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let failed = body["failed"].as_array().unwrap();
    let disk = failed
        .iter()
        .find(|f| f["check"] == "disk")
        .unwrap_or_else(|| panic!("no disk check in {body}"));
    let message = disk["message"].as_str().unwrap();
    assert!(
        message.contains("MB free") && message.contains("MIN_FREE_DISK_MB"),
        "{message}"
    );
    assert_eq!(failed.len(), 1, "only the disk is short: {body}");

    let sample = || fixture("sample.pdf");
    let refused = [
        app.upload_pdf("?dpi=36&pages=1", sample()).await,
        app.upload_pdf("?dpi=36&pages=1&mode=async", sample()).await,
        app.post_json("/jobs/pdf", json!({"path": "sample.pdf", "dpi": 36}))
            .await,
        app.multi_thread("pdf2image", "sample.pdf").await,
        app.post_json_with(
            "/multiThread",
            ("prefer", "respond-async"),
            json!({"data": "sample.pdf", "jobType": "pdf2image"}),
        )
        .await,
    ];
    for response in refused {
        assert!(retry_after(&response) >= 1);
        let body = error_body(response, 503, "insufficient_storage").await;
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("MIN_FREE_DISK_MB"), "{message}");
    }

    ok_json(app.message(json!({"text": "still here"})).await).await;
    ok_json(app.multi_thread("message", "still here").await).await;
    assert_eq!(app.pages_rendered(), 0, "nothing was rendered");
    let left = leftovers(app.output_dir());
    assert!(left.is_empty(), "nothing was kept: {left:?}");

    let (_, status) = app.get_json("/status").await;
    assert_eq!(status["ready"], false);
    assert!(status["disk"]["free_mb"].is_u64(), "{}", status["disk"]);
    assert_eq!(status["disk"]["min_free_mb"], u64::MAX >> 20);
}

/// The output folder as a page store whose disk fills up: once `room`
/// pages have been stored, storing another fails with `ENOSPC`, as a
/// full filesystem answers, and so does spooling an upload. Refilling
/// `room` frees the disk again.
struct FillingUp {
    inner: LocalPages,
    room: Arc<AtomicU64>,
}

impl PageStore for FillingUp {
    fn scratch(&self, job_id: Uuid) -> io::Result<Scratch> {
        self.inner.scratch(job_id)
    }

    fn put_page<'a>(&'a self, job_id: Uuid, page: &'a StoredPage, file: &'a Path) -> StoreOp<'a> {
        let taken = self
            .room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match taken {
            Ok(_) => self.inner.put_page(job_id, page, file),
            Err(_) => Box::pin(async { Err(io::Error::from_raw_os_error(libc::ENOSPC)) }),
        }
    }

    fn get_page(
        &self,
        job_id: Uuid,
        page: u32,
    ) -> BoxFuture<'_, io::Result<Option<(ImageFormat, Bytes)>>> {
        self.inner.get_page(job_id, page)
    }

    fn list_pages(&self, job_id: Uuid) -> BoxFuture<'_, io::Result<Vec<(u32, ImageFormat)>>> {
        self.inner.list_pages(job_id)
    }

    fn remove_pages(&self, job_id: Uuid) -> StoreOp<'_> {
        self.inner.remove_pages(job_id)
    }

    fn jobs_older_than(&self, before: SystemTime) -> BoxFuture<'_, io::Result<Vec<Uuid>>> {
        self.inner.jobs_older_than(before)
    }

    fn keep_input(&self, job_id: Uuid, bytes: Bytes) -> BoxFuture<'_, io::Result<InputRef>> {
        self.inner.keep_input(job_id, bytes)
    }

    fn spool_upload(&self) -> io::Result<SpoolWriter> {
        match self.room.load(Ordering::SeqCst) {
            0 => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            _ => self.inner.spool_upload(),
        }
    }

    fn keep_spooled<'a>(
        &'a self,
        job_id: Uuid,
        upload: &'a SpoolFile,
    ) -> BoxFuture<'a, io::Result<InputRef>> {
        self.inner.keep_spooled(job_id, upload)
    }

    fn has_input<'a>(&'a self, input: &'a InputRef) -> BoxFuture<'a, bool> {
        self.inner.has_input(input)
    }

    fn remove_input<'a>(&'a self, input: &'a InputRef) -> StoreOp<'a> {
        self.inner.remove_input(input)
    }

    fn local_input(&self, job_id: Uuid, input: &JobInput) -> io::Result<LocalInput> {
        self.inner.local_input(job_id, input)
    }

    fn set_owner<'a>(&'a self, job_id: Uuid, tenant: &'a str) -> StoreOp<'a> {
        self.inner.set_owner(job_id, tenant)
    }

    fn owner(&self, job_id: Uuid) -> BoxFuture<'_, io::Result<Option<String>>> {
        self.inner.owner(job_id)
    }
}

/// A server whose page store holds `room` pages before its disk is full.
async fn spawn_filling_up(room: &Arc<AtomicU64>) -> TestApp {
    spawn_filling_up_with(room, test_config()).await
}

/// [`spawn_filling_up`] with `config`.
async fn spawn_filling_up_with(room: &Arc<AtomicU64>, config: Config) -> TestApp {
    let mut kinds = standard_kinds();
    let room = Arc::clone(room);
    kinds.page_store(move |layout: &Layout| {
        Arc::new(FillingUp {
            inner: LocalPages::new(layout.clone()),
            room,
        })
    });
    spawn_app_with(config, kinds).await
}

#[tokio::test]
async fn a_disk_that_fills_up_mid_job_answers_507_and_keeps_nothing_of_the_job() {
    let room = Arc::new(AtomicU64::new(1));
    let app = spawn_filling_up(&room).await;
    // Three pages: the first is stored, the second meets a full disk.
    let response = app
        .upload_pdf("?dpi=36&pages=1-3", fixture("text.pdf"))
        .await;
    let body = error_body(response, 507, "insufficient_storage").await;
    let job_id = body["job_id"].as_str().expect("the failed job's id");
    let left = leftovers(app.output_dir());
    assert!(left.is_empty(), "job {job_id} left files: {left:?}");
    assert_eq!(
        app.page(job_id, 1).await.status(),
        404,
        "the stored page went"
    );

    // The same in async mode: the job ends failed with the 507.
    room.store(1, Ordering::SeqCst);
    let id = app
        .submit_pdf("?dpi=36&pages=1-3", fixture("text.pdf"))
        .await;
    let failed = app
        .job_until(&id, "failed", |view| view["state"] == "failed")
        .await;
    assert_eq!(failed["error"]["status"], 507, "{failed}");
    assert_eq!(failed["error"]["error"], "insufficient_storage", "{failed}");
    let left = leftovers(app.output_dir());
    assert!(left.is_empty(), "job {id} left files: {left:?}");

    // Space is back: the next job renders every page.
    room.store(u64::MAX, Ordering::SeqCst);
    let done = ok_json(
        app.upload_pdf("?dpi=36&pages=1-3", fixture("text.pdf"))
            .await,
    )
    .await;
    assert_eq!(done["pages"].as_array().unwrap().len(), 3, "{done}");
}

#[tokio::test]
async fn an_upload_that_cannot_be_spooled_for_lack_of_space_is_refused_and_keeps_nothing() {
    let room = Arc::new(AtomicU64::new(0));
    let mut config = test_config();
    config.pdf.upload_spool_threshold_bytes = 1024;
    let app = spawn_filling_up_with(&room, config).await;
    for query in ["?dpi=36", "?dpi=36&mode=async"] {
        let response = app.upload_pdf(query, fixture("text.pdf")).await;
        let body = error_body(response, 503, "insufficient_storage").await;
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("cannot spool the upload"),
            "{query}: {message}"
        );
    }
    let left = leftovers(app.output_dir());
    assert!(left.is_empty(), "nothing was kept: {left:?}");
    assert_eq!(app.pages_rendered(), 0, "nothing was rendered");

    room.store(u64::MAX, Ordering::SeqCst);
    ok_json(app.upload_pdf("?dpi=36", fixture("text.pdf")).await).await;
}

#[tokio::test]
async fn a_bomb_past_its_share_of_the_memory_budget_fails_422_and_the_renderers_carry_on() {
    let mut config = test_config();
    config.pdf.pool = PoolConfig::new(2, 8, Duration::from_secs(30));
    // 600 MB for two renderers: 300 MB each, well under the per-renderer
    // limit (4096 MB) and the 2.1 GB the 1 GiB content bomb needs.
    config.pdf.renderer_memory_budget_mb = 600;
    let app = spawn_app(config).await;
    let pids = app.wait_renderers(2).await;
    let (_, status) = app.get_json("/status").await;
    assert_eq!(status["pdf_engine"]["renderer_memory_cap_mb"], 300);
    assert_eq!(status["pdf_engine"]["renderer_memory_budget_mb"], 600);

    // The bomb and a normal document at once, one on each renderer.
    let bomb = app.spawn_upload_pdf(
        "?dpi=72",
        std::fs::read(crate::helpers::data_dir().join("hostile/flate-bomb-content.pdf"))
            .expect("data/hostile/flate-bomb-content.pdf"),
    );
    let normal = app.spawn_upload_pdf("?dpi=36&pages=1", fixture("sample.pdf"));
    let message = error_message(bomb.await.unwrap(), 422).await;
    for var in [
        "PDF_RENDERER_MEMORY_LIMIT_MB",
        "PDF_RENDERER_MEMORY_BUDGET_MB",
        "300 MB",
    ] {
        assert!(message.contains(var), "{var} missing: {message}");
    }
    ok_json(normal.await.unwrap()).await;

    // The aborted renderer was replaced; the other one never stopped.
    let now = app.wait_renderers(2).await;
    assert_eq!(
        now.iter().filter(|p| pids.contains(p)).count(),
        1,
        "one renderer replaced: {pids:?} -> {now:?}"
    );
    assert_eq!(app.get("/livez").await.status(), 200);
    app.assert_pdf_renders("after the bomb").await;
}
