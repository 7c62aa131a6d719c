//! OUTPUT_DIR against the answers: pages verified during the run and at
//! the end, no partial or stray file, no folder or upload left behind.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::checks::Checks;
use crate::record::{lock, Log, PdfOk, Res};
use crate::requests::decode_png;
use crate::servers::Server;

#[derive(Default)]
pub struct DiskReport {
    pub pages_checked: usize,
    pub bytes: u64,
    pub job_dirs: usize,
    pub orphan_dirs: usize,
    pub leftover_504: usize,
    /// Folders and kept uploads of async jobs not ended (shutdown run).
    pub open_dirs: usize,
    pub inputs_kept: usize,
    pub problems: Vec<String>,
}

/// Reads and decodes every page of a 200 answer, checking size and
/// dimensions against the answer. Returns pages, bytes, problems.
pub fn verify_job(out_dir: &Path, job: &PdfOk) -> (usize, u64, Vec<String>) {
    let mut problems = Vec::new();
    let mut bytes_total = 0;
    for &(page, w, h, bytes) in &job.pages {
        let path = out_dir
            .join(&job.job_id)
            .join(format!("page-{page:03}.png"));
        bytes_total += bytes;
        match std::fs::read(&path) {
            Err(e) => problems.push(format!("{}: {e}", path.display())),
            Ok(data) => match decode_png(&data) {
                Ok(dims) if dims == (w, h) && data.len() as u64 == bytes => {}
                Ok(dims) => problems.push(format!(
                    "{}: {dims:?} px, {} bytes; reply said {w}x{h}, {bytes} bytes",
                    path.display(),
                    data.len()
                )),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            },
        }
    }
    (job.pages.len(), bytes_total, problems)
}

/// Pages of 200 answers verified while the load ran.
#[derive(Default)]
pub struct Verified {
    /// `Log::pdf_ok[..upto]` are verified.
    pub upto: usize,
    /// Per target: pages and bytes verified.
    pub pages: [usize; 2],
    pub bytes: [u64; 2],
    pub problems: Vec<String>,
}

/// Verifies the pages of 200 answers as the load runs (two seconds after
/// each answer, once its client has fetched what it wanted) and, unless
/// the run keeps its files, removes their folders: the disk holds only
/// recent output, and the end of the run has little left to check.
pub async fn verifier(
    log: Arc<Mutex<Log>>,
    out_dirs: Vec<PathBuf>,
    keep: bool,
    stop: Arc<AtomicBool>,
) -> Verified {
    let mut v = Verified::default();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let batch: Vec<PdfOk> = {
            let log = lock(&log);
            let mut end = v.upto;
            while end < log.pdf_ok.len() && log.pdf_ok[end].at.elapsed() > Duration::from_secs(2) {
                end += 1;
            }
            let batch = log.pdf_ok[v.upto..end].to_vec();
            v.upto = end;
            batch
        };
        if !batch.is_empty() {
            let dirs = out_dirs.clone();
            let done = tokio::task::spawn_blocking(move || {
                let mut out = (Vec::new(), Vec::new());
                for job in &batch {
                    let dir = &dirs[job.target];
                    let (pages, bytes, problems) = verify_job(dir, job);
                    if !keep && problems.is_empty() {
                        let _ = std::fs::remove_dir_all(dir.join(&job.job_id));
                    }
                    out.0.push((job.target, pages, bytes));
                    out.1.extend(problems);
                }
                out
            })
            .await;
            if let Ok((counts, problems)) = done {
                for (target, pages, bytes) in counts {
                    v.pages[target] += pages;
                    v.bytes[target] += bytes;
                }
                v.problems.extend(problems);
            }
        }
        if stopping {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The async jobs' database and folder in OUTPUT_DIR.
pub fn is_job_store(name: &str) -> bool {
    matches!(name, "jobs.db" | "jobs.db-wal" | "jobs.db-shm" | ".jobs")
}

/// `OUTPUT_DIR/.jobs/inputs`: an upload is kept there while its async job
/// may still run (queued at a shutdown), never once it has ended.
pub fn check_inputs(out_dir: &Path, log: &Log, target: usize, report: &mut DiskReport) {
    let dir = out_dir.join(".jobs").join("inputs");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let id = name.strip_suffix(".pdf").unwrap_or(&name);
        if target == 0 && log.async_open.contains(id) {
            report.inputs_kept += 1;
        } else if let Some(state) = log.async_final.get(id).filter(|_| target == 0) {
            report.problems.push(format!(
                "upload of job {id} kept in {} after it ended ({state})",
                dir.display()
            ));
        } else {
            report.problems.push(format!(
                "upload {name} in {} belongs to no accepted async job",
                dir.display()
            ));
        }
    }
}

/// Checks one server's OUTPUT_DIR against its answers: no partial file, no
/// spooled upload left, every page of every 200 present with its size and
/// decoding to its reported dimensions, no folder of a failed job left.
pub fn check_disk(
    out_dir: &Path,
    oks: &[&PdfOk],
    ok_ids: &BTreeSet<&str>,
    failed_ids: &[(String, u16, String)],
    hung_up: usize,
    open_ids: &BTreeSet<String>,
) -> DiskReport {
    let mut report = DiskReport::default();
    check_files(out_dir, &mut report);
    verify_pages(out_dir, oks, &mut report);
    check_folders(out_dir, ok_ids, failed_ids, open_ids, &mut report);
    if report.orphan_dirs > hung_up {
        report.problems.push(format!(
            "{} job folders belong to no answer, more than the {hung_up} requests dropped on purpose",
            report.orphan_dirs
        ));
    }
    report
}

/// Partial files anywhere, and stray files.
fn check_files(out_dir: &Path, report: &mut DiskReport) {
    let mut stack = vec![out_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            report
                .problems
                .push(format!("cannot read {}", dir.display()));
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if dir == out_dir && is_job_store(&name) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".partial") {
                report
                    .problems
                    .push(format!("partial file {}", path.display()));
            } else if dir.ends_with(".spool") {
                report
                    .problems
                    .push(format!("spooled upload left: {}", path.display()));
            } else if dir.parent().is_some_and(|p| p.ends_with(".scratch")) {
                // A job's scratch space goes with its job.
                report
                    .problems
                    .push(format!("scratch file left: {}", path.display()));
            } else if !(name.starts_with("page-") && name.ends_with(".png")) {
                report
                    .problems
                    .push(format!("stray file {}", path.display()));
            }
        }
    }
}

