//! The near cache while its Redis cannot answer (SIGSTOP): a value the tier holds past its ttl
//! cap, but before the value's own expiry, is served instead of an error or a body run, since
//! nobody can change the value on a server that answers nobody.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lexigram_cache::{Cache, CacheOptions, NearOptions, RedisBackend};
use lexigram_cache_tests::servers::RedisServer;

fn near_cache(url: &str, cap: Duration, breaker_threshold: u32) -> Cache {
    let backend = RedisBackend::builder(url)
        .prefix("outage:")
        .op_timeout(Duration::from_millis(200))
        .build()
        .expect("backend");
    let mut near = NearOptions::default();
    near.ttl = cap;
    let mut options = CacheOptions::default();
    options.near = Some(near);
    options.breaker_threshold = breaker_threshold;
    options.breaker_open_for = Duration::from_secs(30);
    Cache::with_options("outage", backend, options)
}

async fn live(cache: &Cache) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.stats().near_live {
        assert!(Instant::now() < deadline, "the near tier never subscribed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_past_the_cap_is_served_while_the_server_does_not_answer() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), Duration::from_millis(200), 0);
    live(&cache).await;
    cache.set("k", &"v1".to_string(), None).await.expect("set");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.pause();
    let got = cache.get::<String>("k").await;
    let runs = AtomicU32::new(0);
    let filled = cache
        .get_or_insert_with("k", None, || async {
            runs.fetch_add(1, Ordering::SeqCst);
            "from the body".to_string()
        })
        .await;
    server.resume();
    assert_eq!(
        got.expect("served by the near tier, not an error")
            .as_deref(),
        Some("v1")
    );
    assert_eq!(filled, "v1");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the body did not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_breaker_is_open_held_values_are_served_at_once() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), Duration::from_millis(200), 1);
    live(&cache).await;
    cache.set("k", &1u32, None).await.expect("set");
    cache.set("other", &2u32, None).await.expect("set");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.pause();
    // One timeout opens the breaker (threshold 1); from then on nothing waits for the server.
    assert_eq!(cache.get::<u32>("k").await.expect("near"), Some(1));
    assert!(cache.stats().breaker_open, "one timeout opened the breaker");
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(cache.get::<u32>("other").await.expect("near"), Some(2));
        assert_eq!(cache.get::<u32>("k").await.expect("near"), Some(1));
    }
    let took = started.elapsed();
    server.resume();
    assert!(
        took < Duration::from_millis(190),
        "200 reads while the breaker is open took {took:?}: each is served in process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_past_its_own_expiry_is_never_served() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), Duration::from_millis(200), 0);
    live(&cache).await;
    cache
        .set("k", &1u32, Some(Duration::from_millis(500)))
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.pause();
    let got = cache.get::<u32>("k").await;
    server.resume();
    assert!(
        !matches!(got, Ok(Some(_))),
        "an expired value must not come back: {got:?}"
    );
}
