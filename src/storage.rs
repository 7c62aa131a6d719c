//! Page storage: where a job's pages and kept inputs live, and the one
//! module that knows the output folder's layout.
//!
//! ```text
//! OUTPUT_DIR/
//!   <job_id>/page-NNN.<ext>    a job's pages, served at /jobs/<id>/pages/<n>
//!   jobs.db                    async job records (jobs::store)
//!   .jobs/inputs/<id>.pdf      an upload kept until its async job ends
//!   .jobs/instances/<id>.lock  one lock per live instance (jobs::election)
//!   .jobs/primary.lock         the singleton lease (jobs::election)
//!   .scratch/<id>/             where renderers write pages before the store takes them
//!   .spool/<id>.pdf            an upload spooled for a fanned-out job's renderers
//!   .spool/upload-<uuid>.pdf   an upload past UPLOAD_SPOOL_THRESHOLD_BYTES,
//!                              while its request or job holds it
//! ```
//!
//! [`Layout`] names every path; [`PageStore`] is the seam the rest of the
//! server goes through for bytes: renderers write into scratch space, the
//! store *takes* each finished page ([`PageStore::put_page`]) and serves
//! pages back as bytes; uploads of async jobs are kept by the store and
//! named by an [`InputRef`], a serialisable reference recorded with the
//! job. [`LocalPages`] keeps everything in the output folder (a rename per
//! page); a store in an object store implements the same trait. Its I/O
//! methods are async; worker threads call them through a runtime handle.
//!
//! An upload too large to hold in memory is streamed by the route into a
//! [`SpoolWriter`] the store hands out ([`PageStore::spool_upload`]), in the
//! output folder so that keeping it for an async job is a link, not a copy.
//! The finished [`SpoolFile`] is the file's one owner: the file is removed
//! when it drops, so no spool file outlives the request or job holding it
//! (refused, failed, cancelled, finished, or cut mid-upload).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::disk::FreeSpace;

/// Every path under the output folder.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// Creates the folders the server writes to.
    pub fn create(&self) -> io::Result<()> {
        for dir in [
            self.root.clone(),
            self.inputs_dir(),
            self.instances_dir(),
            self.root.join(".scratch"),
            self.root.join(".spool"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The async jobs' database.
    pub fn database(&self) -> PathBuf {
        self.root.join("jobs.db")
    }

    /// One lock file per live instance.
    pub fn instances_dir(&self) -> PathBuf {
        self.root.join(".jobs").join("instances")
    }

    /// The singleton lease's lock file.
    pub fn primary_lock(&self) -> PathBuf {
        self.root.join(".jobs").join("primary.lock")
    }

    fn inputs_dir(&self) -> PathBuf {
        self.root.join(".jobs").join("inputs")
    }

    fn input(&self, job_id: Uuid) -> PathBuf {
        self.inputs_dir().join(format!("{job_id}.pdf"))
    }

    fn job_dir(&self, job_id: Uuid) -> PathBuf {
        self.root.join(job_id.to_string())
    }

    fn scratch(&self, job_id: Uuid) -> PathBuf {
        self.root.join(".scratch").join(job_id.to_string())
    }

    fn spool(&self, job_id: Uuid) -> PathBuf {
        self.root.join(".spool").join(format!("{job_id}.pdf"))
    }

    /// A fresh name for an upload spooled while it arrives: no job id is
    /// known yet, so a name of its own.
    fn upload_spool(&self) -> PathBuf {
        let name = format!("{UPLOAD_SPOOL_PREFIX}{}.pdf", Uuid::new_v4());
        self.root.join(".spool").join(name)
    }
}

/// How the names of spooled uploads begin (`.spool/upload-<uuid>.pdf`).
pub const UPLOAD_SPOOL_PREFIX: &str = "upload-";

/// The image format of a stored page; its extension is in the page's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    #[default]
    Png,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 1] = [ImageFormat::Png];

    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
        }
    }
}

/// File name of a rendered page: `page-001.png` (wider past page 999).
pub fn page_file_name(page: u32, format: ImageFormat) -> String {
    format!("page-{page:03}.{}", format.extension())
}

