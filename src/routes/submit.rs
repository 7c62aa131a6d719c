//! Submitting a job of any worker type, sync or async: one path for
//! every type's route. Sync: build, run on the type's queue, reply.
//! Async: the same admission rules, the input kept by the page store, the
//! record committed, then `202` with the job's view and `Location`.
//! Either way a type that makes pages is refused (`503
//! insufficient_storage`) while the page store's free space is below
//! `MIN_FREE_DISK_MB`, before anything is rendered or kept.

use std::sync::Arc;

use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::AsyncMode;
use crate::jobs::{AsyncRequest, Idempotency, JobSnapshot};
use crate::kind::{to_result, JobKind, Recorded};
use crate::state::AppState;
use crate::storage::{is_storage_full, InputRef, JobInput, SpoolFile};
use crate::tenants::Caller;
use crate::upload::store_error;

use super::view::JobView;

/// A request for a job of type `K`, as a route has read it.
pub struct Submit<'a, K: JobKind> {
    pub state: &'a AppState,
    pub kind: &'a Arc<K>,
    pub mode: &'a AsyncMode,
    /// The tenant the job will belong to.
    pub caller: &'a Caller,
    /// Places taken before the body was read ([`super::admission`]);
    /// what is missing is taken at submit.
    pub reserved: Reserved<K::Worker>,
}

/// Places a request holds for its job.
pub struct Reserved<W: crate::queue::Worker> {
    pub queue: Option<crate::queue::Place<W>>,
    pub record: Option<crate::jobs::RecordPlace>,
}

impl<W: crate::queue::Worker> Default for Reserved<W> {
    fn default() -> Self {
        Reserved {
            queue: None,
            record: None,
        }
    }
}

impl<'a, K: JobKind> Submit<'a, K> {
    /// A request that reserved nothing before its body was read: its
    /// places are taken at submit.
    pub fn new(
        state: &'a AppState,
        kind: &'a Arc<K>,
        mode: &'a AsyncMode,
        caller: &'a Caller,
    ) -> Self {
        Submit {
            state,
            kind,
            mode,
            caller,
            reserved: Reserved::default(),
        }
    }

    /// Runs the job and replies, or in async mode accepts it (202).
    pub async fn run_or_accept(self, params: K::Params, input: Option<JobInput>) -> Reply {
        if self.mode.is_async {
            return self.accept(params, input).await;
        }
        if let Some(cluster) = self.state.cluster.as_ref().filter(|c| c.handles(K::NAME)) {
            drop(self.reserved.queue);
            let (job_id, reply) =
                run_clustered(self.state, &**cluster, self.kind, params, input).await?;
            if let (Some(tenant), true) = (self.caller.owner(), K::MAKES_PAGES) {
                own_pages(self.state, job_id, tenant).await?;
            }
            return Ok(Json(reply).into_response());
        }
        let queue_place = match self.reserved.queue {
            Some(place) => Some(place),
            None => Some(self.kind.queue().reserve_as(self.caller.tenant())?),
        };
        let done = run_in(self.state, self.kind, &params, input.as_ref(), queue_place).await?;
        if let (Some(tenant), true) = (self.caller.owner(), K::MAKES_PAGES) {
            own_pages(self.state, done.job_id, tenant).await?;
        }
        Ok(Json(self.kind.reply(done)).into_response())
    }

    /// Accepts the job in async mode.
    pub async fn accept(self, params: K::Params, input: Option<JobInput>) -> Reply {
        accept(
            self.state,
            self.kind,
            self.mode,
            self.caller,
            params,
            input,
            self.reserved,
        )
        .await
    }
}

/// Marks a sync job's pages as `tenant`'s before their URLs are given out
/// (an async job's owner is in its record). Pages that cannot be marked
/// would be no one's: they are removed and the job fails.
async fn own_pages(state: &AppState, job_id: Uuid, tenant: &str) -> Result<(), ApiError> {
    match state.pages.set_owner(job_id, tenant).await {
        Ok(()) => Ok(()),
        // No folder: the job stored no page.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            let _ = state.pages.remove_pages(job_id).await;
            let message = format!("cannot record the pages' owner: {e}");
            Err(match is_storage_full(&e) {
                true => ApiError::InsufficientStorage(message),
                false => ApiError::Internal(message),
            })
        }
    }
}

/// What a submit route answers.
pub type Reply = Result<Response, ApiError>;

