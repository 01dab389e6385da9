//! The in-memory backend, with two engines.
//!
//! - [`MemoryEngine::S3Fifo`] (default) is `quick_cache`: S3-FIFO eviction, a read costs about
//!   a tenth of moka's, and expiry is checked lazily per entry against the coarse
//!   [`Clock`], so the hit path reads no system clock.
//! - [`MemoryEngine::TinyLfu`] is `moka`: TinyLFU admission (better hit ratio for skewed
//!   workloads that scan), optional time-to-idle, and an eviction listener feeding the
//!   `evictions` statistic.
//!
//! Through [`Cache`](crate::Cache), values are stored *typed* (as `Arc<T>`): a hit clones the
//! value and never serializes. Through the byte-level [`CacheBackend`] trait the backend stores
//! byte vectors like any other store.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{BackendError, CacheBackend, glob};
use crate::clock::{Clock, duration_ms};
use crate::error::CacheError;
use crate::events::{Emitter, EvictionSink};
use crate::front::{Found, Front, FrontKey, Text};
use crate::key::KeyText;

pub(crate) type AnyValue = Arc<dyn Any + Send + Sync>;

/// Expiry value meaning "never".
pub(crate) const NEVER: u64 = u64::MAX;

/// With `max_weight`, one entry may weigh at most this fraction (`1 / HEAVIEST_SHARE`) of it;
/// a heavier one is not stored.
const HEAVIEST_SHARE: u64 = 10;
/// quick_cache splits `max_weight` evenly over its shards and refuses an entry heavier than
/// 97% of one shard, so a weight-bound store has at most this many shards: 97% of an eighth
/// is more than a tenth, whatever the core count.
const WEIGHTED_SHARDS_MAX: usize = 8;

#[derive(Clone)]
pub(crate) struct MemEntry {
    pub(crate) value: AnyValue,
    /// Logical expiry in clock ms; [`NEVER`] for none.
    pub(crate) expires_at: u64,
    /// The entry is dropped from the store after this (stale-if-error keeps it past expiry).
    pub(crate) keep_until: u64,
    pub(crate) weight: u32,
    /// A tagged value's tag versions at write time; `None` for an untagged value.
    pub(crate) tags: Option<crate::tags::Stamp>,
}

/// Which eviction engine a [`MemoryBackend`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryEngine {
    /// `quick_cache` S3-FIFO: the fastest hit path. The default.
    #[default]
    S3Fifo,
    /// `moka` TinyLFU: frequency-based admission, time-to-idle.
    TinyLfu,
}

trait Engine: Send + Sync {
    fn get(&self, key: &str) -> Option<MemEntry>;
    fn insert(&self, key: String, entry: MemEntry);
    fn remove(&self, key: &str) -> bool;
    /// Removes `key` only if it is (still) past `now`: a concurrent fresh insert survives.
    fn remove_if_dead(&self, key: &str, now: u64);
    /// Removes every entry for which `dead` is true; returns how many.
    fn remove_where(&self, dead: &(dyn Fn(&str, &MemEntry) -> bool + Sync)) -> u64;
    fn len(&self) -> u64;
}

#[derive(Clone)]
struct EntryWeighter {
    weighted: bool,
}

impl quick_cache::Weighter<String, MemEntry> for EntryWeighter {
    fn weight(&self, _key: &String, val: &MemEntry) -> u64 {
        if self.weighted {
            u64::from(val.weight.max(1))
        } else {
            1
        }
    }
}

#[derive(Clone)]
struct CountEvictions(Arc<AtomicU64>, Arc<EvictionSink>);

impl quick_cache::Lifecycle<String, MemEntry> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _state: &mut (), key: String, _val: MemEntry) {
        self.0.fetch_add(1, Ordering::Relaxed);
        self.1.evicted(&key);
    }
}

type QuickCache = quick_cache::sync::Cache<
    String,
    MemEntry,
    EntryWeighter,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

