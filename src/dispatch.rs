//! How a server hands jobs to other machines: the face cluster mode
//! (`src/cluster/`, feature `cluster`) shows the rest of the server, so
//! that routes, readiness and status need no build flag. Embedded mode
//! has none, and every job runs on the node's own queues.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;
use crate::storage::JobInput;

/// A sync job for the cluster: admitted here, run on any node.
pub struct SyncJob {
    pub kind: &'static str,
    pub job_id: Uuid,
    /// The recorded request (`Recorded<Params>` as JSON).
    pub request: Value,
    pub input: Option<JobInput>,
    /// Not started within this, the job never starts (504 `queue_timeout`).
    pub queue_budget: Duration,
    /// Not finished within this, it is killed (504 `timeout`).
    pub budget: Duration,
}

/// Jobs dispatched through a cluster-wide queue.
pub trait Dispatcher: Send + Sync + 'static {
    /// Whether jobs of this type go through the cluster.
    fn handles(&self, kind: &str) -> bool;
    /// Refuses at once (before the body is read) a job this node cannot
    /// pass on now: cut off from the engine, fenced, draining, or the
    /// cluster's queue for the type full.
    fn admit(&self, kind: &str) -> Result<(), ApiError>;
    /// Runs a sync job on whichever node has an idle worker: its reply as
    /// JSON.
    fn run(&self, job: SyncJob) -> BoxFuture<'_, Result<Value, ApiError>>;
    /// Why `/readyz` fails on this node, if it does.
    fn not_ready(&self) -> Option<String>;
    /// The cluster's part of `/status`.
    fn status(&self) -> Value;
    /// Stops taking jobs from the cluster (the node is draining).
    fn begin_drain(&self);
}
