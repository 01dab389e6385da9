//! [`CacheOptions`] and [`Ttl`]: what a cache is configured with, and how one fill is protected.

use std::time::Duration;

use crate::codec::Format;
use crate::error::CacheError;
use crate::observe::FnStats;
use crate::store::near::NearOptions;

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

/// Options of a [`Cache`](crate::Cache) that are not the backend's own.
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
    /// The cache budget of one cached call (a fill of `get_or_insert_with` or a
    /// `#[cacheable]` function): the time all its round trips to the backend together may
    /// take (the read, the fill lock and its polls, the store and the unlock). When it is
    /// spent the call runs the body without the cache and returns its value; a store still
    /// going then finishes in the background. Default `None`: the backend's operation
    /// timeout, so a call pays a sick server one timeout at most. The memory backend makes
    /// no round trips and ignores it.
    pub call_budget: Option<Duration>,
    /// An in-process tier in front of a remote backend, holding values as their Rust type
    /// (see [`NearOptions`]). Default `None` here; the configuration turns it on for Redis
    /// backends by default.
    pub near: Option<NearOptions>,
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
            call_budget: None,
            near: None,
        }
    }
}

/// How one fill is protected: the cache's options, with a `#[cacheable]` function's own
/// `protect`, `early_refresh`, `beta` and `stale_if_error` on top.
#[derive(Clone, Debug)]
pub(crate) struct FillPolicy {
    /// The `#[cacheable]` function this fill is for, whose own counters are bumped too.
    pub(crate) function: Option<(&'static str, &'static FnStats)>,
    pub(crate) lock: bool,
    pub(crate) early_refresh: bool,
    pub(crate) beta: f64,
    pub(crate) stale_if_error: Option<Duration>,
    /// The tags a filled value carries (`#[cacheable(tags = [...])]`); `None` for none.
    pub(crate) tags: Option<std::sync::Arc<[String]>>,
}