impl Engine for QuickCache {
    #[inline]
    fn get(&self, key: &str) -> Option<MemEntry> {
        quick_cache::sync::Cache::get(self, key)
    }
    fn insert(&self, key: String, entry: MemEntry) {
        quick_cache::sync::Cache::insert(self, key, entry)
    }
    fn remove(&self, key: &str) -> bool {
        quick_cache::sync::Cache::remove(self, key).is_some()
    }
    fn remove_if_dead(&self, key: &str, now: u64) {
        self.remove_if(key, |e| e.keep_until <= now);
    }
    fn remove_where(&self, dead: &(dyn Fn(&str, &MemEntry) -> bool + Sync)) -> u64 {
        let removed = AtomicU64::new(0);
        self.retain(|k, v| {
            let d = dead(k, v);
            if d {
                removed.fetch_add(1, Ordering::Relaxed);
            }
            !d
        });
        removed.into_inner()
    }
    fn len(&self) -> u64 {
        quick_cache::sync::Cache::len(self) as u64
    }
}

impl Engine for moka::sync::Cache<String, MemEntry> {
    #[inline]
    fn get(&self, key: &str) -> Option<MemEntry> {
        moka::sync::Cache::get(self, key)
    }
    fn insert(&self, key: String, entry: MemEntry) {
        moka::sync::Cache::insert(self, key, entry)
    }
    fn remove(&self, key: &str) -> bool {
        moka::sync::Cache::remove(self, key).is_some()
    }
    fn remove_if_dead(&self, key: &str, now: u64) {
        // moka has no conditional remove; a fresh value written between the read and this
        // call could be removed, which costs one extra miss and never serves a wrong value.
        if moka::sync::Cache::get(self, key).is_some_and(|e| e.keep_until <= now) {
            self.invalidate(key);
        }
    }
    fn remove_where(&self, dead: &(dyn Fn(&str, &MemEntry) -> bool + Sync)) -> u64 {
        let doomed: Vec<Arc<String>> = self
            .iter()
            .filter(|(k, v)| dead(k, v))
            .map(|(k, _)| k)
            .collect();
        let mut n = 0;
        for k in doomed {
            n += u64::from(moka::sync::Cache::remove(self, k.as_str()).is_some());
        }
        n
    }
    fn len(&self) -> u64 {
        self.run_pending_tasks();
        self.entry_count()
    }
}

/// Builds a [`MemoryBackend`].
///
/// ```
/// use lexigram_cache::{MemoryBackend, MemoryEngine};
/// let backend = MemoryBackend::builder()
///     .engine(MemoryEngine::TinyLfu)
///     .max_entries(50_000)
///     .prefix("shop:")
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct MemoryBackendBuilder {
    engine: MemoryEngine,
    max_entries: u64,
    max_weight: Option<u64>,
    prefix: String,
    time_to_idle: Option<Duration>,
    clock: Clock,
    /// The core count the shard count is derived from; `None`: this machine's.
    cores: Option<usize>,
}