/// A job's input as recorded with it: serialisable, so a job can be
/// admitted again after a restart (or, later, on another machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRef {
    /// An upload the page store keeps until the job ends.
    Kept { job_id: Uuid },
    /// A file in `DATA_DIR`, already checked to lie inside it.
    Data { path: PathBuf },
}

/// What a job reads: an upload that came with the request, held in memory
/// or spooled to a file, or a reference the page store resolves.
#[derive(Debug, Clone)]
pub enum JobInput {
    /// An upload up to `UPLOAD_SPOOL_THRESHOLD_BYTES`.
    Inline(Bytes),
    /// A larger upload, in a spool file removed when the last clone drops
    /// (the request's, the queued job's).
    Spooled(Arc<SpoolFile>),
    Stored(InputRef),
}

/// An upload spooled to a file of its own, which is removed when this
/// drops: the file lives exactly as long as the request or job holding it.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
    len: u64,
}

impl SpoolFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The upload's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the file from the start, handing `each` one chunk at a time
    /// (never the whole upload). Blocking: call it off the runtime's threads.
    pub fn read_chunks(&self, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        use std::io::Read;
        let mut file = std::fs::File::open(&self.path)?;
        let mut chunk = vec![0; SPOOL_BUFFER_BYTES];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => each(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), "cannot remove a spooled upload: {e}");
            }
        }
    }
}

/// Writes go to the file in pieces this large.
const SPOOL_BUFFER_BYTES: usize = 256 * 1024;

/// A spool file being written as the upload arrives. Dropped before
/// [`SpoolWriter::finish`] (a cut or refused upload), it removes its file.
pub struct SpoolWriter {
    file: SpoolFile,
    out: tokio::io::BufWriter<tokio::fs::File>,
}

impl SpoolWriter {
    /// Creates `path` (which must not exist yet) and its folder.
    pub fn create(path: PathBuf) -> io::Result<SpoolWriter> {
        // Folders are made again where they are used: an operator (or a
        // benchmark) may have emptied the output folder.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        // The guard exists from here: any failure below removes the file.
        let file = SpoolFile { path, len: 0 };
        let out = tokio::fs::File::from_std(out);
        Ok(SpoolWriter {
            file,
            out: tokio::io::BufWriter::with_capacity(SPOOL_BUFFER_BYTES, out),
        })
    }

    /// Appends `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes).await?;
        self.file.len += bytes.len() as u64;
        Ok(())
    }

    /// Flushes what is buffered (a full disk may only show here) and hands
    /// over the finished file.
    pub async fn finish(self) -> io::Result<SpoolFile> {
        let SpoolWriter { file, mut out } = self;
        // No fsync, as for an upload kept from memory: the renderers read
        // the file back through the page cache.
        out.flush().await?;
        Ok(file)
    }
}

/// A page in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPage {
    /// 1-based page number.
    pub page: u32,
    pub width: u32,
    pub height: u32,
    /// Size of the stored file.
    pub bytes: u64,
    #[serde(skip)]
    pub format: ImageFormat,
}

impl StoredPage {
    /// A 1 x 1 PNG page of `bytes` bytes, for tests.
    #[cfg(test)]
    pub(crate) fn tiny(page: u32, bytes: u64) -> StoredPage {
        StoredPage {
            page,
            width: 1,
            height: 1,
            bytes,
            format: ImageFormat::Png,
        }
    }
}

/// A folder for one job's renderers to write into; removed when dropped.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Where the renderers write.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A file a renderer may read a job's input from: a kept upload, a data
/// file, a spooled upload or a spooled copy. A spooled copy is removed when
/// this is dropped; a spooled upload is held until then.
pub struct LocalInput {
    path: PathBuf,
    spooled: bool,
    _upload: Option<Arc<SpoolFile>>,
}

