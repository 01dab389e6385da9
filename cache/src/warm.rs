//! [`Cache::warm`]: fills many keys ahead of traffic, with bounded concurrency and a per-key
//! report.

use std::collections::HashSet;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};

use crate::cache::{Cache, CacheValue, Ttl};
use crate::error::CacheError;
use crate::observe::short_key;

/// How [`Cache::warm`] loads its keys.
///
/// Start from [`WarmOptions::default`] (8 loads at a time, every key loaded, the cache's
/// default ttl) and change what you need:
///
/// ```
/// use lexigram_cache::{Ttl, WarmOptions};
/// use std::time::Duration;
///
/// let options = WarmOptions::default()
///     .concurrency(32)
///     .skip_existing(true)
///     .ttl(Duration::from_secs(600));
/// assert_eq!(options.concurrency, 32);
/// assert_eq!(options.ttl, Ttl::secs(600));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmOptions {
    /// How many keys are in progress (checked, loaded or stored) at once. `0` is read as `1`:
    /// a warm-up that loads nothing at a time would never finish. Default 8.
    pub concurrency: usize,
    /// Check each key first and leave the ones that already hold a value before their expiry
    /// (of any type) alone, without calling the loader. The check is
    /// [`Cache::exists`]: on a remote backend it reads the stored value, so it costs a
    /// round trip per key. Default `false`: every key is loaded and overwritten.
    pub skip_existing: bool,
    /// Lifetime of the loaded values, with the rules of [`Cache::set`]: [`Ttl::Default`] is
    /// the cache's default, a zero duration is [`CacheError::ZeroTtl`]. As for values filled by
    /// `get_or_insert_with`, a finite ttl is scaled by the cache's
    /// [`ttl_jitter`](crate::CacheOptions::ttl_jitter), so keys warmed together do not all
    /// expire together.
    pub ttl: Ttl,
}

impl Default for WarmOptions {
    fn default() -> Self {
        WarmOptions {
            concurrency: 8,
            skip_existing: false,
            ttl: Ttl::Default,
        }
    }
}

impl WarmOptions {
    /// Sets [`concurrency`](Self::concurrency).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`skip_existing`](Self::skip_existing).
    #[must_use]
    pub fn skip_existing(mut self, skip_existing: bool) -> Self {
        self.skip_existing = skip_existing;
        self
    }

    /// Sets [`ttl`](Self::ttl): a [`Duration`], [`Ttl::Never`], or `None` for the cache's
    /// default.
    #[must_use]
    pub fn ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.ttl = ttl.into();
        self
    }
}

/// What [`Cache::warm`] did with one key.
#[derive(Debug)]
#[non_exhaustive]
pub enum WarmOutcome {
    /// The loader's value was stored.
    Loaded,
    /// The loader was not called: the key already held a value (with
    /// [`WarmOptions::skip_existing`]), or the cache is disabled
    /// ([`CacheOptions::enabled`](crate::CacheOptions::enabled) is `false`).
    Skipped,
    /// The loader returned an error, shown here with its `Display`; nothing was stored.
    LoadFailed(String),
    /// The loader panicked (the panic's message); nothing was stored. The other keys went on.
    LoadPanicked(String),
    /// The loader's value could not be stored: the backend failed, the circuit breaker is
    /// open, or the value did not serialize.
    StoreFailed(CacheError),
    /// The [`skip_existing`](WarmOptions::skip_existing) check failed, so the loader was not
    /// called: a backend that cannot be read would most likely not store the value either.
    CheckFailed(CacheError),
}

impl WarmOutcome {
    /// Whether this key ended up with a value in the cache: [`Loaded`](Self::Loaded), or
    /// [`Skipped`](Self::Skipped) because it had one.
    pub fn is_ok(&self) -> bool {
        matches!(self, WarmOutcome::Loaded | WarmOutcome::Skipped)
    }
}

impl fmt::Display for WarmOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarmOutcome::Loaded => f.write_str("loaded"),
            WarmOutcome::Skipped => f.write_str("skipped"),
            WarmOutcome::LoadFailed(e) => write!(f, "the loader failed: {e}"),
            WarmOutcome::LoadPanicked(e) => write!(f, "the loader panicked: {e}"),
            WarmOutcome::StoreFailed(e) => write!(f, "not stored: {e}"),
            WarmOutcome::CheckFailed(e) => write!(f, "not checked: {e}"),
        }
    }
}

