//! What happens in a cache, as a stream: [`Cache::events`](crate::Cache::events).
//!
//! A broadcast channel rather than a listener trait: a listener called inline would run its
//! code on the hit path (a slow one would slow every read), while a channel lets the cache
//! hand an event over and move on. The channel is bounded: a receiver that falls behind loses
//! the oldest events and is told how many ([`EventError::Lagged`]), and the cache never waits
//! for it.
//!
//! With no receiver alive, an event costs one relaxed atomic load: the key is not copied and
//! nothing is allocated. The channel itself is made on the first subscription.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::broadcast;

/// How many events a receiver may fall behind before it loses the oldest.
pub const EVENTS_CAPACITY: usize = 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A read found a fresh value.
    Hit,
    /// A read found nothing usable (missing, expired, or another type).
    Miss,
    /// A value was stored.
    Set,
    /// A key was deleted (by `delete`, `delete_many` or a function's `_invalidate`), whether
    /// or not it held a value.
    Delete,
    /// Every key matching a glob was deleted; the event's `key` is the glob.
    DeletePattern,
    /// Every key of the cache was deleted; no key.
    Clear,
    /// The memory backend dropped a value to stay within its bound (or, on `tinylfu`, past
    /// its time to idle), or a near tier did to stay within its `max_entries`.
    Eviction,
    /// The circuit breaker opened: calls skip the backend. No key.
    BreakerOpen,
    /// The circuit breaker closed: the backend answers again. No key.
    BreakerClose,
    /// A stored value could not be read as the requested type, and was treated as a miss.
    DecodeFailure,
    /// A function's body failed and an expired value was served (stale-if-error).
    StaleServed,
}

impl EventKind {
    /// The kind in snake case (`hit`, `decode_failure`, ...), for log fields and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Hit => "hit",
            EventKind::Miss => "miss",
            EventKind::Set => "set",
            EventKind::Delete => "delete",
            EventKind::DeletePattern => "delete_pattern",
            EventKind::Clear => "clear",
            EventKind::Eviction => "eviction",
            EventKind::BreakerOpen => "breaker_open",
            EventKind::BreakerClose => "breaker_close",
            EventKind::DecodeFailure => "decode_failure",
            EventKind::StaleServed => "stale_served",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One thing that happened in a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheEvent {
    /// What happened.
    pub kind: EventKind,
    /// The cache's name.
    pub cache: Arc<str>,
    /// The key (without the backend's prefix), the glob of a
    /// [`DeletePattern`](EventKind::DeletePattern); `None` for events about the whole cache.
    pub key: Option<Arc<str>>,
    /// The scope of the `#[cacheable]` function the event comes from, such as
    /// `my_app::users::load_user`; `None` for calls made on the [`Cache`](crate::Cache)
    /// directly, and for decode failures, evictions and breaker changes.
    pub function: Option<&'static str>,
}

/// Why [`CacheEvents::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The receiver fell behind and lost this many of the oldest events; the next call
    /// returns the oldest one still held. Drain faster, or accept the gap.
    #[error(
        "missed {0} cache events: the receiver fell {cap} behind; drain it faster",
        cap = EVENTS_CAPACITY
    )]
    Lagged(u64),
    /// Every handle of the cache is dropped: no more events will come.
    #[error("the cache is dropped; no more events will come")]
    Closed,
}

/// A receiver of a cache's events, from [`Cache::events`](crate::Cache::events).
///
/// Events are sent after their effect: a receiver that sees `Set` for a key reads the new
/// value from the cache. Dropping the last receiver turns the events off again.
#[derive(Debug)]
pub struct CacheEvents {
    rx: broadcast::Receiver<CacheEvent>,
    emitter: Weak<Emitter>,
}

impl CacheEvents {
    /// The next event; waits for one.
    pub async fn recv(&mut self) -> Result<CacheEvent, EventError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => EventError::Lagged(n),
            broadcast::error::RecvError::Closed => EventError::Closed,
        })
    }

    /// The next event if one is waiting; `Ok(None)` if none is.
    pub fn try_recv(&mut self) -> Result<Option<CacheEvent>, EventError> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(EventError::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(EventError::Closed),
        }
    }
}

