//! [`Cache`]: the typed handle. Thin: every read and write goes through the store layer
//! ([`crate::store`]), every fill through the fill protocol ([`fill`]).

mod budget;
mod fill;
mod held;
mod options;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::CacheBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::redis::RedisBackend;
use crate::error::CacheError;
use crate::events::{CacheEvents, EventKind};
use crate::front::FrontKey;
use crate::observe::{CacheStats, Counter, FnStats, short_key};
use crate::protect::breaker::Breaker;
use crate::protect::single_flight::SingleFlight;
use crate::store::near::Near;
use crate::store::{Found, Remote, Store, Tier};

pub(crate) use fill::{First, Rest};
pub(crate) use options::FillPolicy;
pub use options::{CacheOptions, Ttl};

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

struct Inner {
    store: Store,
    options: CacheOptions,
    flights: SingleFlight,
    /// The cache budget of one cached call: `call_budget`, or the backend's `op_timeout`.
    budget: Option<std::time::Duration>,
    background: budget::Background,
    held: held::Held,
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
/// Explicit calls (`get`, `get_many`, `exists`, `set`, `set_many`, `set_tagged`, `delete`,
/// `delete_many`, `delete_pattern`, `invalidate_tag`, `clear`, `keys`, `raw`) say what
/// happened to them: a backend failure is a
/// [`CacheError::Backend`], and so is a call the open circuit breaker skipped (its source is
/// [`BackendError::CircuitOpen`](crate::BackendError::CircuitOpen)). A write-through update that was not stored never looks stored,
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
            .field("name", &self.name())
            .field("backend", &self.kind())
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Cache {
    /// A cache over any backend, with default [`CacheOptions`].
    ///
    /// A [`MemoryBackend`] passed here keeps its typed fast path (values are not serialized).
    pub fn from_backend(name: impl Into<String>, backend: impl CacheBackend) -> Self {
        Self::with_options(name, backend, CacheOptions::default())
    }

    /// A cache over any backend, with the given options.
    ///
    /// With [`CacheOptions::near`] set, a Redis backend (single node) gets a near tier kept
    /// coherent across processes over pub/sub; its subscriber runs on the current tokio
    /// runtime, so build such a cache inside one (outside, the tier is left out, with a
    /// warning). Other backends get one with a [`NearOptions::backplane`](crate::NearOptions::backplane),
    /// kept coherent over that Redis, or with [`NearOptions::ttl_only`](crate::NearOptions::ttl_only).
    pub fn with_options(
        name: impl Into<String>,
        backend: impl CacheBackend,
        options: CacheOptions,
    ) -> Self {
        let name = name.into();
        let tier = split_backend(backend, options.near.as_ref());
        let breaker = Breaker::new(options.breaker_threshold, options.breaker_open_for);
        let store = Store::new(name, tier, options.format, options.compression, breaker);
        // The memory backend does no I/O to bound.
        let budget = if store.is_shared() {
            options.call_budget.or(store.op_timeout())
        } else {
            None
        };
        Cache {
            inner: Arc::new(Inner {
                store,
                flights: SingleFlight::default(),
                budget,
                background: budget::Background::default(),
                held: held::Held::default(),
                options,
            }),
        }
    }

    /// The cache's name (the backend name in the configuration).
    pub fn name(&self) -> &str {
        self.inner.store.name()
    }

    /// The backend kind: `memory`, `redis`, `memcached`, or a custom backend's.
    pub fn kind(&self) -> &'static str {
        self.inner.store.kind()
    }

    /// The options this cache was built with.
    pub fn options(&self) -> &CacheOptions {
        &self.inner.options
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let mut stats = self.inner.store.stats();
        stats.background_writes = self.inner.background.started();
        stats.background_writes_dropped = self.inner.background.dropped();
        stats
    }

