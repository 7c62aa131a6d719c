//! The run's settings: `BENCH_*` environment variables with their
//! defaults, as the report lists them, and the queue sizes they imply.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Every setting of a run; all of them are printed in the report.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub sample: PathBuf,
    /// Worker threads for sweeps and overload; the top of the scaling range.
    pub workers: usize,
    pub msg_work_ms: u64,
    pub msg_levels: Vec<usize>,
    pub msg_secs: f64,
    pub pdf_levels: Vec<usize>,
    pub pdf_pages: String,
    pub pdf_dpi: u32,
    pub pdf_secs: f64,
    pub scale_secs: f64,
    pub overload_factors: Vec<f64>,
    pub overload_work_ms: u64,
    pub overload_queue: usize,
    pub overload_secs: f64,
    pub overload_pdf: bool,
    pub warmup_secs: f64,
}

impl Knobs {
    /// Defaults sized for about ten minutes on 2 cores, overridden by
    /// `BENCH_*` variables; a value that does not parse names its variable.
    pub fn from_env(quick: bool, nproc: usize) -> Result<Knobs, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let scale = if quick { 0.25 } else { 1.0 };
        let secs = |name: &str, default: f64| env_or(name, default).map(|s: f64| s * scale);
        let knobs = Knobs {
            sample: env_or(
                "BENCH_SAMPLE",
                root.join("../shared/data/regal-17pages.pdf"),
            )?,
            workers: env_or("BENCH_WORKERS", nproc)?,
            msg_work_ms: env_or("BENCH_MSG_WORK_MS", 2)?,
            msg_levels: env_list("BENCH_MSG_LEVELS", "1,2,4,8,16,32,64")?,
            msg_secs: secs("BENCH_MSG_SECS", 5.0)?,
            pdf_levels: env_list("BENCH_PDF_LEVELS", "1,2,4,8")?,
            pdf_pages: env_or("BENCH_PDF_PAGES", "1-4".to_string())?,
            pdf_dpi: env_or("BENCH_PDF_DPI", 100)?,
            pdf_secs: secs("BENCH_PDF_SECS", 12.0)?,
            scale_secs: secs("BENCH_SCALE_SECS", 10.0)?,
            overload_factors: env_list("BENCH_OVERLOAD_FACTORS", "2,10")?,
            overload_work_ms: env_or("BENCH_OVERLOAD_WORK_MS", 20)?,
            overload_queue: env_or("BENCH_OVERLOAD_QUEUE", nproc)?,
            overload_secs: secs("BENCH_OVERLOAD_SECS", 8.0)?,
            overload_pdf: env_or::<u8>("BENCH_OVERLOAD_PDF", 1)? != 0,
            warmup_secs: secs("BENCH_WARMUP_SECS", 2.0)?,
        };
        if knobs.workers == 0 || knobs.msg_levels.contains(&0) || knobs.pdf_levels.contains(&0) {
            return Err("worker counts and concurrency levels must be at least 1".into());
        }
        if knobs.msg_work_ms == 0 || knobs.overload_work_ms == 0 {
            return Err("BENCH_MSG_WORK_MS and BENCH_OVERLOAD_WORK_MS must be at least 1".into());
        }
        if knobs.overload_factors.iter().any(|f| *f <= 0.0) {
            return Err("BENCH_OVERLOAD_FACTORS must be positive".into());
        }
        Ok(knobs)
    }

    /// The knobs as `NAME=value` pairs, for the report.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        vec![
            ("BENCH_SAMPLE", sample_display(&self.sample)),
            ("BENCH_WORKERS", self.workers.to_string()),
            ("BENCH_MSG_WORK_MS", self.msg_work_ms.to_string()),
            ("BENCH_MSG_LEVELS", list(&self.msg_levels)),
            ("BENCH_MSG_SECS", format!("{}", self.msg_secs)),
            ("BENCH_PDF_LEVELS", list(&self.pdf_levels)),
            ("BENCH_PDF_PAGES", self.pdf_pages.clone()),
            ("BENCH_PDF_DPI", self.pdf_dpi.to_string()),
            ("BENCH_PDF_SECS", format!("{}", self.pdf_secs)),
            ("BENCH_SCALE_SECS", format!("{}", self.scale_secs)),
            (
                "BENCH_OVERLOAD_FACTORS",
                self.overload_factors
                    .iter()
                    .map(|f| format!("{f}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("BENCH_OVERLOAD_WORK_MS", self.overload_work_ms.to_string()),
            ("BENCH_OVERLOAD_QUEUE", self.overload_queue.to_string()),
            ("BENCH_OVERLOAD_SECS", format!("{}", self.overload_secs)),
            (
                "BENCH_OVERLOAD_PDF",
                u8::from(self.overload_pdf).to_string(),
            ),
            ("BENCH_WARMUP_SECS", format!("{}", self.warmup_secs)),
        ]
    }
}

/// The sample's path, relative to the repository when it is the default
/// (`../shared/...`), so the report does not name this checkout's location.
pub fn sample_display(sample: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    sample
        .strip_prefix(root)
        .unwrap_or(sample)
        .display()
        .to_string()
}

pub fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {text:?}")),
        _ => Ok(default),
    }
}

pub fn env_list<T: FromStr>(name: &str, default: &str) -> Result<Vec<T>, String> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    let list = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse()
                .map_err(|_| format!("{name}: cannot parse {part:?} in {text:?}"))
        })
        .collect::<Result<Vec<T>, String>>()?;
    if list.is_empty() {
        return Err(format!("{name} is empty"));
    }
    Ok(list)
}

/// Queue sizes for the sweeps: room for every client, so nothing is refused.
pub fn msg_queue(knobs: &Knobs) -> usize {
    knobs.msg_levels.iter().copied().max().unwrap_or(1) * 2
}
pub fn pdf_queue(knobs: &Knobs) -> usize {
    knobs.pdf_levels.iter().copied().max().unwrap_or(1) * 2
}
pub fn overload_msg_capacity(knobs: &Knobs) -> f64 {
    knobs.workers as f64 * 1000.0 / knobs.overload_work_ms as f64
}
/// The message workers' capacity in section 1, jobs/s, if they had the
/// cores to themselves.
pub fn msg_capacity(knobs: &Knobs) -> f64 {
    knobs.workers as f64 * 1000.0 / knobs.msg_work_ms as f64
}
