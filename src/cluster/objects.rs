//! The page store of cluster mode: inputs, pages and their owners in an
//! S3-compatible object store (through the `object_store` crate), so that
//! every node serves every job's pages. Scratch space, spooled uploads and
//! the free-space floor stay on the node's own output folder.
//!
//! Keys under the store's prefix:
//!
//! ```text
//! pages/<job_id>/page-001.png     a rendered page (its format's extension)
//! pages/<job_id>/.tenant          the tenant of a sync job's pages
//! inputs/<job_id>.pdf             an upload kept while its job may run
//! ```
//!
//! A page is written in one PUT from the renderer's finished file, so a
//! reader never sees half a page; an upload past 8 MiB goes up in parts
//! (a multipart upload is only visible once it completes). Requests are
//! retried with backoff by the crate for up to [`RETRY_WINDOW`]; past it
//! the operation fails and the job with it.

use std::io;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use uuid::Uuid;

use crate::storage::{
    ImageFormat, InputRef, JobInput, Kept, Layout, LocalInput, LocalPages, PageRead, PageStore,
    Scratch, SpoolFile, SpoolWriter, StoreOp, StoredPage,
};

/// How long one store operation is retried before it fails.
pub const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// Uploads larger than this go up in parts.
const MULTIPART_ABOVE: u64 = 8 * 1024 * 1024;

/// Pages and inputs in an object store; scratch on the local disk.
pub struct ObjectPages {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    local: LocalPages,
    /// For the one blocking call of the trait ([`PageStore::local_input`]
    /// of an input kept in the store), made on worker threads.
    runtime: tokio::runtime::Handle,
}

/// `PAGE_STORE_URL` as a store and a prefix: `s3://bucket/prefix`, with
/// the `AWS_*` variables (endpoint, credentials, region, plain HTTP).
pub fn open_s3(url: &str) -> io::Result<(Arc<dyn ObjectStore>, Path)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        io::Error::other(format!("PAGE_STORE_URL {url:?} must be s3://bucket/prefix"))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(io::Error::other(format!(
            "PAGE_STORE_URL {url:?} names no bucket"
        )));
    }
    let retry = object_store::RetryConfig {
        retry_timeout: RETRY_WINDOW,
        max_retries: 8,
        ..Default::default()
    };
    // Set key by key: client options as a whole would replace what the
    // `AWS_*` variables set (`AWS_ALLOW_HTTP` among them).
    use object_store::aws::AmazonS3ConfigKey as Key;
    use object_store::ClientConfigKey;
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .with_config(Key::Client(ClientConfigKey::Timeout), "30s")
        .with_config(Key::Client(ClientConfigKey::ConnectTimeout), "2s")
        .build()
        .map_err(io::Error::other)?;
    Ok((Arc::new(store), Path::from(prefix.trim_matches('/'))))
}

fn store_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        other => io::Error::other(other),
    }
}

fn not_found_is_none<T>(result: object_store::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error(e)),
    }
}

const OWNER: &str = ".tenant";

impl ObjectPages {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        layout: &Layout,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        ObjectPages {
            store,
            prefix,
            local: LocalPages::new(layout.clone()),
            runtime,
        }
    }

    fn key(&self, parts: &[&str]) -> Path {
        let mut path = self.prefix.clone();
        for part in parts {
            path = path.clone().join(*part);
        }
        path
    }

    fn pages_dir(&self, job_id: Uuid) -> Path {
        self.key(&["pages", &job_id.to_string()])
    }

    fn page_key(&self, job_id: Uuid, page: u32, format: ImageFormat) -> Path {
        let name = crate::storage::page_file_name(page, format);
        self.key(&["pages", &job_id.to_string(), &name])
    }

    fn input_key(&self, job_id: Uuid) -> Path {
        self.key(&["inputs", &format!("{job_id}.pdf")])
    }

    async fn put_file(&self, key: &Path, file: &FsPath) -> io::Result<()> {
        let len = tokio::fs::metadata(file).await?.len();
        if len <= MULTIPART_ABOVE {
            let bytes = tokio::fs::read(file).await?;
            self.store
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(store_error)?;
            return Ok(());
        }
        use tokio::io::AsyncReadExt;
        let upload = self.store.put_multipart(key).await.map_err(store_error)?;
        let mut writer = WriteMultipart::new(upload);
        let mut file = tokio::fs::File::open(file).await?;
        let mut chunk = vec![0; 1024 * 1024];
        loop {
            let n = match file.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            if n == 0 {
                break;
            }
            writer.write(&chunk[..n]);
        }
        writer.finish().await.map_err(store_error)?;
        Ok(())
    }

    /// Fetches an input kept in the store into a local spool file (removed
    /// when the returned guard drops).
    pub async fn fetch_input(&self, job_id: Uuid) -> io::Result<SpoolFile> {
        let got = self
            .store
            .get(&self.input_key(job_id))
            .await
            .map_err(store_error)?;
        let mut stream = got.into_stream();
        let mut writer = self.local.spool_upload()?;
        while let Some(chunk) = stream.next().await {
            writer.write(&chunk.map_err(store_error)?).await?;
        }
        writer.finish().await
    }

    /// Every key under `dir`, with its last write.
    async fn list(&self, dir: &Path) -> io::Result<Vec<(Path, SystemTime)>> {
        let mut listed = self.store.list(Some(dir));
        let mut out = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(store_error)?;
            out.push((meta.location, meta.last_modified.into()));
        }
        Ok(out)
    }
}

