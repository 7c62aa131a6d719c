//! Cluster mode (feature `cluster`, switched on by `NATS_URL`): N servers
//! share one NATS JetStream and one S3 bucket, and any node's idle worker
//! runs any node's job.
//!
//! ```text
//!  node A (admits)                    JetStream                      node B (runs)
//!  submit ─ publish ─────────────▶ stream <P>_JOBS_<TYPE> ◀── fetch ── feeder (only for an idle worker)
//!    │      max_msgs = capacity,     workqueue, discard new            │ local JobQueue + renderers
//!    │      full → 503 at once       (waiting + running, all nodes)     │ +WPI every ack_wait/3
//!    ◀──── <p>.reply.A.* ◀───────── core: started? / done / failed ◀────┘ pages → S3
//!    └── deadline or client gone: delete the message, <p>.cancel.<id> ──▶ render killed
//! ```
//!
//! - Admission is cluster-wide: one work-queue stream per worker type
//!   whose `max_msgs` is `CLUSTER_<TYPE>_CAPACITY`; a delivered but
//!   unacknowledged job still counts, so the bound is waiting + running
//!   on every node. The refused publish is the `503 queue_full`.
//! - Pull, never push: a node fetches only as many jobs as it has idle
//!   workers ([`feeder`]).
//! - Exactly one answer: the admitting node's waiter decides (the answer,
//!   or its own 504). A worker asks before it starts whether the admitting
//!   node still waits; one that gave up says so and the job is dropped.
//! - Node death: a node that stops confirming (`+WPI`) a job loses it
//!   after `CLUSTER_ACK_WAIT_MS`, and another node runs it (its attempt
//!   counted). A node cut off from the engine refuses new jobs (503) and
//!   kills its renders before that wait ends (it fences itself), so no
//!   job is finished twice.
//! - Inputs up to `CLUSTER_INLINE_MAX_BYTES` travel in the message;
//!   larger ones go to the object store first ([`objects`]), as do pages.
//!
//! Async jobs, their records and events are still kept by the node that
//! accepted them (its SQLite database); they run on that node's workers.

pub mod feeder;
pub mod objects;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{ClusterConfig, Config};
use crate::dispatch::{Dispatcher, SyncJob};
use crate::error::ApiError;
use crate::queue::JobError;
use crate::state::Kinds;
use crate::storage::{InputRef, JobInput, PageStore};

use objects::ObjectPages;
use wire::{JobMessage, Notice};

/// How often a node publishes its figures and reads the others'.
const NODE_BEAT: Duration = Duration::from_secs(2);
/// A node missing this long is gone from the cluster's figures.
const NODE_MAX_AGE: Duration = Duration::from_secs(10);
/// How fresh the stream counts behind a pre-body refusal are.
const FIGURES_EVERY: Duration = Duration::from_millis(100);
/// After a publish the engine refused as full, refuse locally this long.
const FULL_FOR: Duration = Duration::from_millis(20);
/// Kept beyond a job's budget before the engine drops its message.
const TTL_GRACE: Duration = Duration::from_secs(30);
/// The JetStream error of a stream at its `max_msgs` with `discard: new`.
const MAXIMUM_MESSAGES_EXCEEDED: u64 = 10077;

/// One worker type's cluster-wide queue.
pub(crate) struct Lane {
    pub name: &'static str,
    pub subject: String,
    pub capacity: usize,
    pub stream: stream::Stream,
    pub consumer: consumer::PullConsumer,
    /// Jobs in the stream (waiting + running), as last read.
    messages: AtomicU64,
    /// Refuse locally until then: the engine said full.
    full_until: Mutex<Option<Instant>>,
}

/// What a node tells the others every [`NODE_BEAT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFigures {
    pub node: String,
    pub version: String,
    pub protocol: String,
    pub draining: bool,
    pub kinds: HashMap<String, KindFigures>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindFigures {
    pub workers: usize,
    pub busy: usize,
    pub mean_run_ms: u64,
}

/// Someone waiting for a job's answer on this node.
struct Waiter {
    answer: oneshot::Sender<Notice>,
    started: bool,
}

