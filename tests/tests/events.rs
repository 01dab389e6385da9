//! `Cache::events()` against the memory backend, a real redis-server and memcached: every kind
//! with its key, the breaker's changes, receivers that go away, and a receiver that falls
//! behind.

use std::sync::LazyLock;
use std::time::Duration;

use lexigram_cache::{
    Cache, CacheEvents, CacheOptions, Clock, EVENTS_CAPACITY, EventError, EventKind,
    MemcachedBackend, MemoryBackend, MemoryEngine, RedisBackend, cacheable,
};
use lexigram_cache_tests::breaker::cache_with_a_sensitive_breaker;
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};

/// An event as the tests compare it: kind, key, function scope.
type Seen = (EventKind, Option<String>, Option<&'static str>);

/// Every event waiting now.
fn drain(rx: &mut CacheEvents) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Some(e) = rx.try_recv().expect("no lag in these tests") {
        seen.push((e.kind, e.key.as_deref().map(str::to_owned), e.function));
    }
    seen
}

fn ev(kind: EventKind, key: &str) -> Seen {
    (kind, Some(key.to_owned()), None)
}

/// What every backend does alike: set, hit, miss, delete, delete_many, batch reads and
/// writes, a value of another type.
async fn check_key_events(cache: &Cache) {
    let mut rx = cache.events();
    assert_eq!(cache.event_receivers(), 1);
    cache
        .set("a", &1u32, Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(cache.get::<u32>("a").await.expect("get"), Some(1));
    assert_eq!(cache.get::<u32>("nope").await.expect("get"), None);
    assert!(cache.delete("a").await.expect("delete"));
    cache
        .set_many(&[("b", 2u32), ("c", 3u32)], Duration::from_secs(60))
        .await
        .expect("set_many");
    let got = cache
        .get_many::<u32>(&["b", "x", "c"])
        .await
        .expect("get_many");
    assert_eq!(got, vec![Some(2), None, Some(3)]);
    assert_eq!(
        cache.delete_many(&["b", "c"]).await.expect("delete_many"),
        2
    );
    cache
        .set("t", &7u32, Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(cache.get::<String>("t").await.expect("get"), None);
    assert_eq!(
        drain(&mut rx),
        vec![
            ev(EventKind::Set, "a"),
            ev(EventKind::Hit, "a"),
            ev(EventKind::Miss, "nope"),
            ev(EventKind::Delete, "a"),
            ev(EventKind::Set, "b"),
            ev(EventKind::Set, "c"),
            ev(EventKind::Hit, "b"),
            ev(EventKind::Miss, "x"),
            ev(EventKind::Hit, "c"),
            ev(EventKind::Delete, "b"),
            ev(EventKind::Delete, "c"),
            ev(EventKind::Set, "t"),
            ev(EventKind::DecodeFailure, "t"),
            ev(EventKind::Miss, "t"),
        ],
        "{} backend",
        cache.kind()
    );
}

/// Pattern deletes and clears, on the backends that can list keys.
async fn check_pattern_and_clear(cache: &Cache) {
    let mut rx = cache.events();
    for k in ["user:1", "user:2", "order:1"] {
        cache
            .set(k, &1u32, Duration::from_secs(60))
            .await
            .expect("set");
    }
    assert_eq!(cache.delete_pattern("user:*").await.expect("pattern"), 2);
    assert_eq!(cache.clear().await.expect("clear"), 2, "order:1 and t");
    let seen = drain(&mut rx);
    assert_eq!(
        seen[3..],
        [
            ev(EventKind::DeletePattern, "user:*"),
            (EventKind::Clear, None, None)
        ],
        "{} backend: {seen:?}",
        cache.kind()
    );
}

#[tokio::test]
async fn memory_events_name_each_key() {
    let cache = Cache::from_backend(
        "mem-events",
        MemoryBackend::builder()
            .prefix("p:")
            .build()
            .expect("build"),
    );
    check_key_events(&cache).await;
    check_pattern_and_clear(&cache).await;
    let mut rx = cache.events();
    cache.set("k", &1u32, None).await.expect("set");
    let event = rx.recv().await.expect("an event");
    assert_eq!(&*event.cache, "mem-events");
    assert_eq!(event.kind.to_string(), "set");
    assert_eq!(EventKind::DecodeFailure.as_str(), "decode_failure");
}

#[tokio::test]
async fn redis_events_name_each_key() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("ev:")
        .connect()
        .await
        .expect("connect");
    let cache = Cache::from_backend("redis-events", backend);
    check_key_events(&cache).await;
    check_pattern_and_clear(&cache).await;
}

/// Hits answered by the near tier are hits too.
#[tokio::test]
async fn redis_near_tier_hits_are_events() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("near-ev:")
        .connect()
        .await
        .expect("connect");
    let mut options = CacheOptions::default();
    options.near = Some(lexigram_cache::NearOptions::default());
    let cache = Cache::with_options("near-events", backend, options);
    check_key_events(&cache).await;
    check_pattern_and_clear(&cache).await;
}

