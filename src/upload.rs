//! Uploads as they arrive: a request body (or a multipart field) read
//! chunk by chunk into a job's input, between the route that reads it
//! (`POST /jobs/pdf`, `routes/pdf.rs`) and the [`JobInput`] the job is
//! built on.
//!
//! Up to `UPLOAD_SPOOL_THRESHOLD_BYTES` the chunks are held in memory and
//! become [`JobInput::Inline`], as small uploads always were. The chunk that
//! crosses the threshold sends what was held, itself and everything after
//! it into a spool file the page store hands out
//! ([`PageStore::spool_upload`], in the output folder), and the upload
//! becomes [`JobInput::Spooled`]: past the threshold an upload is never
//! held whole in memory, only a chunk and the writer's buffer at a time.
//!
//! Bytes are counted as they come, so an upload over `MAX_UPLOAD_BYTES`
//! stops at the chunk that crosses it (413), spooled or not. A body that
//! cannot be read (the connection's body timeouts: 408; a client gone or a
//! broken body: 400) or a spool file that cannot be written (a full disk:
//! `503 insufficient_storage`, as for an upload kept for an async job) ends
//! the upload there; the unfinished file goes with its [`SpoolWriter`],
//! and a finished one with the last holder of its
//! [`crate::storage::SpoolFile`].
//!
//! The upload bytes admission took from `MAX_UPLOAD_BYTES_IN_FLIGHT`
//! (`routes/admission.rs`) are held until the request ends either
//! way: spooling bounds the server's memory, the budget bounds what all
//! uploads together may take of it and of the disk.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

use crate::error::ApiError;
use crate::extract::body_error;
use crate::storage::{is_storage_full, JobInput, PageStore, SpoolWriter};

/// An upload being read: held chunks, or the spool file they went to.
pub struct Upload<'a> {
    pages: &'a dyn PageStore,
    /// Bytes held in memory at most; one more and the upload is spooled.
    threshold: usize,
    /// `MAX_UPLOAD_BYTES`: one more and the upload is refused (413).
    limit: usize,
    len: usize,
    held: Vec<Bytes>,
    spool: Option<SpoolWriter>,
}

impl<'a> Upload<'a> {
    /// An empty upload, spooled past `threshold` bytes into a file of
    /// `pages`, refused past `limit`.
    pub fn new(pages: &'a dyn PageStore, threshold: usize, limit: usize) -> Self {
        Upload {
            pages,
            threshold,
            limit,
            len: 0,
            held: Vec::new(),
            spool: None,
        }
    }

    /// Reads a request body to its end, frame by frame.
    pub async fn read_body(&mut self, mut body: Body) -> Result<(), ApiError> {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let text = format!("Failed to read the request body: {e}");
                body_error(&e, StatusCode::BAD_REQUEST, text)
            })?;
            // Trailers carry no upload bytes.
            if let Ok(data) = frame.into_data() {
                self.push(data).await?;
            }
        }
        Ok(())
    }

    /// Adds the next chunk: held, or written to the spool file.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), ApiError> {
        self.len = self.len.saturating_add(chunk.len());
        if self.len > self.limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the upload is larger than MAX_UPLOAD_BYTES ({} bytes)",
                self.limit
            )));
        }
        if let Some(spool) = &mut self.spool {
            return spool.write(&chunk).await.map_err(spool_error);
        }
        if self.len <= self.threshold {
            self.held.push(chunk);
            return Ok(());
        }
        // Dropped on any error below, the writer removes its file.
        let mut spool = self.pages.spool_upload().map_err(spool_error)?;
        for piece in self.held.drain(..).chain([chunk]) {
            spool.write(&piece).await.map_err(spool_error)?;
        }
        self.spool = Some(spool);
        Ok(())
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the upload went to a spool file.
    pub fn is_spooled(&self) -> bool {
        self.spool.is_some()
    }

    /// The whole upload as a job's input.
    pub async fn finish(self) -> Result<JobInput, ApiError> {
        match self.spool {
            Some(spool) => {
                let file = spool.finish().await.map_err(spool_error)?;
                Ok(JobInput::Spooled(Arc::new(file)))
            }
            None => Ok(JobInput::Inline(concat(self.held, self.len))),
        }
    }
}

