//! The report's plots, PNG files drawn with plotters.

use std::fs;
use std::path::Path;

use plotters::prelude::*;

use crate::report::Results;
use crate::scenarios::{Level, Overload, Scale};
use crate::stats::Summary;

/// Where the plots get their text from: ab_glyph needs a TTF registered at
/// run time (no fontconfig); Debian's `fonts-dejavu-core` ships this one.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub type PlotResult = Result<(), String>;

pub fn plot_err<E: std::fmt::Display>(e: E) -> String {
    format!("plot: {e}")
}

/// A line with its points, `(x, y)` in data units.
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    fn new(label: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            color,
            points,
        }
    }
}

/// Axis extent with some headroom; log axes need positive bounds.
pub fn extent(series: &[Series], log: bool) -> (f64, f64) {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo > hi {
        return if log { (0.1, 1.0) } else { (0.0, 1.0) };
    }
    if log {
        ((lo * 0.7).max(1e-3), (hi * 1.5).max(lo * 2.0))
    } else {
        (0.0, (hi * 1.15).max(1e-3))
    }
}

/// One panel: lines with points. The x axis is categorical: `x_labels`
/// names the positions the points sit at (concurrency levels, worker counts
/// and load factors are few and unevenly spaced, and a log axis would label
/// only its powers of ten).
#[allow(clippy::too_many_arguments)]
pub fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_labels: &[(f64, String)],
    y_log: bool,
    series: &[Series],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let (y_lo, y_hi) = extent(series, y_log);
    let x_lo = x_labels.iter().map(|l| l.0).fold(f64::MAX, f64::min) - 0.5;
    let x_hi = x_labels.iter().map(|l| l.0).fold(f64::MIN, f64::max) + 0.5;
    let x_label = |x: &f64| {
        x_labels
            .iter()
            .find(|(at, _)| (at - x).abs() < 1e-6)
            .map(|(_, label)| label.clone())
            .unwrap_or_default()
    };
    let y_label = |y: &f64| match y.abs() {
        v if v >= 10.0 || v == 0.0 => format!("{y:.0}"),
        v if v >= 1.0 => format!("{y:.1}"),
        _ => format!("{y:.2}"),
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    // A log and a linear y axis are two chart types in plotters.
    macro_rules! draw {
        ($y:expr) => {{
            let mut chart = builder
                .build_cartesian_2d(x_lo..x_hi, $y)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_labels(x_labels.len() * 2 + 1)
                .x_label_formatter(&x_label)
                .y_label_formatter(&y_label)
                .x_desc(x_desc)
                .y_desc(y_desc)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .light_line_style(WHITE)
                .draw()
                .map_err(plot_err)?;
            for s in series {
                let color = s.color;
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_err)?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }};
    }
    if y_log {
        draw!((y_lo..y_hi).log_scale());
    } else {
        draw!(y_lo..y_hi);
    }
    Ok(())
}

pub fn register_font() -> Result<(), String> {
    let bytes = fs::read(FONT).map_err(|e| {
        format!("cannot read the plot font {FONT}: {e} (Debian package fonts-dejavu-core)")
    })?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{FONT} is not a usable TTF"))
}

/// Throughput on the left, p50/p99 on the right, against concurrency.
pub fn plot_sweep(path: &Path, what: &str, levels: &[Level], pages: bool) -> PlotResult {
    let root = BitMapBackend::new(path, (1200, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    let x_labels: Vec<(f64, String)> = levels
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64, l.concurrency.to_string()))
        .collect();
    let point = |f: &dyn Fn(&Summary) -> Option<f64>| -> Vec<(f64, f64)> {
        levels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i as f64, f(&l.summary)?)))
            .collect()
    };
    let mut rates = vec![Series::new(
        "requests/s (200)",
        BLUE,
        point(&|s| Some(s.ok_per_s)),
    )];
    if pages {
        rates.push(Series::new(
            "pages/s",
            GREEN,
            point(&|s| Some(s.pages_per_s)),
        ));
    }
    panel(
        &left,
        &format!("{what}: throughput"),
        "concurrent clients",
        "per second",
        &x_labels,
        false,
        &rates,
    )?;
    let latency = [
        Series::new("p50", BLUE, point(&|s| s.ok_p50)),
        Series::new("p99", RED, point(&|s| s.ok_p99)),
    ];
    panel(
        &right,
        &format!("{what}: latency of 200s"),
        "concurrent clients",
        "ms (log)",
        &x_labels,
        true,
        &latency,
    )?;
    root.present().map_err(plot_err)
}