#[tokio::test]
async fn memcached_events_name_each_key() {
    let server = MemcachedServer::start();
    let backend = MemcachedBackend::builder([server.addr()])
        .prefix("ev:")
        .build()
        .expect("build");
    let cache = Cache::from_backend("memcached-events", backend);
    check_key_events(&cache).await;
}

/// A receiver that sees `Set` for a key reads the new value: events come after the effect.
#[tokio::test]
async fn a_listener_that_sees_a_set_reads_the_new_value() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("after:")
        .connect()
        .await
        .expect("connect");
    let cache = Cache::from_backend("after", backend);
    let mut rx = cache.events();
    let reader = cache.clone();
    let listener = tokio::spawn(async move {
        let mut read = Vec::new();
        while read.len() < 50 {
            let event = rx.recv().await.expect("no lag");
            if event.kind == EventKind::Set {
                let key = event.key.expect("a set has a key");
                read.push((key.to_string(), reader.get::<u32>(&key).await.expect("get")));
            }
        }
        read
    });
    for i in 0..50u32 {
        cache
            .set(&format!("k{i}"), &i, Duration::from_secs(60))
            .await
            .expect("set");
    }
    let read = tokio::time::timeout(Duration::from_secs(20), listener)
        .await
        .expect("the listener saw every set")
        .expect("listener");
    for (i, (key, value)) in read.into_iter().enumerate() {
        assert_eq!(key, format!("k{i}"));
        assert_eq!(value, Some(i as u32), "{key} read after its Set event");
    }
}

#[tokio::test]
async fn evictions_are_events_with_the_key_without_the_prefix() {
    for engine in [MemoryEngine::S3Fifo, MemoryEngine::TinyLfu] {
        let backend = MemoryBackend::builder()
            .engine(engine)
            .max_entries(10)
            .prefix("p:")
            .build()
            .expect("build");
        let cache = Cache::from_backend("evict", backend);
        let mut rx = cache.events();
        for i in 0..200u32 {
            cache.set(&format!("k{i}"), &i, None).await.expect("set");
        }
        let evicted: Vec<String> = drain(&mut rx)
            .into_iter()
            .filter(|(kind, ..)| *kind == EventKind::Eviction)
            .map(|(_, key, function)| {
                assert_eq!(function, None);
                key.expect("an eviction has a key")
            })
            .collect();
        assert!(!evicted.is_empty(), "{engine:?}: 200 values in 10 places");
        assert_eq!(
            evicted.len() as u64,
            cache.stats().evictions,
            "{engine:?}: one event per eviction counted"
        );
        for key in &evicted {
            assert!(key.starts_with('k'), "{engine:?}: {key} without the prefix");
        }
        // The last eviction of a key removed it (a key may be written and evicted once only
        // here, each set being of a new key).
        for key in &evicted {
            assert_eq!(cache.get::<u32>(key).await.expect("get"), None, "{key}");
        }
    }
}

