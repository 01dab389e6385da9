//! The near tier (L1): values of a remote cache kept in this process as their Rust type, and
//! the rules that keep it coherent with the server and with other processes.
//!
//! Coherence, on Redis: every write, delete, pattern delete and clear publishes an
//! invalidation (origin id, and the key, the pattern or "clear"; never the value) on a channel
//! named for the backend's prefix; every process subscribes on a dedicated connection and drops
//! what a message names, ignoring its own. Three rules make a lost message harmless:
//!
//! - the tier serves nothing and stores nothing until the subscription is confirmed, and
//!   whenever the subscriber connection is lost it is emptied and bypassed again (an epoch
//!   bump), so a message missed while away can not leave an old value behind;
//! - a read of the server takes a ticket first (the epoch and a per-key sequence); a value
//!   read is stored only if no invalidation of that key, and no epoch bump, came in meanwhile,
//!   so an invalidation that races an in-flight read wins;
//! - no entry lives longer than [`NearOptions::ttl`], so a message that never arrives (a writer
//!   that could not publish, a network partition, a write by another tool) costs at most that.
//!
//! Tag versions are entries of the tier like values, under their reserved keys: an
//! invalidation of a tag names that key, and a tagged value is served only while the tier
//! holds the versions it was written with.
//!
//! A backend without an invalidation stream of its own (Memcached, a custom backend) gets one
//! from a Redis [`NearOptions::backplane`], with the same rules; without one the tier is used
//! only when [`NearOptions::ttl_only`] says so, and then the last rule is the only one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::backend::memory::AnyValue;
use crate::backend::redis::RedisBackend;
use crate::backend::redis::invalidation::Listener;
use crate::cache::CacheValue;
use crate::clock::{Clock, duration_ms};
use crate::error::BackendError;
use crate::events::{Emitter, EvictionSink, ReportEvictions};
use crate::front::{Found, Front};
use crate::observe::CacheStats;

use super::Timing;
use crate::tags::Stamp;

/// The near tier of a remote cache: how many values, and how long at most.
///
/// ```
/// use lexigram_cache::NearOptions;
/// use std::time::Duration;
///
/// let near = NearOptions::default();
/// assert_eq!(near.ttl, Duration::from_secs(5));
/// assert!(!near.ttl_only);
/// ```
///
/// A Memcached backend kept coherent over a Redis backplane (it has no pub/sub of its own):
///
/// ```no_run
/// use lexigram_cache::{Cache, CacheOptions, MemcachedBackend, NearOptions, RedisBackend};
///
/// # #[tokio::main] async fn main() -> Result<(), lexigram_cache::CacheError> {
/// let memcached = MemcachedBackend::builder(["127.0.0.1:11211"]).prefix("shop:").build()?;
/// let mut near = NearOptions::default();
/// // The channel is named after the backplane's prefix: the one of the key space it covers.
/// near.backplane = Some(RedisBackend::builder("redis://127.0.0.1:6379").prefix("shop:").build()?);
/// let mut options = CacheOptions::default();
/// options.near = Some(near);
/// let cache = Cache::with_options("shop", memcached, options);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NearOptions {
    /// Values held, at most. Default 10 000.
    pub max_entries: u64,
    /// How long a value stays in the tier at most, whatever its own ttl: the longest a
    /// process can serve a value another process changed, if the invalidation is lost.
    /// While the server cannot be read, or does not answer a re-read within 10 ms, a held
    /// value is served past this, up to its own expiry, rather than failing or stalling the
    /// read (the re-read goes on in the background). Default 5 s.
    pub ttl: Duration,
    /// Use the tier on a backend that cannot tell other processes of changes (Memcached, a
    /// custom backend): the tier then relies on [`ttl`](Self::ttl) alone, and
    /// a value changed elsewhere may be served up to that long. Default `false`: such
    /// backends get no near tier.
    pub ttl_only: bool,
    /// A Redis that carries this tier's invalidations, for a backend that cannot (Memcached,
    /// a custom backend): every write, delete, pattern delete and clear is published there,
    /// and the tier follows the same rules as a Redis backend's own (bypassed and emptied
    /// while it is not subscribed). The channel is named after this backend's database and key
    /// prefix: give it the prefix of the key space it covers, so that caches over other keys
    /// do not invalidate this one (they would cost it misses, never a wrong value). Writes
    /// made without publishing (another tool, a cache without a near tier) are seen within
    /// [`ttl`](Self::ttl). Default `None`.
    pub backplane: Option<RedisBackend>,
}