/// `page-NNN.<ext>` of a key.
fn page_of(key: &Path) -> Option<(u32, ImageFormat)> {
    let name = key.filename()?;
    let (stem, ext) = name.strip_prefix("page-")?.rsplit_once('.')?;
    let format = ImageFormat::ALL
        .into_iter()
        .find(|f| f.extension() == ext)?;
    Some((stem.parse().ok()?, format))
}

impl PageStore for ObjectPages {
    fn scratch(&self, job_id: Uuid) -> io::Result<Scratch> {
        self.local.scratch(job_id)
    }

    fn put_page<'a>(&'a self, job_id: Uuid, page: &'a StoredPage, file: &'a FsPath) -> StoreOp<'a> {
        Box::pin(async move {
            let key = self.page_key(job_id, page.page, page.format);
            self.put_file(&key, file).await?;
            let _ = tokio::fs::remove_file(file).await;
            Ok(())
        })
    }

    fn get_page(&self, job_id: Uuid, page: u32) -> PageRead<'_> {
        Box::pin(async move {
            for format in ImageFormat::ALL {
                let key = self.page_key(job_id, page, format);
                if let Some(got) = not_found_is_none(self.store.get(&key).await)? {
                    return Ok(Some((format, got.bytes().await.map_err(store_error)?)));
                }
            }
            Ok(None)
        })
    }

    fn list_pages(&self, job_id: Uuid) -> BoxFuture<'_, io::Result<Vec<(u32, ImageFormat)>>> {
        Box::pin(async move {
            let listed = self.list(&self.pages_dir(job_id)).await?;
            let mut pages: Vec<_> = listed.iter().filter_map(|(k, _)| page_of(k)).collect();
            pages.sort_unstable_by_key(|(page, _)| *page);
            Ok(pages)
        })
    }

    fn remove_pages(&self, job_id: Uuid) -> StoreOp<'_> {
        Box::pin(async move {
            for (key, _) in self.list(&self.pages_dir(job_id)).await? {
                not_found_is_none(self.store.delete(&key).await)?;
            }
            Ok(())
        })
    }

    fn jobs_older_than(&self, before: SystemTime) -> BoxFuture<'_, io::Result<Vec<Uuid>>> {
        Box::pin(async move {
            let root = self.key(&["pages"]);
            let mut newest = std::collections::HashMap::<Uuid, SystemTime>::new();
            for (key, modified) in self.list(&root).await? {
                let job = key
                    .prefix_match(&root)
                    .and_then(|mut parts| parts.next())
                    .and_then(|part| Uuid::parse_str(part.as_ref()).ok());
                if let Some(job) = job {
                    let entry = newest.entry(job).or_insert(modified);
                    *entry = (*entry).max(modified);
                }
            }
            Ok(newest
                .into_iter()
                .filter(|(_, m)| *m < before)
                .map(|(id, _)| id)
                .collect())
        })
    }

    fn keep_input(&self, job_id: Uuid, bytes: Bytes) -> Kept<'_> {
        Box::pin(async move {
            self.store
                .put(&self.input_key(job_id), PutPayload::from(bytes))
                .await
                .map_err(store_error)?;
            Ok(InputRef::Kept { job_id })
        })
    }

    fn spool_upload(&self) -> io::Result<SpoolWriter> {
        self.local.spool_upload()
    }

    fn keep_spooled<'a>(&'a self, job_id: Uuid, upload: &'a SpoolFile) -> Kept<'a> {
        Box::pin(async move {
            self.put_file(&self.input_key(job_id), upload.path())
                .await?;
            Ok(InputRef::Kept { job_id })
        })
    }

    fn has_input<'a>(&'a self, input: &'a InputRef) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match input {
                InputRef::Kept { job_id } => {
                    self.store.head(&self.input_key(*job_id)).await.is_ok()
                }
                InputRef::Data { path } => path.is_file(),
            }
        })
    }

    fn remove_input<'a>(&'a self, input: &'a InputRef) -> StoreOp<'a> {
        Box::pin(async move {
            if let InputRef::Kept { job_id } = input {
                not_found_is_none(self.store.delete(&self.input_key(*job_id)).await)?;
            }
            Ok(())
        })
    }

    /// An input kept in the store is fetched to a local file first; that
    /// blocks, so it is refused on the async runtime's own threads (the
    /// cluster's feeder fetches inputs before it queues a job).
    fn local_input(&self, job_id: Uuid, input: &JobInput) -> io::Result<LocalInput> {
        let JobInput::Stored(InputRef::Kept { job_id: kept }) = input else {
            return self.local.local_input(job_id, input);
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(io::Error::other(
                "an input in the object store cannot be fetched on the runtime's threads",
            ));
        }
        let file = self.runtime.block_on(self.fetch_input(*kept))?;
        self.local
            .local_input(job_id, &JobInput::Spooled(Arc::new(file)))
    }

    fn set_owner<'a>(&'a self, job_id: Uuid, tenant: &'a str) -> StoreOp<'a> {
        Box::pin(async move {
            let key = self.key(&["pages", &job_id.to_string(), OWNER]);
            let payload = PutPayload::from(Bytes::copy_from_slice(tenant.as_bytes()));
            self.store.put(&key, payload).await.map_err(store_error)?;
            Ok(())
        })
    }

    fn owner(&self, job_id: Uuid) -> BoxFuture<'_, io::Result<Option<String>>> {
        Box::pin(async move {
            let key = self.key(&["pages", &job_id.to_string(), OWNER]);
            let Some(got) = not_found_is_none(self.store.get(&key).await)? else {
                return Ok(None);
            };
            let bytes = got.bytes().await.map_err(store_error)?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        })
    }

    fn free_space(&self) -> Option<u64> {
        self.local.free_space()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn pages(dir: &FsPath) -> ObjectPages {
        let layout = Layout::new(dir);
        layout.create().unwrap();
        ObjectPages::new(
            Arc::new(InMemory::new()),
            Path::from("deploy/a"),
            &layout,
            tokio::runtime::Handle::current(),
        )
    }

    #[tokio::test]
    async fn pages_owners_and_inputs_round_trip_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = pages(dir.path());
        let job = Uuid::new_v4();
        let scratch = store.scratch(job).unwrap();
        for n in [2, 1] {
            let file = scratch.dir().join(format!("p{n}"));
            std::fs::write(&file, vec![n as u8; 100]).unwrap();
            store
                .put_page(job, &StoredPage::tiny(n, 100), &file)
                .await
                .unwrap();
            assert!(!file.exists(), "the scratch file is moved, not copied");
        }
        let listed = store.list_pages(job).await.unwrap();
        assert_eq!(listed, vec![(1, ImageFormat::Png), (2, ImageFormat::Png)]);
        let (_, bytes) = store.get_page(job, 2).await.unwrap().unwrap();
        assert_eq!(&bytes[..], &[2u8; 100][..]);
        assert!(store.get_page(job, 3).await.unwrap().is_none());
        assert_eq!(store.owner(job).await.unwrap(), None);
        store.set_owner(job, "acme").await.unwrap();
        assert_eq!(store.owner(job).await.unwrap().as_deref(), Some("acme"));
        let old = store
            .jobs_older_than(SystemTime::now() + Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(old, vec![job]);
        store.remove_pages(job).await.unwrap();
        assert!(store.list_pages(job).await.unwrap().is_empty());
        assert_eq!(store.owner(job).await.unwrap(), None);

        let kept = store
            .keep_input(job, Bytes::from_static(b"%PDF-1.7"))
            .await
            .unwrap();
        assert!(store.has_input(&kept).await);
        let fetched = store.fetch_input(job).await.unwrap();
        assert_eq!(std::fs::read(fetched.path()).unwrap(), b"%PDF-1.7");
        store.remove_input(&kept).await.unwrap();
        assert!(!store.has_input(&kept).await);
    }

    #[tokio::test]
    async fn a_kept_input_is_not_fetched_blocking_on_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = pages(dir.path());
        let job = Uuid::new_v4();
        let input = JobInput::Stored(InputRef::Kept { job_id: job });
        assert!(store.local_input(job, &input).is_err());
    }
}
