//! The longest durations the API accepts never panic: a ttl of `u64::MAX` seconds or
//! `Duration::MAX` (ttl jitter scales it), a stale-if-error window of "never" (`u64::MAX` ms, added
//! to the ttl) or `Duration::MAX`, the longest fill and lock waits, and a breaker open period of
//! `u64::MAX` seconds. Memory and a real redis-server.

use std::sync::Arc;
use std::time::Duration;

use lexigram_cache::{
    BackendError, Cache, CacheError, CacheOptions, MemoryBackend, RedisBackend, cacheable,
};
use lexigram_cache_tests::servers::RedisServer;

const HUGE_TTLS: [Duration; 2] = [Duration::from_secs(u64::MAX), Duration::MAX];
/// What `stale_if_error = "never"` becomes, and the largest `Duration`.
const HUGE_WINDOWS: [Duration; 2] = [Duration::from_millis(u64::MAX), Duration::MAX];

fn memory_caches(options: &CacheOptions) -> Vec<Cache> {
    let typed = MemoryBackend::builder().build().expect("build");
    let bytes = MemoryBackend::builder().build().expect("build");
    vec![
        Cache::with_options("memory", typed, options.clone()),
        Cache::with_options("memory-bytes", Arc::new(bytes), options.clone()),
    ]
}

async fn redis_cache(server: &RedisServer, options: &CacheOptions) -> Cache {
    let backend = RedisBackend::builder(server.url())
        .prefix("huge:")
        .connect()
        .await
        .expect("connect");
    Cache::with_options("redis", backend, options.clone())
}

/// Fills with each huge ttl (jitter on, the default) and returns whether each value was stored.
async fn fill_with_huge_ttls(cache: &Cache) -> Vec<bool> {
    let mut stored = Vec::new();
    for (i, ttl) in HUGE_TTLS.into_iter().enumerate() {
        let key = format!("ttl{i}");
        let v = cache.get_or_insert_with(&key, ttl, || async { 5u32 }).await;
        assert_eq!(v, 5, "{}: {ttl:?}", cache.name());
        let r: Result<u32, String> = cache
            .try_get_or_insert_with(&format!("try{i}"), ttl, || async { Ok(6) })
            .await;
        assert_eq!(r, Ok(6), "{}: {ttl:?}", cache.name());
        stored.push(cache.get::<u32>(&key).await.ok().flatten() == Some(5));
    }
    stored
}

#[tokio::test]
async fn huge_ttls_fill_without_panic_on_memory() {
    for cache in memory_caches(&CacheOptions::default()) {
        assert_eq!(
            fill_with_huge_ttls(&cache).await,
            [true, true],
            "{}: stored, as never expiring in practice",
            cache.name()
        );
    }
}

#[tokio::test]
async fn huge_ttls_fill_without_panic_on_redis() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, &CacheOptions::default()).await;
    // Whether Redis can hold such a ttl is the backend's business; the fill must serve the body.
    fill_with_huge_ttls(&cache).await;
}

/// Fills with a 60 s ttl under each huge stale-if-error window; returns whether each was stored.
async fn fill_with_huge_windows(
    options: &CacheOptions,
    cache_for: impl AsyncFn(&CacheOptions) -> Cache,
) -> Vec<bool> {
    let mut stored = Vec::new();
    for window in HUGE_WINDOWS {
        let mut options = options.clone();
        options.stale_if_error = Some(window);
        let cache = cache_for(&options).await;
        let r: Result<u32, String> = cache
            .try_get_or_insert_with("k", Duration::from_secs(60), || async { Ok(3) })
            .await;
        assert_eq!(r, Ok(3), "{}: {window:?}", cache.name());
        stored.push(cache.get::<u32>("k").await.ok().flatten() == Some(3));
    }
    stored
}

#[tokio::test]
async fn a_never_ending_stale_window_does_not_overflow_on_memory() {
    for i in 0..2 {
        let stored = fill_with_huge_windows(&CacheOptions::default(), async |o: &CacheOptions| {
            memory_caches(o).swap_remove(i)
        })
        .await;
        assert_eq!(stored, [true, true]);
    }
}

#[tokio::test]
async fn a_never_ending_stale_window_does_not_overflow_on_redis() {
    let server = RedisServer::start();
    fill_with_huge_windows(&CacheOptions::default(), async |o: &CacheOptions| {
        redis_cache(&server, o).await
    })
    .await;
}

// Through the byte-level trait, so the stale window is added to the ttl the backend stores.
static NEVER_STALE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(|| {
    Cache::from_backend(
        "never-stale",
        Arc::new(MemoryBackend::builder().build().expect("build")),
    )
});

#[cacheable(cache = &*NEVER_STALE, ttl = 60, stale_if_error = "never", key = "n:{id}")]
async fn never_stale(id: u32) -> Result<u32, String> {
    Ok(id)
}

#[tokio::test]
async fn the_macro_option_stale_if_error_never_stores() {
    assert_eq!(never_stale(4).await, Ok(4));
    assert_eq!(NEVER_STALE.get::<u32>("n:4").await.expect("get"), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_breaker_open_period_opens_without_panic() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("huge:")
        .op_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect");
    for open_for in [Duration::from_secs(u64::MAX), Duration::MAX] {
        let mut options = CacheOptions::default();
        options.breaker_threshold = 1;
        options.breaker_open_for = open_for;
        let cache = Cache::with_options("breaker", backend.clone(), options);
        server.pause();
        assert!(cache.get::<u32>("k").await.is_err(), "times out");
        server.resume();
        assert!(cache.stats().breaker_open, "{open_for:?}");
        let skipped = cache.get::<u32>("k").await;
        assert!(
            matches!(
                skipped,
                Err(CacheError::Backend {
                    source: BackendError::CircuitOpen { .. },
                    ..
                })
            ),
            "{skipped:?}"
        );
        assert_eq!(
            cache.get_or_insert_with("k", None, || async { 9u32 }).await,
            9
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_waits_do_not_overflow() {
    let server = RedisServer::start();
    let mut options = CacheOptions::default();
    options.fill_wait = Duration::MAX;
    options.lock_wait = Duration::MAX;
    options.lock_ttl = Duration::MAX;
    let mut caches = memory_caches(&options);
    caches.push(redis_cache(&server, &options).await);
    for cache in caches {
        let calls = (0..4).map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_insert_with("w", None, || async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        1u32
                    })
                    .await
            })
        });
        for v in futures::future::join_all(calls).await {
            assert_eq!(v.expect("task"), 1, "{}", cache.name());
        }
    }
}
