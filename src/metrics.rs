//! Measurements: lock-free histograms and counters that the request path
//! and the worker threads update, and their Prometheus exposition for
//! `GET /metrics`.
//!
//! Everything is collected at scrape time from the same atomics that
//! `/status` reads, so the two can never disagree and the hot path pays one
//! atomic add per observation. [`Exposition`] turns those readings into
//! metric families of the `prometheus` crate, whose text encoder writes the
//! classic exposition format (0.0.4) with escaped labels and help texts.
//! (`prometheus-client` writes only OpenMetrics, whose counter families
//! lose their `_total` name in the classic parser that `promtool check
//! metrics` and older scrapers use: they come out untyped and without
//! help.) HTTP metrics are recorded by a middleware ([`track_http`]) keyed
//! by matched route and status.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::{Mutex, RwLock};
use prometheus::proto::{self, MetricFamily, MetricType};

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

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The histogram as a Prometheus sample: cumulative buckets, sum, count.
    fn sample(&self) -> proto::Histogram {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(bound);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        let mut h = proto::Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(
            cumulative + self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed),
        );
        h.set_sample_sum(self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        h
    }
}

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// One series of a gauge or counter: its labels and its value.
pub type Sample = (Labels, f64);

/// The metric families of one scrape, filled from the server's atomics.
#[derive(Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
}

fn metric(labels: Labels) -> proto::Metric {
    proto::Metric::from_label(
        labels
            .into_iter()
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value);
                pair
            })
            .collect(),
    )
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        family.set_metric(metrics);
        self.families.push(family);
    }

    pub fn gauge(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = Sample>) {
        self.scalar(name, help, MetricType::GAUGE, samples);
    }

    pub fn counter(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = Sample>) {
        self.scalar(name, help, MetricType::COUNTER, samples);
    }

    fn scalar(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = Sample>,
    ) {
        let metrics = samples
            .into_iter()
            .map(|(labels, value)| {
                let mut m = metric(labels);
                if kind == MetricType::COUNTER {
                    let mut c = proto::Counter::default();
                    c.set_value(value);
                    m.set_counter(c);
                } else {
                    let mut g = proto::Gauge::default();
                    g.set_value(value);
                    m.set_gauge(g);
                }
                m
            })
            .collect();
        self.family(name, help, kind, metrics);
    }

    pub fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, &'a Histogram)>,
    ) {
        let metrics = series
            .into_iter()
            .map(|(labels, h)| {
                let mut m = metric(labels);
                m.set_histogram(h.sample());
                m
            })
            .collect();
        self.family(name, help, MetricType::HISTOGRAM, metrics);
    }

    /// The text exposition. Families without series are left out (the
    /// format has no way to say "none yet").
    pub fn render(mut self) -> String {
        self.families.retain(|f| !f.get_metric().is_empty());
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&self.families, &mut out) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// One label.
pub fn label(name: &'static str, value: impl ToString) -> Labels {
    vec![(name, value.to_string())]
}

/// Why a request was turned away before or at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    QueueFull,
    RateLimited,
    TooLarge,
    Invalid,
    UploadsInFlight,
    FairShare,
    InsufficientStorage,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::QueueFull,
        RejectReason::RateLimited,
        RejectReason::TooLarge,
        RejectReason::Invalid,
        RejectReason::UploadsInFlight,
        RejectReason::FairShare,
        RejectReason::InsufficientStorage,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::TooLarge => "too_large",
            RejectReason::Invalid => "invalid",
            RejectReason::UploadsInFlight => "uploads_in_flight",
            RejectReason::FairShare => "fair_share",
            RejectReason::InsufficientStorage => "insufficient_storage",
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
    /// The queue each job route feeds (set once, when the router is built).
    queues: RwLock<HashMap<String, &'static str>>,
}

impl HttpMetrics {
    /// Counts rejections on `route` (a matched path) against `queue`.
    pub fn route_feeds(&self, route: &str, queue: &'static str) {
        self.queues.write().insert(route.to_string(), queue);
    }

    /// Every queue label rejections are counted under.
    pub fn queue_labels(&self) -> Vec<&'static str> {
        let mut labels: Vec<_> = self.queues.read().values().copied().collect();
        labels.sort_unstable();
        labels.dedup();
        labels
    }

    fn record(&self, route: &str, status: u16, took: Duration) {
        let mut series = self.series.lock();
        if let Some(h) = series.get(&(route.to_string(), status)) {
            h.observe(took);
        } else {
            let h = Box::<Histogram>::default();
            h.observe(took);
            series.insert((route.to_string(), status), h);
        }
    }

    fn reject(&self, route: &str, reason: RejectReason) {
        let Some(queue) = self.queues.read().get(route).copied() else {
            return;
        };
        *self.rejections.lock().entry((queue, reason)).or_default() += 1;
    }

    /// Rejections of `queue` for `reason` so far.
    pub fn rejections(&self, queue: &str, reason: RejectReason) -> u64 {
        self.rejections
            .lock()
            .iter()
            .filter(|((q, r), _)| *q == queue && *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The HTTP families: requests, their durations, rejections.
    pub fn expose(&self, out: &mut Exposition) {
        let series = self.series.lock();
        let labels = |route: &str, status: u16| {
            vec![("route", route.to_string()), ("status", status.to_string())]
        };
        out.counter(
            "jobserver_http_requests_total",
            "HTTP requests by route and status.",
            series
                .iter()
                .map(|((route, status), h)| (labels(route, *status), h.count() as f64)),
        );
        out.histogram(
            "jobserver_http_request_duration_seconds",
            "Time from request to response head.",
            series
                .iter()
                .map(|((route, status), h)| (labels(route, *status), &**h)),
        );
        drop(series);
        let mut rejections = Vec::new();
        for queue in self.queue_labels() {
            for reason in RejectReason::ALL {
                let n = self.rejections(queue, reason);
                rejections.push((
                    vec![
                        ("queue", queue.to_string()),
                        ("reason", reason.label().to_string()),
                    ],
                    n as f64,
                ));
            }
        }
        out.counter(
            "jobserver_rejections_total",
            "Requests turned away, by queue and reason.",
            rejections,
        );
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
    if let Some(Rejected(reason)) = response.extensions().get::<Rejected>() {
        metrics.reject(&route, *reason);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_exposed_with_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1000));
        let mut out = Exposition::default();
        out.histogram("x_seconds", "X.", [(label("queue", "q"), &h)]);
        let out = out.render();
        for line in [
            "x_seconds_bucket{queue=\"q\",le=\"0.0001\"} 1\n",
            "x_seconds_bucket{queue=\"q\",le=\"0.005\"} 2\n",
            "x_seconds_bucket{queue=\"q\",le=\"300\"} 2\n",
            "x_seconds_bucket{queue=\"q\",le=\"+Inf\"} 3\n",
            "x_seconds_count{queue=\"q\"} 3\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn label_values_are_escaped_and_empty_families_left_out() {
        let mut out = Exposition::default();
        out.counter("x_total", "X.", [(label("route", "/a\"b\\c\nd"), 1.0)]);
        out.gauge("empty", "Nothing yet.", []);
        let out = out.render();
        assert!(out.contains(r#"x_total{route="/a\"b\\c\nd"} 1"#), "{out}");
        assert!(!out.contains("empty"), "{out}");
    }
}