impl Drop for CacheEvents {
    fn drop(&mut self) {
        if let Some(emitter) = self.emitter.upgrade() {
            emitter.listeners.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The sending side, one per cache.
#[derive(Debug)]
pub(crate) struct Emitter {
    /// Receivers alive: the one thing the hot path reads.
    listeners: AtomicUsize,
    cache: Arc<str>,
    sender: OnceLock<broadcast::Sender<CacheEvent>>,
}

impl Emitter {
    pub(crate) fn new(cache: &str) -> Arc<Emitter> {
        Arc::new(Emitter {
            listeners: AtomicUsize::new(0),
            cache: Arc::from(cache),
            sender: OnceLock::new(),
        })
    }

    pub(crate) fn subscribe(self: &Arc<Self>) -> CacheEvents {
        let rx = self
            .sender
            .get_or_init(|| broadcast::channel(EVENTS_CAPACITY).0)
            .subscribe();
        // Counted after the subscription exists, so an event sent once the count is seen
        // reaches this receiver.
        self.listeners.fetch_add(1, Ordering::Relaxed);
        CacheEvents {
            rx,
            emitter: Arc::downgrade(self),
        }
    }

    pub(crate) fn receivers(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Whether anyone listens: for a caller with several events to send.
    #[inline]
    pub(crate) fn on(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) != 0
    }

    /// Sends an event about `key` if anyone listens; otherwise one relaxed load.
    #[inline]
    pub(crate) fn emit(&self, kind: EventKind, key: &str, function: Option<&'static str>) {
        if self.on() {
            self.send(kind, Some(Arc::from(key)), function);
        }
    }

    /// Sends an event about the whole cache if anyone listens.
    #[inline]
    pub(crate) fn emit_cache(&self, kind: EventKind) {
        if self.on() {
            self.send(kind, None, None);
        }
    }

    #[cold]
    #[inline(never)]
    fn send(&self, kind: EventKind, key: Option<Arc<str>>, function: Option<&'static str>) {
        if let Some(sender) = self.sender.get() {
            // An error only says the last receiver went away meanwhile.
            let _ = sender.send(CacheEvent {
                kind,
                cache: Arc::clone(&self.cache),
                key,
                function,
            });
        }
    }
}

/// Where the memory backend or a near tier reports its evictions: empty until a cache takes
/// the store, then that cache's emitter. A backend shared by several caches reports to the
/// first.
#[derive(Debug)]
pub(crate) struct EvictionSink {
    /// The backend's key prefix, which events leave out.
    prefix: String,
    emitter: OnceLock<Arc<Emitter>>,
}

impl EvictionSink {
    pub(crate) fn new(prefix: &str) -> Arc<EvictionSink> {
        Arc::new(EvictionSink {
            prefix: prefix.to_owned(),
            emitter: OnceLock::new(),
        })
    }

    pub(crate) fn connect(&self, emitter: &Arc<Emitter>) {
        let _ = self.emitter.set(Arc::clone(emitter));
    }

    /// An eviction of the entry stored under `full_key` (prefix included).
    #[inline]
    pub(crate) fn evicted(&self, full_key: &str) {
        if let Some(emitter) = self.emitter.get()
            && emitter.on()
        {
            let key = full_key.strip_prefix(&self.prefix).unwrap_or(full_key);
            emitter.send(EventKind::Eviction, Some(Arc::from(key)), None);
        }
    }
}

/// The near tier's engine hook: its evictions, reported to the sink.
#[derive(Clone, Debug)]
pub(crate) struct ReportEvictions(pub(crate) Arc<EvictionSink>);

impl<V> quick_cache::Lifecycle<String, V> for ReportEvictions {
    type RequestState = ();
    fn on_evict(&self, _state: &mut (), key: String, _value: V) {
        self.0.evicted(&key);
    }
}