pub struct Cluster {
    config: ClusterConfig,
    node: String,
    client: async_nats::Client,
    js: jetstream::Context,
    lanes: Vec<Arc<Lane>>,
    kinds: Arc<Kinds>,
    pages: Arc<ObjectPages>,
    waiters: Mutex<HashMap<Uuid, Waiter>>,
    nodes_kv: jetstream::kv::Store,
    /// The other nodes' figures (this one's included), as last read.
    nodes: Mutex<Vec<NodeFigures>>,
    connected: Arc<AtomicBool>,
    /// Set while the node's jobs can no longer be confirmed: it takes
    /// nothing and its renders were killed.
    fenced: AtomicBool,
    draining: AtomicBool,
    stop: CancellationToken,
    /// Jobs this node ran for the cluster, by how they ended.
    pub(crate) ran: feeder::RanCounts,
}

/// The page store for cluster mode, from `PAGE_STORE_URL`.
pub fn page_store(
    config: &Config,
    layout: &crate::storage::Layout,
) -> std::io::Result<Arc<ObjectPages>> {
    let url = config.cluster.page_store_url.as_deref().unwrap_or_default();
    let (store, prefix) = objects::open_s3(url)?;
    Ok(Arc::new(ObjectPages::new(
        store,
        prefix,
        layout,
        tokio::runtime::Handle::current(),
    )))
}

fn other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The names of one type's stream and subject.
fn stream_name(prefix: &str, kind: &str) -> String {
    format!("{}_JOBS_{}", prefix, kind.to_ascii_uppercase()).replace('-', "_")
}

impl Cluster {
    /// Connects to the engine, makes (or finds) the streams of every
    /// type dispatched through the cluster, and starts the feeders, the
    /// reply router and the node heartbeat. Fails when the engine cannot
    /// be reached at start: a node that never joined has nothing to serve.
    pub async fn start(
        config: &Config,
        kinds: Arc<Kinds>,
        pages: Arc<ObjectPages>,
    ) -> std::io::Result<Arc<Cluster>> {
        let cc = config.cluster.clone();
        let url = cc.nats_url.clone().unwrap_or_default();
        let node = format!(
            "{}-{}",
            hostname(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let connected = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&connected);
        let client = async_nats::ConnectOptions::new()
            .name(format!("jobserver {node}"))
            // Fencing depends on noticing a silent engine soon.
            .ping_interval(Duration::from_secs(1))
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(cc.publish_timeout))
            .event_callback(move |event| {
                let flag = Arc::clone(&flag);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to the cluster's engine");
                            flag.store(true, Ordering::Release)
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("cut off from the cluster's engine");
                            flag.store(false, Ordering::Release)
                        }
                        other => tracing::info!("cluster engine: {other}"),
                    }
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| other(format!("cannot reach NATS_URL {url}: {e}")))?;
        connected.store(true, Ordering::Release);
        let mut js = jetstream::new(client.clone());
        js.set_timeout(cc.publish_timeout);
        let mut lanes = Vec::new();
        for kind in kinds.iter() {
            if !cc.dispatches(kind.name()) {
                continue;
            }
            let lane = cc.lane(kind.name()).expect("dispatches() found the lane");
            lanes.push(Arc::new(
                make_lane(&js, &cc, kind.name(), lane.capacity).await?,
            ));
        }
        let dead = stream::Config {
            name: format!("{}_DEAD", cc.prefix),
            subjects: vec![format!("{}.dead.>", cc.prefix)],
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_messages: 10_000,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: cc.replicas,
            ..Default::default()
        };
        js.get_or_create_stream(dead).await.map_err(other)?;
        let nodes_kv = js
            .create_key_value(jetstream::kv::Config {
                bucket: format!("{}_nodes", cc.prefix),
                history: 1,
                max_age: NODE_MAX_AGE,
                num_replicas: cc.replicas,
                ..Default::default()
            })
            .await
            .map_err(other)?;
        let cluster = Arc::new(Cluster {
            config: cc,
            node,
            client,
            js,
            lanes,
            kinds,
            pages,
            waiters: Mutex::new(HashMap::new()),
            nodes_kv,
            nodes: Mutex::new(Vec::new()),
            connected,
            fenced: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            stop: CancellationToken::new(),
            ran: Default::default(),
        });
        cluster.start_reply_router().await?;
        tokio::spawn(Arc::clone(&cluster).beat());
        tokio::spawn(Arc::clone(&cluster).watch_figures());
        for lane in &cluster.lanes {
            tokio::spawn(feeder::feed(Arc::clone(&cluster), Arc::clone(lane)));
        }
        tracing::info!(
            node = %cluster.node,
            types = ?cluster.lanes.iter().map(|l| l.name).collect::<Vec<_>>(),
            "joined the cluster"
        );
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn lane(&self, kind: &str) -> Option<&Arc<Lane>> {
        self.lanes.iter().find(|l| l.name == kind)
    }

