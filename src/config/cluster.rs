//! Cluster mode's settings: where the engine and the object store are, and
//! the cluster-wide bounds. Read from the environment like the rest; unset
//! `NATS_URL` means embedded mode (none of this applies).

use std::time::Duration;

use serde::Serialize;

use super::{ConfigError, Env};

/// Names of the cluster's streams, buckets and subjects begin with this.
pub const DEFAULT_CLUSTER_PREFIX: &str = "jobserver";
/// A job a node took and stopped confirming is handed to another node
/// after this long (the engine's ack wait); a node cut off from the engine
/// kills its renders before it passes.
pub const DEFAULT_CLUSTER_ACK_WAIT_MS: u64 = 30_000;
/// Deliveries of one job before it is given up (a node dying mid-job
/// counts one).
pub const DEFAULT_CLUSTER_MAX_DELIVER: i64 = 3;
/// Uploads up to this size travel inside the job's message; larger ones
/// are stored in the object store first and travel by reference.
pub const DEFAULT_CLUSTER_INLINE_MAX_BYTES: usize = 512 * 1024;
/// How long a node waits for the engine to confirm a publish.
pub const DEFAULT_CLUSTER_PUBLISH_TIMEOUT_MS: u64 = 1_000;
/// Copies of each stream the engine keeps (1: one server; 3: a cluster).
pub const DEFAULT_CLUSTER_REPLICAS: usize = 1;

/// How one worker type's jobs are dispatched in cluster mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    /// Through the engine: any node's idle worker takes the job.
    Cluster,
    /// On the node that received the request, as in embedded mode.
    Local,
}

/// One worker type in cluster mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LaneConfig {
    pub dispatch: Dispatch,
    /// Jobs waiting or running across the cluster; the next is refused.
    pub capacity: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// `NATS_URL`: set, this server is a cluster node.
    pub nats_url: Option<String>,
    /// `PAGE_STORE_URL` (`s3://bucket/prefix`): where inputs and pages
    /// live; the `AWS_*` variables say how to reach it.
    pub page_store_url: Option<String>,
    /// `CLUSTER_PREFIX`: the start of every name in the engine.
    pub prefix: String,
    /// `CLUSTER_ACK_WAIT_MS`: unconfirmed this long, a job goes elsewhere.
    pub ack_wait: Duration,
    /// `CLUSTER_MAX_DELIVER`: deliveries of one job at most.
    pub max_deliver: i64,
    /// `CLUSTER_INLINE_MAX_BYTES`: larger uploads go by reference.
    pub inline_max_bytes: usize,
    /// `CLUSTER_PUBLISH_TIMEOUT_MS`: the engine's confirmation of a submit.
    pub publish_timeout: Duration,
    /// `CLUSTER_REPLICAS`: copies of each stream.
    pub replicas: usize,
    /// `MESSAGE_DISPATCH`, `CLUSTER_MESSAGE_CAPACITY`.
    pub message: LaneConfig,
    /// `PDF_DISPATCH`, `CLUSTER_PDF_CAPACITY`.
    pub pdf: LaneConfig,
}

impl ClusterConfig {
    /// The settings with each type's capacity defaulting to what one node
    /// holds (`workers + queue capacity`).
    pub fn new(message_default: usize, pdf_default: usize) -> Self {
        let lane = |capacity| LaneConfig {
            dispatch: Dispatch::Cluster,
            capacity,
        };
        ClusterConfig {
            nats_url: None,
            page_store_url: None,
            prefix: DEFAULT_CLUSTER_PREFIX.to_string(),
            ack_wait: Duration::from_millis(DEFAULT_CLUSTER_ACK_WAIT_MS),
            max_deliver: DEFAULT_CLUSTER_MAX_DELIVER,
            inline_max_bytes: DEFAULT_CLUSTER_INLINE_MAX_BYTES,
            publish_timeout: Duration::from_millis(DEFAULT_CLUSTER_PUBLISH_TIMEOUT_MS),
            replicas: DEFAULT_CLUSTER_REPLICAS,
            message: lane(message_default),
            pdf: lane(pdf_default),
        }
    }

