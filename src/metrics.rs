//! Measurements: lock-free histograms and counters that the request path
//! and the worker threads update, and the Prometheus text rendering of them
//! for `GET /metrics`.
//!
//! Everything is collected at scrape time from the same atomics that
//! `/status` reads, so the two can never disagree and the hot path pays one
//! atomic add per observation. HTTP metrics are recorded by a middleware
//! ([`track_http`]) keyed by matched route and status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Upper bounds (seconds) of latency buckets: 100 µs to 5 min.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
    300.0,
];

/// A fixed-bucket histogram of durations, updated with atomic adds.
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of one series.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Why a request was turned away before or at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    QueueFull,
    RateLimited,
    TooLarge,
    Invalid,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::QueueFull,
        RejectReason::RateLimited,
        RejectReason::TooLarge,
        RejectReason::Invalid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::TooLarge => "too_large",
            RejectReason::Invalid => "invalid",
        }
    }
}

/// Set on an error response so the HTTP middleware can count rejections.
#[derive(Debug, Clone, Copy)]
pub struct Rejected(pub RejectReason);

/// Requests by route and status, and their durations.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// (route, status) → count and duration histogram.
    series: Mutex<BTreeMap<(String, u16), Box<Histogram>>>,
    /// (queue, reason) → count.
    rejections: Mutex<BTreeMap<(&'static str, RejectReason), u64>>,
}

impl HttpMetrics {
    fn record(&self, route: &str, status: u16, took: Duration) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = series.get(&(route.to_string(), status)) {
            h.observe(took);
        } else {
            let h = Box::<Histogram>::default();
            h.observe(took);
            series.insert((route.to_string(), status), h);
        }
    }

    fn reject(&self, queue: &'static str, reason: RejectReason) {
        let mut rejections = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        *rejections.entry((queue, reason)).or_default() += 1;
    }

    /// Rejections of `queue` for `reason` so far.
    pub fn rejections(&self, queue: &str, reason: RejectReason) -> u64 {
        let rejections = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        rejections
            .iter()
            .filter(|((q, r), _)| *q == queue && *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn render(&self, out: &mut String, queues: &[&'static str]) {
        let _ = writeln!(
            out,
            "# HELP jobserver_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE jobserver_http_requests_total counter");
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, status), h) in series.iter() {
            let count: u64 = h.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
            let _ = writeln!(
                out,
                "jobserver_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP jobserver_http_request_duration_seconds Time from request to response head."
        );
        let _ = writeln!(
            out,
            "# TYPE jobserver_http_request_duration_seconds histogram"
        );
        for ((route, status), h) in series.iter() {
            h.render(
                out,
                "jobserver_http_request_duration_seconds",
                &format!("route=\"{route}\",status=\"{status}\""),
            );
        }
        drop(series);
        let _ = writeln!(
            out,
            "# HELP jobserver_rejections_total Requests turned away, by queue and reason."
        );
        let _ = writeln!(out, "# TYPE jobserver_rejections_total counter");
        for queue in queues {
            for reason in RejectReason::ALL {
                let n = self.rejections(queue, reason);
                let _ = writeln!(
                    out,
                    "jobserver_rejections_total{{queue=\"{queue}\",reason=\"{}\"}} {n}",
                    reason.label()
                );
            }
        }
    }
}

/// The queue a route feeds, for rejection counts.
pub fn queue_of_route(route: &str) -> Option<&'static str> {
    match route {
        "/jobs/message" => Some("message"),
        "/jobs/pdf" => Some("pdf"),
        "/multiThread" => Some("legacy"),
        _ => None,
    }
}

/// Middleware: records every request's route, status and duration, and
/// counts rejections flagged by [`Rejected`].
pub async fn track_http(
    State(metrics): State<std::sync::Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    // Unmatched paths are folded into one label so that scanners cannot
    // grow the series without bound.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics.record(&route, status, start.elapsed());
    if let (Some(Rejected(reason)), Some(queue)) = (
        response.extensions().get::<Rejected>(),
        queue_of_route(&route),
    ) {
        metrics.reject(queue, *reason);
    }
    response
}

/// Writes one `# HELP`/`# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a histogram's series for one label set (header written separately).
pub fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    h.render(out, name, labels);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1000));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "queue=\"q\"");
        assert!(
            out.contains("x_seconds_bucket{queue=\"q\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{queue=\"q\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{queue=\"q\",le=\"300\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{queue=\"q\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{queue=\"q\"} 3\n"), "{out}");
    }
}
