//! `AppState`: the cheap, cloneable bag of handles every handler receives:
//! the registered worker types, the async jobs, the page store and the
//! shared configuration; and [`Registry`], how worker types are plugged in.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::disk::Shortage;
use crate::jobs::AsyncJobs;
use crate::kind::{AnyKind, JobKind};
use crate::metrics::HttpMetrics;
use crate::storage::{Layout, LocalPages, PageStore};

/// What a worker type's constructor gets: the configuration and the
/// shared services its workers may use.
pub struct StartContext<'a> {
    pub config: &'a Config,
    pub pages: Arc<dyn PageStore>,
    /// The async runtime, for worker threads that call async services.
    pub runtime: tokio::runtime::Handle,
}

/// A worker type's routes, built once the state exists.
pub type Routes = fn(&AppState) -> OpenApiRouter<AppState>;

type Start = Box<dyn FnOnce(&StartContext) -> std::io::Result<Registered>>;

/// Makes the page store from the output folder's layout.
type MakePages = Box<dyn FnOnce(&Layout) -> Arc<dyn PageStore>>;

/// The worker types a server runs and the routes that feed them. Each is
/// one [`Registry::register`] call; `routes::standard_kinds()` holds the
/// built-in ones. The page store they share is [`LocalPages`] unless
/// [`Registry::page_store`] names another.
#[derive(Default)]
pub struct Registry {
    starts: Vec<Start>,
    pages: Option<MakePages>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a worker type: `start` builds it (and starts its threads) when
    /// the server starts; `routes` are merged into the router behind the
    /// rate limiter.
    pub fn register<K: JobKind>(
        &mut self,
        start: impl FnOnce(&StartContext) -> std::io::Result<K> + 'static,
        routes: Routes,
    ) -> &mut Self {
        self.starts.push(Box::new(move |ctx| {
            let kind = Arc::new(start(ctx)?);
            Ok(Registered {
                any: Arc::clone(&kind) as Arc<dyn Any + Send + Sync>,
                kind,
                routes,
            })
        }));
        self
    }

    /// Uses the page store `make` builds from the output folder's layout
    /// instead of [`LocalPages`] (another backend, or one that wraps it).
    pub fn page_store(
        &mut self,
        make: impl FnOnce(&Layout) -> Arc<dyn PageStore> + 'static,
    ) -> &mut Self {
        self.pages = Some(Box::new(make));
        self
    }
}

/// One running worker type.
struct Registered {
    kind: Arc<dyn AnyKind>,
    /// The same value, typed, for handlers that ask for it by type.
    any: Arc<dyn Any + Send + Sync>,
    routes: Routes,
}

/// The running worker types, in registration order.
pub struct Kinds(Vec<Registered>);

impl Kinds {
    /// The worker type `K`, if registered.
    pub fn get<K: JobKind>(&self) -> Option<Arc<K>> {
        self.0
            .iter()
            .find_map(|r| Arc::clone(&r.any).downcast::<K>().ok())
    }