/// A near tier that makes room is an eviction too; the value stays on the server.
#[tokio::test]
async fn near_tier_evictions_are_events() {
    let server = MemcachedServer::start();
    let backend = MemcachedBackend::builder([server.addr()])
        .prefix("near-evict:")
        .build()
        .expect("build");
    let mut near = lexigram_cache::NearOptions::default();
    near.max_entries = 10;
    near.ttl_only = true;
    let mut options = CacheOptions::default();
    options.near = Some(near);
    let cache = Cache::with_options("near-evict", backend, options);
    let mut rx = cache.events();
    for i in 0..100u32 {
        cache
            .set(&format!("k{i}"), &i, Duration::from_secs(60))
            .await
            .expect("set");
    }
    let evicted: Vec<String> = drain(&mut rx)
        .into_iter()
        .filter(|(kind, ..)| *kind == EventKind::Eviction)
        .map(|(_, key, _)| key.expect("an eviction has a key"))
        .collect();
    assert!(evicted.len() >= 50, "100 values in 10 places: {evicted:?}");
    for key in &evicted {
        let i: u32 = key
            .strip_prefix('k')
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{key}: a key as written"));
        assert_eq!(cache.get::<u32>(key).await.expect("get"), Some(i));
    }
}

#[tokio::test]
async fn a_stale_value_served_is_an_event() {
    let clock = Clock::manual(1_000);
    let backend = MemoryBackend::builder()
        .clock(clock.clone())
        .build()
        .expect("build");
    let mut options = CacheOptions::default();
    options.stale_if_error = Some(Duration::from_secs(10));
    options.ttl_jitter = 0.0;
    let cache = Cache::with_options("stale-events", backend, options);
    let ok = || async { Ok::<_, String>(1u32) };
    let fail = || async { Err::<u32, _>("db down".to_owned()) };
    cache
        .try_get_or_insert_with("k", Duration::from_secs(1), ok)
        .await
        .expect("filled");
    clock.advance(Duration::from_millis(1_500));
    let mut rx = cache.events();
    assert_eq!(
        cache
            .try_get_or_insert_with("k", Duration::from_secs(1), fail)
            .await,
        Ok(1)
    );
    assert_eq!(
        drain(&mut rx),
        vec![ev(EventKind::Miss, "k"), ev(EventKind::StaleServed, "k")]
    );
}

static FN_CACHE: LazyLock<Cache> = LazyLock::new(|| {
    Cache::from_backend(
        "fn-events",
        MemoryBackend::builder().build().expect("build"),
    )
});

#[cacheable(cache = &*FN_CACHE, ttl = 60, key = "sq:{n}")]
async fn square(n: u64) -> u64 {
    n * n
}

/// Events of a `#[cacheable]` function carry its scope, also hits of the memory fast path;
/// its `_invalidate` is a delete.
#[tokio::test]
async fn a_cacheable_function_names_its_scope() {
    let mut rx = FN_CACHE.events();
    assert_eq!(square(3).await, 9);
    assert_eq!(square(3).await, 9);
    assert!(square_invalidate(3).await.expect("invalidate"));
    let scope = Some("events::square");
    let key = || Some("sq:3".to_owned());
    assert_eq!(
        drain(&mut rx),
        vec![
            (EventKind::Miss, key(), scope),
            (EventKind::Set, key(), scope),
            (EventKind::Hit, key(), scope),
            (EventKind::Delete, key(), None),
        ]
    );
}

/// A fill behind the Redis fill lock stores and releases in one call: a `Set` with the scope.
#[tokio::test]
async fn a_fill_under_the_redis_lock_is_a_set() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("lockset:")
        .connect()
        .await
        .expect("connect");
    let cache = Cache::from_backend("lockset", backend);
    let mut rx = cache.events();
    let v = cache
        .get_or_insert_with("k", Duration::from_secs(60), || async { 5u32 })
        .await;
    assert_eq!(v, 5);
    assert_eq!(
        drain(&mut rx),
        vec![ev(EventKind::Miss, "k"), ev(EventKind::Set, "k")]
    );
    assert_eq!(cache.get::<u32>("k").await.expect("get"), Some(5));
}

