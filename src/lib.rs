//! jobserver: an HTTP server that runs CPU-heavy jobs on dedicated OS threads
//! behind bounded queues, one queue and one thread pool per worker type.
//!
//! # Layout
//!
//! The modules follow a request through the server:
//!
//! * [`routes`]: HTTP in. The router, rate limiting, body limits, request
//!   ids, probes; one module per endpoint group, each worker type's
//!   [`kind::JobKind`] beside its routes, one submit path for every type
//!   ([`routes::submit`]) and the HTTP view of jobs ([`routes::view`]).
//! * [`extract`]: request extractors that reject in the server's error
//!   shape, and how a client asked to be answered ([`extract::AsyncMode`]);
//!   [`upload`]: an upload read as it arrives, held in memory up to a
//!   threshold and spooled to a file past it.
//! * [`kind`], [`state`]: worker types as plug-ins: what a type implements,
//!   the [`state::Registry`] it is registered with, and the handles every
//!   handler shares.
//! * [`queue`]: the async/sync boundary. [`queue::JobQueue`] admits a job
//!   into a bounded channel (full → 503), awaits its oneshot under two
//!   deadlines (→ 504) and runs the worker threads' loop.
//! * [`workers`]: the engines, one module per worker type, each a plain
//!   synchronous `process`.
//! * [`render`]: the pdfium renderer processes the PDF workers drive, and
//!   the pipe protocol between them.
//! * [`storage`]: the page store (pages, kept inputs) and the output
//!   folder's layout; [`disk`]: the free space under it and its floor.
//! * [`jobs`]: async jobs. Their state and events in memory, their records
//!   (SQLite, so they survive a crash), recovery, retention and the lease
//!   of the one instance that runs the singletons.
//! * [`tenants`]: optional API keys, the tenant a request is, and what it
//!   may see of other tenants' jobs (nothing).
//! * [`error`]: the way out. One error enum, one JSON shape, one status map.
//! * [`config`], [`clock`], [`metrics`], [`startup`], [`telemetry`]:
//!   configuration from the environment, time, measurements, start and
//!   graceful shutdown, and logging.

pub mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod disk;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod kind;
pub mod metrics;
pub mod queue;
pub mod render;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod tenants;
pub mod upload;
pub mod workers;