    pub(crate) fn count(&self, c: Counter) {
        self.inner.store.count(c);
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
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
                self.inner.store.events.emit(EventKind::Hit, key, None);
                tracing::debug!(cache = %self.name(), key = short_key(key), "cache hit");
                Ok(Some(v))
            }
            Found::Stale(_) | Found::Miss => {
                self.count(Counter::Misses);
                self.inner.store.events.emit(EventKind::Miss, key, None);
                tracing::debug!(cache = %self.name(), key = short_key(key), "cache miss");
                Ok(None)
            }
        }
    }

    /// The synchronous hit path: the memory backend, or a remote backend's near tier. No
    /// serialization, no network; `None` for anything it cannot answer.
    #[inline]
    pub(crate) fn memory_hit<T: CacheValue, K: FrontKey>(
        &self,
        key: &mut K,
        function: Option<(&'static str, &'static FnStats)>,
    ) -> Option<T> {
        if !self.inner.options.enabled {
            return None;
        }
        let v = self.inner.store.memory_hit::<T, K>(key)?;
        self.inner.store.count_in(function, Counter::Hits);
        let events = &self.inner.store.events;
        if events.on() {
            events.emit(EventKind::Hit, key.text(), function.map(|f| f.0));
        }
        Some(v)
    }

    /// Stores `value` under `key`. `ttl`: a [`Duration`], [`Ttl::Never`], or `None` for the
    /// cache's default; a zero duration is [`CacheError::ZeroTtl`]. `Ok` means the backend
    /// stored it: a write skipped by the open circuit breaker is an error
    /// ([`BackendError::CircuitOpen`](crate::BackendError::CircuitOpen)).
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

    /// Stores `value` under `key` carrying `tags`: after
    /// [`invalidate_tag`](Self::invalidate_tag) of any of them, in this process or another
    /// sharing the backend, reads of `key` miss. Otherwise as [`set`](Self::set).
    ///
    /// The value records the versions its tags have now, so an invalidation that happens
    /// before this call, while `value` was being computed from data it changed, is not seen:
    /// for values computed from changing data, prefer a tagged `#[cacheable]` function, whose
    /// versions are read before its body runs. A tag is 1 to 200 bytes; a value carries at
    /// most 64.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), lexigram_cache::CacheError> {
    /// let cache = lexigram_cache::CacheModule::stub().cache();
    /// cache.set_tagged("user:7:profile", &"Ada".to_string(), None, &["user:7", "users"]).await?;
    /// cache.set_tagged("user:8:profile", &"Bob".to_string(), None, &["user:8", "users"]).await?;
    /// cache.invalidate_tag("user:7").await?;
    /// assert_eq!(cache.get::<String>("user:7:profile").await?, None);
    /// assert_eq!(cache.get::<String>("user:8:profile").await?, Some("Bob".into()));
    /// # Ok(()) }
    /// ```
    pub async fn set_tagged<T: CacheValue, S: AsRef<str>>(
        &self,
        key: &str,
        value: &T,
        ttl: impl Into<Ttl>,
        tags: &[S],
    ) -> Result<(), CacheError> {
        let ttl = ttl.into().resolve(self.inner.options.default_ttl)?;
        if !self.inner.options.enabled {
            return Ok(());
        }
        let stamp = self.inner.store.stamp(tags).await?;
        self.inner
            .store
            .put_tagged(key, value, ttl, 0, Duration::ZERO, None, stamp)
            .await?;
        self.inner.store.events.emit(EventKind::Set, key, None);
        Ok(())
    }

    /// Makes every value carrying `tag` a miss, in every process sharing the backend: one
    /// write of a new version of the tag, however many values carry it (their bytes stay on
    /// the server until they expire or are overwritten). On Redis with a near cache, other
    /// processes drop their copy of the tag's version at once; with a ttl-only near cache
    /// they see it within the near cache's ttl.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), CacheError> {
        self.inner.store.invalidate_tag(tag).await
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
        self.inner
            .store
            .put(key, value, ttl, version, compute, keep)
            .await?;
        self.inner.store.events.emit(EventKind::Set, key, None);
        Ok(())
    }

    /// Removes `key`; `true` if a value was there. On Redis with a near cache, other
    /// processes drop their copy too.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let removed = self.inner.store.delete(key).await?;
        self.inner
            .store
            .count_n(Counter::Deletes, u64::from(removed));
        self.inner.store.events.emit(EventKind::Delete, key, None);
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
        self.inner.store.exists(key).await
    }

    /// The values of several keys, in the order given (one round trip on network backends).
    pub async fn get_many<T: CacheValue>(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<T>>, CacheError> {
        if !self.inner.options.enabled {
            return Ok(keys.iter().map(|_| None).collect());
        }
        let found = self.inner.store.get_many::<T>(keys).await?;
        let hits = found.iter().filter(|v| v.is_some()).count() as u64;
        self.inner.store.count_n(Counter::Hits, hits);
        self.inner
            .store
            .count_n(Counter::Misses, found.len() as u64 - hits);
        self.emit_each(keys.iter().zip(&found).map(|(k, v)| (*k, v.is_some())));
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
        self.inner.store.put_many(items, ttl).await?;
        let events = &self.inner.store.events;
        if events.on() {
            for (k, _) in items {
                events.emit(EventKind::Set, k.as_ref(), None);
            }
        }
        Ok(())
    }

    /// Removes several keys; returns how many existed.
    pub async fn delete_many(&self, keys: &[&str]) -> Result<u64, CacheError> {
        let n = self.inner.store.delete_many(keys).await?;
        self.inner.store.count_n(Counter::Deletes, n);
        let events = &self.inner.store.events;
        if events.on() {
            for k in keys {
                events.emit(EventKind::Delete, k, None);
            }
        }
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
        let n = self.inner.store.delete_pattern(pattern).await?;
        self.inner.store.count_n(Counter::Deletes, n);
        let events = &self.inner.store.events;
        events.emit(EventKind::DeletePattern, pattern, None);
        Ok(n)
    }

    /// Removes every key of this cache (only under its backend's prefix); returns how many.
    pub async fn clear(&self) -> Result<u64, CacheError> {
        let n = self.inner.store.clear().await?;
        self.inner.store.count_n(Counter::Deletes, n);
        self.inner.store.events.emit_cache(EventKind::Clear);
        Ok(n)
    }

    /// Up to `limit` keys matching a glob, without the prefix; for tools and debugging.
    /// Memcached cannot list keys and returns an `Unsupported` error.
    ///
    /// Only keys that are UTF-8, the keys every other method here can name; another client may
    /// have stored keys that are not, which [`clear`](Self::clear) still removes. To see every
    /// stored key, use [`raw_keys`](Self::raw_keys). The versions of tags, stored under
    /// reserved keys, are left out too (`raw_keys` shows them).
    pub async fn keys(&self, pattern: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        let keys = self.inner.store.keys(pattern, limit).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .filter(|k| !k.starts_with(crate::tags::TAG_KEY_PREFIX))
            .collect())
    }

    /// Up to `limit` keys matching a glob, without the prefix, as the bytes the backend
    /// stores: every key [`clear`](Self::clear) would remove, UTF-8 or not. For tools that
    /// show or count keys.
    pub async fn raw_keys(&self, pattern: &str, limit: usize) -> Result<Vec<Vec<u8>>, CacheError> {
        self.inner.store.keys(pattern, limit).await
    }

    /// The stored bytes under `key` on a remote backend (the envelope, see
    /// [`codec::Envelope`](crate::codec::Envelope)); `None` for a miss, and always `None` on the
    /// memory backend, whose values are not serialized. For tools and debugging.
    pub async fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.inner.store.raw(key).await
    }

    /// Checks the backend answers; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, CacheError> {
        self.inner.store.ping().await
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
}

