//! Admission before the body: a job route takes its reservation when the
//! request's headers end, before a byte of the body is read (and before any
//! `100 Continue`), or refuses at once.
//!
//! [`Admission<K>`] is an extractor that runs before the body extractor. It
//! refuses a type whose engine is unavailable or, for types that make
//! pages, a store below `MIN_FREE_DISK_MB`; then it takes, each atomically, so that requests arriving together cannot all
//! see room:
//!
//! 1. upload bytes from the server-wide [`UploadBudget`]
//!    (`MAX_UPLOAD_BYTES_IN_FLIGHT`): the declared `Content-Length`, or the
//!    largest body a job route takes for a body of unknown length (a
//!    declared length above that is a 413 here);
//! 2. a place in the type's queue ([`crate::queue::Place`]), within the
//!    tenant's fair share when API keys are on (429 `fair_share`);
//! 3. in async mode (query or headers), a place for the job's record
//!    ([`crate::jobs::RecordPlace`], `MAX_TRACKED_JOBS`).
//!
//! An async request whose `Idempotency-Key` a job already holds takes no
//! places: it is a retry, answered from that job (or refused as a reused
//! key) once its body is read, however full the queue is.
//!
//! Any refusal is the 503, 429 or 413 the client gets, with the body
//! unread: a small body that has arrived is dropped and the connection
//! kept, any other connection is closed in stages so the client reads the
//! answer. The places pass to the job when it is queued; the upload bytes
//! are held until the request ends (a sync job's input is held until it is
//! answered: in memory up to `UPLOAD_SPOOL_THRESHOLD_BYTES`, past it in a
//! spool file; an async one is kept by the page store before the 202);
//! whatever is not used is given back when the request ends, including
//! when the connection's body timeouts cut the upload.
//!
//! A `mode` carried inside a body (a multipart or JSON field) is known only
//! after the body was read: a body that turns a sync request async takes
//! its record place then, and may still be refused (503 `too_many_jobs`)
//! after its upload; one that turns it sync gives its record place back.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::extract::AsyncMode;
use crate::jobs::RecordPlace;
use crate::kind::JobKind;
use crate::queue::Place;
use crate::serve::UploadBytes;
use crate::state::AppState;
use crate::storage::JobInput;
use crate::tenants::Caller;

use super::submit::{Reply, Reserved, Submit};

/// A job request of type `K` admitted from its headers (see the module
/// docs): the type, the mode asked for, and the places held for the job.
pub struct Admission<K: JobKind> {
    pub kind: Arc<K>,
    pub mode: AsyncMode,
    /// The tenant the job will belong to.
    pub caller: Caller,
    queue: Option<Place<K::Worker>>,
    record: Option<RecordPlace>,
    /// An async retry under a key a job holds: it takes no places.
    replay: bool,
    _upload: Option<UploadBytes>,
}

impl<K: JobKind> FromRequestParts<AppState> for Admission<K> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let kind = state
            .kind::<K>()
            .ok_or_else(|| ApiError::Unavailable(format!("no {} workers run here", K::NAME)))?;
        let caller = Caller::from_request_parts(parts, state).await?;
        let mode = AsyncMode::of_request(parts)?;
        super::submit::refuse_if_unavailable(&*kind)?;
        super::submit::refuse_if_no_room::<K>(state)?;
        let upload = take_upload_bytes(parts, state)?;
        // A retry under a key already used is answered from its job (or
        // refused as a reused key) once the body is read: it needs no place.
        let replay = match (&mode.idempotency_key, mode.is_async) {
            (Some(key), true) => state.jobs.key_is_taken(key).await?,
            _ => false,
        };
        // A sync job the cluster runs takes its place in the cluster's
        // queue when it is published; here only a refusal that is already
        // certain (cut off, fenced, the cluster's queue full).
        let cluster = state.cluster.as_ref().filter(|c| c.handles(K::NAME));
        let queue = match (replay, cluster) {
            (true, _) => None,
            (false, Some(cluster)) if !mode.is_async => {
                cluster.admit(K::NAME)?;
                None
            }
            (false, _) => Some(kind.queue().reserve_as(caller.tenant())?),
        };
        let record = match mode.is_async && !replay {
            true => Some(state.jobs.reserve_record()?),
            false => None,
        };
        Ok(Admission {
            kind,
            mode,
            caller,
            queue,
            record,
            replay,
            _upload: upload,
        })
    }
}

/// The upload bytes a request's body may take: its declared length, or the
/// largest body of any job route when the length is unknown (chunked).
fn take_upload_bytes(parts: &Parts, state: &AppState) -> Result<Option<UploadBytes>, ApiError> {
    let largest = state.config.largest_body() as u64;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let bytes = match declared {
        Some(0) => return Ok(None),
        Some(n) if n > largest => {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body declares {n} bytes; job routes take at most {largest} (MAX_UPLOAD_BYTES, MAX_BODY_BYTES)"
            )))
        }
        Some(n) => n,
        None if parts.headers.contains_key(TRANSFER_ENCODING) => largest,
        None => return Ok(None),
    };
    state
        .uploads
        .take(bytes)
        .map(Some)
        .ok_or(ApiError::UploadsInFlight {
            limit: state.uploads.limit(),
            retry_after: 1,
        })
}

impl<K: JobKind> Admission<K> {
    /// Applies a `mode` the body carried: a request that turns async takes
    /// its record place now (and may be refused), one that turns sync gives
    /// it back.
    pub fn apply_mode(&mut self, state: &AppState, mode: Option<&str>) -> Result<(), ApiError> {
        self.mode.apply(mode)?;
        match (self.mode.is_async, self.record.is_some()) {
            (true, false) if !self.replay => self.record = Some(state.jobs.reserve_record()?),
            (false, true) => self.record = None,
            _ => {}
        }
        Ok(())
    }

    /// Runs the job and replies, or in async mode accepts it (202), in the
    /// places this request holds.
    pub async fn run_or_accept(
        self,
        state: &AppState,
        params: K::Params,
        input: Option<JobInput>,
    ) -> Reply {
        let Admission {
            kind,
            mode,
            caller,
            queue,
            record,
            _upload,
            ..
        } = self;
        let submit = Submit {
            state,
            kind: &kind,
            mode: &mode,
            caller: &caller,
            reserved: Reserved { queue, record },
        };
        submit.run_or_accept(params, input).await
    }
}