    pub fn enabled(&self) -> bool {
        self.nats_url.is_some()
    }

    /// The settings of the worker type named `kind` (`message`, `pdf`).
    pub fn lane(&self, kind: &str) -> Option<&LaneConfig> {
        match kind {
            "message" => Some(&self.message),
            "pdf" => Some(&self.pdf),
            _ => None,
        }
    }

    /// Whether jobs of `kind` go through the engine.
    pub fn dispatches(&self, kind: &str) -> bool {
        self.enabled()
            && self
                .lane(kind)
                .is_some_and(|l| l.dispatch == Dispatch::Cluster)
    }

    pub(super) fn read(&mut self, env: &Env) -> Result<(), ConfigError> {
        let url = |name: &str| env.get(name).filter(|v| !v.trim().is_empty());
        self.nats_url = url("NATS_URL");
        self.page_store_url = url("PAGE_STORE_URL");
        if let Some(prefix) = env.get("CLUSTER_PREFIX") {
            self.prefix = prefix;
        }
        env.millis("CLUSTER_ACK_WAIT_MS", &mut self.ack_wait)?;
        env.parse("CLUSTER_MAX_DELIVER", &mut self.max_deliver)?;
        env.parse("CLUSTER_INLINE_MAX_BYTES", &mut self.inline_max_bytes)?;
        env.millis("CLUSTER_PUBLISH_TIMEOUT_MS", &mut self.publish_timeout)?;
        env.parse("CLUSTER_REPLICAS", &mut self.replicas)?;
        for (name, lane) in [("MESSAGE", &mut self.message), ("PDF", &mut self.pdf)] {
            env.parse(&format!("CLUSTER_{name}_CAPACITY"), &mut lane.capacity)?;
            let var = format!("{name}_DISPATCH");
            if let Some(raw) = env.get(&var) {
                lane.dispatch = match raw.trim() {
                    "cluster" => Dispatch::Cluster,
                    "local" => Dispatch::Local,
                    _ => return Err(ConfigError::new(&var, raw, "must be cluster or local")),
                };
            }
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        if self.page_store_url.is_none() {
            return Err(ConfigError::new(
                "PAGE_STORE_URL",
                "",
                "cluster mode (NATS_URL) needs a shared page store: s3://bucket/prefix",
            ));
        }
        let valid_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.prefix.is_empty() || !self.prefix.chars().all(valid_name) {
            return Err(ConfigError::new(
                "CLUSTER_PREFIX",
                &self.prefix,
                "must be letters, digits, '-' or '_'",
            ));
        }
        if self.ack_wait < Duration::from_millis(500) {
            return Err(ConfigError::new(
                "CLUSTER_ACK_WAIT_MS",
                self.ack_wait.as_millis(),
                "must be at least 500",
            ));
        }
        for (var, value) in [
            ("CLUSTER_MAX_DELIVER", self.max_deliver.max(0) as u64),
            ("CLUSTER_REPLICAS", self.replicas as u64),
            ("CLUSTER_MESSAGE_CAPACITY", self.message.capacity as u64),
            ("CLUSTER_PDF_CAPACITY", self.pdf.capacity as u64),
            (
                "CLUSTER_PUBLISH_TIMEOUT_MS",
                self.publish_timeout.as_millis() as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(var, 0, "must be at least 1"));
            }
        }
        // The engine's default max_payload is 1 MiB: an inline upload and
        // its headers must fit.
        if self.inline_max_bytes > 960 * 1024 {
            return Err(ConfigError::new(
                "CLUSTER_INLINE_MAX_BYTES",
                self.inline_max_bytes,
                "must be at most 983040 (the engine's 1 MiB message limit, less room for headers)",
            ));
        }
        Ok(())
    }
}