/// What [`Cache::warm`] did: one [`WarmOutcome`] per distinct key, in the order the keys were
/// given, and counts.
///
/// `Display` prints the counts (`12 keys: 10 loaded, 1 skipped, 1 failed`).
#[derive(Debug)]
#[non_exhaustive]
pub struct WarmReport {
    outcomes: Vec<(String, WarmOutcome)>,
    /// How long the whole warm-up took.
    pub elapsed: Duration,
}

impl WarmReport {
    /// Each distinct key with its outcome, in the order the keys were given.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &WarmOutcome)> {
        self.outcomes.iter().map(|(k, o)| (k.as_str(), o))
    }

    /// The outcome of `key`, if it was among the keys. A linear search: to go through many
    /// keys, use [`iter`](Self::iter).
    pub fn get(&self, key: &str) -> Option<&WarmOutcome> {
        self.outcomes.iter().find(|(k, _)| k == key).map(|(_, o)| o)
    }

    /// The keys that did not end up in the cache, with why.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &WarmOutcome)> {
        self.iter().filter(|(_, o)| !o.is_ok())
    }

    /// How many distinct keys were given.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether no key was given.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// How many keys were loaded and stored.
    pub fn loaded(&self) -> usize {
        self.count(|o| matches!(o, WarmOutcome::Loaded))
    }

    /// How many keys were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, WarmOutcome::Skipped))
    }

    /// How many keys failed, for any reason.
    pub fn failed(&self) -> usize {
        self.count(|o| !o.is_ok())
    }

    /// Whether every key was loaded or skipped.
    pub fn all_ok(&self) -> bool {
        self.outcomes.iter().all(|(_, o)| o.is_ok())
    }

    /// The keys and their outcomes, by value.
    pub fn into_outcomes(self) -> Vec<(String, WarmOutcome)> {
        self.outcomes
    }

    fn count(&self, which: impl Fn(&WarmOutcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| which(o)).count()
    }
}

impl fmt::Display for WarmReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} keys: {} loaded, {} skipped, {} failed",
            self.len(),
            self.loaded(),
            self.skipped(),
            self.failed()
        )
    }
}

impl Cache {
    /// Loads `keys` into the cache ahead of traffic: for each distinct key, calls `loader` with
    /// it and stores the `Ok` value. Returns what happened to every key; one key's failure
    /// (an `Err`, a panic, a failed store) does not stop the others.
    ///
    /// `keys` is any iterator of `Into<String>` (`&str`, `String`, `&String`, ...). `loader`
    /// gets the owned key and returns a future of `Result<T, E>` with `E: Display`: a closure
    /// returning an `async move` block, or an `async |key: String| ...` closure.
    ///
    /// - At most [`concurrency`](WarmOptions::concurrency) keys are in progress at a time. The
    ///   loads run concurrently inside the returned future (no task is spawned), so `loader`
    ///   may borrow from its surroundings; the future is `Send` when `loader` and its futures
    ///   are, so it can be spawned.
    /// - With [`skip_existing`](WarmOptions::skip_existing), a key that already holds a value
    ///   is [`Skipped`](WarmOutcome::Skipped) and its loader is not called.
    /// - A key given twice is loaded once and reported once.
    /// - A panicking loader is caught and reported as
    ///   [`LoadPanicked`](WarmOutcome::LoadPanicked) (the panic hook still prints it); the
    ///   other keys go on. Under `panic = "abort"` nothing can be caught.
    /// - Values are stored as `get_or_insert_with` stores them: with jitter on a finite ttl,
    ///   the load time (for early refresh), and the cache's
    ///   [`stale_if_error`](crate::CacheOptions::stale_if_error) window. Key and type are
    ///   those of [`get`](Self::get), so a `#[cacheable]` function's generated `*_cache_key`
    ///   gives the key it will read (when its `version` is the default).
    ///
    /// The only error is an invalid [`ttl`](WarmOptions::ttl) (zero:
    /// [`CacheError::ZeroTtl`]), returned before any loader runs; everything else is in the
    /// report. Dropping the future cancels the loads in progress; values already stored stay.
    ///
    /// ```
    /// use lexigram_cache::{CacheModule, WarmOptions, WarmOutcome};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), lexigram_cache::CacheError> {
    /// let cache = CacheModule::stub().cache();
    /// cache.set("price:3", &3.0f64, None).await?;
    ///
    /// let report = cache
    ///     .warm(
    ///         ["price:1", "price:2", "price:3", "price:404"],
    ///         |key| async move {
    ///             // stands for a database query
    ///             match key.as_str() {
    ///                 "price:404" => Err(format!("no product for {key}")),
    ///                 _ => Ok(9.99f64),
    ///             }
    ///         },
    ///         WarmOptions::default().skip_existing(true).ttl(Duration::from_secs(600)),
    ///     )
    ///     .await?;
    ///
    /// assert_eq!(report.to_string(), "4 keys: 2 loaded, 1 skipped, 1 failed");
    /// assert!(matches!(report.get("price:3"), Some(WarmOutcome::Skipped)));
    /// assert!(matches!(report.get("price:404"), Some(WarmOutcome::LoadFailed(_))));
    /// assert_eq!(cache.get::<f64>("price:1").await?, Some(9.99));
    /// # Ok(()) }
    /// ```
    pub async fn warm<I, T, E, F, Fut>(
        &self,
        keys: I,
        loader: F,
        options: WarmOptions,
    ) -> Result<WarmReport, CacheError>
    where
        I: IntoIterator,
        I::Item: Into<String>,
        T: CacheValue,
        E: fmt::Display,
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let ttl = options.ttl.resolve(self.options().default_ttl)?;
        let mut seen = HashSet::new();
        let keys: Vec<String> = keys
            .into_iter()
            .map(Into::into)
            .filter(|k| seen.insert(k.clone()))
            .collect();
        drop(seen);