/// The held chunks as one buffer (the one chunk itself, without a copy).
fn concat(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() == 1 {
        if let Some(only) = chunks.pop() {
            return only;
        }
    }
    let mut all = BytesMut::with_capacity(len);
    for chunk in &chunks {
        all.extend_from_slice(chunk);
    }
    all.freeze()
}

fn spool_error(e: io::Error) -> ApiError {
    store_error(format!("cannot spool the upload: {e}"), &e)
}

/// An upload the page store could not write: for lack of room (`ENOSPC`,
/// `EDQUOT`) `503 insufficient_storage`, nothing of it kept; else 503.
pub fn store_error(message: String, e: &io::Error) -> ApiError {
    if is_storage_full(e) {
        ApiError::InsufficientStorage(message)
    } else {
        ApiError::Unavailable(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::store;

    fn spooled(dir: &tempfile::TempDir) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.path().join(".spool"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[tokio::test]
    async fn an_upload_up_to_the_threshold_stays_in_memory_in_one_piece() {
        let (dir, pages) = store();
        let mut upload = Upload::new(&pages, 8, 100);
        for chunk in ["%PDF", "-1.7"] {
            upload
                .push(Bytes::from_static(chunk.as_bytes()))
                .await
                .unwrap();
        }
        assert!(
            !upload.is_spooled(),
            "8 bytes are not past a threshold of 8"
        );
        let JobInput::Inline(bytes) = upload.finish().await.unwrap() else {
            panic!("an upload up to the threshold is held in memory");
        };
        assert_eq!(&bytes[..], b"%PDF-1.7");
        assert!(spooled(&dir).is_empty(), "nothing was spooled");
    }

    #[tokio::test]
    async fn past_the_threshold_what_was_held_and_the_rest_go_to_one_spool_file() {
        let (dir, pages) = store();
        let mut upload = Upload::new(&pages, 8, 100);
        for chunk in ["%PDF", "-1.7", "\n", "body"] {
            upload
                .push(Bytes::from_static(chunk.as_bytes()))
                .await
                .unwrap();
        }
        assert!(upload.is_spooled());
        assert_eq!(upload.len(), 13);
        let JobInput::Spooled(file) = upload.finish().await.unwrap() else {
            panic!("an upload past the threshold is spooled");
        };
        assert_eq!(std::fs::read(file.path()).unwrap(), b"%PDF-1.7\nbody");
        assert_eq!(file.len(), 13);
        assert_eq!(spooled(&dir), vec![file.path().to_path_buf()]);
        let mut read = Vec::new();
        file.read_chunks(|c| read.extend_from_slice(c)).unwrap();
        assert_eq!(read, b"%PDF-1.7\nbody", "read back in chunks");
        drop(file);
        assert!(spooled(&dir).is_empty(), "the file goes with its guard");
    }

    #[tokio::test]
    async fn an_upload_cut_or_refused_mid_spool_leaves_no_file() {
        let (dir, pages) = store();
        let mut cut = Upload::new(&pages, 2, 100);
        cut.push(Bytes::from_static(b"%PDF-1.7")).await.unwrap();
        assert_eq!(spooled(&dir).len(), 1, "spooling while it arrives");
        drop(cut);
        assert!(spooled(&dir).is_empty(), "a cut upload leaves nothing");

        let mut big = Upload::new(&pages, 2, 10);
        big.push(Bytes::from_static(b"%PDF-1.7")).await.unwrap();
        let refused = big.push(Bytes::from_static(b"more")).await.unwrap_err();
        assert!(
            matches!(refused, ApiError::PayloadTooLarge(_)),
            "{refused:?}"
        );
        drop(big);
        assert!(spooled(&dir).is_empty(), "a refused upload leaves nothing");
    }

    #[test]
    fn a_full_disk_while_spooling_is_insufficient_storage() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = spool_error(io::Error::from_raw_os_error(errno));
            assert!(matches!(e, ApiError::InsufficientStorage(_)), "{e:?}");
        }
        let other = spool_error(io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(other, ApiError::Unavailable(_)), "{other:?}");
    }
}
