//! What each call does while the circuit breaker skips the backend, against a frozen
//! redis-server: explicit calls report the skipped operation as an error; fills serve the body's
//! value and never fail because of the cache.

use std::time::Duration;

use lexigram_cache::{BackendError, Cache, CacheError};
use lexigram_cache_tests::breaker::cache_with_a_sensitive_breaker;
use lexigram_cache_tests::servers::RedisServer;

fn is_circuit_open<T: std::fmt::Debug>(r: &Result<T, CacheError>) -> bool {
    matches!(
        r,
        Err(CacheError::Backend {
            source: BackendError::CircuitOpen { .. },
            ..
        })
    )
}

/// A cache over `server` whose breaker opens at the first failure and stays open for a minute.
async fn cache_with_an_open_breaker(server: &RedisServer) -> Cache {
    let cache = cache_with_a_sensitive_breaker(server, "open", Duration::from_secs(60)).await;
    server.pause();
    let timed_out = cache.get::<u32>("k").await;
    assert!(
        matches!(
            timed_out,
            Err(CacheError::Backend {
                source: BackendError::Timeout(_),
                ..
            })
        ),
        "{timed_out:?}"
    );
    assert!(cache.stats().breaker_open);
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_calls_say_the_breaker_skipped_them() {
    let server = RedisServer::start();
    let cache = cache_with_an_open_breaker(&server).await;
    let errors_before = cache.stats().errors;

    let set = cache.set("k", &2u32, Duration::from_secs(60)).await;
    assert!(is_circuit_open(&set), "a dropped write is not Ok: {set:?}");
    let set_many = cache
        .set_many(&[("a", 1u32), ("b", 2u32)], Duration::from_secs(60))
        .await;
    assert!(is_circuit_open(&set_many), "{set_many:?}");
    let get = cache.get::<u32>("k").await;
    assert!(
        is_circuit_open(&get),
        "a skipped read is not a miss: {get:?}"
    );
    let get_many = cache.get_many::<u32>(&["k", "a"]).await;
    assert!(is_circuit_open(&get_many), "{get_many:?}");
    let delete = cache.delete("k").await;
    assert!(is_circuit_open(&delete), "{delete:?}");
    let delete_many = cache.delete_many(&["k", "a"]).await;
    assert!(is_circuit_open(&delete_many), "{delete_many:?}");
    let exists = cache.exists("k").await;
    assert!(is_circuit_open(&exists), "{exists:?}");
    let pattern = cache.delete_pattern("a*").await;
    assert!(is_circuit_open(&pattern), "{pattern:?}");
    let clear = cache.clear().await;
    assert!(is_circuit_open(&clear), "{clear:?}");
    let keys = cache.keys("*", 10).await;
    assert!(is_circuit_open(&keys), "{keys:?}");

    let stats = cache.stats();
    assert_eq!(
        stats.errors, errors_before,
        "short circuits are counted as such, not as backend errors: {stats:?}"
    );
    assert!(stats.breaker_short_circuits >= 10, "{stats:?}");
    server.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_serve_the_body_while_the_breaker_is_open() {
    let server = RedisServer::start();
    let cache = cache_with_an_open_breaker(&server).await;
    let v = cache
        .get_or_insert_with("k", Duration::from_secs(60), || async { 7u32 })
        .await;
    assert_eq!(v, 7, "the body's value, not the unreachable cached 1");
    let r: Result<u32, std::io::Error> = cache
        .try_get_or_insert_with("k", Duration::from_secs(60), || async { Ok(8) })
        .await;
    assert_eq!(r.expect("a fill never fails because of the cache"), 8);
    assert_eq!(cache.stats().fills, 2);
    server.resume();
}
