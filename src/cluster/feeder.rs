//! The feeder: one task per worker type dispatched through the cluster.
//! It fetches only as many jobs as the node has idle workers (one permit
//! per worker; a fetch never asks for more than it holds), so no node
//! hoards a backlog another could be running.
//!
//! For each job it takes:
//! 1. a message it cannot read is copied to the dead-letter stream
//!    (`<P>_DEAD`) with a log line and removed; a job of another protocol
//!    version is answered with an error and removed;
//! 2. a job that finds the node's workers taken since the fetch (by the
//!    node's own async jobs) is handed back (`-NAK`) for another node; a
//!    job past its queue deadline, or whose admitting node no longer
//!    waits (asked with a `started` request), is removed unrun;
//! 3. otherwise it runs on the local queue. While it runs, `+WPI` keeps it
//!    ours; a cancel on `<p>.cancel.<id>` kills it; if the engine has not
//!    confirmed a `+WPI` for most of the ack wait, the job is about to be
//!    given to another node, so this one kills it and sends nothing (it
//!    fences itself);
//! 4. at the end it sends the answer, then acknowledges the message (and
//!    waits for the engine to confirm it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::wire::{self, JobMessage, Notice, WireError};
use super::{Cluster, Lane};
use crate::kind::{AnyKind, RemoteJob};
use crate::queue::JobError;
use crate::storage::{InputRef, JobInput};

/// Most jobs one fetch asks for.
const MAX_BATCH: usize = 8;
/// How long one fetch waits for jobs before it is issued again.
const FETCH_EXPIRES: Duration = Duration::from_secs(2);
/// Pause after a failed fetch (the engine restarting, a lost connection).
const FETCH_BACKOFF: Duration = Duration::from_millis(250);
/// How often a node whose workers are all busy with its own jobs looks again.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long a worker waits to hear whether the admitting node still waits.
const STARTED_TIMEOUT: Duration = Duration::from_secs(1);

/// How the jobs this node ran for the cluster ended.
#[derive(Default)]
pub struct RanCounts {
    pub answered: AtomicU64,
    pub dropped_unwaited: AtomicU64,
    pub fenced: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub refused_protocol: AtomicU64,
    /// Fetched while a worker was free, handed back when it was not.
    pub passed_on: AtomicU64,
}

impl RanCounts {
    pub fn snapshot(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "answered": get(&self.answered),
            "dropped_unwaited": get(&self.dropped_unwaited),
            "fenced": get(&self.fenced),
            "dead_lettered": get(&self.dead_lettered),
            "refused_protocol": get(&self.refused_protocol),
            "passed_on": get(&self.passed_on),
        })
    }
}

