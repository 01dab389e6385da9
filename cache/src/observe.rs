//! Statistics.
//!
//! Counters are striped across cache lines by thread, so that a hit (which bumps `hits`) does
//! not make every core fight over one cache line when many tasks read the same cache. A thread
//! leases a stripe of its own while one is free, and then counts with a plain load and store,
//! no atomic read-modify-write; threads past the leases share the last stripe.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a cache's counters since it was created.
///
/// ```
/// use lexigram_cache::CacheModule;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = CacheModule::stub().cache();
/// cache.set("k", &1u8, None).await.unwrap();
/// let _ = cache.get::<u8>("k").await;
/// let _ = cache.get::<u8>("other").await;
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses, stats.sets), (1, 1, 1));
/// assert_eq!(stats.hit_ratio(), 0.5);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads that found a fresh value.
    pub hits: u64,
    /// Reads that found nothing usable (missing, expired, undecodable, or backend error).
    pub misses: u64,
    /// Values written.
    pub sets: u64,
    /// Keys removed by delete calls.
    pub deletes: u64,
    /// Backend operations that failed (network, timeout, protocol) and bad arguments.
    pub errors: u64,
    /// Stored bytes that did not decode as the expected type (counted as misses too).
    pub decode_failures: u64,
    /// Expired values served because the fill failed (stale-if-error).
    pub stale_served: u64,
    /// Callers that waited for another caller's fill instead of running the body.
    pub coalesced: u64,
    /// Times a body ran to fill the cache.
    pub fills: u64,
    /// Background refreshes started before expiry.
    pub early_refreshes: u64,
    /// Entries evicted by the in-memory engine to stay within its bound.
    pub evictions: u64,
    /// Times the backend's circuit breaker opened.
    pub breaker_opens: u64,
    /// Calls that skipped the backend because its breaker was open.
    pub breaker_short_circuits: u64,
    /// Whether the breaker is open now.
    pub breaker_open: bool,
    /// Reads served by the near tier (included in `hits`).
    pub near_hits: u64,
    /// Invalidations received from other processes by the near tier.
    pub near_invalidations: u64,
    /// Times the near tier's invalidation connection was lost (each empties the tier).
    pub near_resets: u64,
    /// Whether the near tier serves now: subscribed to invalidations (always, for a tier that
    /// relies on its ttl alone). `false` without a near tier.
    pub near_live: bool,
    /// Writes of cached calls that outlived their call's cache budget and went on in the
    /// background (their failures count in `errors`, like any write's).
    pub background_writes: u64,
    /// Writes (stores, and releases of fill locks, which then expire with their ttl) dropped
    /// because 1024 were waiting for the backend in the background already.
    pub background_writes_dropped: u64,
}

impl CacheStats {
    /// hits / (hits + misses), or 0 when nothing was read.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Hits,
    Misses,
    Sets,
    Deletes,
    Errors,
    DecodeFailures,
    StaleServed,
    Coalesced,
    Fills,
    EarlyRefreshes,
    NearHits,
}

const COUNTERS: usize = 11;
const STRIPES: usize = 8;
/// The stripe of the threads that hold no lease, counted with atomic adds.
const SHARED: usize = STRIPES - 1;

#[repr(align(128))]
#[derive(Default, Debug)]
struct Stripe([AtomicU64; COUNTERS]);

/// Counts striped by thread, so that threads counting hits on the same cache or function do
/// not fight over one cache line.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    stripes: [Stripe; STRIPES],
}

/// Stripes never leased yet are `NEXT_LEASE..SHARED`; returned ones wait in `FREE_LEASES`.
static NEXT_LEASE: AtomicUsize = AtomicUsize::new(0);
static FREE_LEASES: parking_lot::Mutex<Vec<usize>> = parking_lot::Mutex::new(Vec::new());

/// A thread's stripe, given back when the thread ends. The next holder takes it through the
/// `FREE_LEASES` lock, after which it sees every count the last holder stored.
struct Lease(Cell<usize>);

impl Drop for Lease {
    fn drop(&mut self) {
        let stripe = self.0.get();
        if stripe < SHARED {
            FREE_LEASES.lock().push(stripe);
        }
    }
}

thread_local! {
    static LEASE: Lease = const { Lease(Cell::new(usize::MAX)) };
}

#[inline]
fn stripe() -> usize {
    LEASE
        .try_with(|lease| {
            let v = lease.0.get();
            if v != usize::MAX {
                return v;
            }
            let v = take_lease();
            lease.0.set(v);
            v
        })
        // A count from a thread-local destructor, after the lease went back.
        .unwrap_or(SHARED)
}

