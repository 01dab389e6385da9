//! `Cache::warm` on every backend: every key loaded, present keys skipped without a load, one
//! failing (or panicking) key reported while the others load, the concurrency bound held, a zero
//! ttl refused, and warmed values read by a `#[cacheable]` function.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lexigram_cache::codec::Envelope;
use lexigram_cache::{
    Cache, CacheError, CacheOptions, MemcachedBackend, MemoryBackend, RedisBackend, Ttl,
    WarmOptions, WarmOutcome, cacheable,
};
use lexigram_cache_tests::RunCounter;
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};

/// A cache over the in-memory backend (typed fast path). The guard keeps a server alive.
async fn memory() -> (Cache, Box<dyn Any>) {
    let backend = MemoryBackend::builder().build().expect("build");
    (Cache::from_backend("memory", backend), Box::new(()))
}

/// The in-memory backend through the byte-level trait (values serialized, as on a server).
async fn memory_bytes() -> (Cache, Box<dyn Any>) {
    let backend = MemoryBackend::builder().build().expect("build");
    (
        Cache::from_backend("memory-bytes", Arc::new(backend)),
        Box::new(()),
    )
}

async fn redis() -> (Cache, Box<dyn Any>) {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("warm:")
        .connect()
        .await
        .expect("connect");
    (Cache::from_backend("redis", backend), Box::new(server))
}

async fn memcached() -> (Cache, Box<dyn Any>) {
    let server = MemcachedServer::start();
    let backend = MemcachedBackend::builder([server.addr()])
        .prefix("warm:")
        .build()
        .expect("build");
    (Cache::from_backend("memcached", backend), Box::new(server))
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

async fn loads_every_key(cache: Cache) {
    let name = cache.name().to_owned();
    let runs = RunCounter::default();
    let mut wanted = keys("all", 20);
    // A repeated key is loaded once and reported once.
    wanted.push("all:3".to_owned());
    let counter = runs.clone();
    let warmer = cache.clone();
    // Spawned: the warm-up future is `Send`.
    let report = tokio::spawn(async move {
        warmer
            .warm(
                wanted,
                move |key: String| {
                    let counter = counter.clone();
                    async move {
                        counter.hit();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Ok::<_, String>(format!("value of {key}"))
                    }
                },
                WarmOptions::default().concurrency(4),
            )
            .await
    })
    .await
    .expect("the warm-up task")
    .expect("warm");

    assert_eq!(runs.get(), 20, "{name}: one load per distinct key");
    assert_eq!(report.len(), 20, "{name}");
    assert_eq!(report.loaded(), 20, "{name}: {report}");
    assert!(report.all_ok(), "{name}");
    assert_eq!(
        report.to_string(),
        "20 keys: 20 loaded, 0 skipped, 0 failed"
    );
    let order: Vec<&str> = report.iter().map(|(k, _)| k).collect();
    assert_eq!(
        order,
        keys("all", 20),
        "{name}: the order the keys were given"
    );
    for key in keys("all", 20) {
        assert_eq!(
            cache.get::<String>(&key).await.expect("get"),
            Some(format!("value of {key}")),
            "{name}: {key}"
        );
    }
    assert_eq!(cache.stats().sets, 20, "{name}");
}

async fn skip_existing_does_not_call_the_loader(cache: Cache) {
    let name = cache.name().to_owned();
    let all = keys("skip", 6);
    for key in &all[..3] {
        cache
            .set(key, &format!("old {key}"), Duration::from_secs(60))
            .await
            .expect("set");
    }
    // A value of another type is there too: it exists, so it is skipped.
    cache
        .set(&all[3], &7u64, Duration::from_secs(60))
        .await
        .expect("set");
    let runs = RunCounter::default();
    let loader = |key: String| {
        runs.hit();
        async move { Ok::<_, String>(format!("new {key}")) }
    };

    let report = cache
        .warm(&all, loader, WarmOptions::default().skip_existing(true))
        .await
        .expect("warm");
    assert_eq!(
        runs.get(),
        2,
        "{name}: only the two missing keys are loaded"
    );
    assert_eq!((report.loaded(), report.skipped()), (2, 4), "{name}");
    for key in &all[..4] {
        assert!(
            matches!(report.get(key), Some(WarmOutcome::Skipped)),
            "{name}: {key}"
        );
    }
    for key in &all[..3] {
        assert_eq!(
            cache.get::<String>(key).await.expect("get"),
            Some(format!("old {key}")),
            "{name}: a present value is left alone"
        );
    }
    assert_eq!(
        cache.get::<String>(&all[5]).await.expect("get"),
        Some(format!("new {}", all[5])),
        "{name}"
    );

    // Without skip_existing every key is loaded and overwritten.
    let report = cache
        .warm(&all, loader, WarmOptions::default())
        .await
        .expect("warm");
    assert_eq!(runs.get(), 2 + 6, "{name}");
    assert_eq!(report.loaded(), 6, "{name}");
    assert_eq!(
        cache.get::<String>(&all[0]).await.expect("get"),
        Some(format!("new {}", all[0])),
        "{name}"
    );
}

async fn one_failing_key_does_not_stop_the_others(cache: Cache) {
    let name = cache.name().to_owned();
    let all = keys("fail", 8);
    let report = cache
        .warm(
            &all,
            |key: String| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                match key.as_str() {
                    "fail:2" => Err(format!("no row for {key}")),
                    "fail:5" => panic!("the loader broke on {key}"),
                    _ => Ok(key.len() as u64),
                }
            },
            WarmOptions::default().concurrency(2),
        )
        .await
        .expect("warm");

    assert_eq!(
        (report.loaded(), report.failed()),
        (6, 2),
        "{name}: {report}"
    );
    assert!(!report.all_ok(), "{name}");
    match report.get("fail:2") {
        Some(WarmOutcome::LoadFailed(message)) => assert_eq!(message, "no row for fail:2"),
        other => panic!("{name}: fail:2 is {other:?}"),
    }
    match report.get("fail:5") {
        Some(WarmOutcome::LoadPanicked(message)) => {
            assert_eq!(message, "the loader broke on fail:5")
        }
        other => panic!("{name}: fail:5 is {other:?}"),
    }
    let failed: Vec<&str> = report.failures().map(|(k, _)| k).collect();
    assert_eq!(failed, ["fail:2", "fail:5"], "{name}");
    for key in &all {
        let stored = cache.get::<u64>(key).await.expect("get");
        let expected = (key != "fail:2" && key != "fail:5").then_some(key.len() as u64);
        assert_eq!(stored, expected, "{name}: {key}");
    }
}

