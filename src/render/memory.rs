//! The renderers' memory budget: how much memory this process may use,
//! and the address-space cap each renderer gets from it.
//!
//! All renderers together may use `PDF_RENDERER_MEMORY_BUDGET_MB`. Unset,
//! it is [`BUDGET_SHARE`] (3/4) of the memory this process may use, read
//! once when the configuration is loaded: the smaller of its memory
//! cgroup's limit (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`,
//! of its own cgroup and each one above it) and the machine's `MemTotal`.
//! The rest is left to the server itself, the page cache and the spooled
//! uploads. A cgroup limit of `max`, or one above `MemTotal` (cgroup v1
//! writes "no limit" as about 2^63), is no limit.
//!
//! Each renderer's `RLIMIT_AS` is then the smaller of
//! `PDF_RENDERER_MEMORY_LIMIT_MB` and the budget divided by the number of
//! renderers (one per PDF worker: a renderer lent to another worker's job
//! is still one process), so the renderers can never together map more
//! than the budget, and what is resident is at most what is mapped.

use std::path::{Path, PathBuf};

/// Share of the usable memory the renderers get by default: 3/4.
pub const BUDGET_SHARE: (u64, u64) = (3, 4);

/// Least address space a renderer may be given: pdfium and a page's bitmap
/// at common resolutions fit in it, with room for the document.
pub const MIN_RENDERER_MB: u64 = 256;

const MB: u64 = 1024 * 1024;

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Each renderer's cap in MiB: `limit_mb`, or less when the budget split
/// over `renderers` is smaller. A budget of 0 means none.
pub fn per_renderer_mb(limit_mb: u64, budget_mb: u64, renderers: usize) -> u64 {
    if budget_mb == 0 {
        return limit_mb;
    }
    limit_mb.min(budget_mb / renderers.max(1) as u64)
}

/// The default budget in MiB: [`BUDGET_SHARE`] of [`usable_memory_bytes`],
/// or 0 (no budget) where that cannot be read.
pub fn default_budget_mb() -> u64 {
    usable_memory_bytes().map_or(0, budget_from_usable)
}

/// [`BUDGET_SHARE`] of `usable` bytes, in MiB.
pub fn budget_from_usable(usable: u64) -> u64 {
    let (num, den) = BUDGET_SHARE;
    (usable / MB) / den * num
}

/// Memory this process may use: its cgroup's limit if it has one below
/// the machine's, else the machine's `MemTotal`; `None` where neither can
/// be read (not Linux).
pub fn usable_memory_bytes() -> Option<u64> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let total = read(Path::new("/proc/meminfo")).and_then(|m| mem_total(&m));
    let cgroup = read(Path::new("/proc/self/cgroup"))
        .and_then(|c| cgroup_limit(&c, Path::new(CGROUP_ROOT), read));
    usable(cgroup, total)
}

/// The smaller of a cgroup limit and the machine's memory; a limit above
/// the machine's memory is none.
fn usable(cgroup: Option<u64>, total: Option<u64>) -> Option<u64> {
    match (cgroup, total) {
        (Some(limit), Some(total)) => Some(limit.min(total)),
        (limit, total) => limit.or(total),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// A cgroup memory limit file's value in bytes; `None` for `max` (v2's
/// "no limit") or anything unreadable.
pub fn limit_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The process's cgroups, from `/proc/self/cgroup`: the v2 path (line
/// `0::<path>`) and the v1 memory controller's path (`<n>:memory:<path>`,
/// the controller possibly among others, comma-separated).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    pub v2: Option<String>,
    pub v1_memory: Option<String>,
}

pub fn cgroup_paths(proc_self_cgroup: &str) -> CgroupPaths {
    let mut paths = CgroupPaths::default();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            paths.v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            paths.v1_memory = Some(path.to_string());
        }
    }
    paths
}

/// The tightest memory limit on the process's cgroup and every cgroup
/// above it, in bytes, reading files through `read` (so tests need no
/// real files). v1's memory controller is asked first (a v2 line is also
/// present on hybrid systems, without the memory controller), then v2.
/// A cgroup namespace or a container may mount its own cgroup as the
/// root: levels that do not exist under `root` are skipped.
pub fn cgroup_limit(
    proc_self_cgroup: &str,
    root: &Path,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let paths = cgroup_paths(proc_self_cgroup);
    let v1 = paths
        .v1_memory
        .and_then(|p| tightest(&root.join("memory"), &p, "memory.limit_in_bytes", &read));
    v1.or_else(|| {
        paths
            .v2
            .and_then(|p| tightest(root, &p, "memory.max", &read))
    })
}