    fn reply_subject(&self, job_id: Uuid) -> String {
        format!("{}.reply.{}.{job_id}", self.config.prefix, self.node)
    }

    pub(crate) fn cancel_subject(&self, job_id: Uuid) -> String {
        format!("{}.cancel.{job_id}", self.config.prefix)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn takes_work(&self) -> bool {
        self.is_connected()
            && !self.fenced.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && !self.stop.is_cancelled()
    }

    /// Seconds a refused client should wait: the jobs ahead of it over the
    /// cluster's rate (live workers ÷ their mean run time), at least 1.
    fn retry_after(&self, lane: &Lane) -> u64 {
        let nodes = self.nodes.lock();
        let (mut workers, mut weighted) = (0usize, 0u64);
        for figures in nodes.iter().filter_map(|n| n.kinds.get(lane.name)) {
            workers += figures.workers;
            weighted += figures.mean_run_ms * figures.workers as u64;
        }
        if workers == 0 {
            return 1;
        }
        let mean_s = weighted as f64 / workers as f64 / 1000.0;
        let ahead = lane.messages.load(Ordering::Relaxed) as f64 + 1.0;
        ((ahead * mean_s / workers as f64).ceil() as u64).max(1)
    }

    fn full(&self, lane: &Lane) -> ApiError {
        ApiError::QueueFull {
            queue: lane.name,
            capacity: lane.capacity,
            retry_after: self.retry_after(lane),
        }
    }

    /// The router of answers: one subscription for every job this node
    /// admitted. A `started` notice is a question (does anyone still
    /// wait?), answered under the same lock the waiter gives up under, so
    /// a job starts only if its answer will be awaited.
    async fn start_reply_router(self: &Arc<Self>) -> std::io::Result<()> {
        let subject = format!("{}.reply.{}.*", self.config.prefix, self.node);
        let mut sub = self.client.subscribe(subject).await.map_err(other)?;
        let cluster = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                cluster.route(msg).await;
            }
        });
        Ok(())
    }

    async fn route(&self, msg: async_nats::Message) {
        let id = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| Uuid::parse_str(s).ok());
        let notice = serde_json::from_slice::<Notice>(&msg.payload);
        let (Some(id), Ok(notice)) = (id, notice) else {
            tracing::warn!(subject = %msg.subject, "an unreadable answer was dropped");
            return;
        };
        match notice {
            Notice::Started { .. } => {
                let waiting = match self.waiters.lock().get_mut(&id) {
                    Some(waiter) => {
                        waiter.started = true;
                        true
                    }
                    None => false,
                };
                if let Some(reply) = msg.reply {
                    let answer = if waiting {
                        wire::STILL_WAITING
                    } else {
                        wire::GONE
                    };
                    let _ = self.client.publish(reply, answer.into()).await;
                }
            }
            answer => {
                if let Some(waiter) = self.waiters.lock().remove(&id) {
                    let _ = waiter.answer.send(answer);
                }
            }
        }
    }

    /// Publishes a job, retrying once (same message id: the engine drops
    /// a duplicate) when the acknowledgement is lost.
    async fn publish(&self, lane: &Lane, msg: &JobMessage, ttl: Duration) -> Result<u64, ApiError> {
        let mut last = None;
        for _ in 0..2 {
            let mut headers = msg.headers();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                msg.job_id.to_string().as_str(),
            );
            headers.insert(
                async_nats::header::NATS_MESSAGE_TTL,
                ttl.as_secs().max(1).to_string().as_str(),
            );
            let sent = self
                .js
                .publish_with_headers(lane.subject.clone(), headers, msg.payload())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) if is_full(&e) => {
                    *lane.full_until.lock() = Some(Instant::now() + FULL_FOR);
                    lane.messages.store(lane.capacity as u64, Ordering::Relaxed);
                    return Err(self.full(lane));
                }
                Err(e) => {
                    let retry = matches!(e.kind(), jetstream::context::PublishErrorKind::TimedOut);
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        let e = last.map_or_else(String::new, |e| e.to_string());
        Err(ApiError::Unavailable(format!(
            "the cluster's engine did not take the job: {e}"
        )))
    }

    async fn run_sync(self: Arc<Self>, job: SyncJob) -> Result<Value, ApiError> {
        let lane = Arc::clone(self.lane(job.kind).ok_or_else(|| {
            ApiError::Internal(format!("{} jobs are not dispatched here", job.kind))
        })?);
        self.admit_lane(&lane)?;
        let id = job.job_id;
        let mut request = job.request;
        let mut kept = None;
        let inline = match job.input {
            Some(JobInput::Inline(bytes)) if bytes.len() <= self.config.inline_max_bytes => {
                Some(bytes)
            }
            Some(JobInput::Inline(bytes)) => {
                kept = Some(self.keep(self.pages.keep_input(id, bytes)).await?);
                None
            }
            Some(JobInput::Spooled(file)) => {
                kept = Some(self.keep(self.pages.keep_spooled(id, &file)).await?);
                None
            }
            Some(JobInput::Stored(stored)) => {
                request["input"] = serde_json::to_value(&stored).unwrap_or_default();
                None
            }
            None => None,
        };
        let mut guard = InFlight {
            cluster: Arc::clone(&self),
            lane: Arc::clone(&lane),
            id,
            seq: None,
            kept: kept.clone(),
            answered: false,
        };
        if let Some(kept) = &kept {
            request["input"] = serde_json::to_value(kept).unwrap_or_default();
        }
        let now = wire::now_ms();
        let msg = JobMessage {
            kind: job.kind.to_string(),
            job_id: id,
            deadline_ms: now + job.budget.as_millis() as u64,
            queue_deadline_ms: now + job.queue_budget.as_millis() as u64,
            reply: self.reply_subject(id),
            request,
            inline,
        };
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(
            id,
            Waiter {
                answer: tx,
                started: false,
            },
        );
        guard.seq = Some(self.publish(&lane, &msg, job.budget + TTL_GRACE).await?);
        let started = Instant::now();
        let queue_timer = tokio::time::sleep(job.queue_budget);
        let total_timer = tokio::time::sleep(job.budget);
        tokio::pin!(rx, queue_timer, total_timer);
        let mut queue_armed = job.queue_budget < job.budget;
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => {
                    guard.answered = true;
                    return match answer {
                        Ok(Notice::Done { reply }) => Ok(reply),
                        Ok(Notice::Failed { error }) => Err(ApiError::job(id, error)),
                        Ok(Notice::Started { .. }) | Err(_) => Err(ApiError::Internal(
                            "the job's answer was lost".into(),
                        )),
                    };
                }
                _ = &mut queue_timer, if queue_armed => {
                    queue_armed = false;
                    // Decided under the router's lock: a job not started
                    // now never will be (its worker is told so).
                    let mut waiters = self.waiters.lock();
                    if waiters.get(&id).is_some_and(|w| !w.started) {
                        waiters.remove(&id);
                        let waited_ms = started.elapsed().as_millis() as u64;
                        return Err(ApiError::job(id, JobError::QueueTimeout { waited_ms }));
                    }
                }
                _ = &mut total_timer => {
                    let budget_ms = job.budget.as_millis() as u64;
                    return Err(ApiError::job(id, JobError::Timeout { budget_ms }));
                }
            }
        }
    }

    async fn keep(&self, keep: crate::storage::Kept<'_>) -> Result<InputRef, ApiError> {
        keep.await.map_err(|e| {
            crate::upload::store_error(format!("cannot store the upload for the cluster: {e}"), &e)
        })
    }

    fn admit_lane(&self, lane: &Lane) -> Result<(), ApiError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(ApiError::ShuttingDown);
        }
        if !self.is_connected() {
            return Err(ApiError::Unavailable(
                "this node is cut off from the cluster's engine; retry on another node".into(),
            ));
        }
        if self.fenced.load(Ordering::Acquire) {
            return Err(ApiError::Unavailable(
                "this node lost its jobs' leases and is rejoining; retry on another node".into(),
            ));
        }
        let full_now = lane.full_until.lock().is_some_and(|t| Instant::now() < t);
        if full_now || lane.messages.load(Ordering::Relaxed) >= lane.capacity as u64 {
            return Err(self.full(lane));
        }
        Ok(())
    }

    /// This node's figures for the others.
    fn figures(&self) -> NodeFigures {
        let kinds = self
            .kinds
            .iter()
            .map(|k| {
                let pool = k.pool();
                let figures = KindFigures {
                    workers: pool.live_workers(),
                    busy: pool.busy(),
                    mean_run_ms: pool.stats().mean_run().as_millis() as u64,
                };
                (k.name().to_string(), figures)
            })
            .collect();
        NodeFigures {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: wire::PROTOCOL.to_string(),
            draining: self.draining.load(Ordering::Acquire),
            kinds,
        }
    }

    /// Waits for `tick`; `false` once the node stops.
    async fn next_tick(&self, tick: &mut tokio::time::Interval) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tick.tick() => true,
        }
    }

    /// Publishes this node's figures and reads every node's.
    async fn beat(self: Arc<Self>) {
        let mut tick = interval(NODE_BEAT);
        while self.next_tick(&mut tick).await {
            let mine = serde_json::to_vec(&self.figures()).unwrap_or_default();
            if let Err(e) = self.nodes_kv.put(&self.node, mine.into()).await {
                tracing::debug!("cannot publish this node's figures: {e}");
                continue;
            }
            let mut read = Vec::new();
            if let Ok(mut keys) = self.nodes_kv.keys().await {
                while let Some(Ok(key)) = keys.next().await {
                    if let Ok(Some(value)) = self.nodes_kv.get(&key).await {
                        if let Ok(figures) = serde_json::from_slice::<NodeFigures>(&value) {
                            read.push(figures);
                        }
                    }
                }
            }
            read.sort_by(|a, b| a.node.cmp(&b.node));
            *self.nodes.lock() = read;
        }
        let _ = self.nodes_kv.delete(&self.node).await;
    }

    /// Keeps each stream's count fresh for the refusals before a body.
    async fn watch_figures(self: Arc<Self>) {
        let mut tick = interval(FIGURES_EVERY);
        while self.next_tick(&mut tick).await {
            for lane in &self.lanes {
                let mut stream = lane.stream.clone();
                if let Ok(info) = stream.info().await {
                    lane.messages.store(info.state.messages, Ordering::Relaxed);
                }
            }
        }
    }

    pub(crate) fn fence(&self, why: &str) {
        if !self.fenced.swap(true, Ordering::AcqRel) {
            tracing::error!("fenced: {why}; this node takes no jobs until it is confirmed again");
        }
    }

    pub(crate) fn unfence(&self) {
        if self.fenced.swap(false, Ordering::AcqRel) {
            tracing::info!("the engine confirms this node's jobs again: taking jobs");
        }
    }

    pub(crate) fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub(crate) fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    pub(crate) fn pages(&self) -> &ObjectPages {
        &self.pages
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.js
    }
}

