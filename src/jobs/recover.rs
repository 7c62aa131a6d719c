//! Recovery: the async jobs of an instance that died (this one before a
//! crash, or another sharing the records) are claimed and run again,
//! rebuilt from their recorded request by their worker type ([`Resume`])
//! and admitted under what is left of their deadline.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{AsyncJobs, JobRecord};
use crate::queue::{JobError, QueueError};

/// A worker type's way of running a recorded job again.
pub trait Resume: Send + Sync + 'static {
    /// Rebuilds the job from its record and admits it; an error ends the
    /// job with that error (its budget is spent, its input is gone, ...).
    fn resume(
        self: Arc<Self>,
        jobs: Arc<AsyncJobs>,
        record: JobRecord,
    ) -> BoxFuture<'static, Result<(), QueueError>>;
}

impl AsyncJobs {
    /// Unfinished jobs whose owner died, claimed for this instance.
    pub async fn claim_orphans(&self) -> Vec<JobRecord> {
        let records = match self.records.unfinished().await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!("cannot read unfinished jobs: {e}");
                return Vec::new();
            }
        };
        let mut claimed = Vec::new();
        for mut record in records {
            if record.owner == self.instance_id() || !self.members.is_dead(&record.owner) {
                continue;
            }
            let me = self.instance_id().to_string();
            match self
                .records
                .claim(record.id, record.owner.clone(), me.clone())
                .await
            {
                Ok(true) => {
                    record.owner = me;
                    claimed.push(record);
                }
                Ok(false) => {}
                Err(e) => tracing::error!(job_id = %record.id, "cannot claim an orphaned job: {e}"),
            }
        }
        claimed
    }
}

/// Claims the jobs of dead instances and runs each again through the
/// worker type `kind_of` names for it; one whose type is not registered
/// here ends failed.
pub async fn resume_orphans(
    jobs: &Arc<AsyncJobs>,
    kind_of: impl Fn(&str) -> Option<(&'static str, Arc<dyn Resume>)>,
) {
    let records = jobs.claim_orphans().await;
    if records.is_empty() {
        return;
    }
    tracing::info!(
        jobs = records.len(),
        "resuming async jobs of a stopped instance"
    );
    for record in records {
        let id = record.id;
        let (name, result) = match kind_of(&record.kind) {
            Some((name, kind)) => (name, kind.resume(Arc::clone(jobs), record.clone()).await),
            None => {
                let message = format!("no worker type {:?} is registered", record.kind);
                (
                    "unknown",
                    Err(QueueError::job(id, JobError::Failed(message))),
                )
            }
        };
        if let Err(err) = result {
            jobs.finish_unrun(&record, name, err).await;
        }
    }
}
