//! The bare limit of PDF rendering: pdfium loaded once, in one process, with
//! no server, queue, pipe or HTTP around it.
//!
//! ```text
//! cargo run --release --example render_loop -- [OPTIONS] [PDF]
//! ```
//!
//! Default mode: renders every page of `PDF` (or those `--pages` selects, in
//! the server's syntax, e.g. `1-4`) at `--dpi` (200) `--reps` times
//! (3, after `--warmup` untimed passes, default 1) through exactly the
//! server's code path, [`jobserver::render::child::render`], with its events
//! written to [`std::io::sink`] and its PNG files written into a fresh
//! folder per pass under a temporary directory (removed at the end). Each
//! pass is a new document load, like a server job. The PDF is read into
//! memory and rendered as an uploaded payload (`Source::Payload`, what a raw
//! `application/pdf` upload does); `--file` opens it by path instead
//! (`Source::File`, the `{"path": ...}` form). Prints one line per pass and
//! a last line `RESULT pages=.. seconds=.. pages_per_s=.. ms_per_page=..`
//! for scripts (bench/pdf.sh).
//!
//! `--encoders`: renders each page once (as the renderer does: BGR with
//! reversed byte order, which is RGB rows) and times PNG encoding of the same
//! rows, in memory, with the renderer's streaming encoder at
//! `png::Compression::Fastest`, `Fast` (what the server uses), `Balanced`
//! (zlib level 6) and `High` (zlib level 9); prints a Markdown table of
//! ms/page and bytes/page. Every encoder's output for page 1 is decoded and
//! compared with the source pixels.
//!
//! Other options: `--lib PATH` (libpdfium.so or its folder; default
//! `PDFIUM_LIB_PATH`, else the copy the build fetched). `PDF` defaults to
//! `$PDF_SAMPLE`, else `../shared/data/regal-17pages.pdf` next to the repo.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jobserver::config::{PdfConfig, DEFAULT_PDF_MAX_PAGES, DEFAULT_PDF_MAX_PIXELS};
use jobserver::render::child::{bind, pixel_size, render};
use jobserver::render::pages::{parse as parse_pages, PageRanges};
use jobserver::render::protocol::{Request, Source};
use pdfium_render::prelude::*;

struct Options {
    pdf: PathBuf,
    dpi: u32,
    pages: Option<PageRanges>,
    reps: Option<u32>,
    warmup: u32,
    encoders: bool,
    by_path: bool,
    library: PathBuf,
}

const USAGE: &str =
    "usage: render_loop [--dpi N] [--pages SPEC] [--reps N] [--warmup N] [--file] [--lib PATH] [--encoders] [PDF]";

