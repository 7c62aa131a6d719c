//! The Markdown tables of a run: answers by status and kind, latency,
//! checks, async jobs by final state, the hostile phase.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::checks::Checks;
use crate::hostile::{
    head_bound, Attack, HostileLog, Seen, CLOSE_MARGIN, FLOOD_WAVE, SLOWLORIS_WAVE,
};
use crate::hostile_checks::{ms, outcome, peak_sockets};
use crate::record::{Expect, Kind, Log, Res};
use crate::servers::{
    HEADER_READ_TIMEOUT_MS, MAIN_SERVER, MAX_CONNECTIONS_PER_CLIENT, MAX_UPLOAD_BYTES,
};

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn outcome_label(res: &Res) -> String {
    match res {
        Res::Http { status, code, .. } => match code {
            Some(c) => format!("{status} {c}"),
            None => status.to_string(),
        },
        Res::Dropped => "dropped on purpose".into(),
        Res::Conn(e) => format!("connection {}", conn_kind(e)),
    }
}

/// A transport error, in a word.
pub fn conn_kind(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("refused") {
        "refused"
    } else if e.contains("reset") {
        "reset"
    } else if e.contains("closed") || e.contains("incomplete") {
        "closed"
    } else if e.contains("timed out") {
        "timed out"
    } else {
        "error"
    }
}

pub fn status_column(res: &Res) -> String {
    match res {
        Res::Http { status, .. } => status.to_string(),
        Res::Dropped => "dropped".into(),
        Res::Conn(_) => "conn err".into(),
    }
}

/// The tables of every run: answers by status (with error code) and
/// server, requests by kind and status, latency of accepted jobs.
pub fn tables(out: &mut String, log: &Log, names: &[&str]) {
    status_table(out, log, names);
    kind_table(out, log);
    latency_table(out, log);
}

fn status_table(out: &mut String, log: &Log, names: &[&str]) {
    let mut by_status: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in &log.records {
        by_status
            .entry(outcome_label(&r.res))
            .or_insert_with(|| vec![0; names.len()])[r.target] += 1;
    }
    let _ = writeln!(out, "\n### Answers by status\n");
    let _ = write!(out, "| status | error |");
    for n in names {
        let _ = write!(out, " server {n} |");
    }
    let _ = write!(out, "\n|---|---|");
    for _ in names {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (label, counts) in &by_status {
        let (status, code) = label.split_once(' ').unwrap_or((label, ""));
        let _ = write!(out, "| {status} | {code} |");
        for c in counts {
            let _ = write!(out, " {c} |");
        }
        out.push('\n');
    }
    let _ = write!(out, "| **total** | |");
    for t in 0..names.len() {
        let n = log.records.iter().filter(|r| r.target == t).count();
        let _ = write!(out, " **{n}** |");
    }
    out.push('\n');
}

fn kind_table(out: &mut String, log: &Log) {
    let mut columns: BTreeSet<String> = BTreeSet::new();
    let mut by_kind: BTreeMap<Kind, BTreeMap<String, usize>> = BTreeMap::new();
    for r in &log.records {
        let col = status_column(&r.res);
        columns.insert(col.clone());
        *by_kind.entry(r.kind).or_default().entry(col).or_default() += 1;
    }
    let _ = writeln!(out, "\n### Requests by kind\n");
    let _ = write!(out, "| kind | sent |");
    for c in &columns {
        let _ = write!(out, " {c} |");
    }
    let _ = write!(out, "\n|---|---:|");
    for _ in &columns {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (kind, counts) in &by_kind {
        let total: usize = counts.values().sum();
        let _ = write!(out, "| {} | {total} |", kind.name());
        for c in &columns {
            let _ = write!(out, " {} |", counts.get(c).copied().unwrap_or(0));
        }
        out.push('\n');
    }
}

fn latency_table(out: &mut String, log: &Log) {
    let _ = writeln!(
        out,
        "\n### Latency of accepted jobs (200), request to full answer\n"
    );
    let _ = writeln!(
        out,
        "| jobs | n | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|"
    );
    for (label, pdf) in [("message", false), ("pdf", true)] {
        let mut ms: Vec<f64> = log
            .records
            .iter()
            .filter(|r| {
                matches!(r.res, Res::Http { status: 200, .. })
                    && matches!(r.expect, Expect::Job { pdf: p } if p == pdf)
            })
            .map(|r| (r.finished - r.started).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "| {label} | {} | {:.0} | {:.0} | {:.0} |",
            ms.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN)
        );
    }
}

/// Removes terminal colour codes (`ESC [ ... m`) from log text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn checks_table(out: &mut String, checks: &Checks) {
    let _ = writeln!(
        out,
        "\n### Checks\n\n| check | result | observed |\n|---|---|---|"
    );
    for (name, ok, detail) in &checks.rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} |",
            if *ok { "pass" } else { "**FAIL**" },
            detail.replace('|', "\\|")
        );
    }
}

