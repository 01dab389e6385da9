//! Statistics.
//!
//! Counters are striped across cache lines by thread, so that a hit (which bumps `hits`) does
//! not make every core fight over one cache line when many tasks read the same cache.

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
}

const COUNTERS: usize = 10;
const STRIPES: usize = 8;

#[repr(align(128))]
#[derive(Default)]
struct Stripe([AtomicU64; COUNTERS]);

#[derive(Default)]
pub(crate) struct Counters {
    stripes: [Stripe; STRIPES],
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn stripe() -> usize {
    STRIPE.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % STRIPES;
        s.set(v);
        v
    })
}

impl Counters {
    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        self.stripes[stripe()].0[c as usize].fetch_add(n, Ordering::Relaxed);
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
            evictions,
            ..CacheStats::default()
        }
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
