//! [`CacheModule`] boots caches from configuration; [`Caches`] is the registry of named
//! caches, and the process-wide registry that `#[cacheable]` uses.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::backend::memcached::MemcachedBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::redis::RedisBackend;
use crate::cache::{Cache, CacheOptions};
use crate::config::{self, BackendConfig, BackendKind, CacheConfig};
use crate::error::CacheError;

/// Builds [`Caches`] from configuration.
///
/// ```
/// use lexigram_cache::{CacheConfig, CacheModule};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), lexigram_cache::CacheError> {
/// let caches = CacheModule::configure(CacheConfig::default()).await?;
/// caches.install(); // #[cacheable] functions now use these caches
/// assert_eq!(caches.cache().name(), "default");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CacheModule;

impl CacheModule {
    /// Validates `config` and builds every backend in it. The default backend's server must
    /// answer; a secondary one that does not only logs a warning, but one whose server rejects
    /// its settings (such as Memcached credentials refused or not asked for) fails the boot
    /// with an error naming it. With `LEX_ENV` (or `APP_ENV`) set to `production`, remote
    /// backends without a password on a non-loopback host, or with a well-known weak one, are
    /// refused.
    pub async fn configure(config: CacheConfig) -> Result<Caches, CacheError> {
        let default = config::validate(&config)?;
        config::check_security(
            &config,
            config::production_reason(|k| std::env::var(k).ok()),
        )?;
        let mut caches = Vec::with_capacity(config.backends.len());
        let mut servers = Vec::with_capacity(config.backends.len());
        for (i, b) in config.backends.iter().enumerate() {
            let (cache, spread) = build(i, b, &config, i == default).await?;
            caches.push((b.name.clone(), cache));
            servers.push(spread);
        }
        Ok(Caches::new(caches, servers, default, config))
    }

    /// Loads the configuration from `application.yaml` (or `LEX_CONFIG_FILE`), the
    /// `LEX_PROFILE` file and `LEX_CACHE__...` variables (see
    /// [`ConfigSources`](crate::config::ConfigSources)), then [`configure`](Self::configure)s
    /// it. To change values in code as the last layer, load with
    /// [`CacheConfig::from_env`] and call `configure` yourself.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), lexigram_cache::CacheError> {
    /// // With no file and no variables: one in-memory backend named `default`.
    /// let caches = lexigram_cache::CacheModule::from_env().await?;
    /// assert_eq!(caches.cache().name(), "default");
    /// # Ok(()) }
    /// ```
    pub async fn from_env() -> Result<Caches, CacheError> {
        Self::configure(CacheConfig::from_env()?).await
    }

    /// One in-memory backend named `default` with default options. Synchronous; meant for
    /// tests and for code that has no configuration.
    pub fn stub() -> Caches {
        let config = CacheConfig::default();
        let cache = Cache::from_backend(
            "default",
            MemoryBackend::builder()
                .build()
                .unwrap_or_else(|e| unreachable!("default memory options are valid: {e}")),
        );
        Caches::new(vec![("default".into(), cache)], vec![None], 0, config)
    }
}

/// A builder's setting as the configuration field it came from, under `backends[index]`.
fn at_backend(index: usize) -> impl Fn(CacheError) -> CacheError {
    move |e| match e {
        CacheError::InvalidSetting { setting, message } => {
            crate::config::invalid(format!("backends[{index}].{setting}"), message)
        }
        other => other,
    }
}