/// Runs a warm-up whose loader records how many loads are in flight at once.
async fn max_in_flight(cache: &Cache, prefix: &str, concurrency: usize) -> usize {
    let now = AtomicUsize::new(0);
    let max = AtomicUsize::new(0);
    let report = cache
        .warm(
            keys(prefix, 12),
            |_key: String| {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                let now = &now;
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, String>(1u8)
                }
            },
            WarmOptions::default().concurrency(concurrency),
        )
        .await
        .expect("warm");
    assert_eq!(report.loaded(), 12, "{}: {report}", cache.name());
    max.load(Ordering::SeqCst)
}

async fn concurrency_bound_is_respected(cache: Cache) {
    let name = cache.name().to_owned();
    // Twelve 20 ms loads, three at a time: the first three start before any finishes.
    assert_eq!(max_in_flight(&cache, "c3", 3).await, 3, "{name}");
    assert_eq!(max_in_flight(&cache, "c1", 1).await, 1, "{name}");
    // Zero is read as one.
    assert_eq!(max_in_flight(&cache, "c0", 0).await, 1, "{name}");
}

async fn zero_ttl_is_rejected_before_loading(cache: Cache) {
    let name = cache.name().to_owned();
    let runs = RunCounter::default();
    let result = cache
        .warm(
            ["z:1", "z:2"],
            |_key: String| {
                runs.hit();
                async { Ok::<_, String>(1u8) }
            },
            WarmOptions::default().ttl(Duration::ZERO),
        )
        .await;
    assert!(
        matches!(result, Err(CacheError::ZeroTtl)),
        "{name}: {result:?}"
    );
    // The same error as `set`'s.
    let set = cache.set("z:1", &1u8, Duration::ZERO).await;
    assert_eq!(
        result.err().map(|e| e.to_string()),
        set.err().map(|e| e.to_string())
    );
    assert_eq!(runs.get(), 0, "{name}: nothing loaded");
    assert!(!cache.exists("z:1").await.expect("exists"), "{name}");
}