/// Async jobs by how they ended (server A).
pub fn async_table(out: &mut String, log: &Log) {
    let mut counts: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
    for job in &log.async_jobs {
        let state = match log.async_final.get(&job.job_id) {
            Some(s) => s.as_str(),
            None if log.async_open.contains(&job.job_id) => "not ended (kept for the next start)",
            None => "not ended",
        };
        counts.entry(state).or_default()[usize::from(!job.pdf)] += 1;
    }
    let _ = writeln!(
        out,
        "\n### Async jobs by final state (server A)\n\n| state | pdf | message |\n|---|---:|---:|"
    );
    for (state, [pdf, message]) in &counts {
        let _ = writeln!(out, "| {state} | {pdf} | {message} |");
    }
    let pdf = log.async_jobs.iter().filter(|j| j.pdf).count();
    let _ = writeln!(
        out,
        "| **accepted** | **{pdf}** | **{}** |",
        log.async_jobs.len() - pdf
    );
}

/// The hostile phase: its connections by attack, way of sending and
/// outcome; the longest a slowloris connection stayed open; `/livez`
/// meanwhile; the server's connections per address and its own counters.
pub fn hostile_table(out: &mut String, h: &HostileLog, log: &Log) {
    let _ = writeln!(
        out,
        "\n### Hostile phase (server A; attacker 127.0.0.2, normal clients 127.0.0.1)\n"
    );
    if !h.ran {
        let _ = writeln!(out, "not run: the load is too short for an attack window");
        return;
    }
    let of = |a: Attack| h.conns.iter().filter(move |c| c.attack == a);
    let longest = of(Attack::Slowloris)
        .map(|c| c.open)
        .max()
        .unwrap_or_default();
    let livez = h.livez_ms();
    let (normal, attacker) = peak_sockets(h);
    let legit_budget = log
        .records
        .iter()
        .filter(|r| matches!(&r.res, Res::Http { code: Some(c), .. } if c == "uploads_in_flight"))
        .count();
    let counters: Vec<String> = h
        .counters
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    // An upload admitted from its headers holds a PDF queue place (and
    // its share of the upload budget) until its body times out.
    let held: f64 = of(Attack::Flood)
        .filter(|c| !c.over_limit)
        .filter(|c| {
            matches!(
                c.seen,
                Seen::Answer { status: 408, .. } | Seen::Closed { .. }
            )
        })
        .map(|c| c.open.as_secs_f64())
        .sum();
    let _ = writeln!(
        out,
        "- {:.0} s of attack: {} uploads in waves of {FLOOD_WAVE}, {} slowloris connections in waves of {}-{}\n\
         - longest a slowloris connection stayed open: **{} ms** (bound {} ms: HEADER_READ_TIMEOUT_MS {HEADER_READ_TIMEOUT_MS} + {} ms)\n\
         - `/livez` from 127.0.0.1 every 250 ms: {} probes, p50 {:.0} ms, max {:.0} ms\n\
         - listen-queue overflows during the attack (kernel count, whole machine): {}\n\
         - connections the server held at most (kernel view, accept backlog included): {normal} from 127.0.0.1, {attacker} from 127.0.0.2 (MAX_CONNECTIONS_PER_CLIENT {MAX_CONNECTIONS_PER_CLIENT})\n\
         - uploads admitted from their headers held a PDF queue place until their body timed out: {:.0} place-seconds in all ({} places for {:.0} s)\n\
         - normal requests answered 503 `uploads_in_flight` (expected): {legit_budget}\n\
         - the server's counters after the load: {}\n",
        h.attack_time.as_secs_f64(),
        of(Attack::Flood).count(),
        of(Attack::Slowloris).count(),
        SLOWLORIS_WAVE.0,
        SLOWLORIS_WAVE.1,
        ms(longest),
        ms(head_bound()),
        ms(CLOSE_MARGIN),
        livez.len(),
        percentile(&livez, 0.5),
        livez.last().copied().unwrap_or(f64::NAN),
        h.listen_overflows
            .map_or("unknown".to_string(), |n| n.to_string()),
        held,
        MAIN_SERVER.pdf_capacity,
        h.attack_time.as_secs_f64(),
        counters.join("; ")
    );
    let mut rows: BTreeMap<(Attack, String, String), (usize, u128, u128)> = BTreeMap::new();
    for c in &h.conns {
        let sent = if c.over_limit {
            format!("over MAX_UPLOAD_BYTES ({MAX_UPLOAD_BYTES}), {}", c.plan)
        } else {
            c.plan.to_string()
        };
        let row = rows.entry((c.attack, sent, outcome(c))).or_default();
        row.0 += 1;
        row.1 = row.1.max(ms(c.open));
        row.2 = row.2.max(ms(c.connect));
    }
    let _ = writeln!(
        out,
        "| attack | sent | outcome | n | max open ms | max connect ms |\n|---|---|---|---:|---:|---:|"
    );
    for ((attack, sent, outcome), (n, open, connect)) in &rows {
        let _ = writeln!(
            out,
            "| {} | {sent} | {outcome} | {n} | {open} | {connect} |",
            attack.name()
        );
    }
}
