//! The store layer: the one path every read and write of a [`Cache`](crate::Cache) takes.
//!
//! A store is either the typed memory backend, or a remote backend (bytes, through the value
//! envelope) with an optional typed near tier in front of it ([`near`]). Every call to a
//! remote backend goes through [`Store::guarded`]: the circuit breaker, the latency histogram,
//! one place. Freshness is decided by [`fresh_at`] for every kind of store.

pub(crate) mod near;
mod tagged;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::CacheBackend;
use crate::backend::memory::{MemEntry, MemoryBackend, NEVER};
use crate::backend::redis::RedisBackend;
use crate::cache::CacheValue;
use crate::clock::{coarse_wall_ms, duration_ms, wall_ms};
use crate::codec::{Envelope, Format, fingerprint_of};
use crate::error::{BackendError, CacheError};
use crate::events::{Emitter, EventKind};
use crate::front::FrontKey;
use crate::key::writable;
use crate::observe::{CacheStats, Counter, Counters, FnStats, Latency, MetricHandles, short_key};
use crate::protect::breaker::{Breaker, Permit};
use crate::tags::Stamp;

use near::{Near, Ticket};

/// What a read found, before statistics.
pub(crate) enum Found<T> {
    /// A value before its expiry; for remote values, what XFetch needs.
    Fresh(T, Option<Timing>),
    /// A value past its expiry but inside its stale-if-error window.
    Stale(T),
    Miss,
}

/// When a remote value expires and how long it took to compute.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) expires_ms: u64,
    pub(crate) compute_us: u32,
}

/// Whether a value that expires at `expires_ms` (`0` or [`NEVER`]: never) is fresh at `now_ms`:
/// the one freshness rule of reads and `exists`, in memory, in the near tier and on a server.
#[inline]
pub(crate) fn fresh_at(expires_ms: u64, now_ms: u64) -> bool {
    expires_ms == 0 || expires_ms == NEVER || expires_ms > now_ms
}

/// What a store reads and writes.
pub(crate) enum Tier {
    Memory(MemoryBackend),
    Remote {
        /// Called as `(**backend).op(..)`, or `backend.read(..)` for a read.
        backend: Remote,
        near: Option<Near>,
    },
}

/// A remote backend. Redis keeps its own type, so that a read (the one call of every hit on
/// the server) is not boxed like the futures of `dyn CacheBackend` methods.
pub(crate) enum Remote {
    Redis(RedisBackend),
    Other(Box<dyn CacheBackend>),
}

impl Remote {
    /// [`CacheBackend::get`].
    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        match self {
            Remote::Redis(r) => r.read(key).await,
            Remote::Other(b) => b.get(key).await,
        }
    }
}

impl std::ops::Deref for Remote {
    type Target = dyn CacheBackend;

    fn deref(&self) -> &(dyn CacheBackend + 'static) {
        match self {
            Remote::Redis(r) => r,
            Remote::Other(b) => &**b,
        }
    }
}

/// A backend with its breaker, counters and codec format.
pub(crate) struct Store {
    name: String,
    tier: Tier,
    format: Format,
    /// Which payloads are compressed.
    compression: crate::codec::Compression,
    breaker: Breaker,
    counters: Counters,
    /// Metric handles for calls made outside any `#[cacheable]` function.
    metrics: MetricHandles,
    /// The backend latency histogram's handles.
    latency: Latency,
    /// Serializes the creation and replacement of tag versions in the memory backend.
    tag_lock: parking_lot::Mutex<()>,
    /// The backend's operation timeout, asked once: every cached call's budget starts from it.
    op_timeout: Option<Duration>,
    /// The cache's events.
    pub(crate) events: Arc<Emitter>,
}