async fn warmed_values_expire_with_the_ttl(cache: Cache) {
    let name = cache.name().to_owned();
    let report = cache
        .warm(
            ["short", "long"],
            |key: String| async move { Ok::<_, String>(key) },
            WarmOptions::default().ttl(Duration::from_millis(300)),
        )
        .await
        .expect("warm");
    assert_eq!(report.loaded(), 2, "{name}");
    let report = cache
        .warm(
            ["long"],
            // An async closure works as a loader too.
            async |key: String| Ok::<_, String>(key),
            WarmOptions::default().ttl(Ttl::Never),
        )
        .await
        .expect("warm");
    assert_eq!(report.loaded(), 1, "{name}");
    assert!(cache.exists("short").await.expect("exists"), "{name}");
    // 300 ms with at most 10 % jitter (reads go by the expiry in the value, also on
    // memcached, whose server counts whole seconds).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cache.get::<String>("short").await.expect("get"),
        None,
        "{name}"
    );
    assert_eq!(
        cache.get::<String>("long").await.expect("get"),
        Some("long".to_owned()),
        "{name}"
    );
}

struct Catalog {
    cache: Cache,
    runs: RunCounter,
}

impl Catalog {
    /// An automatic key (module path, version, argument hash): warming must write exactly it.
    #[cacheable(cache = self.cache, ttl = 60)]
    async fn price(&self, id: u64) -> Result<u64, std::io::Error> {
        self.runs.hit();
        Ok(id * 100)
    }
}

async fn a_cacheable_function_reads_warmed_values(cache: Cache) {
    let name = cache.name().to_owned();
    let catalog = Catalog {
        cache: cache.clone(),
        runs: RunCounter::default(),
    };
    let ids = [1u64, 2, 3];
    let report = cache
        .warm(
            ids.map(|id| catalog.price_cache_key(id)),
            |key: String| {
                let id = ids
                    .into_iter()
                    .find(|&id| catalog.price_cache_key(id) == key);
                async move { id.map(|id| id * 100).ok_or("unknown key") }
            },
            WarmOptions::default(),
        )
        .await
        .expect("warm");
    assert_eq!(report.loaded(), 3, "{name}: {report}");
    for id in ids {
        assert_eq!(catalog.price(id).await.expect("price"), id * 100, "{name}");
    }
    assert_eq!(catalog.runs.get(), 0, "{name}: every call was a warmed hit");
    assert_eq!(catalog.price(4).await.expect("price"), 400, "{name}");
    assert_eq!(catalog.runs.get(), 1, "{name}: a cold key runs the body");
}

/// One test per scenario and backend; each gets a fresh cache (and server).
macro_rules! on_every_backend {
    ($($backend:ident),* ; $scenarios:tt) => {
        $( on_every_backend!(@one $backend $scenarios); )*
    };
    (@one $backend:ident [$($scenario:ident),*]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (cache, _server) = super::$backend().await;
                    super::$scenario(cache).await;
                }
            )*
        }
    };
}

on_every_backend!(memory, memory_bytes, redis, memcached; [
    loads_every_key,
    skip_existing_does_not_call_the_loader,
    one_failing_key_does_not_stop_the_others,
    concurrency_bound_is_respected,
    zero_ttl_is_rejected_before_loading,
    warmed_values_expire_with_the_ttl,
    a_cacheable_function_reads_warmed_values
]);

