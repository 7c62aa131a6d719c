//! Check rows and violations, and the judgment of every recorded answer
//! against what the server may give (around SIGTERM too).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::record::{Expect, Kind, Log, Record, Res};
use crate::servers::GRACE_MS;

/// Requests started this close to SIGTERM may see either side of it.
pub const SIGTERM_WINDOW: Duration = Duration::from_millis(250);

pub struct Checks {
    pub rows: Vec<(String, bool, String)>,
    pub violations: Vec<String>,
}

impl Checks {
    pub fn new() -> Self {
        Checks {
            rows: Vec::new(),
            violations: Vec::new(),
        }
    }
    pub fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        let (name, detail) = (name.into(), detail.into());
        if !ok {
            self.violations.push(format!("{name}: {detail}"));
        }
        self.rows.push((name, ok, detail));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Normal,
    /// Answered before SIGTERM.
    Before,
    /// Sent well before SIGTERM, answered after it.
    InFlight,
    /// Sent within `SIGTERM_WINDOW` of it.
    Window,
    /// Sent well after it.
    After,
}

pub fn phase(r: &Record, term: Option<Instant>) -> Phase {
    let Some(t) = term else {
        return Phase::Normal;
    };
    if r.started + SIGTERM_WINDOW < t {
        if r.finished > t {
            Phase::InFlight
        } else {
            Phase::Before
        }
    } else if r.started < t + SIGTERM_WINDOW {
        Phase::Window
    } else {
        Phase::After
    }
}

/// Whether a record's outcome is one the server may give.
pub fn judge(r: &Record, limited: bool, term: Option<Instant>) -> Result<(), String> {
    let phase = phase(r, term);
    let (status, code, message, shape, retry_after) = match &r.res {
        Res::Dropped if r.kind == Kind::Disconnect => return Ok(()),
        Res::Dropped => return Err("dropped".into()),
        Res::Conn(e) => {
            // An event stream open at SIGTERM may be cut: its job can be
            // one the shutdown keeps queued for the next start.
            let cut_stream = r.kind == Kind::JobEvents && phase == Phase::InFlight;
            return if cut_stream || matches!(phase, Phase::Window | Phase::After) {
                Ok(())
            } else {
                Err(format!("connection error: {e}"))
            };
        }
        Res::Http {
            status,
            code,
            message,
            shape,
            retry_after,
            ..
        } => (
            *status,
            code.as_deref().unwrap_or(""),
            message,
            shape,
            *retry_after,
        ),
    };
    shape.clone()?;
    if status == 503 && code == "too_many_connections" {
        return Err(format!(
            "503 too_many_connections ({message}): a normal client (127.0.0.1) was refused at accept; only the attacker (127.0.0.2) may reach MAX_CONNECTIONS_PER_CLIENT"
        ));
    }
    if status == 429 {
        return match (limited, retry_after) {
            (true, true) => Ok(()),
            (true, false) => Err("429 without Retry-After".into()),
            (false, _) => Err("429 from a server with rate limiting off".into()),
        };
    }
    let (ok_status, pdf) = match r.expect {
        Expect::Before(s) | Expect::Page(s) => {
            // Admission, from the headers, comes before the body is read:
            // a full queue or upload budget answers a bad body first.
            let refused_first = matches!(r.expect, Expect::Before(_))
                && status == 503
                && (matches!(code, "queue_full" | "too_many_jobs" | "uploads_in_flight")
                    && retry_after
                    || code == "shutting_down" && term.is_some());
            return if status == s || refused_first {
                Ok(())
            } else {
                Err(format!("{status} {code} ({message}); expected {s}"))
            };
        }
        Expect::AnyOf(statuses) => {
            let draining = status == 503 && code == "shutting_down" && phase != Phase::Before;
            return if statuses.contains(&status) || (draining && term.is_some()) {
                Ok(())
            } else {
                Err(format!(
                    "{status} {code} ({message}); expected {statuses:?}"
                ))
            };
        }
        Expect::Async => {
            return match status {
                202 if phase != Phase::After => Ok(()),
                503 if matches!(code, "queue_full" | "too_many_jobs" | "uploads_in_flight")
                    && retry_after
                    && phase != Phase::After =>
                {
                    Ok(())
                }
                503 if code == "shutting_down" && term.is_some() => Ok(()),
                _ => Err(format!("unexpected {status} {code} ({message})")),
            };
        }
        Expect::Job { pdf } => (200, pdf),
        Expect::JobInvalid { pdf } => (422, pdf),
    };
    if phase == Phase::After && !(status == 503 && code == "shutting_down") {
        return Err(format!(
            "{status} {code} for a job sent {} ms after SIGTERM; expected 503 shutting_down",
            (r.started - term.unwrap_or(r.started)).as_millis()
        ));
    }
    match status {
        s if s == ok_status => Ok(()),
        // Admission from the headers: the queue is full, or the upload
        // budget is (the hostile phase's flood holds it at times).
        503 if matches!(code, "queue_full" | "uploads_in_flight") && retry_after => Ok(()),
        503 if code == "shutting_down" && term.is_some() => Ok(()),
        // Still running when the grace period ended: cancelled, as documented.
        503 if code == "cancelled"
            && term.is_some_and(|t| {
                r.finished + Duration::from_millis(100) >= t + Duration::from_millis(GRACE_MS)
            }) =>
        {
            Ok(())
        }
        504 if code == "timeout" || code == "queue_timeout" => Ok(()),
        500 if pdf && message.contains("renderer process died") => Ok(()),
        _ => Err(format!("unexpected {status} {code} ({message})")),
    }
}