impl Default for NearOptions {
    fn default() -> Self {
        NearOptions {
            max_entries: 10_000,
            ttl: Duration::from_secs(5),
            ttl_only: false,
            backplane: None,
        }
    }
}

/// Sequences per cache, indexed by a hash of the key: an invalidation bumps its key's slot,
/// and a read only stores what it read if the slot did not move. Keys that share a slot only
/// cost each other an insert.
const SLOTS: usize = 1024;

/// What changed on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    Key(&'a str),
    /// Several keys, in one message (`set_many`, `delete_many`).
    Keys(Vec<&'a str>),
    Pattern(&'a str),
    Clear,
}

/// Permission to store what a read is about to fetch; void once the key is invalidated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
    slot: usize,
    seq: u64,
}

#[derive(Clone)]
struct Entry {
    value: AnyValue,
    /// Coarse clock ms after which the entry is not served.
    until: u64,
    timing: Timing,
    /// A tagged value's tag versions at write time: served only while the tier holds the
    /// same versions (tag versions are entries of the tier too, under their reserved keys).
    tags: Option<Stamp>,
}

type NearEntries = quick_cache::sync::Cache<
    String,
    Entry,
    quick_cache::UnitWeighter,
    quick_cache::DefaultHashBuilder,
    ReportEvictions,
>;

struct Shared {
    entries: NearEntries,
    /// Where evictions are reported as events.
    evicted: Arc<EvictionSink>,
    cap_ms: u64,
    clock: Clock,
    epoch: AtomicU64,
    slots: Box<[AtomicU64]>,
    /// Whether the tier may serve and store: the subscription is confirmed (always, without
    /// an invalidation stream).
    live: AtomicBool,
    origin: u128,
    received: AtomicU64,
    resets: AtomicU64,
    /// Reads through the thread fronts; every change above voids them.
    front: Front,
}

/// Where invalidations go to other processes.
struct Bus {
    backend: RedisBackend,
    channel: String,
    /// Dropped with the tier, which stops the subscriber.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The near tier of one cache.
pub(crate) struct Near {
    shared: Arc<Shared>,
    bus: Option<Bus>,
}

impl Near {
    /// A tier that relies on its ttl cap alone: live from the start.
    pub(crate) fn ttl_only(options: &NearOptions) -> Near {
        let shared = Shared::new(options);
        shared.live.store(true, Ordering::SeqCst);
        Near { shared, bus: None }
    }

    /// A tier kept coherent over Redis pub/sub (single node or Cluster); `None` when the
    /// backend cannot subscribe (no tokio runtime to run the subscriber on).
    pub(crate) fn redis(options: &NearOptions, backend: &RedisBackend) -> Option<Near> {
        let shared = Shared::new(options);
        let channel = backend.invalidation_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let weak: Weak<dyn Listener> = Arc::downgrade(&shared) as Weak<dyn Listener>;
        if let Err(why) = backend.listen(channel.clone(), weak, stopped) {
            tracing::warn!(
                servers = backend.servers(),
                why,
                "no near cache for this Redis backend"
            );
            return None;
        }
        Some(Near {
            shared,
            bus: Some(Bus {
                backend: backend.clone(),
                channel,
                _stop: stop,
            }),
        })
    }