/// Pulls and runs jobs of `lane`'s type until the node stops.
pub(crate) async fn feed(cluster: Arc<Cluster>, lane: Arc<Lane>) {
    let Some(kind) = cluster.kinds().by_name(lane.name).cloned() else {
        return;
    };
    let workers = kind.pool().config().workers.max(1);
    let idle = Arc::new(Semaphore::new(workers));
    loop {
        if cluster.stopping().is_cancelled() {
            return;
        }
        if !cluster.takes_work() {
            if cluster.is_connected() {
                cluster.unfence();
            }
            tokio::select! {
                _ = cluster.stopping().cancelled() => return,
                _ = tokio::time::sleep(FETCH_BACKOFF) => continue,
            }
        }
        let first = tokio::select! {
            _ = cluster.stopping().cancelled() => return,
            permit = Arc::clone(&idle).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        // Local workers busy with (or queued for) this node's own jobs,
        // async ones, are not idle: only the rest may be fetched for.
        let pool = kind.pool();
        let held = workers - idle.available_permits() - 1;
        let own = (pool.busy() + pool.depth()).saturating_sub(held);
        let room = (workers - held).saturating_sub(own).min(MAX_BATCH);
        if room == 0 {
            drop(first);
            tokio::select! {
                _ = cluster.stopping().cancelled() => return,
                _ = tokio::time::sleep(IDLE_POLL) => continue,
            }
        }
        let mut permits = vec![first];
        while permits.len() < room {
            match Arc::clone(&idle).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let fetched = lane
            .consumer
            .fetch()
            .max_messages(permits.len())
            .expires(FETCH_EXPIRES)
            .messages()
            .await;
        let mut batch = match fetched {
            Ok(batch) => batch,
            Err(e) => {
                tracing::debug!(kind = lane.name, "fetch failed: {e}");
                tokio::time::sleep(FETCH_BACKOFF).await;
                continue;
            }
        };
        while let Some(next) = batch.next().await {
            match next {
                Ok(msg) => {
                    let Some(permit) = permits.pop() else {
                        // More than asked for: leave it to its ack wait.
                        break;
                    };
                    let job = run_one(Arc::clone(&cluster), Arc::clone(&kind), msg, permit);
                    tokio::spawn(job);
                }
                Err(e) => {
                    tracing::debug!(kind = lane.name, "fetch ended: {e}");
                    break;
                }
            }
        }
    }
}

/// The stream's sequence and the delivery count of a message.
fn delivery(msg: &jetstream::Message) -> (u64, u64) {
    msg.info()
        .map(|i| (i.stream_sequence, i.delivered.max(1) as u64))
        .unwrap_or((0, 1))
}

async fn notify(cluster: &Cluster, reply: &str, notice: &Notice) {
    let body = serde_json::to_vec(notice).unwrap_or_default();
    if let Err(e) = cluster
        .client()
        .publish(reply.to_string(), body.into())
        .await
    {
        tracing::warn!("cannot send a job's answer: {e}");
    }
    let _ = cluster.client().flush().await;
}

async fn remove(msg: &jetstream::Message) {
    if let Err(e) = msg.ack_with(AckKind::Term).await {
        tracing::debug!("cannot remove a job message: {e}");
    }
}

async fn run_one(
    cluster: Arc<Cluster>,
    kind: Arc<dyn AnyKind>,
    msg: jetstream::Message,
    _permit: OwnedSemaphorePermit,
) {
    let (seq, attempt) = delivery(&msg);
    let job = match JobMessage::parse(msg.headers.as_ref(), &msg.payload) {
        Ok(job) => job,
        Err(WireError::Protocol { found }) => {
            cluster.ran.refused_protocol.fetch_add(1, Ordering::Relaxed);
            tracing::error!(seq, found, "a job of another protocol version was refused");
            if let Some(reply) = msg.headers.as_ref().and_then(|h| h.get(wire::H_REPLY)) {
                let error = JobError::Unavailable(format!(
                    "the node that took the job speaks job protocol {}, not {found}; upgrade the nodes to one version",
                    wire::PROTOCOL
                ));
                notify(&cluster, reply.as_str(), &Notice::Failed { error }).await;
            }
            remove(&msg).await;
            return;
        }
        Err(WireError::Malformed(why)) => {
            dead_letter(&cluster, &kind, &msg, &why).await;
            return;
        }
    };
    let id = job.job_id;
    // A worker taken by this node's own job since the fetch was issued:
    // handed back at once for another node, rather than queued here.
    let pool = kind.pool();
    if pool.busy() + pool.depth() >= pool.config().workers {
        cluster.ran.passed_on.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(%id, "cannot hand a job back: {e}");
        }
        return;
    }
    let now = wire::now_ms();
    let Some(left) = job.left(now).filter(|_| now < job.queue_deadline_ms) else {
        // Its admitting node has answered 504 already.
        cluster.ran.dropped_unwaited.fetch_add(1, Ordering::Relaxed);
        remove(&msg).await;
        return;
    };
    let started = Notice::Started {
        node: cluster.node().to_string(),
        attempt,
    };
    let body = serde_json::to_vec(&started).unwrap_or_default();
    let asked = tokio::time::timeout(
        STARTED_TIMEOUT,
        cluster.client().request(job.reply.clone(), body.into()),
    )
    .await;
    let waited = match asked {
        Ok(Ok(answer)) => answer.payload.as_ref() != wire::GONE,
        // No responders: the admitting node is gone.
        Ok(Err(e)) => !matches!(e.kind(), async_nats::RequestErrorKind::NoResponders),
        // Slow to say: run it; its answer decides nothing if unwaited.
        Err(_) => true,
    };
    if !waited {
        tracing::debug!(%id, "its admitting node no longer waits: dropped unrun");
        cluster.ran.dropped_unwaited.fetch_add(1, Ordering::Relaxed);
        remove(&msg).await;
        return;
    }
    let input = match input_of(&cluster, &job).await {
        Ok(input) => input,
        Err(error) => {
            notify(&cluster, &job.reply, &Notice::Failed { error }).await;
            let _ = msg.double_ack().await;
            return;
        }
    };
    tracing::info!(%id, kind = kind.name(), attempt, "running a cluster job");
    let remote = RemoteJob {
        job_id: id,
        request: job.request.clone(),
        input,
        timeout: left,
    };
    let run = match Arc::clone(&kind).run_remote(remote) {
        Ok(run) => run,
        Err(error) => {
            notify(&cluster, &job.reply, &Notice::Failed { error }).await;
            let _ = msg.double_ack().await;
            return;
        }
    };
    let mut cancels = cluster
        .client()
        .subscribe(cluster.cancel_subject(id))
        .await
        .ok();
    let ack_wait = cluster.config().ack_wait;
    let mut tick = tokio::time::interval(ack_wait / 3);
    tick.tick().await;
    // Kill before the engine's ack wait ends: a sixth of it as margin.
    let fence_after = ack_wait - ack_wait / 6;
    let mut confirmed = Instant::now();
    let mut done = run.done;
    let mut fenced = false;
    let result = loop {
        tokio::select! {
            result = &mut done => break result,
            Some(_) = async { match cancels.as_mut() { Some(s) => s.next().await, None => None } } => {
                tracing::info!(%id, "cancelled by its admitting node");
                (run.cancel)();
                cancels = None;
            }
            _ = tick.tick(), if !fenced => {
                let progress = tokio::time::timeout(ack_wait / 3, msg.double_ack_with(AckKind::Progress));
                if let Ok(Ok(())) = progress.await {
                    confirmed = Instant::now();
                }
                if confirmed.elapsed() >= fence_after {
                    fenced = true;
                    cluster.ran.fenced.fetch_add(1, Ordering::Relaxed);
                    cluster.fence("a running job's lease could not be renewed");
                    (run.cancel)();
                }
            }
        }
    };
    if fenced {
        tracing::warn!(%id, "killed unfinished: another node will run it");
        return;
    }
    let notice = match result {
        Ok(reply) => Notice::Done { reply },
        Err(error) => Notice::Failed { error },
    };
    notify(&cluster, &job.reply, &notice).await;
    cluster.ran.answered.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = msg.double_ack().await {
        // Delivered again, it finds nobody waiting and is dropped.
        tracing::warn!(%id, "the job's acknowledgement was not confirmed: {e}");
    }
}

/// The job's input, on this node: inline bytes, a file fetched from the
/// object store, or (a `DATA_DIR` file) what the request names.
async fn input_of(cluster: &Cluster, job: &JobMessage) -> Result<Option<JobInput>, JobError> {
    if let Some(bytes) = &job.inline {
        return Ok(Some(JobInput::Inline(bytes.clone())));
    }
    let stored = job
        .request
        .get("input")
        .and_then(|v| serde_json::from_value::<InputRef>(v.clone()).ok());
    match stored {
        Some(InputRef::Kept { job_id }) => match cluster.pages().fetch_input(job_id).await {
            Ok(file) => Ok(Some(JobInput::Spooled(Arc::new(file)))),
            Err(e) => Err(JobError::Failed(format!(
                "cannot fetch the job's input from the object store: {e}"
            ))),
        },
        _ => Ok(None),
    }
}

/// Copies an unreadable message to the dead-letter stream, then removes
/// it from the job stream; a node never crashes on one.
async fn dead_letter(
    cluster: &Cluster,
    kind: &Arc<dyn AnyKind>,
    msg: &jetstream::Message,
    why: &str,
) {
    cluster.ran.dead_lettered.fetch_add(1, Ordering::Relaxed);
    tracing::error!(kind = kind.name(), subject = %msg.subject, "dead-lettered a job message: {why}");
    let subject = format!("{}.dead.{}", cluster.config().prefix, kind.name());
    let mut headers = msg.headers.clone().unwrap_or_default();
    headers.insert("Dead-Reason", why.replace(['\r', '\n'], " ").as_str());
    match cluster
        .js()
        .publish_with_headers(subject, headers, msg.payload.clone())
        .await
    {
        Ok(ack) => {
            if let Err(e) = ack.await {
                tracing::warn!("the dead-letter stream did not take it: {e}");
            }
        }
        Err(e) => tracing::warn!("the dead-letter stream did not take it: {e}"),
    }
    remove(msg).await;
}