/// Every page of every 200 not verified during the run, on two threads.
fn verify_pages(out_dir: &Path, oks: &[&PdfOk], report: &mut DiskReport) {
    let half = oks.len().div_ceil(2);
    let results: Vec<(usize, u64, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = oks
            .chunks(half.max(1))
            .map(|chunk| {
                s.spawn(move || {
                    let mut total = (0, 0, Vec::new());
                    for job in chunk {
                        let (pages, bytes, problems) = verify_job(out_dir, job);
                        total.0 += pages;
                        total.1 += bytes;
                        total.2.extend(problems);
                    }
                    total
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (checked, bytes, problems) in results {
        report.pages_checked += checked;
        report.bytes += bytes;
        report.problems.extend(problems);
    }
}

/// Folders: those of 200s, of async jobs kept for the next start, of
/// failed jobs (must be gone), and others.
fn check_folders(
    out_dir: &Path,
    ok_ids: &BTreeSet<&str>,
    failed_ids: &[(String, u16, String)],
    open_ids: &BTreeSet<String>,
    report: &mut DiskReport,
) {
    let mut failed: HashMap<&str, (u16, &str)> = HashMap::new();
    for (id, status, code) in failed_ids {
        failed.insert(id.as_str(), (*status, code.as_str()));
    }
    for entry in std::fs::read_dir(out_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == ".spool" || name == ".scratch" || is_job_store(&name) {
            continue;
        }
        report.job_dirs += 1;
        if ok_ids.contains(name.as_str()) {
            continue;
        }
        if open_ids.contains(&name) {
            // An async job the shutdown kept for the next start.
            report.open_dirs += 1;
            continue;
        }
        match failed.get(name.as_str()) {
            // The worker finished just as the caller's deadline fired: the
            // pages are complete (checked above for partials) but orphaned.
            Some((504, _)) => report.leftover_504 += 1,
            Some((status, code)) => report.problems.push(format!(
                "folder of failed job {name} ({status} {code}) was not removed"
            )),
            None => report.orphan_dirs += 1,
        }
    }
}

pub fn failed_ids(log: &Log, target: usize) -> Vec<(String, u16, String)> {
    let async_failed = log.async_failed.iter().filter(|_| target == 0).cloned();
    log.records
        .iter()
        .filter(|r| r.target == target)
        .filter_map(|r| match &r.res {
            Res::Http {
                status,
                code,
                job_id: Some(id),
                ..
            } if *status >= 300 => Some((id.clone(), *status, code.clone().unwrap_or_default())),
            _ => None,
        })
        .chain(async_failed)
        .collect()
}

pub fn disk_checks(
    checks: &mut Checks,
    log: &Log,
    verified: &Verified,
    server: &Server,
    target: usize,
) -> DiskReport {
    let ok_ids: BTreeSet<&str> = log
        .pdf_ok
        .iter()
        .filter(|j| j.target == target)
        .map(|j| j.job_id.as_str())
        .collect();
    let oks: Vec<&PdfOk> = log.pdf_ok[verified.upto..]
        .iter()
        .filter(|j| j.target == target)
        .collect();
    let hung_up = log
        .records
        .iter()
        .filter(|r| r.target == target && matches!(r.res, Res::Dropped))
        .count();
    let no_open = BTreeSet::new();
    let mut report = check_disk(
        &server.out_dir,
        &oks,
        &ok_ids,
        &failed_ids(log, target),
        hung_up,
        if target == 0 {
            &log.async_open
        } else {
            &no_open
        },
    );
    check_inputs(&server.out_dir, log, target, &mut report);
    report.pages_checked += verified.pages[target];
    report.bytes += verified.bytes[target];
    let prefix = format!("{}", server.out_dir.display());
    report.problems.extend(
        verified
            .problems
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .cloned(),
    );
    checks.check(
        format!("server {}: OUTPUT_DIR (no *.partial, pages decode)", server.name),
        report.problems.is_empty(),
        if report.problems.is_empty() {
            format!(
                "{} pages ({} MiB) of {} answers and done async jobs decoded at their reported size; {} job folders left at the end, {} of them of hung-up clients, {} of 504s that finished as the deadline fired, {} of async jobs kept queued; {} uploads kept in .jobs/inputs, all of jobs not ended",
                report.pages_checked,
                report.bytes >> 20,
                ok_ids.len(),
                report.job_dirs,
                report.orphan_dirs,
                report.leftover_504,
                report.open_dirs,
                report.inputs_kept
            )
        } else {
            format!(
                "{} problems: {}",
                report.problems.len(),
                report.problems[..report.problems.len().min(3)].join("; ")
            )
        },
    );
    report
}