impl MemoryBackendBuilder {
    /// The eviction engine; default [`MemoryEngine::S3Fifo`].
    pub fn engine(mut self, engine: MemoryEngine) -> Self {
        self.engine = engine;
        self
    }
    /// The maximum number of entries (default 10 000). Ignored for the bound when
    /// [`max_weight`](Self::max_weight) is set, but still used to size the store.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = n;
        self
    }
    /// Bound the store by bytes instead of entries: each entry weighs its key length plus the
    /// length of its MessagePack encoding, measured once when it is stored. One entry may weigh
    /// up to a tenth of `bytes`; a heavier one is not stored (a read misses), and the first
    /// such entry logs a warning.
    pub fn max_weight(mut self, bytes: u64) -> Self {
        self.max_weight = Some(bytes);
        self
    }
    /// A prefix put before every key. The store is private to this backend, so the prefix only
    /// matters when a backend is shared through `Arc` by several caches that must not see each
    /// other's keys.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Drop entries not read for this long (`tinylfu` only; `s3fifo` evicts cold entries by
    /// itself and rejects this option at [`build`](Self::build)).
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.time_to_idle = Some(tti);
        self
    }
    /// The clock used for expiry; tests pass [`Clock::manual`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sizes the store as if the machine had `n` cores (tests of many-core machines).
    #[cfg(test)]
    fn assume_cores(mut self, n: usize) -> Self {
        self.cores = Some(n);
        self
    }

    /// Builds the backend, checking the options.
    pub fn build(self) -> Result<MemoryBackend, CacheError> {
        let bad = |setting: &str, message: &str| CacheError::InvalidSetting {
            setting: setting.into(),
            message: message.into(),
        };
        if self.max_entries == 0 {
            return Err(bad(
                "memory.max_entries",
                "must be at least 1; remove the backend or set enabled: false to turn caching off",
            ));
        }
        if self.max_weight == Some(0) {
            return Err(bad(
                "memory.max_weight",
                "must be at least 1 byte; leave it unset to bound by entries",
            ));
        }
        if self.time_to_idle == Some(Duration::ZERO) {
            return Err(bad("memory.time_to_idle", "must be greater than zero"));
        }
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = EvictionSink::new(&self.prefix);
        let weighted = self.max_weight.is_some();
        let capacity = self.max_weight.unwrap_or(self.max_entries);
        let engine: Box<dyn Engine> = match self.engine {
            MemoryEngine::S3Fifo => {
                if self.time_to_idle.is_some() {
                    return Err(bad(
                        "memory.time_to_idle",
                        "is only supported by engine `tinylfu`; set memory.engine: tinylfu or remove it",
                    ));
                }
                let options = quick_cache::OptionsBuilder::new()
                    .estimated_items_capacity(
                        usize::try_from(self.max_entries).unwrap_or(usize::MAX),
                    )
                    .weight_capacity(capacity)
                    .shards(shards(weighted, self.cores.unwrap_or_else(cores)))
                    .build()
                    .map_err(|e| bad("memory", &e.to_string()))?;
                Box::new(QuickCache::with_options(
                    options,
                    EntryWeighter { weighted },
                    quick_cache::DefaultHashBuilder::default(),
                    CountEvictions(Arc::clone(&evictions), Arc::clone(&evicted)),
                ))
            }
            MemoryEngine::TinyLfu => {
                let counter = Arc::clone(&evictions);
                let sink = Arc::clone(&evicted);
                let mut b = moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .eviction_listener(move |k: std::sync::Arc<String>, _v, cause| {
                        if cause.was_evicted() {
                            counter.fetch_add(1, Ordering::Relaxed);
                            sink.evicted(&k);
                        }
                    });
                if weighted {
                    b = b.weigher(|_k: &String, v: &MemEntry| v.weight.max(1));
                }
                if let Some(tti) = self.time_to_idle {
                    b = b.time_to_idle(tti);
                }
                Box::new(b.build())
            }
        };
        Ok(MemoryBackend {
            inner: Arc::new(MemInner {
                engine,
                prefix: self.prefix,
                clock: self.clock,
                weighted,
                heaviest: self
                    .max_weight
                    .map_or(u64::MAX, |w| (w / HEAVIEST_SHARE).max(1)),
                warned_heavy: AtomicBool::new(false),
                evictions,
                evicted,
                kind: self.engine,
                // tinylfu's time-to-idle must see every read, so its reads skip the front.
                front: (self.engine == MemoryEngine::S3Fifo).then(Front::new),
            }),
        })
    }
}

/// An in-process cache store. Cheap to clone (clones share the store).
///
/// See the [module docs](self) for the two engines.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<MemInner>,
}

struct MemInner {
    engine: Box<dyn Engine>,
    prefix: String,
    clock: Clock,
    weighted: bool,
    /// The heaviest entry stored (`u64::MAX` for an entry-bound store).
    heaviest: u64,
    /// Whether a too-heavy entry has been warned about.
    warned_heavy: AtomicBool,
    evictions: Arc<AtomicU64>,
    /// Where evictions are reported as events.
    evicted: Arc<EvictionSink>,
    kind: MemoryEngine,
    /// Reads through the thread fronts (see [`crate::front`]).
    front: Option<Front>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("engine", &self.inner.kind)
            .field("prefix", &self.inner.prefix)
            .field("len", &self.len())
            .finish()
    }
}

