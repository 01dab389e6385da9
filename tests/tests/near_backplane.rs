//! The near cache over Memcached kept coherent through a Redis backplane: Memcached has no
//! pub/sub, so the invalidations travel over a Redis of their own. Each `Cache` here has a
//! near tier with its own origin id, as two processes would.

use std::time::{Duration, Instant};

use lexigram_cache::{
    BackendConfig, Cache, CacheConfig, CacheModule, CacheOptions, MemcachedBackend, NearOptions,
    RedisBackend,
};
use lexigram_cache_tests::config::{from_vars, message};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};

/// A cache over `memcached` whose near tier holds values for a minute: only an invalidation
/// can make it read the server again within a test. `backplane`: the Redis that carries them.
fn near_cache(memcached: &MemcachedServer, backplane: Option<&RedisServer>) -> Cache {
    let backend = MemcachedBackend::builder([memcached.addr()])
        .prefix("bp:")
        .build()
        .expect("memcached backend");
    let mut near = NearOptions::default();
    near.ttl = Duration::from_secs(60);
    match backplane {
        Some(redis) => {
            near.backplane = Some(
                RedisBackend::builder(redis.url())
                    .prefix("bp:")
                    .build()
                    .expect("backplane"),
            );
        }
        None => near.ttl_only = true,
    }
    let mut options = CacheOptions::default();
    options.near = Some(near);
    options.breaker_threshold = 0;
    Cache::with_options("bp", backend, options)
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_deletes_over_memcached_reach_the_other_near_cache() {
    let memcached = MemcachedServer::start();
    let redis = RedisServer::start();
    let a = near_cache(&memcached, Some(&redis));
    let b = near_cache(&memcached, Some(&redis));
    until("both near tiers subscribe", async || {
        a.stats().near_live && b.stats().near_live
    })
    .await;
    a.set("k", &1u32, None).await.expect("set");
    // a's set is announced too: once b has heard it, a read of b's is not voided by it.
    until("b hears a's first write", async || {
        b.stats().near_invalidations >= 1
    })
    .await;
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    assert!(b.stats().near_hits >= 1, "b holds k in its near tier");
    a.set("k", &2u32, None).await.expect("set");
    until("b reads a's new value", async || {
        b.get::<u32>("k").await.expect("get") == Some(2)
    })
    .await;
    a.delete("k").await.expect("delete");
    until("b sees a's delete", async || {
        b.get::<u32>("k").await.expect("get").is_none()
    })
    .await;
    assert!(b.stats().near_invalidations >= 3, "{:?}", b.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_backplane_the_other_near_cache_keeps_its_value_until_its_ttl() {
    let memcached = MemcachedServer::start();
    let a = near_cache(&memcached, None);
    let b = near_cache(&memcached, None);
    a.set("k", &1u32, None).await.expect("set");
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    a.set("k", &2u32, None).await.expect("set");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.get::<u32>("k").await.expect("get"),
        Some(1),
        "nothing tells b: it serves what it holds (this is what the backplane changes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backplane_from_configuration_turns_a_coherent_near_cache_on() {
    let memcached = MemcachedServer::start();
    let redis = RedisServer::start();
    let boot = async || {
        let mut b = BackendConfig::memcached("default", [memcached.addr()]);
        b.prefix = "cfg:".into();
        b.near.backplane = Some(redis.url().into());
        let mut config = CacheConfig::default();
        config.backends = vec![b];
        CacheModule::configure(config).await.expect("boot").cache()
    };
    let (a, b) = (boot().await, boot().await);
    until("both near tiers subscribe", async || {
        a.stats().near_live && b.stats().near_live
    })
    .await;
    a.set("k", &"one".to_string(), None).await.expect("set");
    assert_eq!(
        b.get::<String>("k").await.expect("get").as_deref(),
        Some("one")
    );
    a.set("k", &"two".to_string(), None).await.expect("set");
    until("b reads a's new value", async || {
        b.get::<String>("k").await.expect("get").as_deref() == Some("two")
    })
    .await;
}

#[test]
fn a_backplane_is_set_from_the_environment_and_only_for_memcached() {
    let config = from_vars(&[
        ("LEX_CACHE__BACKENDS__0__TYPE", "memcached"),
        ("LEX_CACHE__BACKENDS__0__SERVERS__0", "127.0.0.1:11211"),
        (
            "LEX_CACHE__BACKENDS__0__NEAR__BACKPLANE",
            "redis://:hunter2@127.0.0.1:6379/0",
        ),
    ])
    .expect("loads");
    let url = config.backends[0].near.backplane.as_ref().expect("set");
    assert!(!format!("{url:?} {url}").contains("hunter2"), "{url:?}");
    config.validate().expect("valid");
    let t = message(
        from_vars(&[
            ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
            (
                "LEX_CACHE__BACKENDS__0__REDIS_URL",
                "redis://127.0.0.1:6379",
            ),
            (
                "LEX_CACHE__BACKENDS__0__NEAR__BACKPLANE",
                "redis://127.0.0.1:6380",
            ),
        ])
        .expect("loads")
        .validate(),
    );
    assert!(
        t.contains("backends[0].near.backplane")
            && t.contains("LEX_CACHE__BACKENDS__0__NEAR__BACKPLANE")
            && t.contains("memcached"),
        "{t}"
    );
}
