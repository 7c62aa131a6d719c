//! The hostile phase judged: the answers each attacking connection may get
//! and by when, the outcome kinds the report counts, and the checks rows.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::checks::Checks;
use crate::hostile::{head_bound, Attack, HostileConn, HostileLog, Seen, ATTACKER, LIVEZ_LIMIT};
use crate::hostile_watch::PER_CLIENT_REFUSALS;
use crate::record::{Log, Res};
use crate::report::percentile;
use crate::servers::{HEADER_READ_TIMEOUT_MS, MAX_CONNECTIONS_PER_CLIENT};

pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// What happened to a connection, in the words the report counts by.
pub fn outcome(c: &HostileConn) -> String {
    match &c.seen {
        Seen::Answer {
            status: 503, code, ..
        } if code == "too_many_connections" => "refused at accept: 503 too_many_connections".into(),
        Seen::Answer {
            status: 503, code, ..
        } if c.attack == Attack::Flood => {
            format!("refused at headers: 503 {code}")
        }
        Seen::Answer { status: 413, .. } => "413 payload_too_large (from the headers)".into(),
        Seen::Answer {
            status: 408,
            message,
            ..
        } => {
            if message.contains("paused") {
                "408: body paused past BODY_IDLE_TIMEOUT_MS".into()
            } else if message.contains("longer") {
                "408: body slower than BODY_TIMEOUT_MS".into()
            } else {
                "408 request_timeout".into()
            }
        }
        Seen::Answer { status, code, .. } => format!("answered {status} {code}"),
        Seen::Closed { .. } if c.open > c.bound => "closed late, past its bound".into(),
        Seen::Closed { .. } if c.attack == Attack::Flood => {
            "closed by the server without an answer".into()
        }
        Seen::Closed { .. } if c.open >= Duration::from_millis(HEADER_READ_TIMEOUT_MS) => {
            "closed by the header timeout, within its bound".into()
        }
        Seen::Closed { reset, .. } => format!(
            "{} before the header timeout, without an answer",
            if *reset { "reset" } else { "closed" }
        ),
        Seen::Open => "still open when no longer watched".into(),
        Seen::Failed(_) => "the attacker failed to connect or send".into(),
    }
}

/// Whether the server treated a connection as it may: an answer it may
/// give for that attack, or a close, in either case within the bound.
pub fn judge(c: &HostileConn) -> Result<(), String> {
    let (open, bound) = (ms(c.open), ms(c.bound));
    let (status, code, message, retry_after) = match &c.seen {
        Seen::Failed(e) => return Err(format!("the attack could not run: {e}")),
        Seen::Open => {
            return Err(format!(
                "still open {open} ms after connecting; the server must answer or close it within {bound} ms"
            ))
        }
        _ if c.open > c.bound => {
            return Err(format!(
                "{} after {open} ms; the server must answer or close it within {bound} ms",
                outcome(c)
            ))
        }
        Seen::Closed { .. } => return Ok(()),
        Seen::Answer {
            status,
            code,
            message,
            retry_after,
        } => (*status, code.as_str(), message, *retry_after),
    };
    if status == 503 && !retry_after {
        return Err(format!("503 {code} without Retry-After"));
    }
    let flood = c.attack == Attack::Flood;
    match status {
        503 if code == "too_many_connections" => Ok(()),
        503 if flood && !c.over_limit && matches!(code, "queue_full" | "uploads_in_flight") => {
            Ok(())
        }
        413 if flood && c.over_limit => Ok(()),
        408 if !c.over_limit => Ok(()),
        200 if flood => Err("200 for an upload whose body was never sent in full".into()),
        _ => Err(format!(
            "unexpected {status} {code} ({message}) for {} ({})",
            c.attack.name(),
            c.plan
        )),
    }
}

/// Counts by outcome for one attack.
fn counts(h: &HostileLog, attack: Attack) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for c in h.conns.iter().filter(|c| c.attack == attack) {
        *counts.entry(outcome(c)).or_default() += 1;
    }
    counts
}

fn summary(counts: &BTreeMap<String, usize>) -> String {
    let total: usize = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{total}: {}", parts.join(", "))
}

/// The checks of the hostile phase, and those of the normal clients that
/// it concerns.
pub fn hostile_checks(checks: &mut Checks, h: &HostileLog, log: &Log) {
    if !h.ran {
        checks.check(
            "hostile phase",
            true,
            "not run: the load is too short for an attack window",
        );
        return;
    }
    for attack in [Attack::Flood, Attack::Slowloris] {
        attack_check(checks, h, attack);
    }
    livez_check(checks, h);
    let flood = counts(h, Attack::Flood);
    let slow = counts(h, Attack::Slowloris);
    let has = |c: &BTreeMap<String, usize>, prefix: &str| {
        c.iter().any(|(k, n)| k.starts_with(prefix) && *n > 0)
    };
    let met = [
        (
            "refused at accept",
            has(&flood, "refused at accept") || has(&slow, "refused at accept"),
        ),
        (
            "refused at headers (503)",
            has(&flood, "refused at headers"),
        ),
        ("413", has(&flood, "413")),
        ("408", has(&flood, "408")),
        ("header timeout", has(&slow, "closed by the header timeout")),
    ];
    let missing: Vec<&str> = met.iter().filter(|(_, m)| !m).map(|(k, _)| *k).collect();
    checks.check(
        "hostile: the attack met every defence (refused at accept, at headers, 413, 408, header timeout)",
        missing.is_empty(),
        if missing.is_empty() {
            "each seen at least once".to_string()
        } else {
            format!("never seen: {}", missing.join(", "))
        },
    );
    normal_clients_check(checks, h, log);
}

