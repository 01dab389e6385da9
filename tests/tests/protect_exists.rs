//! `exists` follows one rule on every backend: a value past its expiry is not there, even while
//! it is kept inside its stale-if-error window for a failing refill.

use std::sync::Arc;
use std::time::Duration;

use lexigram_cache::{Cache, CacheOptions, MemcachedBackend, MemoryBackend, RedisBackend};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};

fn options() -> CacheOptions {
    let mut options = CacheOptions::default();
    options.stale_if_error = Some(Duration::from_secs(60));
    options.ttl_jitter = 0.0;
    options
}

/// Fills `k` for 300 ms, lets it expire, and checks `exists` against what reads see.
async fn a_stale_value_does_not_exist(cache: &Cache) {
    let name = cache.name().to_owned();
    let filled: Result<u32, String> = cache
        .try_get_or_insert_with("k", Duration::from_millis(300), || async { Ok(1) })
        .await;
    assert_eq!(filled, Ok(1), "{name}");
    assert!(cache.exists("k").await.expect("exists"), "{name}: fresh");
    assert!(!cache.exists("other").await.expect("exists"), "{name}");

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.get::<u32>("k").await.expect("get"), None, "{name}");
    assert!(
        !cache.exists("k").await.expect("exists"),
        "{name}: past its expiry, as for get"
    );
    // The value is still kept for stale-if-error: a failing refill gets it.
    let refill: Result<u32, String> = cache
        .try_get_or_insert_with("k", Duration::from_millis(300), || async {
            Err("db down".to_owned())
        })
        .await;
    assert_eq!(refill, Ok(1), "{name}: inside the stale window");
    assert!(!cache.exists("k").await.expect("exists"), "{name}");

    // A value of another type exists (a read of its own type would return it).
    cache
        .set("typed", &"text".to_owned(), Duration::from_secs(60))
        .await
        .expect("set");
    assert!(cache.exists("typed").await.expect("exists"), "{name}");
}

#[tokio::test]
async fn memory_typed_and_through_the_byte_level_trait() {
    let memory = MemoryBackend::builder().build().expect("build");
    a_stale_value_does_not_exist(&Cache::with_options("memory", memory.clone(), options())).await;
    let bytes = MemoryBackend::builder().build().expect("build");
    a_stale_value_does_not_exist(&Cache::with_options(
        "memory-bytes",
        Arc::new(bytes),
        options(),
    ))
    .await;
}

#[tokio::test]
async fn redis() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("exists:")
        .connect()
        .await
        .expect("connect");
    a_stale_value_does_not_exist(&Cache::with_options("redis", backend, options())).await;
}

#[tokio::test]
async fn memcached() {
    let server = MemcachedServer::start();
    let backend = MemcachedBackend::builder([server.addr()])
        .prefix("exists:")
        .build()
        .expect("build");
    a_stale_value_does_not_exist(&Cache::with_options("memcached", backend, options())).await;
}