    /// Sends this tier's evictions to a cache's events.
    pub(crate) fn connect_events(&self, emitter: &Arc<Emitter>) {
        self.shared.evicted.connect(emitter);
    }

    /// A fresh value of type `T` under `key`, and its timing.
    #[inline]
    pub(crate) fn get<T: CacheValue>(&self, key: &str) -> Option<(T, Timing)> {
        let s = &*self.shared;
        if !s.live.load(Ordering::Acquire) {
            return None;
        }
        let now = s.clock.now_ms();
        let lookup = || {
            let entry = s.entries.get(key)?;
            // A tagged value is good while each of its tags' versions is: the thread front
            // keeps it only until the first of them runs out.
            let until = match &entry.tags {
                Some(tags) => entry.until.min(s.tags_until(tags)?),
                None => entry.until,
            };
            (until > now).then_some(Found {
                value: entry.value,
                until,
                extra: (entry.timing.expires_ms, entry.timing.compute_us),
            })
        };
        s.front
            .read(key, now, lookup, |value, (expires_ms, compute_us)| {
                // Another type under this key is a miss here; the server read decides what it is.
                let v = value.downcast_ref::<T>()?.clone();
                Some((
                    v,
                    Timing {
                        expires_ms,
                        compute_us,
                    },
                ))
            })
            .flatten()
    }

    /// A value of type `T` under `key` that may be past the tier's ttl cap but not past its
    /// own expiry on the server, for a read the server could not answer. The cap bounds how
    /// long a change announced by nobody can go unseen; while this process cannot reach the
    /// server, no other process can change the value there either, and a lost subscription
    /// has emptied the tier already.
    pub(crate) fn get_held<T: CacheValue>(&self, key: &str) -> Option<(T, Timing)> {
        let s = &*self.shared;
        if !s.live.load(Ordering::Acquire) {
            return None;
        }
        let entry = s.entries.get(key)?;
        if !super::fresh_at(entry.timing.expires_ms, crate::clock::coarse_wall_ms()) {
            return None;
        }
        // Its tags' versions are held the same way: an invalidation heard removed them.
        if let Some(tags) = &entry.tags
            && !tags.iter().all(|(tag, version)| {
                s.entries
                    .get(tag.as_str())
                    .is_some_and(|e| e.value.downcast_ref::<u64>() == Some(version))
            })
        {
            return None;
        }
        let v = entry.value.downcast_ref::<T>()?.clone();
        Some((v, entry.timing))
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        let s = &*self.shared;
        let now = s.clock.now_ms();
        s.live.load(Ordering::Acquire)
            && s.entries.get(key).is_some_and(|e| {
                e.until > now && e.tags.as_ref().is_none_or(|t| s.tags_current(t, now))
            })
    }

    /// A ticket for a read of `key` about to start; `None` while the tier is not live.
    pub(crate) fn ticket(&self, key: &str) -> Option<Ticket> {
        let s = &*self.shared;
        if !s.live.load(Ordering::SeqCst) {
            return None;
        }
        let slot = slot_of(key);
        Some(Ticket {
            epoch: s.epoch.load(Ordering::SeqCst),
            slot,
            seq: s.slots[slot].load(Ordering::SeqCst),
        })
    }

    /// Stores a value read from the server under `ticket`, unless the ticket is void; a tagged
    /// value is served only while the tier holds the versions in `tags`.
    pub(crate) fn insert<T: CacheValue>(
        &self,
        key: &str,
        ticket: Ticket,
        value: T,
        timing: Timing,
        tags: Option<Stamp>,
    ) {
        self.shared
            .insert(key, ticket, Arc::new(value), timing, tags);
    }

    /// The version of the tag under reserved key `key`, if the tier holds it.
    pub(crate) fn tag_version(&self, key: &str) -> Option<u64> {
        self.get::<u64>(key).map(|(v, _)| v)
    }