// Events: the receiver, and the hits and misses of a batch read.
impl Cache {
    /// A receiver of this cache's events: hits, misses, sets, deletes, evictions (of the
    /// memory backend or the near tier), circuit breaker changes, decode failures and stale
    /// values served, each with the cache's name, the key and, from a `#[cacheable]`
    /// function, its scope.
    ///
    /// Events are sent after their effect, on a bounded channel
    /// ([`EVENTS_CAPACITY`](crate::EVENTS_CAPACITY)): a receiver that falls behind is told
    /// how many it missed ([`EventError::Lagged`](crate::EventError::Lagged)) and the cache
    /// never waits for it. While no receiver is alive an event costs one relaxed atomic load;
    /// dropping the last receiver turns them off again. Every clone of the cache sends to
    /// every receiver.
    ///
    /// ```
    /// use lexigram_cache::{CacheModule, EventKind};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cache = CacheModule::stub().cache();
    /// let mut events = cache.events();
    /// cache.set("k", &1u32, None).await?;
    /// let event = events.recv().await?;
    /// assert_eq!(event.kind, EventKind::Set);
    /// assert_eq!(event.key.as_deref(), Some("k"));
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> CacheEvents {
        self.inner.store.events.subscribe()
    }

    /// How many receivers from [`events`](Self::events) are alive; events are made only while
    /// this is above zero.
    pub fn event_receivers(&self) -> usize {
        self.inner.store.events.receivers()
    }

    /// A hit or a miss event per key of a batch read.
    fn emit_each<'k>(&self, found: impl Iterator<Item = (&'k str, bool)>) {
        let events = &self.inner.store.events;
        if events.on() {
            for (key, hit) in found {
                let kind = if hit { EventKind::Hit } else { EventKind::Miss };
                events.emit(kind, key, None);
            }
        }
    }
}

/// Keeps a [`MemoryBackend`] typed (its fast path stores values unserialized), and a
/// [`RedisBackend`] (its reads are not boxed); puts a near tier in front of the backends that
/// can have one.
fn split_backend<B: CacheBackend>(backend: B, near: Option<&crate::NearOptions>) -> Tier {
    let mut slot = Some(backend);
    let any = &mut slot as &mut dyn std::any::Any;
    if let Some(memory) = any
        .downcast_mut::<Option<MemoryBackend>>()
        .and_then(Option::take)
    {
        return Tier::Memory(memory);
    }
    let backend = match any
        .downcast_mut::<Option<RedisBackend>>()
        .and_then(Option::take)
    {
        Some(r) => Remote::Redis(r),
        None => match slot {
            Some(other) => Remote::Other(Box::new(other)),
            None => unreachable!("the slot is only emptied when it holds a MemoryBackend"),
        },
    };
    let near = near.and_then(|options| {
        let redis = match &backend {
            Remote::Redis(r) => Some(r),
            Remote::Other(_) => None,
        };
        match (redis, &options.backplane) {
            (Some(r), _) | (None, Some(r)) => Near::redis(options, r),
            (None, None) if options.ttl_only => Some(Near::ttl_only(options)),
            (None, None) => None,
        }
    });
    Tier::Remote { backend, near }
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
