//! The fill protocol: a read, then on a miss the body under single flight, the backend's fill
//! lock, XFetch early refresh and stale-if-error, and the store of its `Ok` value. All round
//! trips of one fill share its cache budget ([`Budget`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::Budget;
use super::{Cache, CacheValue, FillPolicy, Ttl};
use crate::clock::coarse_wall_ms;
use crate::error::CacheError;
use crate::events::EventKind;
use crate::observe::{Counter, short_key};
use crate::protect::early;
use crate::protect::single_flight::{self, Join};
use crate::store::{Found, Timing};
use crate::tags::Stamp;

/// What [`Cache::fill_first`] found.
pub(crate) enum First<T> {
    /// A fresh value not due for an early refresh, counted as a hit: the call's answer.
    Hit(T),
    /// Anything else: [`Cache::fill_rest`] goes on from it.
    Rest(Rest<T>),
}

impl<T> First<T> {
    fn rest(budget: Budget, step: Step<T>) -> First<T> {
        First::Rest(Rest { budget, step })
    }
}

/// The state of a fill past its first read.
pub(crate) struct Rest<T> {
    budget: Budget,
    step: Step<T>,
}

enum Step<T> {
    /// The cache is switched off: the body runs.
    Off,
    /// The key is in the cache's reserved space: the body runs, uncached.
    Reserved,
    /// The read failed.
    Failed(CacheError),
    /// A fresh value that is due for an early refresh.
    Refresh(T),
    /// No fresh value; a stale one kept for stale-if-error.
    Miss(Option<T>),
}

