//! Retention: finished jobs leave memory after [`FINISHED_IN_MEMORY`]
//! (the records answer for them afterwards), and after `RESULT_TTL_SECS`
//! the lease holder removes their records, pages and kept inputs, and the
//! pages of sync jobs (which have no record: the age of their pages tells).

use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use super::{AsyncJobs, FINISHED_IN_MEMORY};
use crate::storage::InputRef;

/// Records removed per round trip to the store.
const REMOVE_BATCH: usize = 500;

impl AsyncJobs {
    /// Periodic housekeeping. Every instance forgets its own finished jobs
    /// and recounts the records; the lease holder alone removes expired
    /// records and output (async and sync) and dead instances' marks.
    pub async fn sweep(&self) {
        let cutoff = self
            .now_ms()
            .saturating_sub(self.config.result_ttl.as_millis() as u64);
        self.forget_finished();
        if self.is_primary() {
            self.remove_expired(cutoff).await;
        }
        match self.records.count().await {
            Ok(n) => self.record_count.store(n, Ordering::Relaxed),
            Err(e) => tracing::warn!("cannot count job records: {e}"),
        }
    }

    /// Drops finished jobs from memory once [`FINISHED_IN_MEMORY`] has
    /// passed: memory holds the running jobs and those of the last
    /// seconds, not a TTL's worth of pages and events. Cheap; run more
    /// often than [`AsyncJobs::sweep`].
    pub fn forget_finished(&self) {
        let ttl_ms = self.config.result_ttl.as_millis() as u64;
        let keep_ms = ttl_ms.min(FINISHED_IN_MEMORY.as_millis() as u64);
        let forget_before = self.now_ms().saturating_sub(keep_ms);
        self.live
            .lock()
            .retain(|_, t| t.finished_ms().is_none_or(|f| f > forget_before));
    }

    async fn remove_expired(&self, cutoff: u64) {
        loop {
            let ids = match self.records.finished_before(cutoff, REMOVE_BATCH).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!("cannot list expired jobs: {e}");
                    return;
                }
            };
            if ids.is_empty() {
                break;
            }
            for &id in &ids {
                if let Err(e) = self.pages.remove_pages(id).await {
                    tracing::warn!(job_id = %id, "cannot remove an expired job's pages: {e}");
                }
                let _ = self
                    .pages
                    .remove_input(&InputRef::Kept { job_id: id })
                    .await;
            }
            let n = ids.len();
            if let Err(e) = self.records.delete(ids).await {
                tracing::error!("cannot delete expired jobs: {e}");
                return;
            }
            self.stats.removed.fetch_add(n as u64, Ordering::Relaxed);
            tracing::info!(jobs = n, "removed expired async jobs");
            if n < REMOVE_BATCH {
                break;
            }
        }
        self.remove_expired_sync_pages(cutoff).await;
        self.members.prune();
    }

    /// Sync jobs' pages have no record: their age tells.
    async fn remove_expired_sync_pages(&self, cutoff: u64) {
        let before = UNIX_EPOCH + Duration::from_millis(cutoff);
        let old = match self.pages.jobs_older_than(before).await {
            Ok(old) => old,
            Err(e) => {
                tracing::warn!("cannot list old pages: {e}");
                return;
            }
        };
        let mut removed = 0;
        for id in old {
            let unrecorded = matches!(self.records.get(id).await, Ok(None));
            if unrecorded && self.pages.remove_pages(id).await.is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(folders = removed, "removed expired sync job output");
        }
    }
}
