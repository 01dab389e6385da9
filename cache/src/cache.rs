//! [`Cache`]: the typed handle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::CacheBackend;
use crate::backend::memory::{MemEntry, MemoryBackend, NEVER};
use crate::clock::{duration_ms, wall_ms};
use crate::codec::{Envelope, Format, fingerprint};
use crate::error::BackendError;
use crate::error::CacheError;
use crate::observe::{
    CacheStats, Counter, Counters, FnStats, MetricHandles, record_latency, short_key,
};
use crate::protect::breaker::{Breaker, Permit};
use crate::protect::early;
use crate::protect::single_flight::{self, Join, SingleFlight};

/// A value that can be cached: any serde type that is `Clone + Send + Sync + 'static`.
///
/// Implemented for every such type; you never implement it yourself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached",
    label = "the cached value type",
    note = "a cached value must implement serde's Serialize and Deserialize, and Clone + Send + Sync + 'static"
)]
pub trait CacheValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> CacheValue for T {}

/// How long a value lives.
///
/// Every `ttl` parameter takes `impl Into<Ttl>`, so a [`Duration`], `None` (the default) or
/// `Some(duration)` work as well:
///
/// ```
/// use lexigram_cache::Ttl;
/// use std::time::Duration;
///
/// assert_eq!(Ttl::from(None), Ttl::Default);
/// assert_eq!(Ttl::from(Duration::from_secs(5)), Ttl::After(Duration::from_secs(5)));
/// assert_eq!(Ttl::secs(60), Ttl::After(Duration::from_secs(60)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ttl {
    /// The cache's `default_ttl`.
    #[default]
    Default,
    /// Expire after this long. Zero is rejected with [`CacheError::ZeroTtl`]; anything up to
    /// `Duration::MAX` is accepted (jitter and a stale-if-error window saturate there), and a
    /// remote backend stores at most what its server can hold.
    After(Duration),
    /// Never expire (the store's eviction may still drop the value).
    Never,
}

impl Ttl {
    /// `Ttl::After` a number of seconds.
    pub const fn secs(secs: u64) -> Self {
        Ttl::After(Duration::from_secs(secs))
    }

    /// The concrete lifetime for a cache whose default is `default` (`None` = never).
    pub(crate) fn resolve(self, default: Option<Duration>) -> Result<Option<Duration>, CacheError> {
        match self {
            Ttl::Default => Ok(default),
            Ttl::After(d) if d.is_zero() => Err(CacheError::ZeroTtl),
            Ttl::After(d) => Ok(Some(d)),
            Ttl::Never => Ok(None),
        }
    }
}

impl From<Duration> for Ttl {
    fn from(d: Duration) -> Self {
        Ttl::After(d)
    }
}

impl From<Option<Duration>> for Ttl {
    fn from(d: Option<Duration>) -> Self {
        d.map_or(Ttl::Default, Ttl::After)
    }
}

/// Options of a [`Cache`] that are not the backend's own.
///
/// ```
/// use lexigram_cache::{Cache, CacheOptions, Format, MemoryBackend};
/// use std::time::Duration;
///
/// let mut options = CacheOptions::default();
/// options.default_ttl = Some(Duration::from_secs(30));
/// options.format = Format::Json;
/// let cache = Cache::with_options("api", MemoryBackend::builder().build().unwrap(), options);
/// assert_eq!(cache.name(), "api");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheOptions {
    /// Lifetime of values stored with [`Ttl::Default`]; `None` means never expire.
    /// Default: 5 minutes, so that a forgotten ttl cannot serve a value forever.
    pub default_ttl: Option<Duration>,
    /// Payload format for remote backends (the memory backend stores values unserialized).
    pub format: Format,
    /// Which remote payloads are compressed. Default: those of 1 KiB and more.
    pub compression: crate::codec::Compression,
    /// How long a caller waits for another caller's fill of the same key before running the
    /// body itself: in total, however many leaders fail and hand the fill on meanwhile.
    /// Default: 10 s.
    pub fill_wait: Duration,
    /// `false` turns the cache into a pass-through: reads miss, writes are dropped, and
    /// `get_or_insert_with` always runs the body.
    pub enabled: bool,
    /// On a backend shared between processes, take the backend's fill lock before running a
    /// body, so one process fills a cold key while the others wait for its value. Default on.
    pub lock: bool,
    /// How long a fill lock lives if its holder dies without releasing it. Default 10 s.
    pub lock_ttl: Duration,
    /// How long a caller waits for another process's fill before running the body itself.
    /// Default 10 s.
    pub lock_wait: Duration,
    /// Filled values get a ttl scaled by a random factor in `1 ± ttl_jitter`, so keys filled
    /// together do not expire together. `0` switches it off. Default `0.1`.
    pub ttl_jitter: f64,
    /// XFetch early refresh of hot keys on remote backends (one caller recomputes shortly
    /// before expiry while the others are served). Default on.
    pub early_refresh: bool,
    /// XFetch's `beta`: above 1 refreshes earlier, below 1 later. Default 1.
    pub beta: f64,
    /// Keep values this long past their expiry, and serve them when a refill fails.
    /// Default `None` (off).
    pub stale_if_error: Option<Duration>,
    /// Consecutive backend failures (timeouts count) that open the circuit breaker; `0`
    /// never opens it. Default 5.
    pub breaker_threshold: u32,
    /// How long an open breaker skips the backend before one call probes it. Default 5 s.
    pub breaker_open_for: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            default_ttl: Some(Duration::from_secs(300)),
            format: Format::MsgPack,
            compression: crate::codec::Compression::default(),
            fill_wait: Duration::from_secs(10),
            enabled: true,
            lock: true,
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(10),
            ttl_jitter: 0.1,
            early_refresh: true,
            beta: 1.0,
            stale_if_error: None,
            breaker_threshold: 5,
            breaker_open_for: Duration::from_secs(5),
        }
    }
}