    /// Keeps a tag version read from the server (or written by this process) under `ticket`.
    pub(crate) fn insert_tag_version(&self, key: &str, ticket: Ticket, version: u64) {
        let timing = Timing {
            expires_ms: 0,
            compute_us: 0,
        };
        self.shared
            .insert(key, ticket, Arc::new(version), timing, None);
    }

    /// After this process wrote `value` under `key` (`ticket` taken before the write): reads
    /// in flight must not store what they read, and the tier holds the written value unless
    /// another change of the key came in during the write.
    pub(crate) fn written<T: CacheValue>(
        &self,
        key: &str,
        ticket: Option<Ticket>,
        value: T,
        timing: Timing,
    ) {
        self.written_tagged(key, ticket, value, timing, None);
    }

    /// [`written`](Self::written) for a tagged value.
    pub(crate) fn written_tagged<T: CacheValue>(
        &self,
        key: &str,
        ticket: Option<Ticket>,
        value: T,
        timing: Timing,
        tags: Option<Stamp>,
    ) {
        let s = &*self.shared;
        let slot = slot_of(key);
        let before = s.slots[slot].fetch_add(1, Ordering::SeqCst);
        s.entries.remove(key);
        s.front.changed();
        if let Some(t) = ticket
            && t.seq == before
        {
            let after = Ticket {
                seq: before.wrapping_add(1),
                ..t
            };
            s.insert(key, after, Arc::new(value), timing, tags);
        }
    }

    /// Drops what `change` touches in this process.
    pub(crate) fn apply(&self, change: &Change<'_>) {
        self.shared.apply(change);
    }

    /// Tells other processes of `change`. `Ok` without a bus.
    pub(crate) async fn publish(&self, change: Change<'_>) -> Result<(), BackendError> {
        let Some(bus) = &self.bus else {
            return Ok(());
        };
        bus.backend
            .publish(&bus.channel, encode(self.shared.origin, &change))
            .await
    }

    pub(crate) fn fill_stats(&self, stats: &mut CacheStats) {
        let s = &*self.shared;
        stats.near_invalidations = s.received.load(Ordering::Acquire);
        stats.near_resets = s.resets.load(Ordering::Relaxed);
        stats.near_live = s.live.load(Ordering::Relaxed);
    }
}

impl Shared {
    fn new(options: &NearOptions) -> Arc<Shared> {
        let capacity = usize::try_from(options.max_entries.max(1)).unwrap_or(usize::MAX);
        let evicted = EvictionSink::new("");
        Arc::new(Shared {
            entries: NearEntries::with(
                capacity,
                capacity as u64,
                quick_cache::UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                ReportEvictions(Arc::clone(&evicted)),
            ),
            evicted,
            cap_ms: duration_ms(options.ttl),
            clock: Clock::system(),
            epoch: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            live: AtomicBool::new(false),
            origin: rand::random(),
            received: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            front: Front::new(),
        })
    }

    fn valid(&self, t: &Ticket) -> bool {
        self.live.load(Ordering::SeqCst)
            && self.epoch.load(Ordering::SeqCst) == t.epoch
            && self.slots[t.slot].load(Ordering::SeqCst) == t.seq
    }

    /// Whether every tag version in `tags` is the one the tier holds.
    fn tags_current(&self, tags: &Stamp, now: u64) -> bool {
        self.tags_until(tags).is_some_and(|until| until > now)
    }

    /// Until when the tier holds every tag version in `tags` (the first of them to run out);
    /// `None` when one is missing or another version.
    fn tags_until(&self, tags: &Stamp) -> Option<u64> {
        tags.iter().try_fold(u64::MAX, |until, (key, version)| {
            let e = self.entries.get(key.as_str())?;
            (e.value.downcast_ref::<u64>() == Some(version)).then_some(until.min(e.until))
        })
    }