/// A timer for periodic work that falls behind rather than bursts.
fn interval(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// A refused publish because the stream holds `max_msgs` jobs.
fn is_full(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error;
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code().0 == MAXIMUM_MESSAGES_EXCEEDED)
}

async fn make_lane(
    js: &jetstream::Context,
    cc: &ClusterConfig,
    kind: &'static str,
    capacity: usize,
) -> std::io::Result<Lane> {
    let name = stream_name(&cc.prefix, kind);
    let subject = format!("{}.jobs.{kind}", cc.prefix);
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_messages: capacity as i64,
        max_message_size: (cc.inline_max_bytes + 64 * 1024) as i32,
        duplicate_window: Duration::from_secs(120),
        allow_message_ttl: true,
        storage: stream::StorageType::File,
        num_replicas: cc.replicas,
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .map_err(|e| other(format!("cannot make the stream {name}: {e}")))?;
    let stream = js.get_stream(&name).await.map_err(other)?;
    let consumer_config = consumer::pull::Config {
        durable_name: Some("workers".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: cc.ack_wait,
        max_deliver: cc.max_deliver,
        max_ack_pending: capacity as i64,
        ..Default::default()
    };
    let consumer = match stream.create_consumer(consumer_config).await {
        Ok(consumer) => consumer,
        Err(e) => {
            // Made with other settings by another node: deleting it would
            // hand the running jobs out again, so it is kept as it is.
            tracing::warn!(
                stream = %name,
                "the workers' consumer exists with other settings; keeping them: {e}"
            );
            stream.get_consumer("workers").await.map_err(other)?
        }
    };
    Ok(Lane {
        name: kind,
        subject,
        capacity,
        stream,
        consumer,
        messages: AtomicU64::new(0),
        full_until: Mutex::new(None),
    })
}

/// A sync job between its publish and its answer. Dropped unanswered (a
/// deadline, a client gone), it takes the job out of the stream (a queued
/// job never runs and its place is free at once) and tells the running
/// node to kill it; an input stored for it is removed either way.
struct InFlight {
    cluster: Arc<Cluster>,
    lane: Arc<Lane>,
    id: Uuid,
    seq: Option<u64>,
    kept: Option<InputRef>,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.waiters.lock().remove(&self.id);
        let (cluster, lane, id, seq, kept) = (
            Arc::clone(&self.cluster),
            Arc::clone(&self.lane),
            self.id,
            self.seq,
            self.kept.take(),
        );
        let answered = self.answered;
        tokio::spawn(async move {
            if !answered {
                if let Some(seq) = seq {
                    let _ = lane.stream.delete_message(seq).await;
                }
                let subject = cluster.cancel_subject(id);
                let _ = cluster.client.publish(subject, "".into()).await;
            }
            if let Some(kept) = kept {
                let _ = cluster.pages.remove_input(&kept).await;
            }
        });
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// The cluster as the rest of the server sees it.
pub struct ClusterDispatch(pub Arc<Cluster>);

impl Dispatcher for ClusterDispatch {
    fn handles(&self, kind: &str) -> bool {
        self.0.lane(kind).is_some()
    }

    fn admit(&self, kind: &str) -> Result<(), ApiError> {
        match self.0.lane(kind) {
            Some(lane) => self.0.admit_lane(lane),
            None => Ok(()),
        }
    }

    fn run(&self, job: SyncJob) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(Arc::clone(&self.0).run_sync(job))
    }

    fn not_ready(&self) -> Option<String> {
        let c = &self.0;
        if !c.is_connected() {
            Some("cut off from the cluster's engine".into())
        } else if c.fenced.load(Ordering::Acquire) {
            Some("fenced: this node's jobs could not be confirmed".into())
        } else {
            None
        }
    }

    fn status(&self) -> Value {
        let c = &self.0;
        let lanes: Vec<Value> = c
            .lanes
            .iter()
            .map(|l| {
                json!({
                    "kind": l.name,
                    "capacity": l.capacity,
                    "jobs": l.messages.load(Ordering::Relaxed),
                    "retry_after_s": c.retry_after(l),
                })
            })
            .collect();
        json!({
            "node": c.node,
            "connected": c.is_connected(),
            "fenced": c.fenced.load(Ordering::Acquire),
            "draining": c.draining.load(Ordering::Acquire),
            "queues": lanes,
            "nodes": *c.nodes.lock(),
            "ran": c.ran.snapshot(),
        })
    }

    fn begin_drain(&self) {
        self.0.draining.store(true, Ordering::Release);
    }
}