#[cold]
fn take_lease() -> usize {
    if let Some(stripe) = FREE_LEASES.lock().pop() {
        return stripe;
    }
    let next = NEXT_LEASE.fetch_add(1, Ordering::Relaxed);
    if next < SHARED { next } else { SHARED }
}

impl Counters {
    /// Zeroed counters, usable in a `static`.
    pub(crate) const fn new() -> Counters {
        Counters {
            stripes: [const { Stripe([const { AtomicU64::new(0) }; COUNTERS]) }; STRIPES],
        }
    }

    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        self.add_at(stripe(), c, n);
    }

    /// [`add`](Self::add) in a stripe the caller looked up, for a count kept in two places.
    #[inline]
    fn add_at(&self, stripe: usize, c: Counter, n: u64) {
        let cell = &self.stripes[stripe].0[c as usize];
        if stripe == SHARED {
            cell.fetch_add(n, Ordering::Relaxed);
        } else {
            // Only the lease holder writes its stripe.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        }
    }

    #[inline]
    pub(crate) fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    fn sum(&self, c: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[c as usize].load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn snapshot(&self, evictions: u64) -> CacheStats {
        CacheStats {
            hits: self.sum(Counter::Hits),
            misses: self.sum(Counter::Misses),
            sets: self.sum(Counter::Sets),
            deletes: self.sum(Counter::Deletes),
            errors: self.sum(Counter::Errors),
            decode_failures: self.sum(Counter::DecodeFailures),
            stale_served: self.sum(Counter::StaleServed),
            coalesced: self.sum(Counter::Coalesced),
            fills: self.sum(Counter::Fills),
            early_refreshes: self.sum(Counter::EarlyRefreshes),
            near_hits: self.sum(Counter::NearHits),
            evictions,
            ..CacheStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function counted in six caches keeps one set of handles per cache: the first, four
    /// read without a lock, one more behind it; counting again finds them, never a seventh.
    #[test]
    fn a_function_in_several_caches_has_handles_per_cache() {
        static STATS: FnStats = FnStats::new();
        let caches: Vec<Counters> = (0..6).map(|_| Counters::new()).collect();
        for _ in 0..2 {
            for (i, counts) in caches.iter().enumerate() {
                STATS.incr("f", &format!("c{i}"), counts, Counter::Hits);
            }
        }
        let id = |i: usize| std::ptr::from_ref(&caches[i]) as usize;
        assert_eq!(STATS.metrics.get().map(|(at, _)| *at), Some(id(0)));
        let slots: Vec<(usize, String)> = STATS
            .elsewhere
            .iter()
            .map(|s| s.get().map(|e| (e.0, e.1.clone())).expect("filled"))
            .collect();
        assert_eq!(
            slots,
            (1..5).map(|i| (id(i), format!("c{i}"))).collect::<Vec<_>>()
        );
        let more: Vec<(usize, String)> = STATS
            .more
            .lock()
            .iter()
            .map(|e| (e.0, e.1.clone()))
            .collect();
        assert_eq!(more, vec![(id(5), "c5".to_owned())]);
        assert_eq!(STATS.snapshot().hits, 12);
    }

    /// More threads than stripes, each ending while others start: leases are handed on, the
    /// threads past them share the atomic stripe, and no count is lost.
    #[test]
    fn counts_from_many_threads_and_reused_leases_add_up() {
        static COUNTS: Counters = Counters::new();
        let threads = |n: usize| {
            std::thread::scope(|s| {
                for _ in 0..n {
                    s.spawn(|| {
                        for _ in 0..10_000 {
                            COUNTS.incr(Counter::Hits);
                        }
                        COUNTS.add(Counter::Sets, 3);
                    });
                }
            });
        };
        threads(3 * STRIPES);
        threads(2);
        threads(STRIPES + 1);
        let n = (3 * STRIPES + 2 + STRIPES + 1) as u64;
        assert_eq!(COUNTS.sum(Counter::Hits), n * 10_000);
        assert_eq!(COUNTS.sum(Counter::Sets), n * 3);
    }
}

/// Shortens a key for log lines: keys can be long and are not secret, but a 10 kB key in every
/// warning helps nobody.
pub(crate) fn short_key(key: &str) -> &str {
    const MAX: usize = 120;
    if key.len() <= MAX {
        return key;
    }
    let mut end = MAX;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// The counters exported through the `metrics` facade, by [`Counter`].
#[cfg(feature = "metrics")]
fn metric_name(c: Counter) -> Option<&'static str> {
    match c {
        Counter::Hits => Some("lexigram_cache_hits_total"),
        Counter::Misses => Some("lexigram_cache_misses_total"),
        Counter::Errors => Some("lexigram_cache_errors_total"),
        Counter::StaleServed => Some("lexigram_cache_stale_served_total"),
        Counter::Coalesced => Some("lexigram_cache_coalesced_total"),
        _ => None,
    }
}

/// `metrics` counter handles for one (cache, function) pair, registered once. Handles come from
/// the recorder installed when they are registered: install a recorder (for example
/// metrics-exporter-prometheus) before the first cache call.
#[derive(Debug)]
pub(crate) struct MetricHandles {
    #[cfg(feature = "metrics")]
    counters: [Option<metrics::Counter>; COUNTERS],
}

impl MetricHandles {
    pub(crate) fn new(cache: &str, function: &'static str) -> MetricHandles {
        #[cfg(feature = "metrics")]
        {
            let all = [
                Counter::Hits,
                Counter::Misses,
                Counter::Sets,
                Counter::Deletes,
                Counter::Errors,
                Counter::DecodeFailures,
                Counter::StaleServed,
                Counter::Coalesced,
                Counter::Fills,
                Counter::EarlyRefreshes,
                Counter::NearHits,
            ];
            MetricHandles {
                counters: all.map(|c| {
                    metric_name(c).map(|name| {
                        metrics::counter!(name, "cache" => cache.to_owned(), "fn" => function)
                    })
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (cache, function);
            MetricHandles {}
        }
    }

    #[inline]
    pub(crate) fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        #[cfg(feature = "metrics")]
        if let Some(counter) = &self.counters[c as usize] {
            counter.increment(n);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (c, n);
    }
}

/// The operations the store times; each gets its handle when the cache is built.
#[cfg(feature = "metrics")]
const TIMED_OPS: [&str; 17] = [
    "get",
    "set",
    "exists",
    "get_many",
    "set_many",
    "delete",
    "delete_many",
    "delete_pattern",
    "clear",
    "keys",
    "ping",
    "lock",
    "unlock",
    "publish",
    "tags",
    "tag_add",
    "tag_set",
];

/// One cache's `lexigram_cache_backend_seconds` histogram handles by operation, registered
/// once: building the labelled key on every call allocates and hashes on the hit path.
#[derive(Debug)]
pub(crate) struct Latency {
    #[cfg(feature = "metrics")]
    handles: [metrics::Histogram; TIMED_OPS.len()],
}

impl Latency {
    pub(crate) fn new(cache: &str) -> Latency {
        #[cfg(feature = "metrics")]
        {
            Latency {
                handles: TIMED_OPS.map(|op| {
                    metrics::histogram!(
                        "lexigram_cache_backend_seconds",
                        "cache" => cache.to_owned(),
                        "op" => op
                    )
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = cache;
            Latency {}
        }
    }

    /// Records one call of `op` on cache `cache` (the name this was built with).
    #[inline]
    pub(crate) fn record(&self, cache: &str, op: &'static str, took: std::time::Duration) {
        #[cfg(feature = "metrics")]
        match TIMED_OPS.iter().position(|o| *o == op) {
            Some(i) => self.handles[i].record(took.as_secs_f64()),
            None => metrics::histogram!(
                "lexigram_cache_backend_seconds",
                "cache" => cache.to_owned(),
                "op" => op
            )
            .record(took.as_secs_f64()),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (cache, op, took);
    }
}

/// Counters of one `#[cacheable]` function, kept in a static beside it.
#[doc(hidden)]
#[derive(Debug)]
pub struct FnStats {
    counts: Counters,
    seen: std::sync::atomic::AtomicBool,
    /// The metric handles of the first cache the function was counted in, with that cache's
    /// counters' address, which names the cache for as long as it lives. Only the address is
    /// compared on a hit (a name would cost the hit path a string comparison): a cache
    /// dropped and another built at its address under a new name, while the function is in
    /// use, is counted under the old name.
    metrics: std::sync::OnceLock<(usize, MetricHandles)>,
    /// The handles of the other caches its calls went to (a method with `cache = self.cache`
    /// can reach any), by the same address and the cache's name: the first few in slots read
    /// without a lock, since each of their hits counts here too; more behind a lock.
    elsewhere: [std::sync::OnceLock<Box<Elsewhere>>; 4],
    more: parking_lot::Mutex<Vec<Elsewhere>>,
}

/// The metric handles of a function in one more cache: its counters' address, its name.
type Elsewhere = (usize, String, MetricHandles);

impl FnStats {
    /// Zeroed counters.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> FnStats {
        FnStats {
            counts: Counters::new(),
            seen: std::sync::atomic::AtomicBool::new(false),
            metrics: std::sync::OnceLock::new(),
            elsewhere: [const { std::sync::OnceLock::new() }; 4],
            more: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Counts one event of the function `scope`, in cache `cache`, here and in that cache's
    /// own `counts`, looking up the thread's stripe once for both (a hit counts nothing else).
    #[inline]
    pub(crate) fn incr(
        &'static self,
        scope: &'static str,
        cache: &str,
        counts: &Counters,
        c: Counter,
    ) {
        let stripe = stripe();
        counts.add_at(stripe, c, 1);
        self.counts.add_at(stripe, c, 1);
        if !self.seen.load(Ordering::Relaxed) && !self.seen.swap(true, Ordering::AcqRel) {
            FUNCTIONS.lock().push((scope, self));
        }
        let id = std::ptr::from_ref(counts) as usize;
        let (first, handles) = self
            .metrics
            .get_or_init(|| (id, MetricHandles::new(cache, scope)));
        if *first == id {
            handles.incr(c);
        } else {
            self.incr_elsewhere(id, scope, cache, c);
        }
    }

    /// [`incr`](Self::incr) in a cache other than the function's first.
    #[cold]
    fn incr_elsewhere(&self, id: usize, scope: &'static str, cache: &str, c: Counter) {
        // The name too: a cache dropped and another built at its address is another cache.
        let this = |(at, name, _): &Elsewhere| *at == id && name == cache;
        let made = || (id, cache.to_owned(), MetricHandles::new(cache, scope));
        for slot in &self.elsewhere {
            // An empty slot is this cache's once the slots before it are others'.
            let found = slot.get_or_init(|| Box::new(made()));
            if this(found) {
                return found.2.incr(c);
            }
        }
        let mut more = self.more.lock();
        match more.iter().find(|e| this(e)) {
            Some((_, _, handles)) => handles.incr(c),
            None => {
                let e = made();
                e.2.incr(c);
                more.push(e);
            }
        }
    }

    fn snapshot(&self) -> CacheStats {
        let get = |c: Counter| self.counts.sum(c);
        CacheStats {
            hits: get(Counter::Hits),
            misses: get(Counter::Misses),
            sets: get(Counter::Sets),
            deletes: get(Counter::Deletes),
            errors: get(Counter::Errors),
            decode_failures: get(Counter::DecodeFailures),
            stale_served: get(Counter::StaleServed),
            coalesced: get(Counter::Coalesced),
            fills: get(Counter::Fills),
            early_refreshes: get(Counter::EarlyRefreshes),
            ..CacheStats::default()
        }
    }
}

static FUNCTIONS: parking_lot::Mutex<Vec<(&'static str, &'static FnStats)>> =
    parking_lot::Mutex::new(Vec::new());

/// The statistics of one `#[cacheable]` function.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// `module_path::fn_name` for a free function, `module_path::SelfType::method` or
    /// `module_path::<SelfType as Trait>::method` for a method (see
    /// [`cacheable`](crate::cacheable#scopes)).
    pub function: &'static str,
    /// Its counters since the process started (breaker and eviction fields stay zero: they
    /// belong to caches, see [`Cache::stats`](crate::Cache::stats)).
    pub stats: CacheStats,
}

/// Statistics of every `#[cacheable]` function called so far in this process, sorted by name.
///
/// ```
/// use lexigram_cache::cacheable;
///
/// #[cacheable(ttl = 60)]
/// async fn square(x: u64) -> u64 { x * x }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// square(3).await;
/// square(3).await;
/// let all = lexigram_cache::function_stats();
/// let s = all.iter().find(|f| f.function.ends_with("::square")).unwrap();
/// assert_eq!((s.stats.misses, s.stats.hits, s.stats.fills), (1, 1, 1));
/// # }
/// ```
pub fn function_stats() -> Vec<FunctionStats> {
    let mut out: Vec<FunctionStats> = FUNCTIONS
        .lock()
        .iter()
        .map(|(function, s)| FunctionStats {
            function,
            stats: s.snapshot(),
        })
        .collect();
    out.sort_by_key(|f| f.function);
    out
}
