//! What a fill costs on the wire, counted by a proxy between the client and a real server: a
//! cold call (read, fill lock, store, unlock) in at most 3 round trips, a hit in 1, on Redis
//! and on Memcached. Also checks the proxy's black-hole and reset modes that fault tests use.

use std::time::Duration;

use lexigram_cache::{Cache, CacheBackend, MemcachedBackend, RedisBackend};
use lexigram_cache_tests::RunCounter;
use lexigram_cache_tests::proxy::{Mode, Proxy};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};

/// Runs one cold call and one hit of `get_or_insert_with` and returns their round trips.
async fn cold_and_hit(cache: &Cache, proxy: &Proxy) -> (usize, usize) {
    let runs = RunCounter::default();
    proxy.reset_counts();
    let v = cache
        .get_or_insert_with("user:1", Duration::from_secs(60), || async {
            runs.hit();
            41u32 + 1
        })
        .await;
    assert_eq!((v, runs.get()), (42, 1));
    let cold = proxy.round_trips();
    let cold_transcript = proxy.transcript();

    proxy.reset_counts();
    let v = cache
        .get_or_insert_with("user:1", Duration::from_secs(60), || async {
            runs.hit();
            0u32
        })
        .await;
    assert_eq!((v, runs.get()), (42, 1), "the second call is a hit");
    let hit = proxy.round_trips();
    assert!(
        cold <= 3,
        "a cold call took {cold} round trips:\n{cold_transcript}"
    );
    assert_eq!(
        hit,
        1,
        "a hit took {hit} round trips:\n{}",
        proxy.transcript()
    );
    (cold, hit)
}

#[tokio::test]
async fn a_cold_call_on_redis_takes_at_most_three_round_trips_and_a_hit_one() {
    let server = RedisServer::start();
    let proxy = Proxy::start(&format!("127.0.0.1:{}", server.port())).await;
    let backend = RedisBackend::builder(format!("redis://{}/0", proxy.addr()))
        .prefix("rt:")
        .connect()
        .await
        .expect("connect through the proxy");
    let cache = Cache::from_backend("redis", backend);
    let (cold, hit) = cold_and_hit(&cache, &proxy).await;
    println!("redis: cold {cold}, hit {hit}");
    assert_eq!(
        server.raw("DBSIZE").trim(),
        ":1",
        "the value is stored and the fill lock released"
    );
}

#[tokio::test]
async fn a_cold_call_on_memcached_takes_at_most_three_round_trips_and_a_hit_one() {
    let server = MemcachedServer::start();
    let proxy = Proxy::start(&server.addr()).await;
    let backend = MemcachedBackend::builder([proxy.addr()])
        .prefix("rt:")
        .pool_size(1)
        .build()
        .expect("build");
    backend.ping().await.expect("ping through the proxy");
    let cache = Cache::from_backend("memcached", backend.clone());
    let (cold, hit) = cold_and_hit(&cache, &proxy).await;
    println!("memcached: cold {cold}, hit {hit}");
    // Another caller's fill of the same key finds the lock free at once.
    assert!(
        cache.delete("user:1").await.expect("delete"),
        "the value was stored"
    );
    let started = std::time::Instant::now();
    let v = cache
        .get_or_insert_with("user:1", Duration::from_secs(60), || async { 7u32 })
        .await;
    assert_eq!(v, 7);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the fill lock of the first call was released (it lives 10 s)"
    );
}

#[tokio::test]
async fn the_proxy_black_holes_and_resets() {
    let server = RedisServer::start();
    let proxy = Proxy::start(&format!("127.0.0.1:{}", server.port())).await;
    let backend = RedisBackend::builder(format!("redis://{}/0", proxy.addr()))
        .op_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect through the proxy");
    backend.set("k", b"v", None).await.expect("set");
    assert_eq!(proxy.connections(), 1);

    proxy.set_mode(Mode::BlackHole);
    let err = backend.get("k").await.expect_err("nothing comes back");
    assert!(
        matches!(err, lexigram_cache::BackendError::Timeout(_)),
        "{err:?}"
    );
    assert_eq!(
        server.raw("GET k").trim(),
        "$1\r\nv",
        "the server itself still answers"
    );

    // Memcached's client drops a connection that timed out, so this one is fresh: forwarded
    // again, then reset while open.
    let memcached = MemcachedServer::start();
    let proxy_mc = Proxy::start(&memcached.addr()).await;
    let mc = MemcachedBackend::builder([proxy_mc.addr()])
        .pool_size(1)
        .op_timeout(Duration::from_millis(300))
        .build()
        .expect("build");
    mc.set("k", b"v", None)
        .await
        .expect("set through the proxy");
    proxy_mc.set_mode(Mode::Reset);
    let err = mc.get("k").await.expect_err("the open connection is reset");
    assert!(
        matches!(err, lexigram_cache::BackendError::Connection(_)),
        "a reset is a connection error, not a timeout: {err:?}"
    );

    proxy.set_mode(Mode::Reset);
    let mut raw = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut raw, &mut buf),
    )
    .await
    .expect("the proxy closes the connection at once");
    assert!(
        matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a new connection is reset: {read:?}"
    );
}

/// A fill dropped while its body runs releases the fill lock at once: another process's fill
/// of the key does not wait out the lock's 30 s ttl.
async fn a_dropped_fill_releases_its_lock(first: Cache, second: Cache) {
    let slow = first.get_or_insert_with("dropped", Duration::from_secs(60), || async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        1u32
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), slow)
            .await
            .is_err()
    );
    let started = std::time::Instant::now();
    let v = second
        .get_or_insert_with("dropped", Duration::from_secs(60), || async { 2u32 })
        .await;
    assert_eq!(v, 2);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the other fill waited {:?} for a lock whose holder was dropped",
        started.elapsed()
    );
}

fn with_long_lock(name: &str, backend: impl CacheBackend) -> Cache {
    let mut options = lexigram_cache::CacheOptions::default();
    options.lock_ttl = Duration::from_secs(30);
    options.lock_wait = Duration::from_secs(30);
    Cache::with_options(name, backend, options)
}

#[tokio::test]
async fn a_dropped_fill_releases_its_lock_on_redis() {
    let server = RedisServer::start();
    let backend = || async {
        RedisBackend::builder(server.url())
            .prefix("drop:")
            .connect()
            .await
            .expect("connect")
    };
    a_dropped_fill_releases_its_lock(
        with_long_lock("a", backend().await),
        with_long_lock("b", backend().await),
    )
    .await;
}

#[tokio::test]
async fn a_dropped_fill_releases_its_lock_on_memcached() {
    let server = MemcachedServer::start();
    let backend = || {
        MemcachedBackend::builder([server.addr()])
            .prefix("drop:")
            .build()
            .expect("build")
    };
    a_dropped_fill_releases_its_lock(
        with_long_lock("a", backend()),
        with_long_lock("b", backend()),
    )
    .await;
}