async fn build(
    index: usize,
    b: &BackendConfig,
    config: &CacheConfig,
    is_default: bool,
) -> Result<(Cache, Option<MemcachedBackend>), CacheError> {
    let service = &config.service;
    let options = CacheOptions {
        default_ttl: b.default_ttl,
        format: b.format,
        compression: b.compression,
        fill_wait: service.fill_wait,
        enabled: config.enabled,
        lock: service.enable_protection,
        lock_ttl: service.lock_ttl,
        lock_wait: service.lock_wait,
        ttl_jitter: service.ttl_jitter,
        early_refresh: service.early_refresh,
        beta: service.beta,
        stale_if_error: service.stale_if_error,
        breaker_threshold: if service.circuit_breaker_enabled {
            service.breaker_threshold
        } else {
            0
        },
        breaker_open_for: service.breaker_open_for,
        call_budget: b.call_budget,
        near: near_options(index, b)?,
    };
    match b.kind {
        BackendKind::Memory => {
            let mut builder = MemoryBackend::builder()
                .engine(b.memory.engine)
                .max_entries(b.memory.max_entries)
                .prefix(b.prefix.clone());
            if let Some(w) = b.memory.max_weight {
                builder = builder.max_weight(w);
            }
            if let Some(tti) = b.memory.time_to_idle {
                builder = builder.time_to_idle(tti);
            }
            let backend = builder.build().map_err(at_backend(index))?;
            Ok((Cache::with_options(b.name.clone(), backend, options), None))
        }
        BackendKind::Redis => {
            let mut urls = b.redis_urls().into_iter();
            let Some(first) = urls.next() else {
                return Err(crate::config::invalid(
                    format!("backends[{index}].redis_url"),
                    "a redis backend needs `redis_url` (or `host`, or `nodes` for a Cluster), \
                     e.g. redis://127.0.0.1:6379/0",
                ));
            };
            let mut builder = urls
                .fold(RedisBackend::builder(first), |builder, url| {
                    builder.node(url)
                })
                .cluster(b.cluster)
                .prefix(b.prefix.clone())
                .connect_timeout(b.connect_timeout)
                .op_timeout(b.op_timeout)
                .allow_unprefixed_clear(b.allow_unprefixed_clear);
            if let Some(ca) = &b.ca_file {
                builder = builder.ca_file(ca.clone());
            }
            let backend = builder.build().map_err(at_backend(index))?;
            reachable_at_boot(b, is_default, backend.ensure_connected().await)?;
            Ok((Cache::with_options(b.name.clone(), backend, options), None))
        }
        BackendKind::Memcached => {
            let mut builder = MemcachedBackend::builder(b.servers.iter().cloned())
                .prefix(b.prefix.clone())
                .pool_size(b.pool_size)
                .connect_timeout(b.connect_timeout)
                .op_timeout(b.op_timeout)
                .max_item_size(b.max_item_size)
                .tls(b.tls);
            if let Some(password) = &b.password {
                builder = builder.credentials(
                    b.username.clone().unwrap_or_default(),
                    password.expose().to_owned(),
                );
            }
            if let Some(ca) = &b.ca_file {
                builder = builder.ca_file(ca.clone());
            }
            let backend = builder.build().map_err(at_backend(index))?;
            reachable_at_boot(b, is_default, backend.ensure_connected().await.map(drop))?;
            // Kept beside the cache so that the health report can show each server.
            let spread = (backend.servers().len() > 1).then(|| backend.clone());
            Ok((
                Cache::with_options(b.name.clone(), backend, options),
                spread,
            ))
        }
    }
}

/// The near tier a backend's configuration asks for: on by default for Redis (single node or
/// Cluster), which keeps it coherent, and for Memcached with a Redis backplane; on Memcached
/// without one only when enabled, relying on its ttl alone.
fn near_options(index: usize, b: &BackendConfig) -> Result<Option<crate::NearOptions>, CacheError> {
    let backplane = b
        .near
        .backplane
        .as_ref()
        .filter(|_| b.kind == BackendKind::Memcached);
    let coherent = b.kind == BackendKind::Redis || backplane.is_some();
    let on = match b.kind {
        BackendKind::Memory => false,
        BackendKind::Redis | BackendKind::Memcached => b.near.enabled.unwrap_or(coherent),
    };
    if !on {
        return Ok(None);
    }
    let mut near = crate::NearOptions::default();
    near.max_entries = b.near.max_entries;
    near.ttl = b.near.ttl;
    near.ttl_only = !coherent;
    if let Some(url) = backplane {
        // Named after the backend's prefix: caches over the same key space share a channel.
        let redis = RedisBackend::builder(url.clone())
            .prefix(b.prefix.clone())
            .connect_timeout(b.connect_timeout)
            .op_timeout(b.op_timeout)
            .build()
            .map_err(|e| match e {
                CacheError::InvalidSetting { message, .. } => {
                    crate::config::invalid(format!("backends[{index}].near.backplane"), message)
                }
                other => other,
            })?;
        near.backplane = Some(redis);
    }
    Ok(Some(near))
}

