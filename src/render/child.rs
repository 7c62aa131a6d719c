//! The renderer process: `jobserver --renderer`. The only code that touches
//! pdfium.
//!
//! It caps its own address space, loads pdfium once, announces `Ready`, then
//! serves requests from stdin until stdin closes: open the document, check
//! every limit *before* rendering anything (page count, page numbers, pixels
//! per page from the page size and dpi), then render each page into one
//! reused bitmap buffer and write it as PNG to a temporary name, renamed into
//! place when complete, so `out/` never holds a partial page. Events go to
//! stdout as frames; diagnostics go to stderr (inherited from the server).
//!
//! Encoding: pdfium renders BGR with reversed byte order, which is RGB, so
//! rows go to the PNG encoder without a conversion pass. The encoder uses the
//! `png` crate's fast deflate. Measured on the scanned benchmark sample
//! (`cargo run --release --example render_loop -- --encoders`): Fast costs
//! about 10 ms and 1056 KB per page, Balanced (zlib-class) 137 ms and
//! 898 KB, High 386 ms and 893 KB, against about 137 ms to render the page.
//! Rendering is what users wait for, so encoding must not double it for
//! 15 % smaller files.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use pdfium_render::prelude::*;

use super::pages;
use super::protocol::{read_frame, write_frame, Event, FailKind, PageInfo, Request, Source};
use crate::storage::{is_storage_full, page_file_name, ImageFormat};

/// Environment variable naming the pdfium library for the renderer.
pub const ENV_LIBRARY: &str = "JOBSERVER_PDFIUM_LIBRARY";
/// Environment variable with the renderer's address-space cap in bytes.
pub const ENV_MEMORY_LIMIT: &str = "JOBSERVER_RENDERER_MEMORY_LIMIT";
/// Largest request payload (an uploaded PDF) the renderer reads.
pub const ENV_MAX_PAYLOAD: &str = "JOBSERVER_RENDERER_MAX_PAYLOAD";

/// Runs the renderer until its input closes. Returns the process exit code.
pub fn main() -> i32 {
    die_with_parent();
    if let Some(limit) = std::env::var(ENV_MEMORY_LIMIT)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        if let Err(e) = limit_address_space(limit) {
            eprintln!("renderer: cannot cap address space: {e}");
        }
    }
    let max_payload = std::env::var(ENV_MAX_PAYLOAD)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let library = std::env::var_os(ENV_LIBRARY)
        .map(PathBuf::from)
        .unwrap_or_default();
    let pdfium = match bind(&library) {
        Ok(pdfium) => pdfium,
        Err(message) => {
            let _ = write_frame(
                &mut out,
                &Event::Failed {
                    kind: FailKind::Engine,
                    message,
                },
                &[],
            );
            return 3;
        }
    };
    if write_frame(
        &mut out,
        &Event::Ready {
            pid: std::process::id(),
        },
        &[],
    )
    .is_err()
    {
        return 1;
    }
    let mut input = BufReader::new(io::stdin().lock());
    let mut bitmap_buffer = Vec::new();
    loop {
        let (request, payload): (Request, Vec<u8>) = match read_frame(&mut input, max_payload) {
            Ok(Some(frame)) => frame,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("renderer: bad request frame: {e}");
                return 1;
            }
        };
        let result = render(&pdfium, &request, &payload, &mut bitmap_buffer, &mut out);
        let last = match result {
            Ok(()) => Event::Done,
            Err((kind, message)) => Event::Failed { kind, message },
        };
        if write_frame(&mut out, &last, &[]).is_err() {
            return 1;
        }
    }
}

/// Loads pdfium from `library`.
pub fn bind(library: &Path) -> Result<Pdfium, String> {
    Pdfium::bind_to_library(library)
        .map(Pdfium::new)
        .map_err(|e| format!("cannot load pdfium from {}: {e}", library.display()))
}

/// Why a job failed, and the message for its caller.
pub type Failure = (FailKind, String);