impl Store {
    pub(crate) fn new(
        name: String,
        tier: Tier,
        format: Format,
        compression: crate::codec::Compression,
        breaker: Breaker,
    ) -> Store {
        let events = Emitter::new(&name);
        match &tier {
            Tier::Memory(m) => m.connect_events(&events),
            Tier::Remote { near: Some(n), .. } => n.connect_events(&events),
            Tier::Remote { near: None, .. } => {}
        }
        let op_timeout = match &tier {
            Tier::Memory(_) => None,
            Tier::Remote { backend, .. } => backend.op_timeout(),
        };
        Store {
            op_timeout,
            events,
            metrics: MetricHandles::new(&name, ""),
            latency: Latency::new(&name),
            name,
            tier,
            format,
            compression,
            breaker,
            counters: Counters::default(),
            tag_lock: parking_lot::Mutex::new(()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn kind(&self) -> &'static str {
        match &self.tier {
            Tier::Memory(_) => "memory",
            Tier::Remote { backend, .. } => backend.kind(),
        }
    }

    /// How long one backend operation may take, if the backend bounds it.
    pub(crate) fn op_timeout(&self) -> Option<Duration> {
        self.op_timeout
    }

    /// A remote call cut short by its call's cache budget. With `counts`, the call had as long
    /// as the backend's own timeout, so its silence is a timeout for the breaker too.
    pub(crate) fn cut(&self, op: &'static str, key: &str, after: Duration, counts: bool) {
        if counts {
            let timeout = BackendError::Timeout(after);
            if let Some(change) = self.breaker.record(&self.name, Permit::Call, Err(&timeout)) {
                self.events.emit_cache(change);
            }
            self.count(Counter::Errors);
            tracing::warn!(cache = %self.name, key = short_key(key), op, after = ?after, "cache backend timeout: the call's cache budget is spent; running without the cache");
        } else {
            tracing::debug!(cache = %self.name, key = short_key(key), op, after = ?after, "the call's cache budget is spent; running without the cache");
        }
    }

    /// Whether the backend is shared between processes (and so has a fill lock worth taking).
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self.tier, Tier::Remote { .. })
    }

    pub(crate) fn near(&self) -> Option<&Near> {
        match &self.tier {
            Tier::Remote { near, .. } => near.as_ref(),
            Tier::Memory(_) => None,
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let evictions = match &self.tier {
            Tier::Memory(m) => m.evictions(),
            Tier::Remote { .. } => 0,
        };
        let mut stats = self.counters.snapshot(evictions);
        stats.breaker_opens = self.breaker.opened();
        stats.breaker_short_circuits = self.breaker.short_circuits();
        stats.breaker_open = self.breaker.is_open();
        if let Some(near) = self.near() {
            near.fill_stats(&mut stats);
        }
        stats
    }

    /// A read the near tier answered.
    pub(crate) fn count_near_hit(&self) {
        self.counters.incr(Counter::NearHits);
    }

    pub(crate) fn count(&self, c: Counter) {
        self.counters.incr(c);
        self.metrics.incr(c);
    }

    pub(crate) fn count_n(&self, c: Counter, n: u64) {
        self.counters.add(c, n);
        self.metrics.add(c, n);
    }

    /// Counts an event in the cache, and in the `#[cacheable]` function it is for, if any.
    #[inline]
    pub(crate) fn count_in(&self, function: Option<(&'static str, &'static FnStats)>, c: Counter) {
        match function {
            Some((scope, stats)) => stats.incr(scope, &self.name, &self.counters, c),
            None => {
                self.counters.incr(c);
                self.metrics.incr(c);
            }
        }
    }

    fn backend_error(&self, op: &str, key: &str, e: BackendError) -> CacheError {
        if let BackendError::CircuitOpen { .. } = e {
            // Counted by the breaker as a short circuit; the backend itself did not fail now.
            tracing::debug!(cache = %self.name, key = short_key(key), op, "skipped: the circuit breaker is open");
        } else {
            self.count(Counter::Errors);
            tracing::warn!(cache = %self.name, key = short_key(key), op, error = %e, "cache backend error");
        }
        CacheError::backend(&self.name, e)
    }

    /// Runs one remote call through the circuit breaker and the latency histogram: while the
    /// breaker is open the call is not made and `CircuitOpen` comes back at once. Every remote
    /// call of a cache goes through here, except [`ping`](Self::ping).
    ///
    /// Not an `async fn`: one would hold the call twice in its state (the argument, and the
    /// copy it awaits), and a server read is a future of half a kilobyte or more, which every
    /// read carries. Here the call is moved once, into the future returned; the breaker is
    /// asked when the call is made, which is when it is awaited.
    pub(crate) fn guarded<'a, R: 'a>(
        &'a self,
        op: &'static str,
        call: impl Future<Output = Result<R, BackendError>> + 'a,
    ) -> impl Future<Output = Result<R, BackendError>> + 'a {
        use futures::future::{Either, FutureExt, ready};
        let permit = self.breaker.permit();
        if let Permit::Open(retry_in) = permit {
            return Either::Left(ready(Err(BackendError::CircuitOpen { retry_in })));
        }
        let started = Instant::now();
        Either::Right(call.map(move |result| {
            self.latency.record(&self.name, op, started.elapsed());
            if let Some(change) = self
                .breaker
                .record(&self.name, permit, result.as_ref().map(drop))
            {
                self.events.emit_cache(change);
            }
            result
        }))
    }

