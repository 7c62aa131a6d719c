//! The HTTP view of jobs and pages: what `GET /jobs/{id}`, the 202 of an
//! async submit and every event carry, with the URLs a client follows.

use serde::Serialize;
use uuid::Uuid;

use crate::jobs::{JobSnapshot, JobState};
use crate::storage::StoredPage;

/// A page with the URL that serves it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PageLink {
    pub page: u32,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub url: String,
}

impl PageLink {
    pub fn of(job_id: Uuid, page: &StoredPage) -> PageLink {
        PageLink {
            page: page.page,
            width: page.width,
            height: page.height,
            bytes: page.bytes,
            url: page_url(job_id, page.page),
        }
    }
}

/// Where one page of a job is served.
pub fn page_url(job_id: Uuid, page: u32) -> String {
    format!("/jobs/{job_id}/pages/{page}")
}

/// What `GET /jobs/{id}` answers, and the data of every `state` event;
/// fields without a value are left out.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub job_id: Uuid,
    /// Worker type: `pdf`, `message`, …
    pub kind: String,
    /// `queued`, `running`, `done`, `failed`, `cancelled` or `expired`.
    #[schema(value_type = String)]
    pub state: JobState,
    /// Jobs ahead of this one while queued (0: next).
    pub position: Option<u64>,
    pub worker: Option<String>,
    /// Units (pages) done so far, and in all once known.
    pub done: u64,
    pub total: Option<u64>,
    /// Pages rendered so far, each with its URL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<PageLink>,
    /// The reply a sync request would have got, once `done`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Why it ended, once `failed`, `cancelled` or `expired`: the error
    /// body a sync request would have got, with its HTTP status.
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Unix ms after which the job and its output are removed.
    pub expires_ms: Option<u64>,
    pub links: Links,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

impl JobView {
    /// The view of `job`; `makes_pages` adds the archive link.
    pub fn of(job: JobSnapshot, makes_pages: bool) -> JobView {
        let id = job.job_id;
        JobView {
            job_id: id,
            kind: job.kind,
            state: job.state,
            position: job.position,
            worker: job.worker,
            done: job.done,
            total: job.total,
            pages: job.pages.iter().map(|p| PageLink::of(id, p)).collect(),
            result: job.result,
            error: job.error,
            created_ms: job.created_ms,
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
            expires_ms: job.expires_ms,
            links: Links {
                this: format!("/jobs/{id}"),
                events: format!("/jobs/{id}/events"),
                archive: makes_pages.then(|| format!("/jobs/{id}/archive")),
            },
        }
    }
}

/// The data of a `page` event: the page, and how far the job is.
#[derive(Debug, Serialize)]
pub struct PageEvent {
    #[serde(flatten)]
    pub page: PageLink,
    pub done: u64,
    pub total: Option<u64>,
}