/// Renders one request: checks the limits, writes each page as PNG into
/// `request.out_dir`, and reports `Opened` and each `Page` on `out`.
/// `buffer` is the bitmap memory, reused across calls.
pub fn render(
    pdfium: &Pdfium,
    request: &Request,
    payload: &[u8],
    buffer: &mut Vec<u8>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let password = request.password.as_deref();
    // pdfium-render panics on a password it cannot pass as a C string.
    if password.is_some_and(|p| p.contains('\0')) {
        return Err((
            FailKind::Password,
            "the password must not contain NUL characters".into(),
        ));
    }
    let document = match &request.source {
        Source::File(path) => pdfium.load_pdf_from_file(path, password),
        Source::Payload => pdfium.load_pdf_from_byte_slice(payload, password),
    }
    .map_err(|e| open_failure(e, password.is_some()))?;

    let page_count = u32::try_from(document.pages().len()).unwrap_or(0);
    let selected =
        pages::resolve(request.pages.as_deref(), page_count).map_err(|m| (FailKind::Limit, m))?;
    if selected.is_empty() {
        return Err((FailKind::Limit, "the document has no pages".into()));
    }
    if selected.len() as u64 > u64::from(request.max_pages) {
        return Err((
            FailKind::Limit,
            format!(
                "{} pages requested; at most {} may be rendered per job (PDF_MAX_PAGES)",
                selected.len(),
                request.max_pages
            ),
        ));
    }
    // Every limit is checked before the first page is rendered, so a job
    // is refused whole rather than failing half-way.
    // The size comes from the page dictionary (FPDF_GetPageSizeByIndexF):
    // loading the page would parse its content, which the render loop
    // does again, and a hostile content stream can take seconds and GiBs.
    let mut sizes = Vec::with_capacity(selected.len());
    for &number in &selected {
        let size = document
            .pages()
            .page_size((number - 1) as i32)
            .map_err(|e| {
                (
                    FailKind::Format,
                    format!("page {number} cannot be read: {e}"),
                )
            })?;
        let (w, h) =
            pixel_size(size.width().value, size.height().value, request.dpi).ok_or_else(|| {
                (
                    FailKind::Limit,
                    format!("page {number} has an invalid size"),
                )
            })?;
        let pixels = u64::from(w) * u64::from(h);
        if pixels > request.max_pixels {
            return Err((
                FailKind::Limit,
                format!(
                    "page {number} would be {w}x{h} px ({pixels} px) at {} dpi; the limit is {} px per page (PDF_MAX_PIXELS)",
                    request.dpi, request.max_pixels
                ),
            ));
        }
        sizes.push((number, w, h));
    }
    write_frame(
        out,
        &Event::Opened {
            page_count,
            rendering: selected.len() as u32,
        },
        &[],
    )
    .map_err(engine)?;
    if request.dry_run {
        return Ok(());
    }

    for (number, width, height) in sizes {
        let page = document.pages().get((number - 1) as i32).map_err(|e| {
            (
                FailKind::Format,
                format!("page {number} cannot be read: {e}"),
            )
        })?;
        let stride = (width as usize * 3).div_ceil(4) * 4;
        let needed = stride * height as usize;
        // One buffer for the renderer's life: freeing and re-allocating a
        // page-sized buffer costs ~16 ms per page in page faults.
        if buffer.len() < needed {
            // Under the address-space cap a huge page must fail its job,
            // not abort the process.
            buffer.try_reserve_exact(needed - buffer.len()).map_err(|_| {
                (
                    FailKind::Limit,
                    format!(
                        "page {number} ({width}x{height} px) needs {} MiB for its bitmap, more than the renderer may use (the smaller of PDF_RENDERER_MEMORY_LIMIT_MB and PDF_RENDERER_MEMORY_BUDGET_MB / PDF_WORKERS)",
                        needed >> 20
                    ),
                )
            })?;
            buffer.resize(needed, 0);
        }
        {
            let mut bitmap = PdfBitmap::from_bytes(
                width as i32,
                height as i32,
                PdfBitmapFormat::BGR,
                &mut buffer[..needed],
            )
            .map_err(|e| {
                (
                    FailKind::Engine,
                    format!("page {number}: cannot make a bitmap: {e}"),
                )
            })?;
            page.render_into_bitmap_with_config(&mut bitmap, &render_config(width, height))
                .map_err(|e| {
                    (
                        FailKind::Engine,
                        format!("page {number} failed to render: {e}"),
                    )
                })?;
        }
        let path = request
            .out_dir
            .join(page_file_name(number, ImageFormat::Png));
        let bytes = write_png(&path, &buffer[..needed], width, height, stride).map_err(|e| {
            let kind = if is_storage_full(&e) {
                FailKind::Storage
            } else {
                FailKind::Engine
            };
            (kind, format!("page {number}: cannot write PNG: {e}"))
        })?;
        write_frame(
            out,
            &Event::Page(PageInfo {
                page: number,
                width,
                height,
                bytes,
            }),
            &[],
        )
        .map_err(engine)?;
    }
    Ok(())
}

