//! Keys the cache keeps for itself (fill locks, tag versions) are out of reach of the keys
//! callers write, including keys built from outside data such as a template's `{name}`.

use std::time::{Duration, Instant};

use lexigram_cache::{
    Cache, CacheError, CacheOptions, MemcachedBackend, MemoryBackend, RedisBackend,
};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};

fn options() -> CacheOptions {
    let mut options = CacheOptions::default();
    options.lock_wait = Duration::from_secs(4);
    options
}

/// A caller's key that ends the way a lock's name once did does not hold another key's
/// fill lock: the fill of `user:bob` takes its own lock at once instead of waiting out
/// `lock_wait` for a lock nobody holds, and the caller's value is left as it was.
async fn a_key_that_looks_like_a_lock_is_only_a_key(cache: &Cache) {
    cache
        .set("user:bob\0lock", &"mine".to_owned(), None)
        .await
        .expect("an ordinary key");
    let started = Instant::now();
    let v = cache
        .get_or_insert_with("user:bob", None, || async { 7u32 })
        .await;
    let took = started.elapsed();
    assert_eq!(v, 7);
    assert!(
        took < Duration::from_secs(2),
        "the fill waited {took:?} for a lock the caller's key seemed to hold"
    );
    assert_eq!(cache.get::<u32>("user:bob").await.expect("get"), Some(7));
    assert_eq!(
        cache.get::<String>("user:bob\0lock").await.expect("get"),
        Some("mine".to_owned())
    );
}

/// Writes of keys in the reserved space (a NUL first) are refused, on every backend, and a
/// fill of such a key runs its body without storing.
async fn reserved_keys_are_refused(cache: &Cache) {
    for key in [
        "\0lexigram-cache:tag:users",
        "\0lexigram-cache:lock:user:bob",
        "\0x",
    ] {
        let set = cache.set(key, &1u64, None).await;
        assert!(
            matches!(set, Err(CacheError::ReservedKey(ref k)) if k == key),
            "set {key:?}: {set:?}"
        );
        let many = cache.set_many(&[(key, 1u64)], None).await;
        assert!(
            matches!(many, Err(CacheError::ReservedKey(_))),
            "set_many {key:?}: {many:?}"
        );
        let deleted = cache.delete(key).await;
        assert!(
            matches!(deleted, Err(CacheError::ReservedKey(_))),
            "delete {key:?}: {deleted:?}"
        );
        let pattern = format!("{key}*");
        let removed = cache.delete_pattern(&pattern).await;
        assert!(
            matches!(removed, Err(CacheError::ReservedKey(_))),
            "delete_pattern {pattern:?}: {removed:?}"
        );
        let v = cache.get_or_insert_with(key, None, || async { 3u64 }).await;
        assert_eq!(v, 3);
        assert_eq!(
            cache.get::<u64>(key).await.expect("a read is allowed"),
            None
        );
    }
    let message = CacheError::ReservedKey("\0x".into()).to_string();
    assert!(message.contains("NUL"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("reserved:")
        .build()
        .expect("backend");
    let cache = Cache::with_options("redis", backend, options());
    a_key_that_looks_like_a_lock_is_only_a_key(&cache).await;
    reserved_keys_are_refused(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_memcached() {
    let server = MemcachedServer::start();
    let backend = MemcachedBackend::builder([server.addr()])
        .prefix("reserved:")
        .build()
        .expect("backend");
    let cache = Cache::with_options("memcached", backend, options());
    a_key_that_looks_like_a_lock_is_only_a_key(&cache).await;
    reserved_keys_are_refused(&cache).await;
}

#[tokio::test]
async fn on_memory() {
    let backend = MemoryBackend::builder().build().expect("backend");
    let cache = Cache::with_options("memory", backend, options());
    a_key_that_looks_like_a_lock_is_only_a_key(&cache).await;
    reserved_keys_are_refused(&cache).await;
}