impl LocalInput {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalInput {
    fn drop(&mut self) {
        if self.spooled {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A store operation that only succeeds or fails.
pub type StoreOp<'a> = BoxFuture<'a, io::Result<()>>;

/// Where an upload was kept.
pub type Kept<'a> = BoxFuture<'a, io::Result<InputRef>>;

/// A page's format and bytes, or `None` where the store has no such page.
pub type PageRead<'a> = BoxFuture<'a, io::Result<Option<(ImageFormat, Bytes)>>>;

/// Where pages and kept inputs go, and where they are served from.
pub trait PageStore: Send + Sync + 'static {
    /// A fresh scratch folder for the renderers of `job_id`.
    fn scratch(&self, job_id: Uuid) -> io::Result<Scratch>;

    /// Takes a finished page out of scratch space into the store.
    fn put_page<'a>(&'a self, job_id: Uuid, page: &'a StoredPage, file: &'a Path) -> StoreOp<'a>;

    /// A page's bytes, or `None` if the store has no such page.
    fn get_page(&self, job_id: Uuid, page: u32) -> PageRead<'_>;

    /// The job's pages, by page number.
    fn list_pages(&self, job_id: Uuid) -> BoxFuture<'_, io::Result<Vec<(u32, ImageFormat)>>>;

    /// Removes every page of a job (failed, undelivered or expired).
    fn remove_pages(&self, job_id: Uuid) -> StoreOp<'_>;

    /// Jobs with pages whose newest write is older than `before` (the
    /// retention of jobs that have no record).
    fn jobs_older_than(&self, before: SystemTime) -> BoxFuture<'_, io::Result<Vec<Uuid>>>;

    /// Keeps an upload for an async job until [`PageStore::remove_input`].
    fn keep_input(&self, job_id: Uuid, bytes: Bytes) -> Kept<'_>;

    /// A new file to spool an upload into while it arrives, where pages go
    /// (so that [`PageStore::keep_spooled`] can link it rather than copy).
    fn spool_upload(&self) -> io::Result<SpoolWriter>;

    /// Keeps a spooled upload for an async job, as [`PageStore::keep_input`]
    /// does bytes; the spool file itself stays its guard's.
    fn keep_spooled<'a>(&'a self, job_id: Uuid, upload: &'a SpoolFile) -> Kept<'a>;

    /// Whether a recorded input can still be read.
    fn has_input<'a>(&'a self, input: &'a InputRef) -> BoxFuture<'a, bool>;

    fn remove_input<'a>(&'a self, input: &'a InputRef) -> StoreOp<'a>;

    /// A file the renderers can read the input from; bytes are spooled
    /// to a file of their own (removed when the returned value drops).
    fn local_input(&self, job_id: Uuid, input: &JobInput) -> io::Result<LocalInput>;

    /// Records the tenant a job's pages belong to (a sync job's: an async
    /// one's is in its record), before their URLs are given out.
    fn set_owner<'a>(&'a self, job_id: Uuid, tenant: &'a str) -> StoreOp<'a>;

    /// The tenant [`PageStore::set_owner`] recorded for a job, if any.
    fn owner(&self, job_id: Uuid) -> BoxFuture<'_, io::Result<Option<String>>>;

    /// Bytes that may still be written where pages go, for the
    /// `MIN_FREE_DISK_MB` floor; `None` where that does not apply (a store
    /// without a local filesystem, or one that cannot be asked). Cheap:
    /// called on every PDF submit and readiness probe.
    fn free_space(&self) -> Option<u64> {
        None
    }
}

/// The output folder as the page store: pages are renamed into place.
#[derive(Debug, Clone)]
pub struct LocalPages {
    layout: Layout,
    free: Arc<FreeSpace>,
}

impl LocalPages {
    pub fn new(layout: Layout) -> Self {
        let free = Arc::new(FreeSpace::new(layout.root()));
        LocalPages { layout, free }
    }