/// A service cannot run without its default cache server; a secondary one may come up later,
/// and its backend reconnects on its own when it does, so that is only a warning. A server
/// that answers but rejects the backend's settings (credentials it refuses or does not ask
/// for, a user without rights, a database that does not exist, a failed TLS handshake, a server
/// of another kind) is a mistake in the configuration, which no wait fixes: fatal for any
/// backend.
fn reachable_at_boot(
    b: &BackendConfig,
    is_default: bool,
    probe: Result<(), crate::BackendError>,
) -> Result<(), CacheError> {
    match probe {
        Ok(()) => Ok(()),
        Err(e)
            if is_default
                || matches!(
                    e,
                    crate::BackendError::Rejected(_)
                        | crate::BackendError::Auth(_)
                        | crate::BackendError::Setup(_)
                ) =>
        {
            Err(CacheError::backend(&b.name, e))
        }
        Err(e) => {
            tracing::warn!(
                cache = %b.name,
                kind = b.kind.as_str(),
                error = %e,
                "backend is not reachable at boot; calls miss until it is"
            );
            Ok(())
        }
    }
}

/// The registry of named caches. Cheap to clone.
///
/// ```
/// use lexigram_cache::CacheModule;
/// let caches = CacheModule::stub();
/// assert!(caches.named("default").is_some());
/// assert!(caches.named("nope").is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Caches {
    inner: std::sync::Arc<CachesInner>,
}

#[derive(Debug)]
struct CachesInner {
    caches: Vec<(String, Cache)>,
    /// Per cache, in the same order: its Memcached backend when that spreads keys over
    /// several servers, whose health is reported one by one.
    servers: Vec<Option<MemcachedBackend>>,
    default: usize,
    config: CacheConfig,
}

impl Caches {
    fn new(
        caches: Vec<(String, Cache)>,
        servers: Vec<Option<MemcachedBackend>>,
        default: usize,
        config: CacheConfig,
    ) -> Self {
        Caches {
            inner: std::sync::Arc::new(CachesInner {
                caches,
                servers,
                default,
                config,
            }),
        }
    }

    /// The default cache.
    pub fn cache(&self) -> Cache {
        self.default_ref().clone()
    }

    pub(crate) fn default_ref(&self) -> &Cache {
        &self.inner.caches[self.inner.default].1
    }

    /// The cache with this backend name.
    pub fn named(&self, name: &str) -> Option<Cache> {
        self.named_ref(name).cloned()
    }

    pub(crate) fn named_ref(&self, name: &str) -> Option<&Cache> {
        self.index_of(name).map(|i| &self.inner.caches[i].1)
    }

