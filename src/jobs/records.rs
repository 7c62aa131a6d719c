//! The job records seam: what async jobs need from durable storage,
//! async so that a networked store fits behind it. [`SqliteRecords`] is
//! the local implementation: the SQLite [`Store`], its reads moved off the
//! async threads with `spawn_blocking` (they take well under a millisecond,
//! up to the busy timeout when another process holds the write lock).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use super::store::{JobRecord, JobState, Store, StoreError, StoreStats};

/// A job's new state, and what it ended with.
#[derive(Debug, Clone)]
pub struct Change {
    pub state: JobState,
    /// The reply, when done.
    pub result: Option<Value>,
    /// The error body, when failed, cancelled or expired.
    pub error: Option<Value>,
    pub finished_ms: Option<u64>,
}

/// Durable records of async jobs, shared by every instance.
pub trait JobRecords: Send + Sync + 'static {
    /// Returns once the record is durable; a reused idempotency key is
    /// [`StoreError::DuplicateKey`].
    fn insert(&self, record: JobRecord) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Records a new state without waiting (ordered after the insert).
    fn update(&self, id: Uuid, change: Change);
    fn get(&self, id: Uuid) -> BoxFuture<'_, Result<Option<JobRecord>, StoreError>>;
    fn find_by_key(&self, key: String) -> BoxFuture<'_, Result<Option<JobRecord>, StoreError>>;
    /// Queued or running jobs, oldest first.
    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<JobRecord>, StoreError>>;
    /// Moves a job from owner `from` to `to`, atomically; false if another
    /// instance took it first.
    fn claim(&self, id: Uuid, from: String, to: String) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Final jobs that finished at or before `cutoff_ms`, at most `limit`.
    fn finished_before(
        &self,
        cutoff_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Uuid>, StoreError>>;
    fn delete(&self, ids: Vec<Uuid>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Records of every instance.
    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Waits until every write sent so far has landed.
    fn flush(&self) -> BoxFuture<'_, ()>;
    fn stats(&self) -> StoreStats;
    /// Where the records live, for `/status`.
    fn location(&self) -> String;
}

/// The SQLite job database as the job records.
pub struct SqliteRecords(Arc<Store>);

impl SqliteRecords {
    pub fn new(store: Store) -> Self {
        SqliteRecords(Arc::new(store))
    }

    /// Runs a blocking store call on the blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let store = Arc::clone(&self.0);
        Box::pin(async move {
            let path = store.path().to_path_buf();
            tokio::task::spawn_blocking(move || call(&store))
                .await
                .unwrap_or_else(|e| {
                    Err(StoreError::Read {
                        path,
                        detail: format!("the read task failed: {e}"),
                    })
                })
        })
    }
}

impl JobRecords for SqliteRecords {
    fn insert(&self, record: JobRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.0.insert(record))
    }

    fn update(&self, id: Uuid, change: Change) {
        let Change {
            state,
            result,
            error,
            finished_ms,
        } = change;
        self.0.update(id, state, result, error, finished_ms);
    }

    fn get(&self, id: Uuid) -> BoxFuture<'_, Result<Option<JobRecord>, StoreError>> {
        self.blocking(move |s| s.get(id))
    }

    fn find_by_key(&self, key: String) -> BoxFuture<'_, Result<Option<JobRecord>, StoreError>> {
        self.blocking(move |s| s.find_by_key(&key))
    }

    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<JobRecord>, StoreError>> {
        self.blocking(|s| s.unfinished())
    }

    fn claim(&self, id: Uuid, from: String, to: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.blocking(move |s| s.claim(id, &from, &to))
    }

    fn finished_before(
        &self,
        cutoff_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Uuid>, StoreError>> {
        self.blocking(move |s| s.finished_before(cutoff_ms, limit))
    }

    fn delete(&self, ids: Vec<Uuid>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |s| s.delete(&ids))
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.blocking(|s| s.count())
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self
                .blocking(|s| {
                    s.flush();
                    Ok(())
                })
                .await;
        })
    }

    fn stats(&self) -> StoreStats {
        self.0.stats()
    }

    fn location(&self) -> String {
        self.0.path().display().to_string()
    }
}