pub fn plot_scaling(path: &Path, scales: &[Scale]) -> PlotResult {
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let x_labels: Vec<(f64, String)> = scales
        .iter()
        .map(|s| (s.workers as f64, s.workers.to_string()))
        .collect();
    let one = scales.first().map_or(0.0, |s| s.bare_pps);
    let by_workers = |f: &dyn Fn(&Scale) -> f64| -> Vec<(f64, f64)> {
        scales.iter().map(|s| (s.workers as f64, f(s))).collect()
    };
    let series = [
        Series::new(
            "server, W workers, W clients",
            BLUE,
            by_workers(&|s| s.server.pages_per_s),
        ),
        Series::new(
            "bare render loop, W processes",
            RED,
            by_workers(&|s| s.bare_pps),
        ),
        Series::new(
            "W x one bare loop (linear)",
            RGBColor(150, 150, 150),
            by_workers(&|s| one * s.workers as f64),
        ),
    ];
    panel(
        &root,
        "PDF pages/s against workers",
        "workers W",
        "pages/s",
        &x_labels,
        false,
        &series,
    )?;
    root.present().map_err(plot_err)
}

/// Per job type a latency panel (200 and 503, p50 and p99), then one panel
/// of 503 shares.
pub fn plot_overload(path: &Path, kinds: &[(&str, &[Overload])]) -> PlotResult {
    let width = 520 * (kinds.len() as u32 + 1);
    let root = BitMapBackend::new(path, (width, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let areas = root.split_evenly((1, kinds.len() + 1));
    // Every job type runs the same factors, in the same order.
    let x_labels: Vec<(f64, String)> = kinds
        .first()
        .map(|(_, runs)| {
            runs.iter()
                .enumerate()
                .map(|(i, o)| (i as f64, format!("{}x", o.factor)))
                .collect()
        })
        .unwrap_or_default();
    let colors = [BLUE, RED, GREEN, MAGENTA];
    let mut shares = Vec::new();
    for (i, (name, runs)) in kinds.iter().enumerate() {
        let pick = |f: &dyn Fn(&Summary) -> Option<f64>| -> Vec<(f64, f64)> {
            runs.iter()
                .enumerate()
                .filter_map(|(i, o)| Some((i as f64, f(&o.summary)?)))
                .collect()
        };
        let series = [
            Series::new("200 p50", BLUE, pick(&|s| s.ok_p50)),
            Series::new("200 p99", RGBColor(0, 0, 120), pick(&|s| s.ok_p99)),
            Series::new("503 p50", RED, pick(&|s| s.rej_p50)),
            Series::new("503 p99", RGBColor(140, 0, 0), pick(&|s| s.rej_p99)),
        ];
        panel(
            &areas[i],
            &format!("{name}: latency under overload"),
            "offered load / capacity",
            "ms (log)",
            &x_labels,
            true,
            &series,
        )?;
        shares.push(Series::new(
            format!("{name}: 503 share"),
            colors[i % colors.len()],
            pick(&|s| Some(s.share(s.rejected))),
        ));
    }
    panel(
        &areas[kinds.len()],
        "share of requests answered 503",
        "offered load / capacity",
        "% of requests",
        &x_labels,
        false,
        &shares,
    )?;
    root.present().map_err(plot_err)
}

/// Every plot of the report, into `dir` (made if missing).
pub fn draw_all(dir: &Path, results: &Results) -> PlotResult {
    fs::create_dir_all(dir).map_err(|e| format!("cannot make {dir:?}: {e}"))?;
    plot_sweep(
        &dir.join("message.png"),
        "message jobs",
        &results.message,
        false,
    )?;
    plot_sweep(&dir.join("pdf.png"), "PDF jobs", &results.pdf, true)?;
    plot_scaling(&dir.join("scaling.png"), &results.scales)?;
    let mut kinds: Vec<(&str, &[Overload])> = vec![("message", &results.msg_overload)];
    if !results.pdf_overload.is_empty() {
        kinds.push(("PDF", &results.pdf_overload));
    }
    plot_overload(&dir.join("overload.png"), &kinds)
}