/// The smallest value of `file` in the cgroup at `path` under `mount` and
/// in each cgroup above it.
fn tightest(
    mount: &Path,
    path: &str,
    file: &str,
    read: &impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let mut dir = PathBuf::from(mount);
    let mut levels = vec![dir.join(file)];
    for part in path.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        levels.push(dir.join(file));
    }
    levels
        .iter()
        .filter_map(|f| read(f).as_deref().and_then(limit_value))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(p, v)| (PathBuf::from(p), v.to_string()))
            .collect();
        move |path: &Path| map.get(path).cloned()
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24683584 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_683_584 * 1024));
        assert_eq!(mem_total("MemFree: 5 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn cgroup_lines_give_the_v2_path_and_the_v1_memory_path() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/d6bb\n1:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            cgroup_paths(v1),
            CgroupPaths {
                v2: Some("/".into()),
                v1_memory: Some("/process_api/d6bb".into()),
            }
        );
        let joined = "5:cpuacct,memory:/a\n";
        assert_eq!(cgroup_paths(joined).v1_memory.as_deref(), Some("/a"));
        let v2 = "0::/system.slice/jobserver.service\n";
        assert_eq!(
            cgroup_paths(v2),
            CgroupPaths {
                v2: Some("/system.slice/jobserver.service".into()),
                v1_memory: None,
            }
        );
    }

    #[test]
    fn the_tightest_v2_limit_on_the_way_up_wins_and_max_is_none() {
        let cgroup = "0::/system.slice/jobserver.service\n";
        let read = files(&[
            ("/cg/memory.max", "max\n"),
            ("/cg/system.slice/memory.max", "8589934592\n"),
            ("/cg/system.slice/jobserver.service/memory.max", "max\n"),
        ]);
        assert_eq!(
            cgroup_limit(cgroup, Path::new("/cg"), read),
            Some(8 << 30),
            "the parent's 8 GiB bounds its child"
        );
        let unlimited = files(&[("/cg/memory.max", "max\n")]);
        assert_eq!(cgroup_limit("0::/\n", Path::new("/cg"), unlimited), None);
    }

    #[test]
    fn a_v1_memory_limit_is_read_from_the_memory_hierarchy() {
        let cgroup = "4:memory:/docker/abc\n0::/\n";
        // Inside a container the hierarchy's root is the container's own
        // cgroup: the process's path does not exist under it.
        let read = files(&[("/cg/memory/memory.limit_in_bytes", "2147483648\n")]);
        assert_eq!(cgroup_limit(cgroup, Path::new("/cg"), read), Some(2 << 30));
        let unlimited = files(&[(
            "/cg/memory/docker/abc/memory.limit_in_bytes",
            "9223372036854771712\n",
        )]);
        let limit = cgroup_limit(cgroup, Path::new("/cg"), unlimited);
        assert_eq!(
            usable(limit, Some(16 << 30)),
            Some(16 << 30),
            "v1's 'no limit' is above the machine's memory"
        );
    }

    #[test]
    fn without_a_cgroup_limit_the_machine_s_memory_is_usable() {
        assert_eq!(usable(None, Some(4 << 30)), Some(4 << 30));
        assert_eq!(usable(Some(1 << 30), Some(4 << 30)), Some(1 << 30));
        assert_eq!(usable(None, None), None);
        assert_eq!(budget_from_usable(4 << 30), 3072, "3/4 of 4 GiB");
    }

    #[test]
    fn each_renderer_gets_the_smaller_of_its_limit_and_its_share() {
        assert_eq!(per_renderer_mb(4096, 0, 8), 4096, "no budget");
        assert_eq!(per_renderer_mb(4096, 12288, 2), 4096, "the limit is lower");
        assert_eq!(per_renderer_mb(4096, 12288, 8), 1536);
        assert_eq!(per_renderer_mb(4096, 1000, 3), 333, "rounded down");
        for workers in 1..=64 {
            let budget = 10_000;
            let each = per_renderer_mb(4096, budget, workers);
            assert!(each * workers as u64 <= budget, "{workers} renderers");
        }
    }

    #[test]
    fn this_machine_s_memory_can_be_read() {
        let usable = usable_memory_bytes().expect("Linux has /proc/meminfo");
        assert!(usable > 64 * MB, "{usable}");
        assert!(default_budget_mb() > 0);
    }
}