/// Judges every record; adds one check row per server.
pub fn judge_all(checks: &mut Checks, log: &Log, servers: &[(&str, bool)], term: Option<Instant>) {
    for (t, (name, limited)) in servers.iter().enumerate() {
        let mut bad: Vec<String> = Vec::new();
        let mut n = 0;
        for r in log.records.iter().filter(|r| r.target == t) {
            n += 1;
            if let Err(e) = judge(r, *limited, term) {
                bad.push(format!("[{} / {}] {e}", r.kind.name(), r.case));
            }
        }
        let detail = if bad.is_empty() {
            format!("{n} requests, each answered once with an expected status")
        } else {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for b in &bad {
                *counts.entry(b.as_str()).or_default() += 1;
            }
            let sample: Vec<String> = counts
                .iter()
                .take(6)
                .map(|(b, c)| format!("{c}x {b}"))
                .collect();
            format!("{} of {n} unexpected: {}", bad.len(), sample.join("; "))
        };
        checks.check(
            format!("server {name}: every answer expected"),
            bad.is_empty(),
            detail,
        );
        for b in bad {
            checks.violations.push(format!("server {name}: {b}"));
        }
    }
    let problems = &log.problems;
    checks.check(
        "answers' content (pages, dpi, fetched PNGs)",
        problems.is_empty(),
        if problems.is_empty() {
            "consistent".to_string()
        } else {
            format!(
                "{} problems: {}",
                problems.len(),
                problems[..problems.len().min(3)].join("; ")
            )
        },
    );
}

/// Records matching `f`.
pub fn count(log: &Log, f: impl Fn(&Record) -> bool) -> usize {
    log.records.iter().filter(|r| f(r)).count()
}

/// The load did what it is for: A overloaded, B rate-limiting, renderers
/// killed.
pub fn load_checks(checks: &mut Checks, log: &Log, injected: u64) {
    let queue_full = count(log, |r| {
        r.target == 0 && matches!(&r.res, Res::Http { code: Some(c), .. } if c == "queue_full")
    });
    checks.check(
        "server A overloaded (some 503 queue_full)",
        queue_full > 0,
        format!("{queue_full} refused with queue_full"),
    );
    let limited = count(log, |r| {
        r.target == 1 && matches!(r.res, Res::Http { status: 429, .. })
    });
    checks.check(
        "server B rate-limits bursts (some 429)",
        limited > 0,
        format!("{limited} answered 429"),
    );
    let died = count(
        log,
        |r| matches!(&r.res, Res::Http { status: 500, message, .. } if message.contains("renderer process died")),
    );
    checks.check(
        "faults injected",
        injected > 0,
        format!("{injected} renderers SIGKILLed; {died} jobs answered 500 renderer died"),
    );
}