fn attack_check(checks: &mut Checks, h: &HostileLog, attack: Attack) {
    let conns: Vec<&HostileConn> = h.conns.iter().filter(|c| c.attack == attack).collect();
    let bad: Vec<String> = conns
        .iter()
        .filter_map(|c| {
            judge(c)
                .err()
                .map(|e| format!("{} ({}): {e}", attack.name(), c.plan))
        })
        .collect();
    let longest = conns.iter().map(|c| c.open).max().unwrap_or_default();
    let name = match attack {
        Attack::Flood => "hostile: every upload of the flood answered as allowed or closed, within its body timeout + 2 s".to_string(),
        Attack::Slowloris => format!(
            "hostile: every slowloris connection closed within HEADER_READ_TIMEOUT_MS + 2 s ({} ms)",
            ms(head_bound())
        ),
    };
    let detail = format!(
        "{}; longest open {} ms; {} violations{}",
        summary(&counts(h, attack)),
        ms(longest),
        bad.len(),
        bad.first()
            .map(|b| format!(", first: {b}"))
            .unwrap_or_default()
    );
    checks.check(name, !conns.is_empty() && bad.is_empty(), detail);
    checks.violations.extend(bad);
}

fn livez_check(checks: &mut Checks, h: &HostileLog) {
    let took = h.livez_ms();
    let bad: Vec<String> = h
        .livez
        .iter()
        .filter(|p| p.took > LIVEZ_LIMIT || p.result != Ok(200))
        .map(|p| format!("/livez: {:?} after {} ms", p.result, ms(p.took)))
        .collect();
    // A connect whose SYN the kernel dropped (listen queue full) is sent
    // again after 1 s: say so when it happened.
    let overflows = match h.listen_overflows {
        Some(n) if n > 0 && !bad.is_empty() => {
            format!(" ({n} listen-queue overflows during the attack: a dropped SYN is sent again after 1 s)")
        }
        _ => String::new(),
    };
    checks.check(
        format!(
            "hostile: /livez from 127.0.0.1 answered 200 within {} ms throughout the attack",
            ms(LIVEZ_LIMIT)
        ),
        !h.livez.is_empty() && bad.is_empty(),
        format!(
            "{} probes over {:.0} s: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} late or failed{}{overflows}",
            h.livez.len(),
            h.attack_time.as_secs_f64(),
            percentile(&took, 0.5),
            percentile(&took, 0.99),
            took.last().copied().unwrap_or(f64::NAN),
            bad.len(),
            bad.first().map(|b| format!(", first: {b}")).unwrap_or_default()
        ),
    );
    checks.violations.extend(bad);
}

/// The attacker's cap must not reach the normal clients: none of their
/// answers is a refusal at accept (it would also fail that request's own
/// judgment; this row says why), and the server refused no more
/// connections per client than the attacker saw refused (a refusal whose
/// answer a reset overtook reads as a close without an answer).
fn normal_clients_check(checks: &mut Checks, h: &HostileLog, log: &Log) {
    let code_count = |code: &str| {
        log.records
            .iter()
            .filter(|r| matches!(&r.res, Res::Http { code: Some(c), .. } if c == code))
            .count()
    };
    let refused = code_count("too_many_connections");
    let seen_refused = h
        .conns
        .iter()
        .filter(|c| {
            matches!(&c.seen, Seen::Answer { code, .. } if code == "too_many_connections")
                || matches!(c.seen, Seen::Closed { .. })
                    && (c.attack == Attack::Flood
                        || c.open < Duration::from_millis(HEADER_READ_TIMEOUT_MS))
        })
        .count();
    let counted = h
        .counters
        .iter()
        .find(|(k, _)| *k == PER_CLIENT_REFUSALS)
        .map(|(_, v)| *v as usize);
    let (normal, attacker) = peak_sockets(h);
    checks.check(
        "hostile: normal clients (127.0.0.1) never refused at accept (too_many_connections)",
        refused == 0 && counted.is_some_and(|n| n <= seen_refused),
        format!(
            "{refused} normal answers 503 too_many_connections; the server refused {} connections per client, the attacker saw {seen_refused} refused; server-side connections at most {normal} from 127.0.0.1 and {attacker} from {ATTACKER} (MAX_CONNECTIONS_PER_CLIENT {MAX_CONNECTIONS_PER_CLIENT}; kernel view, accept backlog included); {} normal requests answered 503 uploads_in_flight (expected while the flood holds the upload budget)",
            counted.map_or("(counter not read)".to_string(), |n| n.to_string()),
            code_count("uploads_in_flight")
        ),
    );
}

/// The most connections the server held from each address at a probe.
pub fn peak_sockets(h: &HostileLog) -> (usize, usize) {
    h.livez
        .iter()
        .fold((0, 0), |(a, b), p| (a.max(p.sockets.0), b.max(p.sockets.1)))
}
