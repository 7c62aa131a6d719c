//! An async job's event stream, read to its end and checked.

use std::sync::atomic::Ordering;

use serde_json::Value;

use crate::ctx::Ctx;
use crate::record::{is_final, Kind};

/// Reads `GET /jobs/{id}/events` to its end and checks the stream: it ends
/// with the one `state` event whose state is final, and the `page` events'
/// `done` counts up by one from the state before them. Returns that last
/// state.
pub async fn follow_events(ctx: &Ctx, job_id: &str) -> Option<Value> {
    let path = format!("/jobs/{job_id}/events");
    let body = ctx.get_ok(Kind::JobEvents, "events", &path).await?;
    let events = parse_events(ctx, job_id, &body);
    let mut problems = Vec::new();
    let mut done: Option<u64> = None;
    for (i, (name, v)) in events.iter().enumerate() {
        let n = v["done"].as_u64();
        match name.as_str() {
            "state" => {
                let state = v["state"].as_str().unwrap_or_default();
                if is_final(state) && i + 1 != events.len() {
                    problems.push(format!(
                        "final state {state} is event {i} of {}",
                        events.len()
                    ));
                }
                done = n;
            }
            "page" => {
                if let (Some(prev), Some(n)) = (done, n) {
                    if n != prev + 1 {
                        problems.push(format!("page event with done {n} after done {prev}"));
                    }
                }
                done = n;
            }
            other => problems.push(format!("unknown event {other:?}")),
        }
    }
    let last = events.last().map(|(name, v)| (name.as_str(), v));
    let end = match last {
        Some(("state", v)) if v["state"].as_str().is_some_and(is_final) => Some(v.clone()),
        // The server stopped with the job unfinished: it is kept in the
        // job database, where the end-of-run check judges it.
        _ if ctx.terminated.load(Ordering::Relaxed) => None,
        _ => {
            problems.push(format!(
                "stream of {} events does not end with a final state: last {:?}",
                events.len(),
                last.map(|(n, v)| format!("{n} {}", v["state"]))
            ));
            None
        }
    };
    if !problems.is_empty() {
        ctx.problem(format!("events of {job_id}: {}", problems.join("; ")));
    }
    end
}

/// The events of a stream as `(name, data)`, keep-alive comments left out;
/// data that is not JSON is a problem.
fn parse_events(ctx: &Ctx, job_id: &str, body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut events: Vec<(String, Value)> = Vec::new();
    for block in text.split("\n\n") {
        let mut name = "message";
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if data.is_empty() {
            continue; // a keep-alive comment
        }
        match serde_json::from_str(&data) {
            Ok(v) => events.push((name.to_string(), v)),
            Err(e) => ctx.problem(format!("events of {job_id}: bad data {data:?}: {e}")),
        }
    }
    events
}
