//! A run's samples reduced to the report's figures: counts, rates, exact
//! percentiles.

use std::collections::BTreeMap;

use crate::load::Run;

/// Exact nearest-rank percentile of sorted values (ms).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A run reduced to the figures the report shows.
#[derive(Debug, Clone)]
pub struct Summary {
    pub requests: usize,
    pub ok: usize,
    pub rejected: usize,
    /// Status (0: transport error) to count, for everything but 200 and 503.
    pub others: BTreeMap<u16, usize>,
    pub ok_per_s: f64,
    pub pages_per_s: f64,
    pub ok_p50: Option<f64>,
    pub ok_p99: Option<f64>,
    pub ok_max: Option<f64>,
    pub rej_p50: Option<f64>,
    pub rej_p99: Option<f64>,
    pub offered_rps: Option<f64>,
}

impl Summary {
    pub fn of(run: &Run) -> Summary {
        let ms = |status: u16| {
            let mut v: Vec<f64> = run
                .samples
                .iter()
                .filter(|s| s.status == status)
                .map(|s| s.latency.as_secs_f64() * 1000.0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let ok = ms(200);
        let rejected = ms(503);
        let mut others = BTreeMap::new();
        for s in run
            .samples
            .iter()
            .filter(|s| s.status != 200 && s.status != 503)
        {
            *others.entry(s.status).or_insert(0) += 1;
        }
        let wall_s = run.wall.as_secs_f64();
        let pages: u64 = run.samples.iter().map(|s| u64::from(s.pages)).sum();
        Summary {
            requests: run.samples.len(),
            ok: ok.len(),
            rejected: rejected.len(),
            others,
            ok_per_s: ok.len() as f64 / wall_s,
            pages_per_s: pages as f64 / wall_s,
            ok_p50: percentile(&ok, 50.0),
            ok_p99: percentile(&ok, 99.0),
            ok_max: ok.last().copied(),
            rej_p50: percentile(&rejected, 50.0),
            rej_p99: percentile(&rejected, 99.0),
            offered_rps: run.offered_rps,
        }
    }

    pub fn share(&self, n: usize) -> f64 {
        100.0 * n as f64 / self.requests.max(1) as f64
    }

    /// Statuses other than 200 and 503, e.g. `504: 3, error: 1`, or `-`.
    pub fn others_text(&self) -> String {
        if self.others.is_empty() {
            return "-".into();
        }
        self.others
            .iter()
            .map(|(status, n)| match status {
                0 => format!("error: {n}"),
                s => format!("{s}: {n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}
