//! The server's processes as `/proc` shows them (state and parent,
//! children, open file descriptors, resident memory, renderer or not), and
//! SIGKILL for its renderers.

use std::collections::BTreeMap;

/// `(state, ppid)` of a process, from `/proc/<pid>/stat`.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live (not zombie) child of `parent`.
pub fn is_live_child(pid: u32, parent: u32) -> bool {
    matches!(proc_state(pid), Some((s, ppid)) if ppid == parent && s != 'Z')
}

/// Sends SIGKILL; true if it was delivered.
pub fn sigkill(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill only sends a signal; the caller checked the pid is a
    // live child of the server.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// Children of `parent`: `(pid, state)`.
pub fn children(parent: u32) -> Vec<(u32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (state, ppid) = proc_state(pid)?;
            (ppid == parent).then_some((pid, state))
        })
        .collect()
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Open fds of a process by kind (socket, pipe, anon inode, file).
pub fn fd_kinds(pid: u32) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let kind = match target.split_once(':') {
            Some((k @ ("socket" | "pipe"), _)) => k.to_string(),
            Some(("anon_inode", what)) => what.trim_matches(|c| c == '[' || c == ']').to_string(),
            _ => "file".to_string(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

pub fn is_renderer(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0)
                .any(|arg| arg == b"--renderer".as_slice())
        })
        .unwrap_or(false)
}