    fn insert(
        &self,
        key: &str,
        ticket: Ticket,
        value: AnyValue,
        timing: Timing,
        tags: Option<Stamp>,
    ) {
        if !self.valid(&ticket) {
            return;
        }
        let now = self.clock.now_ms();
        let mut until = now.saturating_add(self.cap_ms);
        if timing.expires_ms != 0 {
            // Leave the last stretch before expiry to the server read, where XFetch decides
            // on an early refresh: with beta 1 it fires earlier than three compute times
            // before expiry only 5% of the time.
            let margin = u64::from(timing.compute_us) * 3 / 1000;
            until = until.min(timing.expires_ms.saturating_sub(margin));
        }
        if until <= now {
            return;
        }
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                until,
                timing,
                tags,
            },
        );
        // An invalidation between the check above and the insert removed nothing yet, or
        // removed the key before it was there: look again, and take the value back out.
        if !self.valid(&ticket) {
            self.entries.remove(key);
        }
        self.front.changed();
    }

    fn apply(&self, change: &Change<'_>) {
        match change {
            Change::Key(key) => self.forget(key),
            Change::Keys(keys) => keys.iter().for_each(|k| self.forget(k)),
            // A pattern empties the whole tier: cheaper than matching every entry, and as safe.
            Change::Pattern(_) | Change::Clear => self.reset(),
        }
    }

    fn forget(&self, key: &str) {
        self.slots[slot_of(key)].fetch_add(1, Ordering::SeqCst);
        self.entries.remove(key);
        self.front.changed();
    }

    fn reset(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
        self.front.changed();
    }
}

impl Listener for Shared {
    fn subscribed(&self) {
        // Anything stored before was stored while not subscribed: there is nothing, but an
        // epoch makes sure of it.
        self.reset();
        self.live.store(true, Ordering::SeqCst);
        tracing::debug!("near cache: invalidations subscribed");
    }

    fn lost(&self) {
        self.live.store(false, Ordering::SeqCst);
        self.reset();
        self.resets.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "near cache: invalidation connection lost; serving from the server until it is back"
        );
    }

    fn message(&self, payload: &[u8]) {
        match decode(payload) {
            Some((origin, _)) if origin == self.origin => {}
            Some((_, change)) => {
                // Counted once applied: whoever sees the count may rely on the change.
                self.apply(&change);
                self.received.fetch_add(1, Ordering::Release);
            }
            None => {
                // Not ours to understand: drop everything rather than keep what it may name.
                tracing::warn!("near cache: unreadable invalidation message; emptying the tier");
                self.reset();
            }
        }
    }
}

fn slot_of(key: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) & (SLOTS - 1)
}

/// `<origin, 32 hex digits> <k|m|p|c> <argument>`: the key, the pattern, nothing for a clear,
/// or for several keys each as `<byte length>:<key>` one after the other (keys may hold any
/// character, spaces and newlines included).
fn encode(origin: u128, change: &Change<'_>) -> Vec<u8> {
    let (op, arg) = match change {
        Change::Key(k) => ('k', (*k).to_owned()),
        Change::Keys(keys) => (
            'm',
            keys.iter().map(|k| format!("{}:{k}", k.len())).collect(),
        ),
        Change::Pattern(p) => ('p', (*p).to_owned()),
        Change::Clear => ('c', String::new()),
    };
    format!("{origin:032x} {op} {arg}").into_bytes()
}

fn split_keys(mut text: &str) -> Option<Vec<&str>> {
    let mut keys = Vec::new();
    while !text.is_empty() {
        let (len, rest) = text.split_once(':')?;
        let len: usize = len.parse().ok()?;
        if !rest.is_char_boundary(len.min(rest.len())) || len > rest.len() {
            return None;
        }
        keys.push(&rest[..len]);
        text = &rest[len..];
    }
    Some(keys)
}

