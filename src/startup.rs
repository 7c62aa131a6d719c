//! Start and stop: [`Application`] binds the listener, starts the worker
//! pools and serves until a shutdown signal, then drains.
//!
//! The same `Application` runs in production (`main.rs`) and in the
//! end-to-end tests (bound to `127.0.0.1:0`, stopped by a oneshot instead of
//! a signal).
//!
//! Shutdown, in order: stop admitting jobs (new ones get 503) and answer the
//! queued ones with 503; stop accepting connections; let running jobs finish
//! within `SHUTDOWN_GRACE_MS`, then cancel what still runs; join the worker
//! threads; let async jobs record how they ended (those stopped by the
//! shutdown stay queued in the job database and run again at the next
//! start); return.
//!
//! Beside the server runs the async jobs' housekeeping: at start and on
//! every sweep the jobs of dead instances are resumed, finished jobs past
//! `RESULT_TTL_SECS` are forgotten, and (in the primary instance only)
//! their records and output are removed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::jobs::recover::{resume_orphans, Resume};
use crate::routes::{router, standard_kinds};
use crate::serve;
use crate::state::{AppState, Registry};

pub struct Application {
    listener: TcpListener,
    /// The operators' listener (`ADMIN_BIND_ADDR`), when set.
    admin: Option<TcpListener>,
    state: AppState,
}

impl Application {
    /// Binds `config.bind_addr` and starts the built-in worker types.
    pub async fn build(config: Config) -> std::io::Result<Self> {
        Application::build_with(config, standard_kinds()).await
    }

    /// Binds `config.bind_addr` and starts the worker types of `registry`.
    pub async fn build_with(config: Config, registry: Registry) -> std::io::Result<Self> {
        let listener = serve::bind(config.bind_addr)?;
        let admin = config.admin_bind_addr.map(serve::bind).transpose()?;
        let state = AppState::start(config, registry).await?;
        Ok(Application {
            listener,
            admin,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address, when `ADMIN_BIND_ADDR` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains as described above.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            admin,
            state,
        } = self;
        let grace = state.config.shutdown_grace;
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
        let drainer = state.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "shutting down: draining"
            );
            drainer.begin_drain();
            // The grace clock starts now, alongside the HTTP drain, so a job
            // that overruns it is cancelled and its handler can answer.
            let joiner = drainer.clone();
            let join = tokio::task::spawn_blocking(move || joiner.join(grace));
            // Once no job runs any more, the event streams still open are
            // those of jobs kept for the next start: end them, or they would
            // hold their connections, and the shutdown, open.
            let jobs = drainer.jobs.clone();
            let join = tokio::spawn(async move {
                let joined = join.await;
                jobs.begin_close();
                joined
            });
            let _ = joined_tx.send(join);
        };
        let housekeeping = tokio::spawn(housekeeping(state.clone()));
        let conn = state.config.connections.clone();
        let workers = state.kinds.iter().map(|k| k.pool().config().workers).sum();
        let fd_limit = serve::raise_fd_limit();
        let cap =
            serve::connection_cap(conn.max_connections, fd_limit, serve::reserved_fds(workers));
        if cap < conn.max_connections {
            tracing::warn!(
                fd_limit,
                max_connections = cap,
                "MAX_CONNECTIONS lowered to what the file-descriptor limit allows"
            );
        }
        // The admin listener outlives the drain, so operators can watch it;
        // it stops once the main one has.
        let (stopped_tx, mut stopped_rx) = tokio::sync::watch::channel(false);
        let admin = admin.map(|listener| {
            let (router, conn) = (crate::routes::admin_router(state.clone()), conn.clone());
            let stats = Arc::new(serve::ConnectionStats::default());
            tokio::spawn(async move {
                let stop = async move {
                    let _ = stopped_rx.wait_for(|stopped| *stopped).await;
                };
                if let Err(e) =
                    serve::serve(listener, router, conn, ADMIN_CONNECTIONS, stats, stop).await
                {
                    tracing::error!("the admin listener failed: {e}");
                }
            })
        });
        let connections = Arc::clone(&state.connections);
        serve::serve(
            listener,
            router(state.clone()),
            conn,
            cap,
            connections,
            signal,
        )
        .await?;
        let _ = stopped_tx.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        match joined_rx.await {
            Ok(join) => {
                if let Err(e) = join.await.unwrap_or_else(Err) {
                    tracing::error!("joining worker pools failed: {e}");
                }
            }
            // Serving ended without a signal (listener error): still join.
            Err(_) => {
                let joiner = state.clone();
                let _ = tokio::task::spawn_blocking(move || joiner.join(grace)).await;
            }
        }
        housekeeping.abort();
        state.jobs.close(ASYNC_CLOSE_WAIT).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long async jobs' tasks get, after the pools stopped, to record how
/// their jobs ended.
const ASYNC_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Connections the admin listener takes at once: operators and scrapers.
const ADMIN_CONNECTIONS: usize = 64;

/// Time between two sweeps: a quarter of the TTL, within bounds, so
/// results are removed at most a quarter late.
fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Claims and runs again the async jobs of dead instances, each through
/// its worker type.
async fn resume(state: &AppState) {
    let kinds = state.kinds.clone();
    resume_orphans(&state.jobs, |name| {
        kinds
            .by_name(name)
            .map(|k| (k.name(), Arc::clone(k) as Arc<dyn Resume>))
    })
    .await;
}

/// Resumes orphaned async jobs at start, then sweeps until aborted.
async fn housekeeping(state: AppState) {
    resume(&state).await;
    let every = sweep_interval(state.config.jobs.result_ttl);
    // Finished jobs leave memory on a shorter beat than the sweep's.
    let beat = every.min(crate::jobs::FINISHED_IN_MEMORY / 2);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if state.is_draining() {
            return;
        }
        state.jobs.forget_finished();
        if last_sweep.elapsed() < every {
            continue;
        }
        last_sweep = tokio::time::Instant::now();
        state.jobs.sweep().await;
        if state.jobs.is_primary() {
            resume(&state).await;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives
/// right after start-up is not lost (its default action would kill the
/// process without a drain). Call it from within the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                (term, int) => {
                    let err = term
                        .err()
                        .or(int.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    tracing::error!(
                        "cannot listen for SIGTERM/SIGINT: {err}; stop the server with SIGKILL"
                    );
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