fn parse_args() -> Result<Options, String> {
    let mut pdf = None;
    let mut dpi = 200;
    let mut pages = None;
    let mut reps = None;
    let mut warmup = 1;
    let mut encoders = false;
    let mut by_path = false;
    let mut lib = std::env::var_os("PDFIUM_LIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--dpi" => dpi = number(&arg, &value(&arg)?)?,
            "--pages" => pages = Some(parse_pages(&value(&arg)?)?),
            "--reps" => reps = Some(number(&arg, &value(&arg)?)?),
            "--warmup" => warmup = number(&arg, &value(&arg)?)?,
            "--lib" => lib = Some(PathBuf::from(value(&arg)?)),
            "--encoders" => encoders = true,
            "--file" => by_path = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other if other.starts_with('-') => {
                return Err(format!("unknown option {other}\n{USAGE}"))
            }
            other => pdf = Some(PathBuf::from(other)),
        }
    }
    if dpi == 0 || reps == Some(0) {
        return Err("--dpi and --reps must be at least 1".into());
    }
    let pdf = pdf
        .or_else(|| std::env::var_os("PDF_SAMPLE").map(PathBuf::from))
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/regal-17pages.pdf")
        });
    let config = PdfConfig {
        pdfium_lib_path: lib,
        ..PdfConfig::default()
    };
    Ok(Options {
        pdf,
        dpi,
        pages,
        reps,
        warmup,
        encoders,
        by_path,
        library: config.pdfium_library(),
    })
}

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name} must be a whole number, got {text:?}"))
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let pdfium = match bind(&options.library) {
        Ok(pdfium) => pdfium,
        Err(e) => {
            eprintln!("render_loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if options.encoders {
        encoders(&pdfium, &options)
    } else {
        render_loop(&pdfium, &options)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render_loop: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The default mode: the server's render function in a loop.
fn render_loop(pdfium: &Pdfium, options: &Options) -> Result<(), String> {
    let reps = options.reps.unwrap_or(3);
    let bytes = fs::read(&options.pdf)
        .map_err(|e| format!("cannot read {}: {e}", options.pdf.display()))?;
    let (source, payload) = if options.by_path {
        (Source::File(options.pdf.clone()), &[][..])
    } else {
        (Source::Payload, &bytes[..])
    };
    let tmp = tempfile::Builder::new()
        .prefix("render_loop-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary folder: {e}"))?;
    println!(
        "render_loop: {} ({} bytes) at {} dpi, {} warm-up + {reps} timed passes, source {}",
        options.pdf.display(),
        bytes.len(),
        options.dpi,
        options.warmup,
        if options.by_path { "file" } else { "payload" },
    );
    let mut buffer = Vec::new();
    let mut timed = Duration::ZERO;
    let mut timed_cpu = Duration::ZERO;
    let mut timed_pages = 0u64;
    let mut png_bytes = 0u64;
    for pass in 0..options.warmup + reps {
        let out_dir = tmp.path().join(format!("pass-{pass:03}"));
        let request = Request {
            source: source.clone(),
            password: None,
            dpi: options.dpi,
            pages: options.pages.clone(),
            out_dir: out_dir.clone(),
            max_pages: DEFAULT_PDF_MAX_PAGES,
            max_pixels: DEFAULT_PDF_MAX_PIXELS,
            dry_run: false,
        };
        let started = Instant::now();
        let cpu_started = cpu_time();
        // Like the worker: the job's folder is made, then the renderer runs.
        fs::create_dir_all(&out_dir).map_err(|e| format!("cannot make {out_dir:?}: {e}"))?;
        render(pdfium, &request, payload, &mut buffer, &mut io::sink())
            .map_err(|(kind, message)| format!("render failed ({kind:?}): {message}"))?;
        let elapsed = started.elapsed();
        let cpu = cpu_time().saturating_sub(cpu_started);
        let (pages, size) = count_pages(&out_dir)?;
        if pages == 0 {
            return Err(format!("pass {pass} wrote no pages"));
        }
        let warm_up = pass < options.warmup;
        let label = if warm_up { "warm-up" } else { "pass" };
        println!(
            "{label} {}: {pages} pages in {:.3} s ({:.2} pages/s, {:.1} ms/page, CPU {:.1} ms/page, {:.0} KB/page PNG)",
            if warm_up { pass + 1 } else { pass + 1 - options.warmup },
            elapsed.as_secs_f64(),
            pages as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1000.0 / pages as f64,
            cpu.as_secs_f64() * 1000.0 / pages as f64,
            size as f64 / 1000.0 / pages as f64,
        );
        if !warm_up {
            timed += elapsed;
            timed_cpu += cpu;
            timed_pages += pages;
            png_bytes += size;
        }
        // Keep the disk footprint to one pass.
        let _ = fs::remove_dir_all(&out_dir);
    }
    let secs = timed.as_secs_f64();
    println!(
        "RESULT pages={timed_pages} seconds={secs:.3} pages_per_s={:.3} ms_per_page={:.1} cpu_ms_per_page={:.1} png_bytes_per_page={}",
        timed_pages as f64 / secs,
        secs * 1000.0 / timed_pages as f64,
        timed_cpu.as_secs_f64() * 1000.0 / timed_pages as f64,
        png_bytes / timed_pages.max(1),
    );
    Ok(())
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of the calling thread so far.
fn thread_cpu_time() -> Duration {
    // SAFETY: clock_gettime only writes the struct it is given.
    let ts = unsafe {
        let mut ts = std::mem::zeroed::<libc::timespec>();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Number of `page-*.png` files in `dir` and their total size.
fn count_pages(dir: &Path) -> Result<(u64, u64), String> {
    let mut pages = 0;
    let mut bytes = 0;
    for entry in fs::read_dir(dir).map_err(|e| format!("cannot list {dir:?}: {e}"))? {
        let entry = entry.map_err(|e| format!("cannot list {dir:?}: {e}"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("page-") && name.ends_with(".png") {
            pages += 1;
            bytes += entry.metadata().map_or(0, |m| m.len());
        }
    }
    Ok((pages, bytes))
}

const ENCODERS: [(&str, png::Compression); 4] = [
    ("Fastest", png::Compression::Fastest),
    ("Fast", png::Compression::Fast),
    ("Balanced", png::Compression::Balanced),
    ("High", png::Compression::High),
];

/// `--encoders`: one render per page, then every encoder on the same rows.
fn encoders(pdfium: &Pdfium, options: &Options) -> Result<(), String> {
    let reps = options.reps.unwrap_or(1);
    let document = pdfium
        .load_pdf_from_file(&options.pdf, None)
        .map_err(|e| format!("cannot open {}: {e}", options.pdf.display()))?;
    let pages = document.pages();
    let count = pages.len();
    let mut buffer = Vec::new();
    let mut render_time = Duration::ZERO;
    let mut render_cpu = Duration::ZERO;
    let mut raw_bytes = 0u64;
    let mut time = [Duration::ZERO; ENCODERS.len()];
    let mut cpu = [Duration::ZERO; ENCODERS.len()];
    let mut size = [0u64; ENCODERS.len()];
    let mut out = Vec::new();
    for index in 0..count {
        let page = pages
            .get(index)
            .map_err(|e| format!("page {}: {e}", index + 1))?;
        let (width, height) = pixel_size(page.width().value, page.height().value, options.dpi)
            .ok_or_else(|| format!("page {} has an invalid size", index + 1))?;
        let stride = (width as usize * 3).div_ceil(4) * 4;
        let needed = stride * height as usize;
        if buffer.len() < needed {
            buffer.resize(needed, 0);
        }
        let started = Instant::now();
        let cpu_started = thread_cpu_time();
        render_rows(&page, (width, height), &mut buffer[..needed])
            .map_err(|e| format!("page {}: {e}", index + 1))?;
        render_time += started.elapsed();
        render_cpu += thread_cpu_time().saturating_sub(cpu_started);
        raw_bytes += u64::from(width) * u64::from(height) * 3;
        let rgb = &buffer[..needed];
        for (slot, &(name, compression)) in ENCODERS.iter().enumerate() {
            for _ in 0..reps {
                out.clear();
                let started = Instant::now();
                let cpu_started = thread_cpu_time();
                jobserver::render::child::encode_png(
                    &mut out,
                    rgb,
                    width,
                    height,
                    stride,
                    compression,
                )
                .map_err(|e| format!("page {}: {name}: {e}", index + 1))?;
                time[slot] += started.elapsed();
                cpu[slot] += thread_cpu_time().saturating_sub(cpu_started);
            }
            size[slot] += out.len() as u64;
            if index == 0 {
                check_round_trip(&out, rgb, width, height, stride)
                    .map_err(|e| format!("page 1: {name} does not decode back: {e}"))?;
            }
        }
    }
    let n = count as f64;
    println!(
        "PNG encoders on {} ({count} pages at {} dpi; RGB rows from pdfium, streamed into memory as the renderer streams them to a file; {reps} encode(s) per page per encoder)\n",
        options.pdf.display(),
        options.dpi
    );
    println!(
        "pdfium render alone: {:.1} ms/page (CPU {:.1}); raw RGB: {:.0} KB/page\n",
        render_time.as_secs_f64() * 1000.0 / n,
        render_cpu.as_secs_f64() * 1000.0 / n,
        raw_bytes as f64 / 1000.0 / n
    );
    println!(
        "| encoder | deflate | ms/page | CPU ms/page | KB/page | time vs Fast | size vs Fast |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let fast = ENCODERS
        .iter()
        .position(|(name, _)| *name == "Fast")
        .unwrap_or(0);
    let per_page = |slot: usize| time[slot].as_secs_f64() * 1000.0 / (n * f64::from(reps));
    let cpu_per_page = |slot: usize| cpu[slot].as_secs_f64() * 1000.0 / (n * f64::from(reps));
    for (slot, (name, _)) in ENCODERS.iter().enumerate() {
        let deflate = match *name {
            "Fastest" => "fdeflate, no filter",
            "Fast" => "fdeflate, adaptive filter",
            "Balanced" => "zlib level 6",
            _ => "zlib level 9",
        };
        println!(
            "| {name}{} | {deflate} | {:.1} | {:.1} | {:.0} | {:.2}x | {:.2}x |",
            if slot == fast { " (server)" } else { "" },
            per_page(slot),
            cpu_per_page(slot),
            size[slot] as f64 / 1000.0 / n,
            per_page(slot) / per_page(fast),
            size[slot] as f64 / size[fast] as f64,
        );
    }
    Ok(())
}

/// Renders `page` at `(width, height)` into `rows` as the renderer does:
/// BGR with reversed byte order, which is RGB rows.
fn render_rows(page: &PdfPage, (width, height): (u32, u32), rows: &mut [u8]) -> Result<(), String> {
    let mut bitmap = PdfBitmap::from_bytes(width as i32, height as i32, PdfBitmapFormat::BGR, rows)
        .map_err(|e| format!("bitmap: {e}"))?;
    let config = PdfRenderConfig::new()
        .set_format(PdfBitmapFormat::BGR)
        .set_reverse_byte_order(true)
        .render_form_data(true)
        .set_target_size(width as i32, height as i32);
    page.render_into_bitmap_with_config(&mut bitmap, &config)
        .map_err(|e| format!("render: {e}"))
}

/// Decodes `png` and compares its pixels with the source rows.
fn check_round_trip(
    png_bytes: &[u8],
    rgb: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<(), String> {
    let decoder = png::Decoder::new(io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut pixels = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let info = reader.next_frame(&mut pixels).map_err(|e| e.to_string())?;
    if (info.width, info.height) != (width, height) || info.color_type != png::ColorType::Rgb {
        return Err(format!(
            "decoded {}x{} {:?}",
            info.width, info.height, info.color_type
        ));
    }
    let row = width as usize * 3;
    let same = pixels
        .chunks(info.line_size)
        .zip(rgb.chunks(stride))
        .all(|(a, b)| a[..row] == b[..row]);
    if same {
        Ok(())
    } else {
        Err("pixels differ".into())
    }
}