    /// The worker type named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<dyn AnyKind>> {
        self.0.iter().map(|r| &r.kind).find(|k| k.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn AnyKind>> {
        self.0.iter().map(|r| &r.kind)
    }

    /// Every registered type with its routes.
    pub fn with_routes(&self) -> impl Iterator<Item = (&Arc<dyn AnyKind>, Routes)> {
        self.0.iter().map(|r| (&r.kind, r.routes))
    }
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub kinds: Arc<Kinds>,
    /// Pages and kept inputs.
    pub pages: Arc<dyn PageStore>,
    /// HTTP request and rejection counts.
    pub http: Arc<HttpMetrics>,
    /// Client connections: open, refused, timed out.
    pub connections: Arc<crate::serve::ConnectionStats>,
    /// Request-body bytes admitted job requests may be sending at once.
    pub uploads: Arc<crate::serve::UploadBudget>,
    /// Async jobs: their records, events and retention.
    pub jobs: Arc<AsyncJobs>,
    /// Cluster mode's dispatch (`NATS_URL`); `None`: embedded.
    pub cluster: Option<Arc<dyn crate::dispatch::Dispatcher>>,
    draining: Arc<AtomicBool>,
    pub started: Instant,
}

impl AppState {
    /// Opens the job database and starts every registered worker type. A
    /// job database that cannot be used is an error naming it. Call it
    /// within the async runtime.
    pub async fn start(config: Config, registry: Registry) -> std::io::Result<Self> {
        let layout = Layout::new(&config.output_dir);
        layout.create()?;
        #[cfg(not(feature = "cluster"))]
        if config.cluster.enabled() {
            return Err(std::io::Error::other(
                "NATS_URL is set but this build has no cluster mode: build with --features cluster",
            ));
        }
        #[cfg(feature = "cluster")]
        let objects = match config.cluster.enabled() {
            true => Some(crate::cluster::page_store(&config, &layout)?),
            false => None,
        };
        let pages: Arc<dyn PageStore> = match registry.pages {
            Some(make) => make(&layout),
            #[cfg(feature = "cluster")]
            None if objects.is_some() => {
                let objects = objects.clone().expect("checked just above");
                objects as Arc<dyn PageStore>
            }
            None => Arc::new(LocalPages::new(layout.clone())),
        };
        let jobs = AsyncJobs::open(config.jobs.clone(), &layout, Arc::clone(&pages))
            .await
            .map_err(std::io::Error::other)?;
        let upload_budget = config.max_upload_bytes_in_flight;
        let ctx = StartContext {
            config: &config,
            pages: Arc::clone(&pages),
            runtime: tokio::runtime::Handle::current(),
        };
        let mut kinds = Vec::with_capacity(registry.starts.len());
        for start in registry.starts {
            let registered = start(&ctx)?;
            if kinds
                .iter()
                .any(|k: &Registered| k.kind.name() == registered.kind.name())
            {
                return Err(std::io::Error::other(format!(
                    "two worker types are named {:?}",
                    registered.kind.name()
                )));
            }
            kinds.push(registered);
        }
        let kinds = Arc::new(Kinds(kinds));
        #[allow(unused_mut)]
        let mut cluster: Option<Arc<dyn crate::dispatch::Dispatcher>> = None;
        #[cfg(feature = "cluster")]
        if let Some(objects) = objects {
            let joined =
                crate::cluster::Cluster::start(&config, Arc::clone(&kinds), objects).await?;
            cluster = Some(Arc::new(crate::cluster::ClusterDispatch(joined)));
        }
        Ok(AppState {
            config: Arc::new(config),
            kinds,
            cluster,
            pages,
            http: Arc::new(HttpMetrics::default()),
            connections: Arc::default(),
            uploads: Arc::new(crate::serve::UploadBudget::new(upload_budget)),
            jobs,
            draining: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
        })
    }

    /// The worker type `K`, if registered.
    pub fn kind<K: JobKind>(&self) -> Option<Arc<K>> {
        self.kinds.get::<K>()
    }

    /// The queue of the worker type named `name`.
    pub fn pool(&self, name: &str) -> Option<&dyn crate::queue::Pool> {
        self.kinds.by_name(name).map(|k| k.pool())
    }

    /// Stops admitting jobs on every queue and answers queued ones with 503.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
        if let Some(cluster) = &self.cluster {
            cluster.begin_drain();
        }
        for kind in self.kinds.iter() {
            kind.pool().begin_drain();
        }
    }

    /// Free space below `MIN_FREE_DISK_MB` where the page store keeps
    /// pages, if it has a filesystem and is short.
    pub fn disk_shortage(&self) -> Option<Shortage> {
        Shortage::of(self.pages.free_space(), self.config.min_free_disk_mb)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Lets running jobs finish within `grace`, cancels the rest and joins
    /// every worker thread. Blocking: call it off the async runtime.
    pub fn join(&self, grace: Duration) {
        self.begin_drain();
        let deadline = Instant::now() + grace;
        for kind in self.kinds.iter() {
            kind.pool()
                .join(deadline.saturating_duration_since(Instant::now()));
        }
    }
}