    /// Where the cache named `name` is in this registry.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.inner.caches.iter().position(|(n, _)| n == name)
    }

    /// Where the default cache is.
    pub(crate) fn default_index(&self) -> usize {
        self.inner.default
    }

    /// The cache at `index` (see [`index_of`](Self::index_of)).
    #[inline]
    pub(crate) fn at(&self, index: usize) -> Option<&Cache> {
        self.inner.caches.get(index).map(|(_, c)| c)
    }

    /// The backend names, the default first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let d = self.inner.default;
        std::iter::once(self.inner.caches[d].0.as_str()).chain(
            self.inner
                .caches
                .iter()
                .enumerate()
                .filter(move |(i, _)| *i != d)
                .map(|(_, (n, _))| n.as_str()),
        )
    }

    /// The configuration these caches were built from.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Makes this the process-wide registry that `#[cacheable]` functions use when they name
    /// no `cache`. Replaces any registry installed before; calls already running finish on
    /// the old one.
    pub fn install(&self) {
        *INSTALLED.write() = Some(self.clone());
        GENERATION.fetch_add(1, Ordering::Release);
    }

    /// Pings every backend (each with a 2 s timeout) and reports status and latency; for a
    /// Memcached backend over several servers, each server's too. Such a backend answers
    /// while one of its servers does (the others only make their own keys miss), so it is
    /// healthy then, and its [`servers`](BackendHealth::servers) name the ones that are down.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// let report = lexigram_cache::CacheModule::stub().health().await;
    /// assert!(report.is_healthy());
    /// assert_eq!(report.backends[0].name, "default");
    /// # }
    /// ```
    pub async fn health(&self) -> HealthReport {
        // Pinged together: one slow backend must not add its timeout to the others'.
        let mut pings = tokio::task::JoinSet::new();
        for (index, ((name, cache), servers)) in self
            .inner
            .caches
            .iter()
            .zip(&self.inner.servers)
            .enumerate()
        {
            let (name, cache, servers) = (name.clone(), cache.clone(), servers.clone());
            pings.spawn(async move { (index, backend_health(name, cache, servers).await) });
        }
        let mut backends: Vec<(usize, BackendHealth)> = Vec::new();
        while let Some(joined) = pings.join_next().await {
            match joined {
                Ok(done) => backends.push(done),
                Err(e) => tracing::error!(error = %e, "health check task failed"),
            }
        }
        backends.sort_by_key(|(i, _)| *i);
        HealthReport {
            backends: backends.into_iter().map(|(_, h)| h).collect(),
        }
    }

    /// The health of the backend named `name`, pinged as [`health`](Self::health) pings
    /// each; `None` for a name that is not configured.
    pub async fn health_of(&self, name: &str) -> Option<BackendHealth> {
        let inner = &*self.inner;
        let index = inner.caches.iter().position(|(n, _)| n == name)?;
        let (name, cache) = inner.caches[index].clone();
        let servers = inner.servers.get(index).cloned().flatten();
        Some(backend_health(name, cache, servers).await)
    }
}

const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Pings one backend within [`HEALTH_TIMEOUT`]. With `servers`, every server is pinged once
/// and the backend's line sums them up as its own ping does: it answers while one server does.
async fn backend_health(
    name: String,
    cache: Cache,
    servers: Option<MemcachedBackend>,
) -> BackendHealth {
    let kind = cache.kind();
    let late = || format!("no answer within {HEALTH_TIMEOUT:?}");
    let (pinged, servers) = match servers {
        None => {
            let pinged = match tokio::time::timeout(HEALTH_TIMEOUT, cache.ping()).await {
                Ok(pinged) => pinged.map_err(|e| e.to_string()),
                Err(_) => Err(late()),
            };
            (pinged, Vec::new())
        }
        Some(backend) => match tokio::time::timeout(HEALTH_TIMEOUT, backend.ping_each()).await {
            Ok(each) => {
                let servers: Vec<ServerHealth> = each
                    .into_iter()
                    .map(|(addr, pinged)| ServerHealth {
                        addr,
                        healthy: pinged.is_ok(),
                        latency: pinged.as_ref().ok().copied(),
                        error: pinged.err().map(|e| e.to_string()),
                    })
                    .collect();
                let slowest = servers.iter().filter_map(|s| s.latency).max();
                let pinged = slowest.ok_or_else(|| {
                    let why: Vec<&str> =
                        servers.iter().filter_map(|s| s.error.as_deref()).collect();
                    format!(
                        "cache `{name}`: no memcached server answers ({})",
                        why.join("; ")
                    )
                });
                (pinged, servers)
            }
            Err(_) => (Err(late()), Vec::new()),
        },
    };
    BackendHealth {
        name,
        kind,
        healthy: pinged.is_ok(),
        latency: pinged.as_ref().ok().copied(),
        error: pinged.err(),
        servers,
    }
}