/// Builds and runs a job of type `K` on its queue, answering when it is
/// done (503 at once when the type is unavailable, its queue is full or
/// there is no room for its pages).
pub async fn run<K: JobKind>(
    state: &AppState,
    kind: &Arc<K>,
    params: &K::Params,
    input: Option<&JobInput>,
) -> Result<crate::queue::Completed<crate::kind::OutputOf<K>>, ApiError> {
    run_in(state, kind, params, input, None).await
}

/// [`run`] in a queue place reserved before, if any.
async fn run_in<K: JobKind>(
    state: &AppState,
    kind: &Arc<K>,
    params: &K::Params,
    input: Option<&JobInput>,
    place: Option<crate::queue::Place<K::Worker>>,
) -> Result<crate::queue::Completed<crate::kind::OutputOf<K>>, ApiError> {
    refuse_if_unavailable(&**kind)?;
    refuse_if_no_room::<K>(state)?;
    let (job, options) = kind.build(params, input)?;
    let queue = kind.queue();
    let pending = match place {
        Some(place) => queue.submit_in(place, job, options)?,
        None => queue.submit(job, options)?,
    };
    Ok(pending.wait().await?)
}

/// Runs a sync job on whichever node of the cluster has an idle worker:
/// checked here (a 4xx is this node's), budgets fixed here, the reply as
/// the running node wrote it.
async fn run_clustered<K: JobKind>(
    state: &AppState,
    cluster: &dyn crate::dispatch::Dispatcher,
    kind: &Arc<K>,
    params: K::Params,
    input: Option<JobInput>,
) -> Result<(Uuid, serde_json::Value), ApiError> {
    refuse_if_unavailable(&**kind)?;
    refuse_if_no_room::<K>(state)?;
    let (_, options) = kind.build(&params, input.as_ref())?;
    let pool = kind.queue().config();
    let budget = options
        .timeout
        .map_or(pool.timeout, |t| t.min(pool.timeout));
    let request = serde_json::to_value(Recorded {
        params,
        input: None,
    })
    .map_err(|e| ApiError::Internal(format!("cannot record the request: {e}")))?;
    let job_id = Uuid::new_v4();
    let reply = cluster
        .run(crate::dispatch::SyncJob {
            kind: K::NAME,
            job_id,
            request,
            input,
            queue_budget: pool.queue_timeout.min(budget),
            budget,
        })
        .await?;
    Ok((job_id, reply))
}

pub(super) fn refuse_if_unavailable<K: JobKind>(kind: &K) -> Result<(), ApiError> {
    match kind.unavailable() {
        Some(reason) => Err(ApiError::Unavailable(format!(
            "{} jobs cannot run now: {reason}",
            K::NAME
        ))),
        None => Ok(()),
    }
}

/// A type that makes pages needs room for them: below the floor, 503.
pub(super) fn refuse_if_no_room<K: JobKind>(state: &AppState) -> Result<(), ApiError> {
    if !K::MAKES_PAGES {
        return Ok(());
    }
    match state.disk_shortage() {
        Some(shortage) => Err(ApiError::InsufficientStorage(format!(
            "{} jobs are not taken now: {shortage}",
            K::NAME
        ))),
        None => Ok(()),
    }
}