/// How one fill is protected: the cache's options, with a `#[cacheable]` function's own
/// `protect`, `early_refresh`, `beta` and `stale_if_error` on top.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FillPolicy {
    /// The `#[cacheable]` function this fill is for, whose own counters are bumped too.
    pub(crate) function: Option<(&'static str, &'static FnStats)>,
    pub(crate) lock: bool,
    pub(crate) early_refresh: bool,
    pub(crate) beta: f64,
    pub(crate) stale_if_error: Option<Duration>,
}

pub(crate) enum Store {
    Memory(MemoryBackend),
    Remote(Box<dyn CacheBackend>),
}

struct Inner {
    name: String,
    store: Store,
    options: CacheOptions,
    flights: SingleFlight,
    counters: Counters,
    breaker: Breaker,
    /// Metric handles for calls made outside any `#[cacheable]` function.
    metrics: MetricHandles,
}

/// One backend with its codec and protection: what application code calls.
///
/// Cheap to clone (an `Arc` inside); clones share the store, the statistics and the in-flight
/// fills.
///
/// ```
/// use lexigram_cache::CacheModule;
/// use std::time::Duration;
///
/// # #[tokio::main] async fn main() -> Result<(), lexigram_cache::CacheError> {
/// let cache = CacheModule::stub().cache();
/// cache.set("greeting", &"hello".to_string(), Duration::from_secs(60)).await?;
/// assert_eq!(cache.get::<String>("greeting").await?, Some("hello".to_string()));
///
/// // Cache-aside with stampede protection: concurrent callers share one run of the body.
/// let n = cache.get_or_insert_with("answer", None, || async { 42u32 }).await;
/// assert_eq!(n, 42);
/// # Ok(()) }
/// ```
///
/// # Errors and the circuit breaker
///
/// Explicit calls (`get`, `get_many`, `exists`, `set`, `set_many`, `delete`, `delete_many`,
/// `delete_pattern`, `clear`, `keys`, `raw`) say what happened to them: a backend failure is a
/// [`CacheError::Backend`], and so is a call the open circuit breaker skipped (its source is
/// [`BackendError::CircuitOpen`]). A write-through update that was not stored never looks stored,
/// and a skipped read is not mistaken for a miss. [`ping`](Self::ping) always asks the backend.
///
/// Fills ([`get_or_insert_with`](Self::get_or_insert_with),
/// [`try_get_or_insert_with`](Self::try_get_or_insert_with) and `#[cacheable]` functions) never
/// fail because of the cache: a failed or skipped read is a miss, a failed or skipped store is
/// logged and counted, and the body's value is returned.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("backend", &self.kind())
            .field("options", &self.inner.options)
            .finish()
    }
}

/// What a read found, before statistics.
enum Found<T> {
    /// A value before its expiry; for remote values, what XFetch needs.
    Fresh(T, Option<Timing>),
    /// A value past its expiry but inside its stale-if-error window.
    Stale(T),
    Miss,
}

/// When a remote value expires and how long it took to compute.
#[derive(Clone, Copy)]
struct Timing {
    expires_ms: u64,
    compute_us: u32,
}

impl Cache {
    /// A cache over any backend, with default [`CacheOptions`].
    ///
    /// A [`MemoryBackend`] passed here keeps its typed fast path (values are not serialized).
    pub fn from_backend(name: impl Into<String>, backend: impl CacheBackend) -> Self {
        Self::with_options(name, backend, CacheOptions::default())
    }

    /// A cache over any backend, with the given options.
    pub fn with_options(
        name: impl Into<String>,
        backend: impl CacheBackend,
        options: CacheOptions,
    ) -> Self {
        let store = into_store(backend);
        let name = name.into();
        Cache {
            inner: Arc::new(Inner {
                store,
                flights: SingleFlight::default(),
                counters: Counters::default(),
                breaker: Breaker::new(options.breaker_threshold, options.breaker_open_for),
                metrics: MetricHandles::new(&name, ""),
                name,
                options,
            }),
        }
    }