#[tokio::test]
async fn the_breaker_opening_and_closing_are_events() {
    let server = RedisServer::start();
    let open_for = Duration::from_millis(300);
    let cache = cache_with_a_sensitive_breaker(&server, "breaker-events", open_for).await;
    let mut rx = cache.events();
    server.pause();
    assert!(
        cache.get::<u32>("k").await.is_err(),
        "the frozen server times out"
    );
    assert!(
        cache.get::<u32>("k").await.is_err(),
        "skipped by the open breaker"
    );
    server.resume();
    tokio::time::sleep(open_for + Duration::from_millis(100)).await;
    assert_eq!(cache.get::<u32>("k").await.expect("the probe"), Some(1));
    let breaker: Vec<EventKind> = drain(&mut rx)
        .into_iter()
        .map(|(kind, key, _)| {
            if matches!(kind, EventKind::BreakerOpen | EventKind::BreakerClose) {
                assert_eq!(key, None);
            }
            kind
        })
        .filter(|kind| matches!(kind, EventKind::BreakerOpen | EventKind::BreakerClose))
        .collect();
    assert_eq!(
        breaker,
        vec![EventKind::BreakerOpen, EventKind::BreakerClose]
    );
}

/// A receiver dropped while events stream (its task aborted mid-receive) turns emission off:
/// the count of receivers, which the hot path reads, is back to zero; another receiver keeps
/// its events meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_dropped_mid_stream_turns_emission_off() {
    let cache = Cache::from_backend("dropped", MemoryBackend::builder().build().expect("build"));
    cache.set("k", &1u32, None).await.expect("set");
    assert_eq!(cache.event_receivers(), 0);
    let mut rx = cache.events();
    let (started, mut seen_one) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(async move {
        let _ = rx.recv().await;
        let _ = started.send(()).await;
        loop {
            let _ = rx.recv().await;
        }
    });
    let mut kept = cache.events();
    assert_eq!(cache.event_receivers(), 2);
    let writer = {
        let cache = cache.clone();
        tokio::spawn(async move {
            for _ in 0..2_000 {
                let _ = cache.get::<u32>("k").await;
                tokio::task::yield_now().await;
            }
        })
    };
    seen_one.recv().await.expect("the task received an event");
    task.abort();
    let _ = task.await;
    assert_eq!(
        cache.event_receivers(),
        1,
        "the aborted task's receiver is gone"
    );
    writer.await.expect("writer");
    let mut hits = 0;
    loop {
        match kept.try_recv() {
            Ok(Some(e)) => {
                assert_eq!(e.kind, EventKind::Hit);
                hits += 1;
            }
            Ok(None) => break,
            Err(EventError::Lagged(n)) => hits += n,
            Err(EventError::Closed) => panic!("the cache is alive"),
        }
    }
    assert_eq!(
        hits, 2_000,
        "the other receiver lost nothing it was not told of"
    );
    drop(kept);
    assert_eq!(cache.event_receivers(), 0, "no receiver: emission is off");
}

/// A receiver that never reads does not slow the cache: writes go on, and the receiver is
/// told exactly how many events it lost, then reads the oldest one kept.
#[tokio::test]
async fn a_slow_receiver_is_told_what_it_missed_and_the_cache_never_blocks() {
    let cache = Cache::from_backend("slow", MemoryBackend::builder().build().expect("build"));
    let mut rx = cache.events();
    let total = EVENTS_CAPACITY * 4;
    let writes = async {
        for i in 0..total {
            cache.set(&format!("k{i}"), &i, None).await.expect("set");
        }
    };
    tokio::time::timeout(Duration::from_secs(30), writes)
        .await
        .expect("the writes never wait for the receiver");
    let missed = (total - EVENTS_CAPACITY) as u64;
    assert_eq!(rx.recv().await, Err(EventError::Lagged(missed)));
    let next = rx.recv().await.expect("the oldest kept");
    assert_eq!(next.kind, EventKind::Set);
    assert_eq!(next.key.as_deref(), Some(format!("k{missed}").as_str()));
    let err = EventError::Lagged(missed).to_string();
    assert!(err.contains("drain it faster"), "{err}");
}

/// Dropping every handle of the cache ends the stream.
#[tokio::test]
async fn a_dropped_cache_closes_the_stream() {
    let cache = Cache::from_backend("closed", MemoryBackend::builder().build().expect("build"));
    let mut rx = cache.events();
    cache.set("k", &1u32, None).await.expect("set");
    drop(cache);
    assert_eq!(rx.recv().await.map(|e| e.kind), Ok(EventKind::Set));
    assert_eq!(rx.recv().await, Err(EventError::Closed));
}