    /// [`guarded`](Self::guarded), its failure (a skip by an open breaker included) logged,
    /// counted and returned as a [`CacheError`].
    fn remote<'a, R: 'a>(
        &'a self,
        op: &'static str,
        key: &'a str,
        call: impl Future<Output = Result<R, BackendError>> + 'a,
    ) -> impl Future<Output = Result<R, CacheError>> + 'a {
        use futures::future::FutureExt;
        self.guarded(op, call)
            .map(move |r| r.map_err(|e| self.backend_error(op, key, e)))
    }

    /// The synchronous hit path: the memory backend, or the near tier of a remote one. `None`
    /// for anything else, including every value the near tier does not hold.
    #[inline]
    pub(crate) fn memory_hit<T: CacheValue, K: FrontKey>(&self, key: &mut K) -> Option<T> {
        match &self.tier {
            // A value of another type is a miss here, reported by the fill that follows.
            Tier::Memory(m) => m.read_fresh_by(key, |value| value.downcast_ref::<T>().cloned())?,
            Tier::Remote { near: Some(n), .. } => {
                let (v, _) = n.get::<T>(key.text())?;
                self.counters.incr(Counter::NearHits);
                Some(v)
            }
            Tier::Remote { near: None, .. } => None,
        }
    }

    #[inline]
    fn memory_find<T: CacheValue>(&self, m: &MemoryBackend, key: &str) -> Option<T> {
        self.memory_read(m, key, true)
    }

    /// A fresh memory value of type `T`; one of another type is a miss, reported if `report`.
    #[inline]
    fn memory_read<T: CacheValue>(&self, m: &MemoryBackend, key: &str, report: bool) -> Option<T> {
        match m.read_fresh(key, |value| value.downcast_ref::<T>().cloned())? {
            Some(v) => Some(v),
            None if report => self.wrong_type::<T>(key),
            None => None,
        }
    }

    #[cold]
    fn wrong_type<T>(&self, key: &str) -> Option<T> {
        self.count(Counter::DecodeFailures);
        self.events.emit(EventKind::DecodeFailure, key, None);
        tracing::warn!(
            cache = %self.name,
            key = short_key(key),
            expected = std::any::type_name::<T>(),
            "cached value has another type; treating as a miss"
        );
        None
    }

    /// An expired memory entry still inside its stale-if-error window.
    fn memory_stale<T: CacheValue>(m: &MemoryBackend, key: &str) -> Found<T> {
        match m.entry(key) {
            Some(entry)
                if entry.keep_until != entry.expires_at && Self::memory_tags_current(m, &entry) =>
            {
                match entry.value.downcast_ref::<T>() {
                    Some(v) => Found::Stale(v.clone()),
                    None => Found::Miss,
                }
            }
            _ => Found::Miss,
        }
    }

    /// [`find`](Self::find) on the memory backend, which needs no await; `None` on a remote
    /// one.
    #[inline]
    pub(crate) fn find_in_memory<T: CacheValue>(&self, key: &str) -> Option<Found<T>> {
        match &self.tier {
            Tier::Memory(m) => Some(self.memory_found(m, key, true)),
            Tier::Remote { .. } => None,
        }
    }

    /// A fresh memory value, else one inside its stale-if-error window.
    #[inline]
    fn memory_found<T: CacheValue>(&self, m: &MemoryBackend, key: &str, report: bool) -> Found<T> {
        match self.memory_read::<T>(m, key, report) {
            Some(v) => Found::Fresh(v, None),
            None => Self::memory_stale::<T>(m, key),
        }
    }

    /// Reads `key`: memory; or the near tier, then the server (a fresh value read from the
    /// server goes into the near tier unless an invalidation of the key arrived meanwhile).
    pub(crate) async fn find<T: CacheValue>(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Found<T>, CacheError> {
        self.find_or_hold(key, version, true, true).await
    }

    /// [`find`](Self::find), but a server that cannot be read is an error even when the near
    /// tier holds the value: for a re-read that must know whether the server answered.
    pub(crate) async fn find_on_server<T: CacheValue>(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Found<T>, CacheError> {
        self.find_or_hold(key, version, false, true).await
    }

    /// [`find`](Self::find) again within one call: a value of another type under the key was
    /// reported by the call's first read, and is not reported twice.
    pub(crate) async fn find_again<T: CacheValue>(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Found<T>, CacheError> {
        self.find_or_hold(key, version, true, false).await
    }

    /// `hold`: a value the near tier holds beats a server that cannot be read; `report`: a
    /// value that does not decode as `T` is logged and counted.
    async fn find_or_hold<T: CacheValue>(
        &self,
        key: &str,
        version: u32,
        hold: bool,
        report: bool,
    ) -> Result<Found<T>, CacheError> {
        match &self.tier {
            Tier::Memory(m) => Ok(self.memory_found(m, key, report)),
            Tier::Remote { backend, near } => {
                let ticket = match near {
                    Some(n) => {
                        if let Some((v, timing)) = n.get::<T>(key) {
                            self.counters.incr(Counter::NearHits);
                            return Ok(Found::Fresh(v, Some(timing)));
                        }
                        n.ticket(key)
                    }
                    None => None,
                };
                let read = match self.guarded("get", backend.read(key)).await {
                    Ok(read) => read,
                    Err(e) => {
                        let e = self.backend_error("get", key, e);
                        // The server cannot be read (stopped, unreachable, the breaker open):
                        // a value the near tier still holds beats a body run or an error.
                        if let Some((v, timing)) = near
                            .as_ref()
                            .filter(|_| hold)
                            .and_then(|n| n.get_held::<T>(key))
                        {
                            self.counters.incr(Counter::NearHits);
                            return Ok(Found::Fresh(v, Some(timing)));
                        }
                        return Err(e);
                    }
                };
                let (found, stamp) = match read {
                    Some(bytes) => {
                        let found = self.decode_reported::<T>(key, &bytes, version, report);
                        if crate::codec::is_tagged(&bytes) {
                            // Boxed: only a tagged value reads its tags' versions, and inline
                            // that read would be part of the future of every read.
                            Box::pin(self.check_tags(key, &bytes, found)).await?
                        } else {
                            (found, None)
                        }
                    }
                    None => (Found::Miss, None),
                };
                if let (Some(n), Some(ticket), Found::Fresh(v, Some(timing))) =
                    (near, ticket, &found)
                {
                    n.insert(key, ticket, v.clone(), *timing, stamp);
                }
                Ok(found)
            }
        }
    }

    pub(crate) fn decode<T: CacheValue>(&self, key: &str, bytes: &[u8], version: u32) -> Found<T> {
        self.decode_reported(key, bytes, version, true)
    }

    /// [`decode`](Self::decode); bytes that do not decode are logged and counted if `report`.
    fn decode_reported<T: CacheValue>(
        &self,
        key: &str,
        bytes: &[u8],
        version: u32,
        report: bool,
    ) -> Found<T> {
        match Envelope::decode::<T>(bytes, fingerprint_of::<T>(version)) {
            Ok((value, env)) => {
                let now = coarse_wall_ms();
                if fresh_at(env.expires_at_ms, now) {
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
            Err(_) if !report => Found::Miss,
            Err(reason) => {
                self.count(Counter::DecodeFailures);
                self.events.emit(EventKind::DecodeFailure, key, None);
                tracing::warn!(
                    cache = %self.name,
                    key = short_key(key),
                    %reason,
                    "stored bytes are not a value of the expected type; treating as a miss"
                );
                Found::Miss
            }
        }
    }

    /// Whether `key` holds a value before its expiry, of any type.
    pub(crate) async fn exists(&self, key: &str) -> Result<bool, CacheError> {
        match &self.tier {
            Tier::Memory(m) => Ok(m.entry(key).is_some_and(|e| {
                fresh_at(e.expires_at, m.clock().now_ms()) && Self::memory_tags_current(m, &e)
            })),
            Tier::Remote { backend, near } => {
                if near.as_ref().is_some_and(|n| n.contains(key)) {
                    return Ok(true);
                }
                // The server keeps a value through its stale window too; only the envelope
                // knows the expiry a read goes by.
                let Some(bytes) = self.remote("exists", key, backend.read(key)).await? else {
                    return Ok(false);
                };
                let fresh = Envelope::parse(&bytes)
                    .is_ok_and(|env| fresh_at(env.expires_at_ms, coarse_wall_ms()));
                let found = if fresh {
                    Found::Fresh((), None)
                } else {
                    Found::Miss
                };
                let (found, _) = self.check_tags(key, &bytes, found).await?;
                Ok(matches!(found, Found::Fresh(..)))
            }
        }
    }

    /// The fresh values of several keys, in order.
    pub(crate) async fn get_many<T: CacheValue>(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<T>>, CacheError> {
        match &self.tier {
            Tier::Memory(m) => Ok(keys.iter().map(|k| self.memory_find::<T>(m, k)).collect()),
            Tier::Remote { backend, near } => {
                let mut out: Vec<Option<T>> = Vec::with_capacity(keys.len());
                let mut missing: Vec<&str> = Vec::new();
                let mut tickets: Vec<Option<Ticket>> = Vec::new();
                for k in keys {
                    match near.as_ref().and_then(|n| n.get::<T>(k)) {
                        Some((v, _)) => {
                            self.counters.incr(Counter::NearHits);
                            out.push(Some(v));
                        }
                        None => {
                            out.push(None);
                            missing.push(k);
                            tickets.push(near.as_ref().and_then(|n| n.ticket(k)));
                        }
                    }
                }
                if missing.is_empty() {
                    return Ok(out);
                }
                let first = missing.first().copied().unwrap_or("");
                let raw = self
                    .remote("get_many", first, (**backend).get_many(&missing))
                    .await?;
                let mut filled = Vec::with_capacity(missing.len());
                for ((k, ticket), bytes) in missing.iter().zip(tickets).zip(raw) {
                    let (found, stamp) = match bytes {
                        Some(b) => {
                            let found = self.decode::<T>(k, &b, 0);
                            self.check_tags(k, &b, found).await?
                        }
                        None => (Found::Miss, None),
                    };
                    filled.push(match found {
                        Found::Fresh(v, Some(timing)) => {
                            if let (Some(n), Some(ticket)) = (near, ticket) {
                                n.insert(k, ticket, v.clone(), timing, stamp);
                            }
                            Some(v)
                        }
                        Found::Fresh(v, None) => Some(v),
                        _ => None,
                    });
                }
                let mut filled = filled.into_iter();
                for slot in out.iter_mut() {
                    if slot.is_none() {
                        *slot = filled.next().flatten();
                    }
                }
                Ok(out)
            }
        }
    }

    /// Stores `value`; with `keep`, the value stays readable as stale that long past `ttl`.
    /// A remote write goes to the server, then tells other processes, then into the near tier.
    pub(crate) async fn put<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
    ) -> Result<(), CacheError> {
        self.put_tagged(key, value, ttl, version, compute, keep, None)
            .await
    }

    /// [`put`](Self::put), the value recording the tag versions of `stamp`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put_tagged<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
        stamp: Option<Stamp>,
    ) -> Result<(), CacheError> {
        writable(key)?;
        match &self.tier {
            Tier::Memory(m) => {
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
                        tags: stamp,
                    },
                );
            }
            Tier::Remote { backend, near } => {
                let (bytes, backend_ttl, timing) = self.encode_remote_tagged(
                    key,
                    value,
                    ttl,
                    version,
                    compute,
                    keep,
                    stamp.as_ref(),
                )?;
                let ticket = near.as_ref().and_then(|n| n.ticket(key));
                let stored = self
                    .remote("set", key, (**backend).set(key, &bytes, backend_ttl))
                    .await;
                self.after_write(key, stored.is_ok().then_some(value), ticket, timing, stamp)
                    .await;
                stored?;
            }
        }
        self.count(Counter::Sets);
        Ok(())
    }

    /// After a write of `key` on the server: other processes drop their copy, and this
    /// process's near tier holds the written value (`Some`), or drops its copy too when the
    /// write failed (`None`: it may still have landed).
    async fn after_write<T: CacheValue>(
        &self,
        key: &str,
        written: Option<&T>,
        ticket: Option<Ticket>,
        timing: Timing,
        stamp: Option<Stamp>,
    ) {
        if let Some(n) = self.near() {
            match written {
                Some(v) => n.written_tagged(key, ticket, v.clone(), timing, stamp),
                None => n.apply(&near::Change::Key(key)),
            }
            self.announce(n, near::Change::Key(key)).await;
        }
    }

    /// Tells other processes of a change, so that their near tiers drop what it touches.
    async fn announce(&self, near: &Near, change: near::Change<'_>) {
        if let Err(e) = self.guarded("publish", near.publish(change)).await {
            self.count(Counter::Errors);
            tracing::warn!(cache = %self.name, error = %e, "invalidation not sent; other processes may serve the old value until their near-cache ttl");
        }
    }

    /// Stores several values with one ttl.
    pub(crate) async fn put_many<K: AsRef<str>, T: CacheValue>(
        &self,
        items: &[(K, T)],
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        for (k, _) in items {
            writable(k.as_ref())?;
        }
        let Tier::Remote { backend, near } = &self.tier else {
            for (k, v) in items {
                self.put(k.as_ref(), v, ttl, 0, Duration::ZERO, None)
                    .await?;
            }
            return Ok(());
        };
        let encoded = items
            .iter()
            .map(|(k, v)| {
                let k = k.as_ref();
                let (bytes, _, timing) = self.encode_remote(k, v, ttl, 0, Duration::ZERO, None)?;
                Ok((k, bytes, timing, near.as_ref().and_then(|n| n.ticket(k))))
            })
            .collect::<Result<Vec<_>, CacheError>>()?;
        let refs: Vec<(&str, &[u8])> = encoded
            .iter()
            .map(|(k, v, ..)| (*k, v.as_slice()))
            .collect();
        let first = refs.first().map_or("", |(k, _)| k);
        let stored = self
            .remote("set_many", first, (**backend).set_many(&refs, ttl))
            .await;
        if let Some(n) = near {
            let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_ref()).collect();
            if stored.is_ok() {
                for ((k, _, timing, ticket), (_, v)) in encoded.iter().zip(items) {
                    n.written(k, *ticket, v.clone(), *timing);
                }
            } else {
                n.apply(&near::Change::Keys(keys.clone()));
            }
            self.announce(n, near::Change::Keys(keys)).await;
        }
        stored?;
        self.count_n(Counter::Sets, items.len() as u64);
        Ok(())
    }

    /// The bytes a remote backend stores for `value`, the ttl it stores them with, and the
    /// value's timing for the near tier.
    pub(crate) fn encode_remote<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
    ) -> Result<(Vec<u8>, Option<Duration>, Timing), CacheError> {
        self.encode_remote_tagged(key, value, ttl, version, compute, keep, None)
    }

    /// [`encode_remote`](Self::encode_remote), the envelope recording the tag versions of
    /// `stamp`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_remote_tagged<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
        stamp: Option<&Stamp>,
    ) -> Result<(Vec<u8>, Option<Duration>, Timing), CacheError> {
        let recorded: Vec<(&str, u64)> = stamp.map_or_else(Vec::new, |s| {
            s.iter()
                .map(|(k, v)| (crate::tags::tag_name(k), *v))
                .collect()
        });
        let payload = self.serialize(key, value)?;
        let now = wall_ms();
        let expires_at_ms = ttl.map_or(0, |d| now.saturating_add(duration_ms(d)));
        let keep_until_ms = match keep {
            Some(k) if expires_at_ms != 0 => expires_at_ms.saturating_add(duration_ms(k)),
            _ => expires_at_ms,
        };
        let compute_us = u32::try_from(compute.as_micros()).unwrap_or(u32::MAX);
        let bytes = Envelope {
            format: self.format,
            fingerprint: fingerprint_of::<T>(version),
            stored_at_ms: now,
            expires_at_ms,
            keep_until_ms,
            compute_us,
            payload: &payload,
        }
        .encode_tagged(self.compression, &recorded);
        // The server keeps the value through its stale window; saturating, because "never" is
        // the longest window. The backend clamps to what its server can store.
        let backend_ttl = ttl.map(|t| t.saturating_add(keep.unwrap_or_default()));
        let timing = Timing {
            expires_ms: expires_at_ms,
            compute_us,
        };
        Ok((bytes, backend_ttl, timing))
    }

    fn serialize<T: CacheValue>(&self, key: &str, value: &T) -> Result<Vec<u8>, CacheError> {
        self.format.to_vec(value).map_err(|reason| {
            self.count(Counter::Errors);
            CacheError::Serialize {
                cache: self.name.clone(),
                key: key.to_owned(),
                reason,
            }
        })
    }

    /// Removes `key`; `true` if a value was there.
    pub(crate) async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        writable(key)?;
        match &self.tier {
            Tier::Memory(m) => Ok(m.remove(key)),
            Tier::Remote { backend, near } => {
                let removed = self.remote("delete", key, (**backend).delete(key)).await;
                self.forget(near.as_ref(), near::Change::Key(key)).await;
                removed
            }
        }
    }

    /// After a removal on the server: this process's near tier and other processes' drop what
    /// it touched.
    async fn forget(&self, near: Option<&Near>, change: near::Change<'_>) {
        if let Some(n) = near {
            n.apply(&change);
            self.announce(n, change).await;
        }
    }

    /// Removes several keys; how many existed.
    pub(crate) async fn delete_many(&self, keys: &[&str]) -> Result<u64, CacheError> {
        for key in keys {
            writable(key)?;
        }
        match &self.tier {
            Tier::Memory(m) => Ok(keys.iter().map(|k| u64::from(m.remove(k))).sum()),
            Tier::Remote { backend, near } => {
                let first = keys.first().unwrap_or(&"");
                let n = self
                    .remote("delete_many", first, (**backend).delete_many(keys))
                    .await;
                self.forget(near.as_ref(), near::Change::Keys(keys.to_vec()))
                    .await;
                n
            }
        }
    }

    /// Removes every key matching a glob; how many.
    pub(crate) async fn delete_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        // A glob that starts with NUL can only match the cache's own keys.
        writable(pattern)?;
        match &self.tier {
            Tier::Memory(m) => Ok(m.remove_matching(pattern)),
            Tier::Remote { backend, near } => {
                let n = self
                    .remote(
                        "delete_pattern",
                        pattern,
                        (**backend).delete_pattern(pattern),
                    )
                    .await;
                self.forget(near.as_ref(), near::Change::Pattern(pattern))
                    .await;
                n
            }
        }
    }

    /// Removes every key of this cache; how many.
    pub(crate) async fn clear(&self) -> Result<u64, CacheError> {
        match &self.tier {
            Tier::Memory(m) => Ok(m.remove_all()),
            Tier::Remote { backend, near } => {
                let n = self.remote("clear", "", (**backend).clear()).await;
                self.forget(near.as_ref(), near::Change::Clear).await;
                n
            }
        }
    }

    pub(crate) async fn keys(
        &self,
        pattern: &str,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, CacheError> {
        match &self.tier {
            Tier::Memory(m) => Ok(m
                .keys_matching(pattern, limit)
                .into_iter()
                .map(String::into_bytes)
                .collect()),
            Tier::Remote { backend, .. } => {
                self.remote("keys", pattern, (**backend).keys(pattern, limit))
                    .await
            }
        }
    }

    pub(crate) async fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match &self.tier {
            Tier::Memory(_) => Ok(None),
            Tier::Remote { backend, .. } => self.remote("get", key, (**backend).get(key)).await,
        }
    }

    /// Asks the backend, past the breaker: a health check must see the server, not the
    /// breaker's memory of it. Timed like every other remote call.
    pub(crate) async fn ping(&self) -> Result<Duration, CacheError> {
        let started = Instant::now();
        let result = match &self.tier {
            Tier::Memory(m) => m.ping().await,
            Tier::Remote { backend, .. } => (**backend).ping().await,
        };
        self.latency.record(&self.name, "ping", started.elapsed());
        result.map_err(|e| self.backend_error("ping", "", e))
    }

    /// One attempt at the fill lock of `key`: the token if this attempt took it, and the value
    /// read with it if it is fresh.
    pub(crate) async fn try_lock<T: CacheValue>(
        &self,
        key: &str,
        version: u32,
        ttl: Duration,
    ) -> Result<(Option<String>, Option<T>), BackendError> {
        let Tier::Remote { backend, .. } = &self.tier else {
            return Ok((Some(String::new()), None));
        };
        let attempt = self.guarded("lock", (**backend).try_lock(key, ttl)).await?;
        let value = match attempt.value {
            Some(bytes) => {
                let found = self.decode::<T>(key, &bytes, version);
                // A failed read of the tag versions leaves the value unread: the body runs.
                match self.check_tags(key, &bytes, found).await {
                    Ok((Found::Fresh(v, _), _)) => Some(v),
                    _ => None,
                }
            }
            None => None,
        };
        Ok((attempt.token, value))
    }

    pub(crate) async fn unlock(&self, key: &str, token: &str) -> Result<(), BackendError> {
        match &self.tier {
            Tier::Remote { backend, .. } => {
                self.guarded("unlock", (**backend).unlock(key, token)).await
            }
            Tier::Memory(_) => Ok(()),
        }
    }

    /// Stores a filled value and releases its fill lock in one backend call. `Ok(false)`: the
    /// value could not be encoded, and the lock is still held.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put_and_unlock<T: CacheValue>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        version: u32,
        compute: Duration,
        keep: Option<Duration>,
        token: &str,
        stamp: Option<Stamp>,
    ) -> Result<bool, CacheError> {
        let Tier::Remote { backend, near } = &self.tier else {
            self.put_tagged(key, value, ttl, version, compute, keep, stamp)
                .await?;
            return Ok(true);
        };
        // Encoding errors were logged and counted where they happened.
        let Ok((bytes, backend_ttl, timing)) =
            self.encode_remote_tagged(key, value, ttl, version, compute, keep, stamp.as_ref())
        else {
            return Ok(false);
        };
        let ticket = near.as_ref().and_then(|n| n.ticket(key));
        let stored = self
            .remote(
                "set",
                key,
                (**backend).set_and_unlock(key, &bytes, backend_ttl, token),
            )
            .await;
        self.after_write(key, stored.is_ok().then_some(value), ticket, timing, stamp)
            .await;
        stored?;
        self.count(Counter::Sets);
        Ok(true)
    }
}