    /// The cache's name (the backend name in the configuration).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The backend kind: `memory`, `redis`, `memcached`, or a custom backend's.
    pub fn kind(&self) -> &'static str {
        match &self.inner.store {
            Store::Memory(_) => "memory",
            Store::Remote(b) => b.kind(),
        }
    }

    /// The options this cache was built with.
    pub fn options(&self) -> &CacheOptions {
        &self.inner.options
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let evictions = match &self.inner.store {
            Store::Memory(m) => m.evictions(),
            Store::Remote(_) => 0,
        };
        let mut stats = self.inner.counters.snapshot(evictions);
        stats.breaker_opens = self.inner.breaker.opened();
        stats.breaker_short_circuits = self.inner.breaker.short_circuits();
        stats.breaker_open = self.inner.breaker.is_open();
        stats
    }

    pub(crate) fn count(&self, c: Counter) {
        self.inner.counters.incr(c);
        self.inner.metrics.incr(c);
    }

    /// Counts an event of a fill: in the cache, and in the function it is for, if any.
    #[inline]
    fn count_in(&self, policy: &FillPolicy, c: Counter) {
        self.inner.counters.incr(c);
        match policy.function {
            Some((scope, stats)) => stats.incr(scope, &self.inner.name, c),
            None => self.inner.metrics.incr(c),
        }
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    fn backend_error(&self, op: &str, key: &str, e: BackendError) -> CacheError {
        if let BackendError::CircuitOpen { .. } = e {
            // Counted by the breaker as a short circuit; the backend itself did not fail now.
            tracing::debug!(cache = %self.inner.name, key = short_key(key), op, "skipped: the circuit breaker is open");
        } else {
            self.count(Counter::Errors);
            tracing::warn!(cache = %self.inner.name, key = short_key(key), op, error = %e, "cache backend error");
        }
        CacheError::backend(&self.inner.name, e)
    }

    /// One explicit remote call: through the breaker, its failure (a skip by an open breaker
    /// included) returned as a [`CacheError`].
    async fn remote<R>(
        &self,
        op: &'static str,
        key: &str,
        call: impl Future<Output = Result<R, BackendError>>,
    ) -> Result<R, CacheError> {
        self.guarded(op, call)
            .await
            .map_err(|e| self.backend_error(op, key, e))
    }

    /// The value under `key`, or `None` when it is missing, expired, or was written as another
    /// type (that last case is logged and counted in `decode_failures`, never an error).
    /// A backend failure, or a read skipped by the open circuit breaker, is an error.
    pub async fn get<T: CacheValue>(&self, key: &str) -> Result<Option<T>, CacheError> {
        self.get_versioned(key, 0).await
    }

    pub(crate) async fn get_versioned<T: CacheValue>(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Option<T>, CacheError> {
        if !self.inner.options.enabled {
            return Ok(None);
        }
        match self.find::<T>(key, version).await? {
            Found::Fresh(v, _) => {
                self.count(Counter::Hits);
                tracing::debug!(cache = %self.inner.name, key = short_key(key), "cache hit");
                Ok(Some(v))
            }
            Found::Stale(_) | Found::Miss => {
                self.count(Counter::Misses);
                tracing::debug!(cache = %self.inner.name, key = short_key(key), "cache miss");
                Ok(None)
            }
        }
    }

    /// The memory fast path: synchronous, no serialization. `None` for a miss, and always
    /// `None` on a remote backend.
    #[inline]
    pub(crate) fn memory_hit<T: CacheValue>(
        &self,
        key: &str,
        function: Option<(&'static str, &'static FnStats)>,
    ) -> Option<T> {
        match &self.inner.store {
            Store::Memory(m) if self.inner.options.enabled => {
                let v = self.memory_find::<T>(m, key)?;
                self.inner.counters.incr(Counter::Hits);
                match function {
                    Some((scope, stats)) => stats.incr(scope, &self.inner.name, Counter::Hits),
                    None => self.inner.metrics.incr(Counter::Hits),
                }
                Some(v)
            }
            _ => None,
        }
    }

    #[inline]
    fn memory_find<T: CacheValue>(&self, m: &MemoryBackend, key: &str) -> Option<T> {
        let entry = m.entry(key)?;
        if entry.expires_at != NEVER && entry.expires_at <= m.clock().now_ms() {
            return None;
        }
        match entry.value.downcast_ref::<T>() {
            Some(v) => Some(v.clone()),
            None => {
                self.count(Counter::DecodeFailures);
                tracing::warn!(
                    cache = %self.inner.name,
                    key = short_key(key),
                    expected = std::any::type_name::<T>(),
                    "cached value has another type; treating as a miss"
                );
                None
            }
        }
    }

    /// An expired memory entry still inside its stale-if-error window.
    fn memory_stale<T: CacheValue>(&self, m: &MemoryBackend, key: &str) -> Found<T> {
        match m.entry(key) {
            Some(entry) if entry.keep_until != entry.expires_at => {
                match entry.value.downcast_ref::<T>() {
                    Some(v) => Found::Stale(v.clone()),
                    None => Found::Miss,
                }
            }
            _ => Found::Miss,
        }
    }

    /// Runs one backend call through the circuit breaker: while it is open the call is not
    /// made and `CircuitOpen` comes back at once.
    async fn guarded<R>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<R, BackendError>>,
    ) -> Result<R, BackendError> {
        let permit = self.inner.breaker.permit();
        if let Permit::Open(retry_in) = permit {
            return Err(BackendError::CircuitOpen { retry_in });
        }
        let started = Instant::now();
        let result = call.await;
        record_latency(&self.inner.name, op, started.elapsed());
        self.inner
            .breaker
            .record(&self.inner.name, permit, result.as_ref().map(drop));
        result
    }

    async fn find<T: CacheValue>(&self, key: &str, version: u32) -> Result<Found<T>, CacheError> {
        match &self.inner.store {
            Store::Memory(m) => Ok(match self.memory_find::<T>(m, key) {
                Some(v) => Found::Fresh(v, None),
                None => self.memory_stale::<T>(m, key),
            }),
            Store::Remote(b) => Ok(match self.remote("get", key, b.get(key)).await? {
                Some(bytes) => self.decode(key, &bytes, version),
                None => Found::Miss,
            }),
        }
    }

    fn decode<T: CacheValue>(&self, key: &str, bytes: &[u8], version: u32) -> Found<T> {
        match Envelope::decode::<T>(bytes, fingerprint::<T>(version)) {
            Ok((value, env)) => {
                let now = wall_ms();
                if fresh_at(&env, now) {
                    Found::Fresh(
                        value,
                        Some(Timing {
                            expires_ms: env.expires_at_ms,
                            compute_us: env.compute_us,
                        }),
                    )
                } else if env.keep_until_ms > now {
                    Found::Stale(value)
                } else {
                    Found::Miss
                }
            }
            Err(reason) => {
                self.count(Counter::DecodeFailures);
                tracing::warn!(
                    cache = %self.inner.name,
                    key = short_key(key),
                    %reason,
                    "stored bytes are not a value of the expected type; treating as a miss"
                );
                Found::Miss
            }
        }
    }

    /// Stores `value` under `key`. `ttl`: a [`Duration`], [`Ttl::Never`], or `None` for the
    /// cache's default; a zero duration is [`CacheError::ZeroTtl`]. `Ok` means the backend
    /// stored it: a write skipped by the open circuit breaker is an error
    /// ([`BackendError::CircuitOpen`]).
    pub async fn set<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: impl Into<Ttl>,
    ) -> Result<(), CacheError> {
        let ttl = ttl.into().resolve(self.inner.options.default_ttl)?;
        self.store_value(key, value, ttl, 0, Duration::ZERO, None)
            .await
    }

    /// Stores `value`; with `keep`, the value stays readable as stale that long past `ttl`.
    pub(crate) async fn store_value<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
    ) -> Result<(), CacheError> {
        if !self.inner.options.enabled {
            return Ok(());
        }
        match &self.inner.store {
            Store::Memory(m) => {
                let weight = if m.weighted() {
                    let bytes = self.serialize(key, value)?;
                    u32::try_from(key.len() + bytes.len()).unwrap_or(u32::MAX)
                } else {
                    1
                };
                let expires_at = m.expiry(ttl);
                let keep_until = match keep {
                    Some(k) if expires_at != NEVER => expires_at.saturating_add(duration_ms(k)),
                    _ => expires_at,
                };
                m.insert(
                    key,
                    MemEntry {
                        value: Arc::new(value.clone()),
                        expires_at,
                        keep_until,
                        weight,
                    },
                );
            }
            Store::Remote(b) => {
                let (bytes, backend_ttl) =
                    self.encode_remote(key, value, ttl, version, compute, keep)?;
                self.remote("set", key, b.set(key, &bytes, backend_ttl))
                    .await?;
            }
        }
        self.count(Counter::Sets);
        Ok(())
    }

    /// The bytes a remote backend stores for `value`, and the ttl it stores them with.
    fn encode_remote<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
    ) -> Result<(Vec<u8>, Option<Duration>), CacheError> {
        let bytes = self.envelope(key, value, ttl, version, compute, keep)?;
        // The server keeps the value through its stale window; saturating, because "never" is
        // the longest window. The backend clamps to what its server can store.
        let backend_ttl = ttl.map(|t| t.saturating_add(keep.unwrap_or_default()));
        Ok((bytes, backend_ttl))
    }

    fn serialize<T: CacheValue>(&self, key: &str, value: &T) -> Result<Vec<u8>, CacheError> {
        self.inner.options.format.to_vec(value).map_err(|reason| {
            self.count(Counter::Errors);
            CacheError::Serialize {
                cache: self.inner.name.clone(),
                key: key.to_owned(),
                reason,
            }
        })
    }

    fn envelope<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
    ) -> Result<Vec<u8>, CacheError> {
        let payload = self.serialize(key, value)?;
        let now = wall_ms();
        let expires_at_ms = ttl.map_or(0, |d| now.saturating_add(duration_ms(d)));
        let keep_until_ms = match keep {
            Some(k) if expires_at_ms != 0 => expires_at_ms.saturating_add(duration_ms(k)),
            _ => expires_at_ms,
        };
        Ok(Envelope {
            format: self.inner.options.format,
            fingerprint: fingerprint::<T>(version),
            stored_at_ms: now,
            expires_at_ms,
            keep_until_ms,
            compute_us: u32::try_from(compute.as_micros()).unwrap_or(u32::MAX),
            payload: &payload,
        }
        .encode(self.inner.options.compression))
    }

    /// Removes `key`; `true` if a value was there.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let removed = match &self.inner.store {
            Store::Memory(m) => m.remove(key),
            Store::Remote(b) => self.remote("delete", key, b.delete(key)).await?,
        };
        self.inner
            .counters
            .add(Counter::Deletes, u64::from(removed));
        Ok(removed)
    }

    /// Whether `key` holds a value before its expiry (of any type): what a read of the right
    /// type would return. A value past its expiry is not there, even while it is kept for
    /// stale-if-error, on every backend. On a remote backend this reads the stored value (the
    /// expiry is in its header), so it costs as much as a `get`.
    pub async fn exists(&self, key: &str) -> Result<bool, CacheError> {
        if !self.inner.options.enabled {
            return Ok(false);
        }
        match &self.inner.store {
            Store::Memory(m) => Ok(m
                .entry(key)
                .is_some_and(|e| e.expires_at == NEVER || e.expires_at > m.clock().now_ms())),
            Store::Remote(b) => {
                // The server keeps a value through its stale window too; only the envelope
                // knows the expiry a read goes by.
                let bytes = self.remote("exists", key, b.get(key)).await?;
                Ok(bytes.is_some_and(|bytes| {
                    Envelope::parse(&bytes).is_ok_and(|env| fresh_at(&env, wall_ms()))
                }))
            }
        }
    }

    /// The values of several keys, in the order given (one round trip on network backends).
    pub async fn get_many<T: CacheValue>(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<T>>, CacheError> {
        if !self.inner.options.enabled {
            return Ok(keys.iter().map(|_| None).collect());
        }
        let found: Vec<Option<T>> = match &self.inner.store {
            Store::Memory(m) => keys.iter().map(|k| self.memory_find::<T>(m, k)).collect(),
            Store::Remote(b) => {
                let first = keys.first().unwrap_or(&"");
                let raw = self.remote("get_many", first, b.get_many(keys)).await?;
                keys.iter()
                    .zip(raw)
                    .map(
                        |(k, bytes)| match bytes.map(|b| self.decode::<T>(k, &b, 0)) {
                            Some(Found::Fresh(v, _)) => Some(v),
                            _ => None,
                        },
                    )
                    .collect()
            }
        };
        let hits = found.iter().filter(|v| v.is_some()).count() as u64;
        self.inner.counters.add(Counter::Hits, hits);
        self.inner
            .counters
            .add(Counter::Misses, found.len() as u64 - hits);
        Ok(found)
    }

    /// Stores several values with one ttl (pipelined on network backends). Errors as for
    /// [`set`](Self::set).
    pub async fn set_many<K: AsRef<str>, T: CacheValue>(
        &self,
        items: &[(K, T)],
        ttl: impl Into<Ttl>,
    ) -> Result<(), CacheError> {
        let ttl = ttl.into().resolve(self.inner.options.default_ttl)?;
        if !self.inner.options.enabled {
            return Ok(());
        }
        match &self.inner.store {
            Store::Memory(_) => {
                for (k, v) in items {
                    self.store_value(k.as_ref(), v, ttl, 0, Duration::ZERO, None)
                        .await?;
                }
            }
            Store::Remote(b) => {
                let encoded = items
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            k.as_ref(),
                            self.envelope(k.as_ref(), v, ttl, 0, Duration::ZERO, None)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, CacheError>>()?;
                let refs: Vec<(&str, &[u8])> =
                    encoded.iter().map(|(k, v)| (*k, v.as_slice())).collect();
                let first = refs.first().map_or("", |(k, _)| k);
                self.remote("set_many", first, b.set_many(&refs, ttl))
                    .await?;
                self.inner.counters.add(Counter::Sets, items.len() as u64);
            }
        }
        Ok(())
    }

    /// Removes several keys; returns how many existed.
    pub async fn delete_many(&self, keys: &[&str]) -> Result<u64, CacheError> {
        let n = match &self.inner.store {
            Store::Memory(m) => keys.iter().map(|k| u64::from(m.remove(k))).sum(),
            Store::Remote(b) => {
                let first = keys.first().unwrap_or(&"");
                self.remote("delete_many", first, b.delete_many(keys))
                    .await?
            }
        };
        self.inner.counters.add(Counter::Deletes, n);
        Ok(n)
    }

    /// Removes every key matching a glob (`*`, `?`, `\` escapes); returns how many.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = lexigram_cache::CacheModule::stub().cache();
    /// for id in 0..3u32 {
    ///     cache.set(&format!("user:{id}"), &id, None).await.unwrap();
    /// }
    /// cache.set("order:1", &1u32, None).await.unwrap();
    /// assert_eq!(cache.delete_pattern("user:*").await.unwrap(), 3);
    /// assert!(cache.exists("order:1").await.unwrap());
    /// # }
    /// ```
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        let n = match &self.inner.store {
            Store::Memory(m) => m.remove_matching(pattern),
            Store::Remote(b) => {
                self.remote("delete_pattern", pattern, b.delete_pattern(pattern))
                    .await?
            }
        };
        self.inner.counters.add(Counter::Deletes, n);
        Ok(n)
    }

    /// Removes every key of this cache (only under its backend's prefix); returns how many.
    pub async fn clear(&self) -> Result<u64, CacheError> {
        let n = match &self.inner.store {
            Store::Memory(m) => m.remove_all(),
            Store::Remote(b) => self.remote("clear", "", b.clear()).await?,
        };
        self.inner.counters.add(Counter::Deletes, n);
        Ok(n)
    }

    /// Up to `limit` keys matching a glob, without the prefix; for tools and debugging.
    /// Memcached cannot list keys and returns an `Unsupported` error.
    pub async fn keys(&self, pattern: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        match &self.inner.store {
            Store::Memory(m) => Ok(m.keys_matching(pattern, limit)),
            Store::Remote(b) => self.remote("keys", pattern, b.keys(pattern, limit)).await,
        }
    }

    /// The stored bytes under `key` on a remote backend (the envelope, see
    /// [`codec::Envelope`](crate::codec::Envelope)); `None` for a miss, and always `None` on the
    /// memory backend, whose values are not serialized. For tools and debugging.
    pub async fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match &self.inner.store {
            Store::Memory(_) => Ok(None),
            Store::Remote(b) => self.remote("get", key, b.get(key)).await,
        }
    }

    /// Checks the backend answers; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, CacheError> {
        match &self.inner.store {
            Store::Memory(m) => m.ping().await,
            Store::Remote(b) => b.ping().await,
        }
        .map_err(|e| self.backend_error("ping", "", e))
    }

    /// The cached value, or the value of `init` stored and returned (cache-aside).
    ///
    /// Concurrent callers of the same key share one run of `init` (single flight); see
    /// [`try_get_or_insert_with`](Self::try_get_or_insert_with) for the details.
    ///
    /// A cache that cannot be read or written never fails this call: backend errors are logged
    /// and counted, and `init`'s value is returned. A zero `ttl` is a caller bug: the value is
    /// returned but not stored, and the [`CacheError::ZeroTtl`] is logged and counted.
    pub async fn get_or_insert_with<T, F, Fut>(&self, key: &str, ttl: impl Into<Ttl>, init: F) -> T
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let filled: Result<T, std::convert::Infallible> = self
            .fill(key, ttl.into(), 0, || async { Ok(init().await) })
            .await;
        match filled {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_insert_with`](Self::get_or_insert_with) with a fallible `init`: only an
    /// `Ok` is stored, an `Err` is returned to this caller and nothing is cached.
    ///
    /// Single flight: the first caller of a cold key runs `init`; callers arriving meanwhile
    /// wait and receive its `Ok` value. If that caller's future is dropped (cancelled), panics,
    /// or returns `Err`, one waiter takes over and runs its own `init` — so at most one `init`
    /// per key runs at a time in this process, and nobody waits on a caller that is gone.
    /// A waiter gives up waiting after [`CacheOptions::fill_wait`] in total and runs `init`
    /// itself. When `init` fails and an expired value is inside its
    /// [`stale_if_error`](CacheOptions::stale_if_error) window, that caller and everyone waiting
    /// for it get the expired value (each counted in `stale_served`).
    /// An `init` that calls the same key of the same cache again runs directly instead of
    /// waiting for itself.
    ///
    /// Waiting uses tokio's timer: call this inside a tokio runtime with time enabled (any
    /// `#[tokio::main]` runtime is).
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// let cache = lexigram_cache::CacheModule::stub().cache();
    /// let r: Result<u32, String> = cache
    ///     .try_get_or_insert_with("flaky", None, || async { Err("db down".to_string()) })
    ///     .await;
    /// assert!(r.is_err());
    /// assert_eq!(cache.get::<u32>("flaky").await.unwrap(), None); // errors are not cached
    /// # }
    /// ```
    pub async fn try_get_or_insert_with<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: impl Into<Ttl>,
        init: F,
    ) -> Result<T, E>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.fill(key, ttl.into(), 0, init).await
    }

    /// The protection of fills that did not choose their own: the cache's options.
    pub(crate) fn default_policy(&self) -> FillPolicy {
        let o = &self.inner.options;
        FillPolicy {
            function: None,
            lock: o.lock,
            early_refresh: o.early_refresh,
            beta: o.beta,
            stale_if_error: o.stale_if_error,
        }
    }

    /// Reads; on a miss, runs `init` under single flight and stores an `Ok` value.
    pub(crate) async fn fill<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        version: u32,
        init: F,
    ) -> Result<T, E>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let policy = self.default_policy();
        self.fill_with(key, ttl, version, &policy, init).await
    }

    /// [`fill`](Self::fill) with an explicit protection policy.
    pub(crate) async fn fill_with<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        version: u32,
        policy: &FillPolicy,
        init: F,
    ) -> Result<T, E>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if !self.inner.options.enabled {
            return init().await;
        }
        // The ttl is resolved only when a value is about to be stored: a hit needs none, and a
        // bad ttl is reported once per store, not once per read.
        let stale = match self.read_quietly::<T>(key, version).await {
            Found::Fresh(v, timing) => {
                self.count_in(policy, Counter::Hits);
                if policy.early_refresh && self.refresh_due(timing, policy.beta) {
                    let ttl = self.fill_ttl(key, ttl, policy);
                    return Ok(self.refresh_early(key, ttl, version, policy, v, init).await);
                }
                return Ok(v);
            }
            Found::Stale(v) => {
                self.count_in(policy, Counter::Misses);
                Some(v)
            }
            Found::Miss => {
                self.count_in(policy, Counter::Misses);
                None
            }
        };
        let ttl = self.fill_ttl(key, ttl, policy);
        if single_flight::is_reentrant(self.id(), key) {
            // The outer call holds this key's fill lock; waiting for it would wait for itself.
            let inner_policy = FillPolicy {
                lock: false,
                ..*policy
            };
            return self
                .produce(key, ttl, version, &inner_policy, stale, init)
                .await
                .map(|p| p.value);
        }
        // One deadline for the whole wait: a flight handed from one failing leader to the next
        // must not restart the clock of the callers still waiting.
        let deadline = tokio::time::Instant::now().checked_add(self.inner.options.fill_wait);
        let mut waited = false;
        loop {
            let rx = match self.inner.flights.join(key) {
                Join::Leader(leader) => {
                    // A previous leader may have stored the value after our read. The fill
                    // lock's attempt reads the value again in its own round trip; without the
                    // lock, read here.
                    if !self.locks(policy)
                        && let Found::Fresh(v, _) = self.read_quietly::<T>(key, version).await
                    {
                        leader.publish(Arc::new(v.clone()), false);
                        return Ok(v);
                    }
                    let produced = self.produce(key, ttl, version, policy, stale, init).await?;
                    // A stale value served after a failed body goes to the waiters too, so
                    // they do not each run the failing body again.
                    leader.publish(Arc::new(produced.value.clone()), produced.stale);
                    return Ok(produced.value);
                }
                Join::Waiter(rx) => rx,
            };
            if !waited {
                waited = true;
                self.count_in(policy, Counter::Coalesced);
            }
            let shared = match deadline {
                Some(at) => tokio::time::timeout_at(at, single_flight::wait(rx)).await,
                None => Ok(single_flight::wait(rx).await),
            };
            match shared {
                Ok(Some(shared)) => match shared.value.downcast_ref::<T>() {
                    Some(v) => {
                        if shared.stale {
                            self.count_in(policy, Counter::StaleServed);
                        }
                        return Ok(v.clone());
                    }
                    // Another call site cached a different type under this key.
                    None => break,
                },
                Ok(None) => {
                    // The leader is gone without a value: take over unless it stored one.
                    if let Found::Fresh(v, _) = self.read_quietly::<T>(key, version).await {
                        return Ok(v);
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        cache = %self.inner.name,
                        key = short_key(key),
                        waited = ?self.inner.options.fill_wait,
                        "gave up waiting for another caller's fill; running the body here"
                    );
                    break;
                }
            }
        }
        self.produce(key, ttl, version, policy, stale, init)
            .await
            .map(|p| p.value)
    }

    /// The ttl a fill stores with; `None` (do not store, error logged and counted) for a zero
    /// ttl.
    fn fill_ttl(&self, key: &str, ttl: Ttl, policy: &FillPolicy) -> Option<Option<Duration>> {
        match ttl.resolve(self.inner.options.default_ttl) {
            Ok(ttl) => Some(ttl),
            Err(e) => {
                self.count_in(policy, Counter::Errors);
                tracing::error!(cache = %self.inner.name, key = short_key(key), error = %e, "value will not be stored");
                None
            }
        }
    }

    /// XFetch: whether this hit should recompute the value now.
    fn refresh_due(&self, timing: Option<Timing>, beta: f64) -> bool {
        let Some(t) = timing else { return false };
        if t.expires_ms == 0 || t.compute_us == 0 {
            return false;
        }
        let u: f64 = rand::random();
        early::should_refresh(
            wall_ms(),
            t.expires_ms,
            f64::from(t.compute_us) / 1000.0,
            beta,
            u,
        )
    }

    /// One caller recomputes a hot value shortly before it expires; callers meanwhile keep
    /// getting `current`. The refresh runs in this caller, not in a spawned task, because the
    /// body of a cached function may borrow its arguments; only this caller pays for it.
    async fn refresh_early<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Option<Duration>>,
        version: u32,
        policy: &FillPolicy,
        current: T,
        init: F,
    ) -> T
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Join::Leader(leader) = self.inner.flights.join(key) else {
            // Someone is already refreshing (or filling) this key.
            return current;
        };
        self.count_in(policy, Counter::EarlyRefreshes);
        tracing::debug!(cache = %self.inner.name, key = short_key(key), "early refresh");
        let started = Instant::now();
        let result = single_flight::scoped(self.id(), key, init()).await;
        self.count_in(policy, Counter::Fills);
        match result {
            Ok(v) => {
                leader.publish(Arc::new(v.clone()), false);
                self.store_quietly(key, &v, ttl, version, started.elapsed(), policy)
                    .await;
                v
            }
            // The current value is still valid: keep serving it.
            Err(_) => current,
        }
    }

    /// Runs `init` and stores its `Ok` value: behind the backend's fill lock when the policy
    /// asks for it, serving `stale` if `init` fails inside the stale-if-error window.
    async fn produce<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Option<Duration>>,
        version: u32,
        policy: &FillPolicy,
        stale: Option<T>,
        init: F,
    ) -> Result<Produced<T>, E>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut lock = None;
        if let (true, Store::Remote(backend)) = (self.locks(policy), &self.inner.store) {
            match self
                .acquire_lock(backend.as_ref(), key, version, policy)
                .await
            {
                Acquired::Value(value) => {
                    return Ok(Produced {
                        value,
                        stale: false,
                    });
                }
                Acquired::Lock(guard) => lock = Some(guard),
                Acquired::Nothing => {}
            }
        }
        let started = Instant::now();
        let result = single_flight::scoped(self.id(), key, init()).await;
        self.count_in(policy, Counter::Fills);
        match result {
            Ok(v) => {
                let compute = started.elapsed();
                match lock {
                    Some(guard) => {
                        self.store_and_release(guard, key, &v, ttl, version, compute, policy)
                            .await;
                    }
                    None => {
                        self.store_quietly(key, &v, ttl, version, compute, policy)
                            .await;
                    }
                }
                Ok(Produced {
                    value: v,
                    stale: false,
                })
            }
            Err(e) => {
                if let Some(guard) = lock {
                    guard.release().await;
                }
                match stale {
                    Some(v) if policy.stale_if_error.is_some() => {
                        self.count_in(policy, Counter::StaleServed);
                        tracing::warn!(
                            cache = %self.inner.name,
                            key = short_key(key),
                            "the body failed; serving the expired value (stale_if_error)"
                        );
                        Ok(Produced {
                            value: v,
                            stale: true,
                        })
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Whether a fill under `policy` takes the backend's fill lock.
    fn locks(&self, policy: &FillPolicy) -> bool {
        policy.lock && matches!(self.inner.store, Store::Remote(_))
    }

    /// Takes the backend's fill lock, or waits for the holder's value. Gives up after
    /// `lock_wait` (or when the backend cannot lock) and lets the caller run the body.
    async fn acquire_lock<T: CacheValue>(
        &self,
        backend: &dyn CacheBackend,
        key: &str,
        version: u32,
        policy: &FillPolicy,
    ) -> Acquired<T> {
        // `None`: a wait too long to represent, that is no deadline.
        let deadline = Instant::now().checked_add(self.inner.options.lock_wait);
        let mut backoff = Duration::from_millis(2);
        let mut waited = false;
        loop {
            let attempt = match self
                .guarded("lock", backend.try_lock(key, self.inner.options.lock_ttl))
                .await
            {
                Ok(attempt) => attempt,
                Err(e) => {
                    tracing::debug!(cache = %self.inner.name, error = %e, "no fill lock; running the body");
                    return Acquired::Nothing;
                }
            };
            let guard = attempt.token.map(|token| LockGuard {
                cache: self.clone(),
                key: key.to_owned(),
                token,
                released: false,
            });
            // The value read with the attempt: the holder before us (another process, or a
            // leader of this one) stored it meanwhile.
            if let Some(bytes) = attempt.value
                && let Found::Fresh(v, _) = self.decode::<T>(key, &bytes, version)
            {
                if let Some(guard) = guard {
                    guard.release().await;
                }
                return Acquired::Value(v);
            }
            if let Some(guard) = guard {
                return Acquired::Lock(guard);
            }
            if !waited {
                waited = true;
                self.count_in(policy, Counter::Coalesced);
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                tracing::warn!(
                    cache = %self.inner.name,
                    key = short_key(key),
                    waited = ?self.inner.options.lock_wait,
                    "another process holds the fill lock for too long; running the body here"
                );
                return Acquired::Nothing;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    /// Stores a filled value and releases the fill lock in one backend call. A value that is
    /// not to be stored (a zero ttl) or cannot be encoded only releases the lock.
    #[allow(clippy::too_many_arguments)]
    async fn store_and_release<T: CacheValue>(
        &self,
        guard: LockGuard,
        key: &str,
        value: &T,
        ttl: Option<Option<Duration>>,
        version: u32,
        compute: Duration,
        policy: &FillPolicy,
    ) {
        let Some(ttl) = ttl else {
            guard.release().await;
            return;
        };
        let ttl = ttl.map(|t| early::jittered(t, self.inner.options.ttl_jitter, rand::random()));
        // Encoding errors were logged and counted where they happened.
        match self.encode_remote(key, value, ttl, version, compute, policy.stale_if_error) {
            Ok((bytes, backend_ttl)) => guard.store_and_release(&bytes, backend_ttl).await,
            Err(_) => guard.release().await,
        }
    }

    /// A read whose backend errors are a miss (already logged and counted).
    async fn read_quietly<T: CacheValue>(&self, key: &str, version: u32) -> Found<T> {
        self.find::<T>(key, version).await.unwrap_or(Found::Miss)
    }

    /// A write whose errors are logged and counted, never returned. `ttl: None` = do not store.
    async fn store_quietly<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Option<Duration>>,
        version: u32,
        compute: Duration,
        policy: &FillPolicy,
    ) {
        let Some(ttl) = ttl else { return };
        let jitter = self.inner.options.ttl_jitter;
        let ttl = ttl.map(|t| early::jittered(t, jitter, rand::random()));
        // Errors were logged and counted where they happened.
        let _ = self
            .store_value(key, value, ttl, version, compute, policy.stale_if_error)
            .await;
    }

    #[cfg(test)]
    pub(crate) fn flights_in_progress(&self) -> usize {
        self.inner.flights.in_flight()
    }
}

/// The value a fill ends with.
struct Produced<T> {
    value: T,
    /// An expired value served because the body failed.
    stale: bool,
}

/// What waiting for a fill lock ended with.
enum Acquired<T> {
    /// Another process stored the value meanwhile.
    Value(T),
    /// We hold the lock.
    Lock(LockGuard),
    /// No lock (waited too long, or the backend cannot lock): run the body anyway.
    Nothing,
}

/// A held fill lock. Released explicitly after the fill; if the fill's future is dropped
/// first (while the body runs, or before the release got its answer), the release is spawned,
/// so a cancelled caller does not make others wait for the lock's ttl.
struct LockGuard {
    cache: Cache,
    key: String,
    token: String,
    released: bool,
}

impl LockGuard {
    async fn release(mut self) {
        self.cache.unlock_quietly(&self.key, &self.token).await;
        self.released = true;
    }

    /// Stores the value and releases the lock in one backend call; a failed call is logged and
    /// counted as a failed store, and the release is tried again on its own.
    async fn store_and_release(mut self, bytes: &[u8], ttl: Option<Duration>) {
        let cache = self.cache.clone();
        let Store::Remote(backend) = &cache.inner.store else {
            return;
        };
        let stored = cache
            .remote(
                "set",
                &self.key,
                backend.set_and_unlock(&self.key, bytes, ttl, &self.token),
            )
            .await;
        if stored.is_ok() {
            cache.count(Counter::Sets);
            self.released = true;
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (cache, key, token) = (
                self.cache.clone(),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
            );
            handle.spawn(async move { cache.unlock_quietly(&key, &token).await });
        }
    }
}

impl Cache {
    async fn unlock_quietly(&self, key: &str, token: &str) {
        if let Store::Remote(b) = &self.inner.store
            && let Err(e) = self.guarded("unlock", b.unlock(key, token)).await
        {
            tracing::debug!(cache = %self.inner.name, key = short_key(key), error = %e, "fill lock not released; it expires by itself");
        }
    }
}

/// Whether a remote value is before its expiry at `now_ms`: the one freshness rule of reads
/// and `exists`.
fn fresh_at(env: &Envelope<'_>, now_ms: u64) -> bool {
    env.expires_at_ms == 0 || env.expires_at_ms > now_ms
}

/// Keeps a [`MemoryBackend`] typed (its fast path stores values unserialized); boxes the rest.
fn into_store<B: CacheBackend>(backend: B) -> Store {
    let mut slot = Some(backend);
    if let Some(memory) = (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<MemoryBackend>>()
        .and_then(Option::take)
    {
        return Store::Memory(memory);
    }
    match slot {
        Some(other) => Store::Remote(Box::new(other)),
        None => unreachable!("the slot is only emptied when it holds a MemoryBackend"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::CacheModule;

    /// Finished and cancelled fills leave nothing behind in the in-flight table.
    #[tokio::test]
    async fn flights_are_removed() {
        let cache = CacheModule::stub().cache();
        cache.get_or_insert_with("k", None, || async { 1u8 }).await;
        assert_eq!(cache.flights_in_progress(), 0);
        let slow = cache.get_or_insert_with("x", None, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1u8
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(20), slow)
                .await
                .is_err()
        );
        assert_eq!(cache.flights_in_progress(), 0);
        let failed: Result<u8, &str> = cache
            .try_get_or_insert_with("e", None, || async { Err("no") })
            .await;
        assert!(failed.is_err());
        assert_eq!(cache.flights_in_progress(), 0);
    }
}