        let outcomes: Vec<(String, WarmOutcome)> = if self.options().enabled {
            let loader = &loader;
            let mut done: Vec<(usize, String, WarmOutcome)> =
                futures::stream::iter(keys.into_iter().enumerate())
                    .map(|(i, key)| async move {
                        let outcome = self.warm_one(&key, ttl, options, loader).await;
                        (i, key, outcome)
                    })
                    .buffer_unordered(options.concurrency.max(1))
                    .collect()
                    .await;
            done.sort_unstable_by_key(|(i, _, _)| *i);
            done.into_iter().map(|(_, k, o)| (k, o)).collect()
        } else {
            keys.into_iter()
                .map(|k| (k, WarmOutcome::Skipped))
                .collect()
        };
        let report = WarmReport {
            outcomes,
            elapsed: started.elapsed(),
        };
        tracing::debug!(cache = %self.name(), took = ?report.elapsed, "warmed {report}");
        Ok(report)
    }

    async fn warm_one<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        options: WarmOptions,
        loader: &F,
    ) -> WarmOutcome
    where
        T: CacheValue,
        E: fmt::Display,
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if options.skip_existing {
            match self.exists(key).await {
                Ok(true) => return WarmOutcome::Skipped,
                Ok(false) => {}
                Err(e) => return WarmOutcome::CheckFailed(e),
            }
        }
        let started = Instant::now();
        // The loader is user code: a panic in it (in the call or while polling its future)
        // must end this key only. Nothing of ours is shared across the unwind, so asserting
        // unwind safety is sound.
        let loaded = AssertUnwindSafe(async { loader(key.to_owned()).await })
            .catch_unwind()
            .await;
        let value = match loaded {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => {
                let message = e.to_string();
                tracing::debug!(cache = %self.name(), key = short_key(key), error = %message, "warm: the loader failed");
                return WarmOutcome::LoadFailed(message);
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::warn!(cache = %self.name(), key = short_key(key), panic = %message, "warm: the loader panicked");
                return WarmOutcome::LoadPanicked(message);
            }
        };
        let compute = started.elapsed();
        let ttl = self.jittered(ttl);
        let keep = self.options().stale_if_error;
        match self.store_value(key, &value, ttl, 0, compute, keep).await {
            Ok(()) => WarmOutcome::Loaded,
            Err(e) => WarmOutcome::StoreFailed(e),
        }
    }
}

/// The text of a panic payload: what `panic!` was given, when it is a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