impl Cache {
    /// The protection of fills that did not choose their own: the cache's options.
    pub(crate) fn default_policy(&self) -> FillPolicy {
        let o = &self.inner.options;
        FillPolicy {
            function: None,
            lock: o.lock,
            early_refresh: o.early_refresh,
            beta: o.beta,
            stale_if_error: o.stale_if_error,
            tags: None,
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
        self.fill_with(key, ttl, version, &policy, |_| None, init)
            .await
    }

    /// [`fill`](Self::fill) with an explicit protection policy. A failed first read is a miss
    /// unless `read_error` turns its error into the call's result (`skip_on_error = false`),
    /// so that returning read errors costs no read of its own.
    pub(crate) async fn fill_with<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        version: u32,
        policy: &FillPolicy,
        read_error: impl FnOnce(CacheError) -> Option<E>,
        init: F,
    ) -> Result<T, E>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.fill_first::<T>(key, version, policy).await {
            First::Hit(v) => Ok(v),
            First::Rest(rest) => {
                self.fill_rest(rest, key, ttl, version, policy, read_error, init)
                    .await
            }
        }
    }

    /// The first step of [`fill_with`](Self::fill_with): the read, and a hit counted. A caller
    /// that goes on with [`fill_rest`](Self::fill_rest) only past a hit keeps the rest of the
    /// protocol, a large future, out of every hit.
    pub(crate) async fn fill_first<T: CacheValue>(
        &self,
        key: &str,
        version: u32,
        policy: &FillPolicy,
    ) -> First<T> {
        if !self.inner.options.enabled {
            return First::rest(Budget::new(None, None), Step::Off);
        }
        if crate::key::is_reserved(key) {
            return First::rest(Budget::new(None, None), Step::Reserved);
        }
        let mut budget = Budget::new(self.inner.budget, self.inner.store.op_timeout());
        let store = &self.inner.store;
        let first = match store.find_in_memory::<T>(key) {
            Some(found) => found,
            // Boxed on its own: a read of Redis is a future of half a kilobyte, and inline it
            // would make the future of every cached function's call that much larger, for
            // the memory backend's calls too, which never make it.
            None => match budget
                .io(store, "get", key, Box::pin(self.find::<T>(key, version)))
                .await
            {
                Some(Ok(found)) => found,
                Some(Err(e)) => return First::rest(budget, Step::Failed(e)),
                None => Found::Miss,
            },
        };
        match first {
            Found::Fresh(v, timing) => {
                self.inner.store.count_in(policy.function, Counter::Hits);
                self.emit(EventKind::Hit, key, policy);
                if policy.early_refresh && self.refresh_due(timing, policy.beta) {
                    return First::rest(budget, Step::Refresh(v));
                }
                First::Hit(v)
            }
            Found::Stale(v) => {
                self.count_miss(key, policy);
                First::rest(budget, Step::Miss(Some(v)))
            }
            Found::Miss => {
                self.count_miss(key, policy);
                First::rest(budget, Step::Miss(None))
            }
        }
    }

    fn count_miss(&self, key: &str, policy: &FillPolicy) {
        self.inner.store.count_in(policy.function, Counter::Misses);
        self.emit(EventKind::Miss, key, policy);
    }

    /// [`fill_with`](Self::fill_with) past [`fill_first`](Self::fill_first): the body, run
    /// uncached, or an early refresh, or single flight and the fill.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fill_rest<T, E, F, Fut>(
        &self,
        rest: Rest<T>,
        key: &str,
        ttl: Ttl,
        version: u32,
        policy: &FillPolicy,
        read_error: impl FnOnce(CacheError) -> Option<E>,
        init: F,
    ) -> Result<T, E>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Rest { mut budget, step } = rest;
        let stale = match step {
            Step::Off => return init().await,
            Step::Reserved => return self.uncached(key, policy, init).await,
            Step::Failed(e) => match read_error(e) {
                Some(out) => return Err(out),
                None => {
                    self.count_miss(key, policy);
                    None
                }
            },
            // The ttl is resolved only when a value is about to be stored: a hit needs none,
            // and a bad ttl is reported once per store, not once per read.
            Step::Refresh(v) => {
                let ttl = self.fill_ttl(key, ttl, policy);
                return Ok(Box::pin(self.refresh_early(
                    &mut budget,
                    key,
                    ttl,
                    version,
                    policy,
                    v,
                    init,
                ))
                .await);
            }
            Step::Miss(stale) => stale,
        };
        // Boxed: the protocol past a miss is a large future, and a hit should neither carry
        // nor move it.
        Box::pin(self.after_miss(budget, key, ttl, version, policy, stale, init)).await
    }

    /// [`fill_with`](Self::fill_with) past a read that found no fresh value: single flight,
    /// then the body.
    #[allow(clippy::too_many_arguments)]
    async fn after_miss<T, E, F, Fut>(
        &self,
        mut budget: Budget,
        key: &str,
        ttl: Ttl,
        version: u32,
        policy: &FillPolicy,
        stale: Option<T>,
        init: F,
    ) -> Result<T, E>
    where
        T: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let ttl = self.fill_ttl(key, ttl, policy);
        if single_flight::is_reentrant(self.id(), key) {
            // The outer call holds this key's fill lock; waiting for it would wait for itself.
            let inner_policy = FillPolicy {
                lock: false,
                ..policy.clone()
            };
            return self
                .produce(&mut budget, key, ttl, version, &inner_policy, stale, init)
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
                        && let Found::Fresh(v, _) =
                            self.read_quietly::<T>(&mut budget, key, version).await
                    {
                        leader.publish(Arc::new(v.clone()), false);
                        return Ok(v);
                    }
                    let produced = self
                        .produce(&mut budget, key, ttl, version, policy, stale, init)
                        .await?;
                    // A stale value served after a failed body goes to the waiters too, so
                    // they do not each run the failing body again.
                    leader.publish(Arc::new(produced.value.clone()), produced.stale);
                    return Ok(produced.value);
                }
                Join::Waiter(rx) => rx,
            };
            if !waited {
                waited = true;
                self.inner
                    .store
                    .count_in(policy.function, Counter::Coalesced);
            }
            let shared = match deadline {
                Some(at) => tokio::time::timeout_at(at, single_flight::wait(rx)).await,
                None => Ok(single_flight::wait(rx).await),
            };
            match shared {
                Ok(Some(shared)) => match shared.value.downcast_ref::<T>() {
                    Some(v) => {
                        if shared.stale {
                            self.inner
                                .store
                                .count_in(policy.function, Counter::StaleServed);
                            self.emit(EventKind::StaleServed, key, policy);
                        }
                        return Ok(v.clone());
                    }
                    // Another call site cached a different type under this key.
                    None => break,
                },
                Ok(None) => {
                    // The leader is gone without a value: take over unless it stored one.
                    if let Found::Fresh(v, _) =
                        self.read_quietly::<T>(&mut budget, key, version).await
                    {
                        return Ok(v);
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        cache = %self.name(),
                        key = short_key(key),
                        waited = ?self.inner.options.fill_wait,
                        "gave up waiting for another caller's fill; running the body here"
                    );
                    break;
                }
            }
        }
        self.produce(&mut budget, key, ttl, version, policy, stale, init)
            .await
            .map(|p| p.value)
    }

    /// The ttl a fill stores with; `None` (do not store, error logged and counted) for a zero
    /// ttl.
    fn fill_ttl(&self, key: &str, ttl: Ttl, policy: &FillPolicy) -> Option<Option<Duration>> {
        match ttl.resolve(self.inner.options.default_ttl) {
            Ok(ttl) => Some(ttl),
            Err(e) => {
                self.inner.store.count_in(policy.function, Counter::Errors);
                tracing::error!(cache = %self.name(), key = short_key(key), error = %e, "value will not be stored");
                None
            }
        }
    }

    /// A fill of a reserved key (see
    /// [`CacheError::ReservedKey`](crate::CacheError::ReservedKey)): the body's value, not
    /// stored, the refusal logged and counted like any store that fails.
    #[cold]
    async fn uncached<T, E, F, Fut>(&self, key: &str, policy: &FillPolicy, init: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.inner.store.count_in(policy.function, Counter::Errors);
        tracing::error!(
            cache = %self.name(),
            key = short_key(key),
            "the key starts with a NUL byte, which only the cache's own keys do; value will not be stored"
        );
        init().await
    }

    /// XFetch: whether this hit should recompute the value now.
    fn refresh_due(&self, timing: Option<Timing>, beta: f64) -> bool {
        let Some(t) = timing else { return false };
        let (now, delta_ms) = (coarse_wall_ms(), f64::from(t.compute_us) / 1000.0);
        // A hit far from expiry, which is most of them, draws no random number.
        if !early::may_refresh(now, t.expires_ms, delta_ms, beta) {
            return false;
        }
        let u: f64 = rand::random();
        early::should_refresh(now, t.expires_ms, delta_ms, beta, u)
    }

    /// One caller recomputes a hot value shortly before it expires; callers meanwhile keep
    /// getting `current`. The refresh runs in this caller, not in a spawned task, because the
    /// body of a cached function may borrow its arguments; only this caller pays for it.
    #[allow(clippy::too_many_arguments)]
    async fn refresh_early<T, E, F, Fut>(
        &self,
        budget: &mut Budget,
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
        self.inner
            .store
            .count_in(policy.function, Counter::EarlyRefreshes);
        tracing::debug!(cache = %self.name(), key = short_key(key), "early refresh");
        let (ttl, stamp) = self.stamp_fill(budget, key, ttl, policy).await;
        let started = Instant::now();
        // `.ok()` at once: an error held across the store below would make the caller's
        // future `!Send` whenever the error type is (`Box<dyn Error>`).
        let result = single_flight::scoped(self.id(), key, init()).await.ok();
        self.inner.store.count_in(policy.function, Counter::Fills);
        // The current value is still valid: keep serving it.
        let Some(v) = result else { return current };
        leader.publish(Arc::new(v.clone()), false);
        self.store_filled(
            budget,
            None,
            key,
            &v,
            ttl,
            version,
            started.elapsed(),
            policy,
            stamp,
        )
        .await;
        v
    }

    /// Runs `init` and stores its `Ok` value: behind the backend's fill lock when the policy
    /// asks for it, serving `stale` if `init` fails inside the stale-if-error window.
    #[allow(clippy::too_many_arguments)]
    async fn produce<T, E, F, Fut>(
        &self,
        budget: &mut Budget,
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
        // A spent budget skips the lock: the body runs now either way.
        if self.locks(policy) && !budget.spent() {
            match self.acquire_lock(budget, key, version, policy).await {
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
        let (ttl, stamp) = self.stamp_fill(budget, key, ttl, policy).await;
        let started = Instant::now();
        // No error is held across an await below (the body's result is matched where it is
        // made, so no local keeps it): that would make every caller's future `!Send` whenever
        // the error type is (`Box<dyn Error>`).
        let (value, stale) = {
            let outcome = single_flight::scoped(self.id(), key, init()).await;
            self.inner.store.count_in(policy.function, Counter::Fills);
            match outcome {
                Ok(v) => (v, false),
                Err(e) => match stale {
                    Some(v) if policy.stale_if_error.is_some() => (v, true),
                    _ => {
                        // The guard's drop releases the lock in the background.
                        drop(lock);
                        return Err(e);
                    }
                },
            }
        };
        let compute = started.elapsed();
        if stale {
            self.inner
                .store
                .count_in(policy.function, Counter::StaleServed);
            self.emit(EventKind::StaleServed, key, policy);
            tracing::warn!(
                cache = %self.name(),
                key = short_key(key),
                "the body failed; serving the expired value (stale_if_error)"
            );
            if let Some(guard) = lock {
                budget.write(self, guard.release()).await;
            }
        } else {
            self.store_filled(
                budget, lock, key, &value, ttl, version, compute, policy, stamp,
            )
            .await;
        }
        Ok(Produced { value, stale })
    }

    /// `ttl` spread by the cache's `ttl_jitter`, so values written together do not expire
    /// together.
    pub(crate) fn jittered(&self, ttl: Option<Duration>) -> Option<Duration> {
        let jitter = self.inner.options.ttl_jitter;
        ttl.map(|t| early::jittered(t, jitter, rand::random()))
    }

    /// Whether a fill under `policy` takes the backend's fill lock.
    fn locks(&self, policy: &FillPolicy) -> bool {
        policy.lock && self.inner.store.is_shared()
    }

    /// Takes the backend's fill lock, or waits for the holder's value. Gives up after
    /// `lock_wait` (or when the backend cannot lock, or the call's budget is spent) and lets
    /// the caller run the body.
    async fn acquire_lock<T: CacheValue>(
        &self,
        budget: &mut Budget,
        key: &str,
        version: u32,
        policy: &FillPolicy,
    ) -> Acquired<T> {
        // `None`: a wait too long to represent, that is no deadline.
        let deadline = Instant::now().checked_add(self.inner.options.lock_wait);
        let mut backoff = Duration::from_millis(2);
        let mut waited = false;
        loop {
            let store = &self.inner.store;
            let attempt = store.try_lock::<T>(key, version, self.inner.options.lock_ttl);
            let (token, value) = match budget.io(store, "lock", key, attempt).await {
                Some(Ok(attempt)) => attempt,
                Some(Err(e)) => {
                    tracing::debug!(cache = %self.name(), error = %e, "no fill lock; running the body");
                    return Acquired::Nothing;
                }
                None => return Acquired::Nothing,
            };
            let guard = token.map(|token| LockGuard {
                cache: self.clone(),
                key: key.to_owned(),
                token,
                released: false,
            });
            // The value read with the attempt: the holder before us (another process, or a
            // leader of this one) stored it meanwhile.
            if let Some(v) = value {
                if let Some(guard) = guard {
                    budget.write(self, guard.release()).await;
                }
                return Acquired::Value(v);
            }
            if let Some(guard) = guard {
                return Acquired::Lock(guard);
            }
            if !waited {
                waited = true;
                self.inner
                    .store
                    .count_in(policy.function, Counter::Coalesced);
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                tracing::warn!(
                    cache = %self.name(),
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

    /// The tag versions a fill's value records, read before its body runs: an invalidation
    /// of a tag while the body runs then makes the value a miss, whatever data the body saw.
    /// When the versions cannot be read the value is not stored (`ttl` becomes `None`): an
    /// untagged copy would escape the tags' invalidations.
    /// The read is one of the call's round trips: a read the budget cuts short stores nothing.
    async fn stamp_fill(
        &self,
        budget: &mut Budget,
        key: &str,
        ttl: Option<Option<Duration>>,
        policy: &FillPolicy,
    ) -> (Option<Option<Duration>>, Option<Stamp>) {
        let Some(tags) = &policy.tags else {
            return (ttl, None);
        };
        if ttl.is_none() {
            return (None, None);
        }
        let store = &self.inner.store;
        match budget.io(store, "tags", key, store.stamp(tags)).await {
            Some(Ok(stamp)) => (ttl, stamp),
            None => (None, None),
            Some(Err(e)) => {
                self.inner.store.count_in(policy.function, Counter::Errors);
                tracing::warn!(cache = %self.name(), key = short_key(key), error = %e, "tag versions not read; the value will not be stored");
                (None, None)
            }
        }
    }

    /// A second read of the call, whose backend errors are a miss (already logged and
    /// counted), as is a read the call's budget cut short. A value of another type was
    /// reported by the call's first read.
    async fn read_quietly<T: CacheValue>(
        &self,
        budget: &mut Budget,
        key: &str,
        version: u32,
    ) -> Found<T> {
        let store = &self.inner.store;
        match budget
            .io(store, "get", key, store.find_again::<T>(key, version))
            .await
        {
            Some(Ok(found)) => found,
            Some(Err(_)) | None => Found::Miss,
        }
    }

    /// Stores a filled value, releasing the fill lock in the same backend call when one is
    /// held. Its errors are logged and counted, never returned. `ttl: None` (a zero ttl, or
    /// tag versions that could not be read) stores nothing and only releases the lock.
    #[allow(clippy::too_many_arguments)]
    async fn store_filled<T: CacheValue>(
        &self,
        budget: &mut Budget,
        lock: Option<LockGuard>,
        key: &str,
        value: &T,
        ttl: Option<Option<Duration>>,
        version: u32,
        compute: Duration,
        policy: &FillPolicy,
        stamp: Option<Stamp>,
    ) {
        let Some(ttl) = ttl else {
            if let Some(guard) = lock {
                budget.write(self, guard.release()).await;
            }
            return;
        };
        let ttl = self.jittered(ttl);
        let (cache, key, value, keep) = (
            self.clone(),
            key.to_owned(),
            value.clone(),
            policy.stale_if_error,
        );
        let function = policy.function.map(|f| f.0);
        let write = async move {
            let stored = match lock {
                Some(guard) => {
                    guard
                        .store_and_release(&key, &value, ttl, version, compute, keep, stamp)
                        .await
                }
                // Errors were logged and counted where they happened.
                None => cache
                    .inner
                    .store
                    .put_tagged(&key, &value, ttl, version, compute, keep, stamp)
                    .await
                    .is_ok(),
            };
            if stored {
                cache
                    .inner
                    .store
                    .events
                    .emit(EventKind::Set, &key, function);
            }
        };
        budget.write(self, write).await;
    }

    /// An event of a fill, with the scope of its function.
    #[inline]
    fn emit(&self, kind: EventKind, key: &str, policy: &FillPolicy) {
        let function = policy.function.map(|f| f.0);
        self.inner.store.events.emit(kind, key, function);
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
    /// counted as a failed store, and the release is tried again on its own (by `Drop`). A
    /// value that cannot be encoded only releases the lock. `true` if the value was stored.
    #[allow(clippy::too_many_arguments)]
    async fn store_and_release<T: CacheValue>(
        mut self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
        stamp: Option<Stamp>,
    ) -> bool {
        let cache = self.cache.clone();
        match cache
            .inner
            .store
            .put_and_unlock(key, value, ttl, version, compute, keep, &self.token, stamp)
            .await
        {
            Ok(true) => {
                self.released = true;
                true
            }
            Ok(false) => {
                self.release().await;
                false
            }
            Err(_) => false,
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (cache, key, token) = (
            self.cache.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        // Bounded like every write that outlives its call; a dropped release expires with
        // the lock's ttl.
        self.cache
            .in_background(async move { cache.unlock_quietly(&key, &token).await });
    }
}

impl Cache {
    async fn unlock_quietly(&self, key: &str, token: &str) {
        if let Err(e) = self.inner.store.unlock(key, token).await {
            tracing::debug!(cache = %self.name(), key = short_key(key), error = %e, "fill lock not released; it expires by itself");
        }
    }
}
