//! What the report says about the host: cores, CPU, date, commit, load.

use std::fs;
use std::path::Path;
use std::process::Command;

/// What the report says about the host.
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub date: String,
    pub commit: String,
    pub load_start: String,
}

impl Machine {
    pub fn probe(root: &Path) -> Machine {
        // `nproc` honours CPU affinity, as the server's default worker count does.
        let nproc = command_line("nproc", &[])
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
        let mut commit = command_line(
            "git",
            &[
                "-C",
                &root.display().to_string(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        )
        .unwrap_or_else(|| "?".into());
        let dirty = Command::new("git")
            .args([
                "-C",
                &root.display().to_string(),
                "diff",
                "--quiet",
                "HEAD",
                "--",
                "src",
            ])
            .status()
            .map(|s| !s.success())
            .unwrap_or(false);
        if dirty {
            commit.push_str(" (src modified)");
        }
        Machine {
            nproc,
            cpu,
            date,
            commit,
            load_start: load_average(),
        }
    }
}

/// The first line a command prints, if it runs and succeeds.
pub fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `/proc/loadavg`'s 1, 5 and 15-minute figures.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn load_1min() -> String {
    load_average()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}