impl MemoryBackend {
    /// A builder with the defaults: `s3fifo`, 10 000 entries, no prefix, system clock.
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            engine: MemoryEngine::default(),
            max_entries: 10_000,
            max_weight: None,
            prefix: String::new(),
            time_to_idle: None,
            clock: Clock::system(),
            cores: None,
        }
    }

    /// The engine in use.
    pub fn engine(&self) -> MemoryEngine {
        self.inner.kind
    }

    /// How many entries the store holds (expired ones included until they are read or evicted).
    pub fn len(&self) -> u64 {
        self.inner.engine.len()
    }

    /// Whether the store holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries the engine has evicted to stay within its bound.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// Sends this backend's evictions to a cache's events.
    pub(crate) fn connect_events(&self, emitter: &Arc<Emitter>) {
        self.inner.evicted.connect(emitter);
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub(crate) fn weighted(&self) -> bool {
        self.inner.weighted
    }

    /// The key as stored: with the prefix, written on the stack so a read does not allocate.
    #[inline]
    fn full_key<'a>(&self, key: &'a str) -> FullKey<'a> {
        if self.inner.prefix.is_empty() {
            FullKey::Bare(key)
        } else {
            let mut full = KeyText::new();
            full.push_str(&self.inner.prefix);
            full.push_str(key);
            FullKey::Prefixed(full)
        }
    }

    /// The live entry under `key`, including one past its logical expiry but still inside its
    /// keep window (the caller decides whether a stale value is usable).
    #[inline]
    pub(crate) fn entry(&self, key: &str) -> Option<MemEntry> {
        self.entry_at(key, self.inner.clock.now_ms())
    }

    /// [`entry`](Self::entry) at `now` (clock ms), for a caller that needs `now` too.
    #[inline]
    pub(crate) fn entry_at(&self, key: &str, now: u64) -> Option<MemEntry> {
        let full = self.full_key(key);
        let entry = self.inner.engine.get(full.as_str())?;
        if entry.keep_until == NEVER || entry.keep_until > now {
            return Some(entry);
        }
        self.inner.engine.remove_if_dead(full.as_str(), now);
        None
    }

    /// Stores `entry`; one heavier than the store allows is not stored, and neither is kept
    /// the value it would have replaced (that one is out of date now).
    pub(crate) fn insert(&self, key: &str, entry: MemEntry) {
        let full = self.full_key(key).into_string();
        if self.inner.weighted && u64::from(entry.weight) > self.inner.heaviest {
            self.inner.engine.remove(&full);
            self.changed();
            if !self.inner.warned_heavy.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    weight = entry.weight,
                    heaviest = self.inner.heaviest,
                    "an in-memory entry weighs more than a tenth of max_weight and is not \
                     cached; raise max_weight or cache smaller values (warned once)"
                );
            }
            return;
        }
        self.inner.engine.insert(full, entry);
        self.changed();
    }

    pub(crate) fn remove(&self, key: &str) -> bool {
        let removed = self.inner.engine.remove(self.full_key(key).as_str());
        self.changed();
        removed
    }

    /// Voids what the thread fronts hold of this store.
    #[inline]
    fn changed(&self) {
        if let Some(front) = &self.inner.front {
            front.changed();
        }
    }

    /// Whether every tag version `entry` recorded is the one the store holds now.
    pub(crate) fn tags_current(&self, entry: &MemEntry) -> bool {
        entry.tags.as_ref().is_none_or(|stamp| {
            stamp.iter().all(|(tag, version)| {
                self.entry(tag)
                    .and_then(|e| e.value.downcast_ref::<u64>().copied())
                    == Some(*version)
            })
        })
    }

    /// `read` of the value under `key` if it is fresh at the store's clock; `read` runs while
    /// the value is borrowed. S3-FIFO stores are read through the thread fronts.
    #[inline]
    pub(crate) fn read_fresh<R>(&self, key: &str, read: impl FnOnce(&AnyValue) -> R) -> Option<R> {
        self.read_fresh_by(&mut Text(key), read)
    }

    /// [`read_fresh`](Self::read_fresh) of a key named by a [`FrontKey`], whose text is
    /// written only when the thread front does not hold the read.
    #[inline]
    pub(crate) fn read_fresh_by<K: FrontKey, R>(
        &self,
        key: &mut K,
        read: impl FnOnce(&AnyValue) -> R,
    ) -> Option<R> {
        let now = self.inner.clock.now_ms();
        let lookup = |key: &str| {
            let entry = self.entry_at(key, now)?;
            // Kept in a thread front only once its tags are checked: writing a tag's new
            // version is a change of the store, which voids every front.
            if !self.tags_current(&entry) {
                return None;
            }
            // The store layer's freshness rule: 0 and NEVER never expire.
            let until = if entry.expires_at == 0 {
                NEVER
            } else {
                entry.expires_at
            };
            (until > now).then_some(Found {
                value: entry.value,
                until,
                extra: (0, 0),
            })
        };
        match &self.inner.front {
            Some(front) => front.read_by(key, now, lookup, |value, _| read(value)),
            None => lookup(key.text()).map(|found| read(&found.value)),
        }
    }

    /// Expiry in clock ms for a ttl (`None` = never).
    pub(crate) fn expiry(&self, ttl: Option<Duration>) -> u64 {
        match ttl {
            None => NEVER,
            Some(d) => self
                .inner
                .clock
                .now_ms()
                .saturating_add(duration_ms(d))
                .min(NEVER - 1),
        }
    }

    fn strip<'k>(&self, full: &'k str) -> Option<&'k str> {
        full.strip_prefix(self.inner.prefix.as_str())
    }

    pub(crate) fn remove_matching(&self, pattern: &str) -> u64 {
        if let Some(key) = glob::literal(pattern) {
            return u64::from(self.remove(&key));
        }
        let n = self
            .inner
            .engine
            .remove_where(&|k, _| self.strip(k).is_some_and(|k| glob::matches(pattern, k)));
        self.changed();
        n
    }

    pub(crate) fn keys_matching(&self, pattern: &str, limit: usize) -> Vec<String> {
        let found = parking_lot::Mutex::new(Vec::new());
        // The engines can visit every entry only through their conditional removal; the
        // predicate collects and never removes.
        self.inner.engine.remove_where(&|k, _| {
            if let Some(k) = self.strip(k)
                && glob::matches(pattern, k)
            {
                let mut found = found.lock();
                if found.len() < limit {
                    found.push(k.to_owned());
                }
            }
            false
        });
        found.into_inner()
    }

    pub(crate) fn remove_all(&self) -> u64 {
        let n = self
            .inner
            .engine
            .remove_where(&|k, _| self.strip(k).is_some());
        self.changed();
        n
    }
}

