//! Frames exchanged between a PDF worker thread and its renderer process.
//!
//! A frame is a little-endian `u32` length and that many bytes of JSON (the
//! header), then a little-endian `u64` length and that many raw bytes (the
//! payload, empty for most frames). JSON keeps the headers debuggable; the
//! payload carries an uploaded PDF without base64 or temporary files.
//!
//! Down (worker → renderer): [`Request`], one per job. Up (renderer →
//! worker): [`Event`]s: `Ready` once at start, then per job `Opened`, one
//! `Page` per written page, and `Done` or `Failed`.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Largest header accepted; headers are small JSON objects.
pub const MAX_HEADER_BYTES: u32 = 1 << 20;

/// Where the renderer reads the PDF from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A file the server may read (under `DATA_DIR`).
    File(PathBuf),
    /// The frame's payload.
    Payload,
}

/// One job for a renderer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub source: Source,
    pub password: Option<String>,
    pub dpi: u32,
    /// 1-based page numbers to render, ascending; `None` renders all.
    pub pages: Option<Vec<(u32, Option<u32>)>>,
    /// Scratch folder the pages are written to (the page store takes them
    /// from there).
    pub out_dir: PathBuf,
    pub max_pages: u32,
    pub max_pixels: u64,
    /// Open and check the document, report `Opened`, render nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Why a job failed inside the renderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// Not a readable PDF (truncated, random bytes, ...).
    Format,
    /// Encrypted, and no password or the wrong one was given.
    Password,
    /// Readable, but past a limit (pages, pixels) or asking for pages it lacks.
    Limit,
    /// The renderer could not do its part (I/O, pdfium internal error).
    Engine,
    /// A page could not be written: no space left (`ENOSPC`, `EDQUOT`).
    Storage,
}

/// A page written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PageInfo {
    /// 1-based page number.
    pub page: u32,
    pub width: u32,
    pub height: u32,
    /// Size of the PNG file.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// pdfium is loaded; the renderer takes requests.
    Ready {
        pid: u32,
    },
    /// The document opened: its page count and how many will be rendered.
    Opened {
        page_count: u32,
        rendering: u32,
    },
    Page(PageInfo),
    Done,
    Failed {
        kind: FailKind,
        message: String,
    },
}

/// Writes one frame and flushes it.
pub fn write_frame<T: Serialize>(w: &mut impl Write, header: &T, payload: &[u8]) -> io::Result<()> {
    let json = serde_json::to_vec(header)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|&n| n <= MAX_HEADER_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame header too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&json)?;
    w.write_all(&(payload.len() as u64).to_le_bytes())?;
    w.write_all(payload)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame.
/// `max_payload` bounds what a peer can make this side allocate.
pub fn read_frame<T: DeserializeOwned>(
    r: &mut impl Read,
    max_payload: u64,
) -> io::Result<Option<(T, Vec<u8>)>> {
    // Only an end of stream *before* a frame is clean; one inside the
    // length prefix is a truncated frame.
    let mut len = [0u8; 4];
    let first = loop {
        match r.read(&mut len[..1]) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if first == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..])?;
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(invalid(format!(
            "frame header of {len} bytes exceeds the limit"
        )));
    }
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json)?;
    let header =
        serde_json::from_slice(&json).map_err(|e| invalid(format!("bad frame header: {e}")))?;
    let mut plen = [0u8; 8];
    r.read_exact(&mut plen)?;
    let plen = u64::from_le_bytes(plen);
    if plen > max_payload {
        return Err(invalid(format!(
            "frame payload of {plen} bytes exceeds the limit"
        )));
    }
    let mut payload = Vec::new();
    r.take(plen).read_to_end(&mut payload)?;
    if payload.len() as u64 != plen {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated frame payload",
        ));
    }
    Ok(Some((header, payload)))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_with_its_payload() {
        let request = Request {
            source: Source::Payload,
            password: Some("pw".into()),
            dpi: 150,
            pages: Some(vec![(1, Some(3)), (7, None)]),
            out_dir: "out/x".into(),
            max_pages: 10,
            max_pixels: 100,
            dry_run: false,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &request, b"%PDF-1.7").unwrap();
        write_frame(&mut buf, &Event::Done, &[]).unwrap();
        let mut r = &buf[..];
        let (back, payload): (Request, _) = read_frame(&mut r, 1 << 20).unwrap().unwrap();
        assert_eq!(back, request);
        assert_eq!(payload, b"%PDF-1.7");
        let (event, _): (Event, _) = read_frame(&mut r, 0).unwrap().unwrap();
        assert_eq!(event, Event::Done);
        assert!(
            read_frame::<Event>(&mut r, 0).unwrap().is_none(),
            "clean end"
        );
    }

    #[test]
    fn a_truncated_or_oversized_frame_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Event::Done, b"abcdef").unwrap();
        for cut in 1..buf.len() {
            assert!(
                read_frame::<Event>(&mut &buf[..cut], 1 << 20).is_err(),
                "cut at {cut}"
            );
        }
        assert!(
            read_frame::<Event>(&mut &buf[..], 3).is_err(),
            "payload over the limit"
        );
        let huge = (MAX_HEADER_BYTES + 1).to_le_bytes();
        assert!(read_frame::<Event>(&mut &huge[..], 0).is_err());
    }
}

#[cfg(test)]
mod properties {
    //! Property tests of the frame reader: whatever bytes a dying or
    //! misbehaving renderer writes, reading them returns an error or a
    //! frame, never a panic or an allocation past the limits.

    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut r = &bytes[..];
            while let Ok(Some(_)) = read_frame::<Event>(&mut r, 1024) {}
        }

        #[test]
        fn a_valid_frame_with_corrupted_bytes_never_panics(
            page in 1u32..10_000,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        ) {
            let mut buf = Vec::new();
            let event = Event::Page(PageInfo { page, width: 10, height: 20, bytes: 30 });
            write_frame(&mut buf, &event, b"payload").unwrap();
            let clean = buf.clone();
            for (at, byte) in flips {
                let i = at % buf.len();
                buf[i] ^= byte;
            }
            let mut r = &buf[..];
            let read = read_frame::<Event>(&mut r, 1024);
            if buf == clean {
                let (back, payload) = read.unwrap().unwrap();
                prop_assert_eq!(back, event);
                prop_assert_eq!(payload, b"payload".to_vec());
            }
        }

        #[test]
        fn requests_round_trip(
            dpi in 1u32..2000,
            password in proptest::option::of("\\PC{0,20}"),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let request = Request {
                source: Source::Payload,
                password,
                dpi,
                pages: Some(vec![(1, None)]),
                out_dir: "out/x".into(),
                max_pages: 5,
                max_pixels: 7,
                dry_run: false,
            };
            let mut buf = Vec::new();
            write_frame(&mut buf, &request, &payload).unwrap();
            let (back, bytes): (Request, _) = read_frame(&mut &buf[..], 1 << 20).unwrap().unwrap();
            prop_assert_eq!(back, request);
            prop_assert_eq!(bytes, payload);
        }
    }
}