/// How a page is rendered: BGR with reversed byte order, which pdfium
/// writes as RGB rows (what the PNG encoder takes, with no conversion),
/// form fields drawn, at `width` x `height` pixels.
pub fn render_config(width: u32, height: u32) -> PdfRenderConfig {
    PdfRenderConfig::new()
        .set_format(PdfBitmapFormat::BGR)
        .set_reverse_byte_order(true)
        .render_form_data(true)
        .set_target_size(width as i32, height as i32)
}

/// Pixel size of a page of `w_pt` x `h_pt` points at `dpi`, rounded up as
/// poppler does; `None` for sizes pdfium cannot render (zero, negative,
/// non-finite, or wider than a bitmap can be).
pub fn pixel_size(w_pt: f32, h_pt: f32, dpi: u32) -> Option<(u32, u32)> {
    let scale = f64::from(dpi) / 72.0;
    let px = |pt: f32| -> Option<u32> {
        let v = (f64::from(pt) * scale).ceil();
        (v.is_finite() && v >= 1.0 && v <= f64::from(i32::MAX / 4)).then_some(v as u32)
    };
    Some((px(w_pt)?, px(h_pt)?))
}

/// Encodes RGB rows (`stride` bytes apart) as PNG into a temporary file and
/// renames it to `path`; returns the file's size.
fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32, stride: usize) -> io::Result<u64> {
    let tmp = path.with_extension("png.partial");
    let result = (|| {
        let file = File::create(&tmp)?;
        encode_png(file, rgb, width, height, stride, png::Compression::Fast)?;
        fs::rename(&tmp, path)?;
        fs::metadata(path).map(|m| m.len())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Encodes RGB rows (`stride` bytes apart, `width * 3` of each used) as an
/// 8-bit RGB PNG into `out`. The renderer uses `Compression::Fast` (the
/// README's Performance section has `render_loop --encoders` timings of
/// every level).
pub fn encode_png(
    out: impl Write,
    rgb: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    compression: png::Compression,
) -> io::Result<()> {
    let mut encoder = png::Encoder::new(BufWriter::with_capacity(256 * 1024, out), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(compression);
    let mut writer = encoder.write_header().map_err(io::Error::other)?;
    let row = width as usize * 3;
    {
        let mut stream = writer.stream_writer().map_err(io::Error::other)?;
        for line in rgb.chunks(stride).take(height as usize) {
            stream.write_all(&line[..row])?;
        }
        stream.finish().map_err(io::Error::other)?;
    }
    writer.finish().map_err(io::Error::other)
}

fn open_failure(e: PdfiumError, had_password: bool) -> Failure {
    match e {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => (
            FailKind::Password,
            if had_password {
                "the document is encrypted and the password is incorrect".into()
            } else {
                "the document is encrypted; send its password in `password`".into()
            },
        ),
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FormatError) => (
            FailKind::Format,
            "not a readable PDF (pdfium: file not in PDF format or corrupted)".into(),
        ),
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => (
            FailKind::Format,
            "the document uses an unsupported security handler (pdfium: security error)".into(),
        ),
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FileError) => (
            FailKind::Format,
            "the PDF cannot be read (pdfium: file error)".into(),
        ),
        other => (
            FailKind::Format,
            format!("pdfium cannot open the document: {other}"),
        ),
    }
}

fn engine(e: io::Error) -> Failure {
    (FailKind::Engine, format!("renderer output failed: {e}"))
}

/// Caps this process's address space so that a pathological document fails
/// its own job instead of pushing the machine into swap or the OOM killer.
fn limit_address_space(bytes: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass and touches nothing else.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to kill this renderer when the server dies (even by
/// SIGKILL), so a render in progress does not go on burning a core for
/// nobody; without it the renderer would only notice at its next read of
/// the closed pipe. Linux only; elsewhere the closed pipe is the signal.
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and
        // touches no memory of ours.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        // The server may have died before the call: then the parent is
        // already someone else and no signal will come.
        if std::os::unix::process::parent_id() == 1 {
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_sizes_round_up_like_poppler() {
        assert_eq!(pixel_size(595.0, 842.0, 200), Some((1653, 2339)));
        assert_eq!(pixel_size(72.0, 72.0, 72), Some((72, 72)));
        assert_eq!(pixel_size(14400.0, 14400.0, 200), Some((40000, 40000)));
    }

    #[test]
    fn degenerate_page_sizes_are_refused() {
        assert_eq!(pixel_size(0.0, 842.0, 200), None);
        assert_eq!(pixel_size(-5.0, 842.0, 200), None);
        assert_eq!(pixel_size(f32::NAN, 842.0, 200), None);
        assert_eq!(pixel_size(f32::INFINITY, 842.0, 200), None);
        assert_eq!(pixel_size(1e30, 842.0, 200), None);
    }
}