/// A key with the backend's prefix.
enum FullKey<'a> {
    Bare(&'a str),
    Prefixed(KeyText),
}

impl FullKey<'_> {
    #[inline]
    fn as_str(&self) -> &str {
        match self {
            FullKey::Bare(k) => k,
            FullKey::Prefixed(k) => k.as_str(),
        }
    }

    fn into_string(self) -> String {
        match self {
            FullKey::Bare(k) => k.to_owned(),
            FullKey::Prefixed(k) => k.into_string(),
        }
    }
}

/// The cores of this machine, as quick_cache counts them for its default shard count.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// quick_cache's shard count: its default (four per core) for an entry-bound store; for a
/// weight-bound one at most [`WEIGHTED_SHARDS_MAX`], so that a shard, which holds only its
/// share of `max_weight`, can hold any entry up to the documented fraction of the whole.
fn shards(weighted: bool, cores: usize) -> usize {
    let default = cores.saturating_mul(4).max(1);
    if weighted {
        default.min(WEIGHTED_SHARDS_MAX)
    } else {
        default
    }
}

#[async_trait]
impl CacheBackend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn keys(&self, pattern: &str, limit: usize) -> Result<Vec<Vec<u8>>, BackendError> {
        Ok(self
            .keys_matching(pattern, limit)
            .into_iter()
            .map(String::into_bytes)
            .collect())
    }

    /// Byte values only: a typed value stored through [`Cache`](crate::Cache) reads as a miss
    /// here, since it was never serialized.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let now = self.inner.clock.now_ms();
        Ok(self.entry(key).and_then(|e| {
            if e.expires_at <= now {
                return None;
            }
            e.value.downcast_ref::<Vec<u8>>().cloned()
        }))
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let expires_at = self.expiry(ttl);
        let weight = u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX);
        self.insert(
            key,
            MemEntry {
                value: Arc::new(value.to_vec()),
                expires_at,
                keep_until: expires_at,
                weight,
                tags: None,
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        Ok(self.remove(key))
    }

    async fn delete_pattern(&self, pattern: &str) -> Result<u64, BackendError> {
        Ok(self.remove_matching(pattern))
    }

    async fn clear(&self) -> Result<u64, BackendError> {
        Ok(self.remove_all())
    }

    async fn ping(&self) -> Result<Duration, BackendError> {
        let t = Instant::now();
        let _ = self.inner.engine.get("\0lexigram-cache:ping");
        Ok(t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_WEIGHT: u64 = 64 * 1024;

    fn weighted(engine: MemoryEngine, cores: usize) -> MemoryBackend {
        MemoryBackend::builder()
            .engine(engine)
            .max_weight(MAX_WEIGHT)
            .assume_cores(cores)
            .build()
            .expect("valid options")
    }

    #[tokio::test]
    async fn an_item_up_to_a_tenth_of_max_weight_is_cached_on_many_cores() {
        for engine in [MemoryEngine::S3Fifo, MemoryEngine::TinyLfu] {
            for cores in [1, 2, 16, 64, 256] {
                let b = weighted(engine, cores);
                let key = "big";
                let value = vec![7u8; usize::try_from(MAX_WEIGHT / 10).expect("small") - key.len()];
                b.set(key, &value, None).await.expect("set");
                assert_eq!(
                    b.get(key).await.expect("get").map(|v| v.len()),
                    Some(value.len()),
                    "{engine:?} on {cores} cores did not keep an item of a tenth of max_weight"
                );
                assert_eq!(b.evictions(), 0, "{engine:?} on {cores} cores");
            }
        }
    }

    /// Counts the warnings logged while it is the thread's subscriber.
    struct CountWarnings(Arc<AtomicU64>);

    impl tracing::Subscriber for CountWarnings {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_heavier_item_is_not_stored_replaces_nothing_and_is_warned_once() {
        for engine in [MemoryEngine::S3Fifo, MemoryEngine::TinyLfu] {
            let warnings = Arc::new(AtomicU64::new(0));
            let b = weighted(engine, 64);
            let entry = |len: usize| MemEntry {
                value: Arc::new(vec![1u8; len]),
                expires_at: NEVER,
                keep_until: NEVER,
                weight: u32::try_from(len).expect("small"),
                tags: None,
            };
            let tenth = usize::try_from(MAX_WEIGHT / 10).expect("small");
            tracing::subscriber::with_default(CountWarnings(Arc::clone(&warnings)), || {
                b.insert("k", entry(100));
                assert!(b.entry("k").is_some());
                b.insert("k", entry(tenth + 1));
                assert!(
                    b.entry("k").is_none(),
                    "{engine:?}: no old value, no heavy value"
                );
                b.insert("other", entry(tenth * 2));
                assert!(b.entry("other").is_none());
                b.insert("k", entry(tenth));
                assert!(b.entry("k").is_some(), "{engine:?}: a tenth still fits");
            });
            assert_eq!(
                warnings.load(Ordering::Relaxed),
                1,
                "{engine:?}: warned once"
            );
            assert_eq!(
                b.evictions(),
                0,
                "{engine:?}: a refused entry is no eviction"
            );
        }
    }

    #[test]
    fn shard_counts() {
        assert_eq!(shards(false, 16), 64);
        assert_eq!(shards(true, 16), WEIGHTED_SHARDS_MAX);
        assert_eq!(shards(true, 1), 4);
        assert_eq!(shards(true, 0), 1);
    }
}