/// The 202 reply: the job's view, `Location`, and what was applied.
pub fn accepted(view: JobView, mode: &AsyncMode, replayed: bool) -> Response {
    let location = view.links.this.clone();
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(LOCATION, value);
    }
    if mode.preferred {
        headers.insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// A digest of what the request asks for, so that a reused key with
/// another request is told apart. An upload's bytes count alike held in
/// memory or spooled (read back from its file), so the threshold never
/// changes a fingerprint.
async fn fingerprint(
    kind: &str,
    params: &serde_json::Value,
    input: Option<&JobInput>,
) -> Result<String, ApiError> {
    let mut hash = Sha256::new();
    hash.update(kind.as_bytes());
    hash.update([0]);
    hash.update(params.to_string().as_bytes());
    hash.update([0]);
    match input {
        Some(JobInput::Inline(bytes)) => hash.update(bytes),
        Some(JobInput::Spooled(file)) => hash = hash_file(hash, Arc::clone(file)).await?,
        Some(JobInput::Stored(stored)) => {
            hash.update(serde_json::to_string(stored).unwrap_or_default().as_bytes())
        }
        None => {}
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Feeds a spooled upload to `hash`, read in chunks off the runtime's threads.
async fn hash_file(mut hash: Sha256, file: Arc<SpoolFile>) -> Result<Sha256, ApiError> {
    let read = tokio::task::spawn_blocking(move || {
        file.read_chunks(|chunk| hash.update(chunk)).map(|()| hash)
    });
    read.await
        .map_err(std::io::Error::other)
        .and_then(|hashed| hashed)
        .map_err(|e| ApiError::Internal(format!("cannot read the upload: {e}")))
}

/// Accepts a job of type `K` in async mode.
async fn accept<K: JobKind>(
    state: &AppState,
    kind: &Arc<K>,
    mode: &AsyncMode,
    caller: &Caller,
    params: K::Params,
    input: Option<JobInput>,
    reserved: Reserved<K::Worker>,
) -> Reply {
    let view = |job: JobSnapshot| JobView::of(job, K::MAKES_PAGES);
    let recorded_params = serde_json::to_value(&params)
        .map_err(|e| ApiError::Internal(format!("cannot record the request: {e}")))?;
    let idempotency = match mode.idempotency_key.clone() {
        Some(key) => Some(Idempotency {
            key,
            fingerprint: fingerprint(K::NAME, &recorded_params, input.as_ref()).await?,
        }),
        None => None,
    };
    if let Some(idem) = &idempotency {
        if let Some(job) = state.jobs.find_by_key(idem).await? {
            return Ok(accepted(view(job), mode, true));
        }
    }
    refuse_if_unavailable(&**kind)?;
    refuse_if_no_room::<K>(state)?;
    // Places first: refuse before keeping an upload for nothing.
    let queue_place = match reserved.queue {
        Some(place) => place,
        None => kind.queue().reserve_as(caller.tenant())?,
    };
    let record_place = match reserved.record {
        Some(place) => place,
        None => state.jobs.reserve_record()?,
    };
    kind.build(&params, input.as_ref())?;
    let job_id = Uuid::new_v4();
    let cannot_keep = |e: std::io::Error| store_error(format!("cannot keep the upload: {e}"), &e);
    // A spooled upload is linked into place; its spool file goes when
    // `file` drops, at the end of this match.
    let stored = match input {
        Some(JobInput::Inline(bytes)) => Some(
            state
                .pages
                .keep_input(job_id, bytes)
                .await
                .map_err(cannot_keep)?,
        ),
        Some(JobInput::Spooled(file)) => Some(
            state
                .pages
                .keep_spooled(job_id, &file)
                .await
                .map_err(cannot_keep)?,
        ),
        Some(JobInput::Stored(stored)) => Some(stored),
        None => None,
    };
    let input = stored.clone().map(JobInput::Stored);
    let (job, options) = kind.build(&params, input.as_ref())?;
    let request = serde_json::to_value(Recorded {
        params,
        input: stored.clone(),
    })
    .map_err(|e| ApiError::Internal(format!("cannot record the request: {e}")))?;
    let kept = stored.filter(|s| matches!(s, InputRef::Kept { .. }));
    let accepted_job = state
        .jobs
        .submit(
            kind.queue(),
            AsyncRequest {
                job_id,
                kind: K::NAME,
                job,
                options,
                request,
                idempotency,
                input: kept,
                to_result: to_result(Arc::clone(kind)),
                record_place: Some(record_place),
                queue_place: Some(queue_place),
                tenant: caller.owner().map(Arc::from),
            },
        )
        .await?;
    Ok(accepted(
        view(accepted_job.job),
        mode,
        accepted_job.replayed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Layout, LocalPages, PageStore};

    #[tokio::test]
    async fn an_upload_has_one_fingerprint_held_in_memory_or_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let pages = LocalPages::new(layout);
        let bytes = b"%PDF-1.7 the same upload".repeat(50_000);
        let mut writer = pages.spool_upload().unwrap();
        for chunk in bytes.chunks(7_000) {
            writer.write(chunk).await.unwrap();
        }
        let spooled = JobInput::Spooled(Arc::new(writer.finish().await.unwrap()));
        let inline = JobInput::Inline(bytes.clone().into());
        let params = serde_json::json!({"dpi": 72});
        let of = |input| fingerprint("pdf", &params, Some(input));
        let (a, b) = (of(&inline).await.unwrap(), of(&spooled).await.unwrap());
        assert_eq!(a, b, "the threshold does not change a fingerprint");
        let other = JobInput::Inline(bytes[1..].to_vec().into());
        assert_ne!(of(&other).await.unwrap(), b, "other bytes, another one");
    }
}