fn decode(payload: &[u8]) -> Option<(u128, Change<'_>)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (origin, rest) = text.split_once(' ')?;
    let origin = u128::from_str_radix(origin, 16).ok()?;
    let (op, arg) = rest.split_once(' ').unwrap_or((rest, ""));
    let change = match op {
        "k" => Change::Key(arg),
        "m" => Change::Keys(split_keys(arg)?),
        "p" => Change::Pattern(arg),
        "c" => Change::Clear,
        _ => return None,
    };
    Some((origin, change))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            expires_ms: 0,
            compute_us: 0,
        }
    }

    fn live() -> Near {
        Near::ttl_only(&NearOptions::default())
    }

    #[test]
    fn messages_round_trip_and_keep_spaces_in_keys() {
        for change in [
            Change::Key("a key with spaces"),
            Change::Pattern("user:*"),
            Change::Clear,
        ] {
            let bytes = encode(7, &change);
            assert_eq!(decode(&bytes), Some((7, change)));
        }
        assert_eq!(decode(b"garbage"), None);
        let origin = format!("{:032x}", 1u128);
        for bad in ["m 5:ab", "m x:ab", "m 1", "m 1:\u{fc}"] {
            let bytes = format!("{origin} {bad}");
            assert_eq!(decode(bytes.as_bytes()), None, "{bad}");
        }
        assert_eq!(decode(&[0xff, 0xfe]), None);
    }

    /// The read started, then the key was invalidated, then the read came back: its value is
    /// not stored.
    #[test]
    fn an_invalidation_during_a_read_wins() {
        let near = live();
        let ticket = near.ticket("k").expect("live");
        near.apply(&Change::Key("k"));
        near.insert("k", ticket, 1u32, timing(), None);
        assert!(near.get::<u32>("k").is_none());
        // A read that starts after the invalidation stores as usual.
        let ticket = near.ticket("k").expect("live");
        near.insert("k", ticket, 2u32, timing(), None);
        assert_eq!(near.get::<u32>("k").map(|(v, _)| v), Some(2));
    }

    #[test]
    fn a_reset_voids_every_ticket_and_empties_the_tier() {
        let near = live();
        let ticket = near.ticket("a").expect("live");
        near.insert("b", near.ticket("b").expect("live"), 1u8, timing(), None);
        near.shared.lost();
        assert!(near.get::<u8>("b").is_none(), "not served while lost");
        assert!(near.ticket("a").is_none(), "no tickets while lost");
        near.shared.subscribed();
        near.insert("a", ticket, 1u8, timing(), None);
        assert!(
            near.get::<u8>("a").is_none(),
            "a ticket from before the loss is void"
        );
        assert!(near.get::<u8>("b").is_none(), "emptied");
    }

    /// A write in flight while a read of the old value is in flight: the read does not
    /// overwrite the written value.
    #[test]
    fn a_write_voids_reads_in_flight_and_keeps_its_value() {
        let near = live();
        let read = near.ticket("k").expect("live");
        let write = near.ticket("k").expect("live");
        near.written("k", Some(write), 2u8, timing());
        near.insert("k", read, 1u8, timing(), None);
        assert_eq!(near.get::<u8>("k").map(|(v, _)| v), Some(2));
    }

    #[test]
    fn own_echoes_are_ignored_and_others_apply() {
        let near = live();
        near.insert("k", near.ticket("k").expect("live"), 1u8, timing(), None);
        near.shared
            .message(&encode(near.shared.origin, &Change::Key("k")));
        assert!(near.get::<u8>("k").is_some());
        near.shared
            .message(&encode(near.shared.origin ^ 1, &Change::Key("k")));
        assert!(near.get::<u8>("k").is_none());
    }

    #[test]
    fn entries_never_outlive_the_server_value() {
        let near = live();
        let now = near.shared.clock.now_ms();
        let expired = Timing {
            expires_ms: now.saturating_sub(1),
            compute_us: 0,
        };
        near.insert("k", near.ticket("k").expect("live"), 1u8, expired, None);
        assert!(near.get::<u8>("k").is_none());
    }
}