    /// The page's file, whichever format it was stored in.
    fn find_page(&self, job_id: Uuid, page: u32) -> Option<(ImageFormat, PathBuf)> {
        let dir = self.layout.job_dir(job_id);
        ImageFormat::ALL
            .into_iter()
            .map(|f| (f, dir.join(page_file_name(page, f))))
            .find(|(_, path)| path.is_file())
    }
}

/// The file in a job's folder that names its tenant.
const OWNER_FILE: &str = ".tenant";

/// Parses `page-NNN.<ext>`.
fn parse_page_name(name: &str) -> Option<(u32, ImageFormat)> {
    let (stem, ext) = name.strip_prefix("page-")?.rsplit_once('.')?;
    let format = ImageFormat::ALL
        .into_iter()
        .find(|f| f.extension() == ext)?;
    Some((stem.parse().ok()?, format))
}

fn not_found_is_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl PageStore for LocalPages {
    fn scratch(&self, job_id: Uuid) -> io::Result<Scratch> {
        let dir = self.layout.scratch(job_id);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch { dir })
    }

    fn put_page<'a>(&'a self, job_id: Uuid, page: &'a StoredPage, file: &'a Path) -> StoreOp<'a> {
        Box::pin(async move {
            let dir = self.layout.job_dir(job_id);
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(file, dir.join(page_file_name(page.page, page.format)))
        })
    }

    fn get_page(&self, job_id: Uuid, page: u32) -> PageRead<'_> {
        Box::pin(async move {
            let Some((format, path)) = self.find_page(job_id, page) else {
                return Ok(None);
            };
            let bytes = not_found_is_none(tokio::fs::read(&path).await)?;
            Ok(bytes.map(|b| (format, Bytes::from(b))))
        })
    }

    fn list_pages(&self, job_id: Uuid) -> BoxFuture<'_, io::Result<Vec<(u32, ImageFormat)>>> {
        Box::pin(async move {
            let dir = self.layout.job_dir(job_id);
            let Some(mut entries) = not_found_is_none(tokio::fs::read_dir(&dir).await)? else {
                return Ok(Vec::new());
            };
            let mut pages = Vec::new();
            while let Some(entry) = entries.next_entry().await? {
                if let Some(found) = entry.file_name().to_str().and_then(parse_page_name) {
                    pages.push(found);
                }
            }
            pages.sort_unstable_by_key(|(page, _)| *page);
            Ok(pages)
        })
    }

    fn remove_pages(&self, job_id: Uuid) -> StoreOp<'_> {
        Box::pin(async move {
            not_found_is_none(std::fs::remove_dir_all(self.layout.job_dir(job_id)))?;
            Ok(())
        })
    }

    fn jobs_older_than(&self, before: SystemTime) -> BoxFuture<'_, io::Result<Vec<Uuid>>> {
        Box::pin(async move {
            let mut old = Vec::new();
            for entry in std::fs::read_dir(self.layout.root())?.flatten() {
                let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Uuid::parse_str(n).ok())
                else {
                    continue;
                };
                let modified = entry.metadata().and_then(|m| m.modified());
                if modified.is_ok_and(|m| m < before) {
                    old.push(id);
                }
            }
            Ok(old)
        })
    }

    fn keep_input(&self, job_id: Uuid, bytes: Bytes) -> Kept<'_> {
        Box::pin(async move {
            tokio::fs::create_dir_all(self.layout.inputs_dir()).await?;
            tokio::fs::write(self.layout.input(job_id), &bytes).await?;
            Ok(InputRef::Kept { job_id })
        })
    }

    fn spool_upload(&self) -> io::Result<SpoolWriter> {
        SpoolWriter::create(self.layout.upload_spool())
    }

    /// A hard link: no byte is copied, and the spool file's name still
    /// goes with its guard. A copy where linking fails (another
    /// filesystem mounted over `.jobs/`, a filesystem without links).
    fn keep_spooled<'a>(&'a self, job_id: Uuid, upload: &'a SpoolFile) -> Kept<'a> {
        Box::pin(async move {
            tokio::fs::create_dir_all(self.layout.inputs_dir()).await?;
            let kept = self.layout.input(job_id);
            if let Err(e) = tokio::fs::hard_link(upload.path(), &kept).await {
                tracing::debug!(%job_id, "cannot link the spooled upload, copying it: {e}");
                if let Err(e) = tokio::fs::copy(upload.path(), &kept).await {
                    let _ = tokio::fs::remove_file(&kept).await;
                    return Err(e);
                }
            }
            Ok(InputRef::Kept { job_id })
        })
    }

    fn has_input<'a>(&'a self, input: &'a InputRef) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match input {
                InputRef::Kept { job_id } => self.layout.input(*job_id).is_file(),
                InputRef::Data { path } => path.is_file(),
            }
        })
    }

    fn remove_input<'a>(&'a self, input: &'a InputRef) -> StoreOp<'a> {
        Box::pin(async move {
            if let InputRef::Kept { job_id } = input {
                not_found_is_none(std::fs::remove_file(self.layout.input(*job_id)))?;
            }
            Ok(())
        })
    }

    fn set_owner<'a>(&'a self, job_id: Uuid, tenant: &'a str) -> StoreOp<'a> {
        Box::pin(async move {
            let path = self.layout.job_dir(job_id).join(OWNER_FILE);
            tokio::fs::write(path, tenant.as_bytes()).await
        })
    }

    fn owner(&self, job_id: Uuid) -> BoxFuture<'_, io::Result<Option<String>>> {
        Box::pin(async move {
            let path = self.layout.job_dir(job_id).join(OWNER_FILE);
            not_found_is_none(tokio::fs::read_to_string(path).await)
        })
    }

    fn local_input(&self, job_id: Uuid, input: &JobInput) -> io::Result<LocalInput> {
        match input {
            JobInput::Inline(bytes) => {
                let path = self.layout.spool(job_id);
                // Folders are made again where they are used: an operator
                // (or a benchmark) may have emptied the output folder.
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, bytes)?;
                Ok(LocalInput {
                    path,
                    spooled: true,
                    _upload: None,
                })
            }
            JobInput::Spooled(upload) => Ok(LocalInput {
                path: upload.path().to_path_buf(),
                spooled: false,
                _upload: Some(Arc::clone(upload)),
            }),
            JobInput::Stored(InputRef::Kept { job_id }) => Ok(LocalInput {
                path: self.layout.input(*job_id),
                spooled: false,
                _upload: None,
            }),
            JobInput::Stored(InputRef::Data { path }) => Ok(LocalInput {
                path: path.clone(),
                spooled: false,
                _upload: None,
            }),
        }
    }

    /// The output folder's filesystem (`statvfs`, read at most once a second).
    fn free_space(&self) -> Option<u64> {
        self.free.bytes()
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full:
/// `ENOSPC` or `EDQUOT`.
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A page store in a fresh temporary folder.
    pub(crate) fn store() -> (tempfile::TempDir, LocalPages) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        (dir, LocalPages::new(layout))
    }

    #[test]
    fn page_names_carry_their_format_and_parse_back() {
        assert_eq!(page_file_name(7, ImageFormat::Png), "page-007.png");
        assert_eq!(page_file_name(1234, ImageFormat::Png), "page-1234.png");
        assert_eq!(parse_page_name("page-007.png"), Some((7, ImageFormat::Png)));
        assert_eq!(parse_page_name("page-007.png.partial"), None);
        assert_eq!(parse_page_name("notes.txt"), None);
    }

    #[tokio::test]
    async fn a_page_taken_from_scratch_is_served_listed_and_removed() {
        let (_dir, pages) = store();
        let job = Uuid::new_v4();
        let scratch = pages.scratch(job).unwrap();
        let file = scratch.dir().join("page-002.png");
        std::fs::write(&file, b"png bytes").unwrap();
        let page = StoredPage::tiny(2, 9);
        pages.put_page(job, &page, &file).await.unwrap();
        assert!(!file.exists(), "the store took the file");
        let (format, bytes) = pages.get_page(job, 2).await.unwrap().unwrap();
        assert_eq!((format, &bytes[..]), (ImageFormat::Png, &b"png bytes"[..]));
        assert_eq!(pages.get_page(job, 1).await.unwrap(), None);
        assert_eq!(
            pages.list_pages(job).await.unwrap(),
            vec![(2, ImageFormat::Png)]
        );
        let scratch_dir = scratch.dir().to_path_buf();
        drop(scratch);
        assert!(!scratch_dir.exists(), "scratch space goes with its guard");
        pages.remove_pages(job).await.unwrap();
        assert_eq!(pages.get_page(job, 2).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_kept_input_is_readable_until_removed() {
        let (_dir, pages) = store();
        let job = Uuid::new_v4();
        let kept = pages
            .keep_input(job, Bytes::from_static(b"%PDF"))
            .await
            .unwrap();
        assert!(pages.has_input(&kept).await);
        let local = pages
            .local_input(job, &JobInput::Stored(kept.clone()))
            .unwrap();
        assert_eq!(std::fs::read(local.path()).unwrap(), b"%PDF");
        pages.remove_input(&kept).await.unwrap();
        assert!(!pages.has_input(&kept).await);
        let spooled = pages
            .local_input(job, &JobInput::Inline(Bytes::from_static(b"x")))
            .unwrap();
        let path = spooled.path().to_path_buf();
        assert!(path.is_file());
        drop(spooled);
        assert!(!path.exists(), "a spooled copy goes with its guard");
    }

    /// A spooled upload of `bytes`, written as a route does.
    async fn spool(pages: &LocalPages, bytes: &[u8]) -> Arc<SpoolFile> {
        let mut writer = pages.spool_upload().unwrap();
        writer.write(bytes).await.unwrap();
        Arc::new(writer.finish().await.unwrap())
    }

    #[tokio::test]
    async fn a_spooled_upload_lies_in_the_spool_folder_until_its_last_holder_drops() {
        let (dir, pages) = store();
        let file = spool(&pages, b"%PDF spooled").await;
        let path = file.path().to_path_buf();
        assert_eq!(path.parent(), Some(dir.path().join(".spool").as_path()));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(UPLOAD_SPOOL_PREFIX), "{name}");
        assert_eq!(file.len(), 12);
        let job = Uuid::new_v4();
        let local = pages
            .local_input(job, &JobInput::Spooled(Arc::clone(&file)))
            .unwrap();
        assert_eq!(local.path(), path, "the renderer reads the spool file");
        drop(file);
        assert!(path.is_file(), "the renderer's input holds the file");
        drop(local);
        assert!(!path.exists(), "the last holder removes the file");
    }

    #[tokio::test]
    async fn an_unfinished_spool_file_goes_with_its_writer() {
        let (_dir, pages) = store();
        let mut writer = pages.spool_upload().unwrap();
        writer.write(b"%PDF half").await.unwrap();
        let path = writer.file.path().to_path_buf();
        assert!(path.is_file());
        drop(writer);
        assert!(!path.exists(), "a cut upload leaves no file");
    }

    #[tokio::test]
    async fn a_kept_spooled_upload_is_linked_and_outlives_its_spool_file() {
        let (_dir, pages) = store();
        let file = spool(&pages, b"%PDF kept").await;
        let job = Uuid::new_v4();
        let kept = pages.keep_spooled(job, &file).await.unwrap();
        assert_eq!(kept, InputRef::Kept { job_id: job });
        let kept_path = pages.layout.input(job);
        use std::os::unix::fs::MetadataExt;
        let (spooled_meta, kept_meta) = (
            std::fs::metadata(file.path()).unwrap(),
            std::fs::metadata(&kept_path).unwrap(),
        );
        assert_eq!(spooled_meta.ino(), kept_meta.ino(), "a link, not a copy");
        let spool_path = file.path().to_path_buf();
        drop(file);
        assert!(!spool_path.exists(), "the spool name goes with its guard");
        assert!(pages.has_input(&kept).await);
        assert_eq!(std::fs::read(&kept_path).unwrap(), b"%PDF kept");
        pages.remove_input(&kept).await.unwrap();
        assert!(!pages.has_input(&kept).await);
    }
}