/// The outcome of [`Caches::health`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HealthReport {
    /// One entry per backend, in configuration order.
    pub backends: Vec<BackendHealth>,
}

impl HealthReport {
    /// Whether every backend answered.
    pub fn is_healthy(&self) -> bool {
        self.backends.iter().all(|b| b.healthy)
    }
}

/// The health of one backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BackendHealth {
    /// The backend name.
    pub name: String,
    /// The backend kind (`memory`, `redis`, ...).
    pub kind: &'static str,
    /// Whether it answered a ping in time.
    pub healthy: bool,
    /// The ping's round-trip time, when it answered (the slowest server's, over several).
    pub latency: Option<Duration>,
    /// Why it is unhealthy.
    pub error: Option<String>,
    /// For a Memcached backend over several servers, each of them in configuration order;
    /// empty for other backends, whose line says it all.
    pub servers: Vec<ServerHealth>,
}

impl BackendHealth {
    /// The servers of [`servers`](Self::servers) that did not answer.
    pub fn servers_down(&self) -> impl Iterator<Item = &ServerHealth> {
        self.servers.iter().filter(|s| !s.healthy)
    }
}

/// The health of one server of a backend, as its own ping found it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerHealth {
    /// Its address, `host:port`.
    pub addr: String,
    /// Whether it answered in time.
    pub healthy: bool,
    /// Its round-trip time, when it answered.
    pub latency: Option<Duration>,
    /// Why it did not answer (its keys miss meanwhile).
    pub error: Option<String>,
}

static INSTALLED: RwLock<Option<Caches>> = RwLock::new(None);
static GENERATION: AtomicU64 = AtomicU64::new(1);
static ZERO_CONFIG: OnceLock<Caches> = OnceLock::new();

thread_local! {
    /// A per-thread copy of the installed registry, so that the hit path of a cached function
    /// reads a thread-local and one shared atomic instead of taking a lock that every core
    /// would write to.
    static LOCAL: RefCell<(u64, Option<Caches>)> = const { RefCell::new((0, None)) };
}

/// Runs `f` with the installed registry, or the zero-config in-memory one if none was
/// installed, and the registry's generation: a number that changes whenever another registry
/// is installed, `0` when it is not known (then nothing derived from it may be kept).
#[inline]
pub(crate) fn with_installed<R>(f: impl FnOnce(&Caches, u64) -> R) -> R {
    let generation = GENERATION.load(Ordering::Acquire);
    let mut f = Some(f);
    let fast = LOCAL.try_with(|local| {
        {
            let slot = local.try_borrow().ok()?;
            if slot.0 == generation
                && let Some(caches) = &slot.1
            {
                return Some(f.take()?(caches, generation));
            }
        }
        *local.try_borrow_mut().ok()? = (generation, Some(installed_now()));
        let slot = local.try_borrow().ok()?;
        Some(f.take()?(slot.1.as_ref()?, generation))
    });
    match (fast, f) {
        (Ok(Some(r)), _) => r,
        // Thread-local storage is gone (a call from a thread-local destructor) or busy.
        (_, Some(f)) => f(&installed_now(), 0),
        (_, None) => unreachable!("`f` is only taken when its result is returned"),
    }
}

fn installed_now() -> Caches {
    if let Some(c) = INSTALLED.read().as_ref() {
        return c.clone();
    }
    ZERO_CONFIG.get_or_init(CacheModule::stub).clone()
}

/// The installed registry (or the zero-config one).
pub fn installed() -> Caches {
    installed_now()
}