/// A server that stops answering: every key gets its own error, none hangs, and with
/// `skip_existing` no loader runs for a key that could not be checked.
#[tokio::test]
async fn redis_not_answering_is_reported_per_key() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("warm-down:")
        .op_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect");
    let cache = Cache::from_backend("redis", backend);
    cache.ping().await.expect("ping");
    server.pause();
    let runs = RunCounter::default();
    let loader = |key: String| {
        runs.hit();
        async move { Ok::<_, String>(key) }
    };

    let checked = tokio::time::timeout(
        Duration::from_secs(20),
        cache.warm(
            keys("down", 10),
            loader,
            WarmOptions::default().skip_existing(true),
        ),
    )
    .await
    .expect("the warm-up ends")
    .expect("warm");
    assert_eq!(checked.failed(), 10, "{checked}");
    assert!(
        checked
            .iter()
            .all(|(_, o)| matches!(o, WarmOutcome::CheckFailed(CacheError::Backend { .. }))),
        "{checked:?}"
    );
    assert_eq!(runs.get(), 0, "no loader runs for an unchecked key");

    let stored = tokio::time::timeout(
        Duration::from_secs(20),
        cache.warm(keys("down", 10), loader, WarmOptions::default()),
    )
    .await
    .expect("the warm-up ends")
    .expect("warm");
    assert_eq!(runs.get(), 10);
    assert!(
        stored
            .iter()
            .all(|(_, o)| matches!(o, WarmOutcome::StoreFailed(CacheError::Backend { .. }))),
        "{stored:?}"
    );
    server.resume();
}

/// A value memcached refuses (over its 1 MiB item limit) fails that key only.
#[tokio::test]
async fn memcached_refusing_one_value_fails_that_key_only() {
    let (cache, _server) = memcached().await;
    let report = cache
        .warm(
            ["small:1", "huge", "small:2"],
            |key: String| async move {
                let size = if key == "huge" { 2 << 20 } else { 16 };
                // Characters that do not compress, so "huge" stays over the limit.
                let mut x = 0x9E37_79B9_7F4A_7C15_u64;
                let text: String = (0..size)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        char::from(b'!' + (x % 94) as u8)
                    })
                    .collect();
                Ok::<_, String>(text)
            },
            WarmOptions::default(),
        )
        .await
        .expect("warm");
    assert_eq!((report.loaded(), report.failed()), (2, 1), "{report}");
    assert!(
        matches!(report.get("huge"), Some(WarmOutcome::StoreFailed(_))),
        "{report:?}"
    );
    assert!(cache.exists("small:2").await.expect("exists"));
    assert!(!cache.exists("huge").await.expect("exists"));
}

/// A disabled cache stores nothing, so warming it loads nothing.
#[tokio::test]
async fn a_disabled_cache_calls_no_loader() {
    let mut options = CacheOptions::default();
    options.enabled = false;
    let cache = Cache::with_options(
        "off",
        MemoryBackend::builder().build().expect("build"),
        options,
    );
    let runs = RunCounter::default();
    let report = cache
        .warm(
            keys("off", 3),
            |_key: String| {
                runs.hit();
                async { Ok::<_, String>(1u8) }
            },
            WarmOptions::default(),
        )
        .await
        .expect("warm");
    assert_eq!(runs.get(), 0);
    assert_eq!(report.skipped(), 3, "{report}");
}

/// Warmed values are stored as fills store them: ttls spread by the jitter, the load time
/// recorded for early refresh, and the stale-if-error window kept.
#[tokio::test]
async fn redis_warmed_values_are_stored_like_fills() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("warm-env:")
        .connect()
        .await
        .expect("connect");
    let mut options = CacheOptions::default();
    options.ttl_jitter = 0.2;
    options.stale_if_error = Some(Duration::from_secs(30));
    let cache = Cache::with_options("redis", backend, options);
    let report = cache
        .warm(
            keys("env", 20),
            |_key: String| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, String>(1u8)
            },
            WarmOptions::default().ttl(Duration::from_secs(100)),
        )
        .await
        .expect("warm");
    assert_eq!(report.loaded(), 20, "{report}");

    let mut lifetimes = Vec::new();
    for key in keys("env", 20) {
        let bytes = cache.raw(&key).await.expect("raw").expect("stored");
        let env = Envelope::parse(&bytes).expect("an envelope");
        let ttl_ms = env.expires_at_ms - env.stored_at_ms;
        assert!((80_000..=120_000).contains(&ttl_ms), "{key}: {ttl_ms} ms");
        assert_eq!(env.keep_until_ms - env.expires_at_ms, 30_000, "{key}");
        assert!(env.compute_us >= 5_000, "{key}: {} µs", env.compute_us);
        lifetimes.push(ttl_ms);
    }
    lifetimes.sort_unstable();
    lifetimes.dedup();
    assert!(
        lifetimes.len() > 1,
        "jitter spreads the expiries: {lifetimes:?}"
    );
}
