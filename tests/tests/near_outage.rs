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
    // One timeout opens the breaker (threshold 1): the read past the cap, which goes on in
    // the background once the held value is served; from then on nothing waits for the server.
    assert_eq!(cache.get::<u32>("k").await.expect("near"), Some(1));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cache.stats().breaker_open {
        assert!(Instant::now() < deadline, "one timeout opened the breaker");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_values_do_not_wait_for_a_server_that_stopped_answering() {
    let server = RedisServer::start();
    // The breaker stays closed (threshold 0): only the near tier's own patience is at work.
    let cache = near_cache(&server.url(), Duration::from_millis(200), 0);
    live(&cache).await;
    for (k, v) in [("a", 1u32), ("b", 2), ("c", 3)] {
        cache.set(k, &v, None).await.expect("set");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.pause();
    let started = Instant::now();
    let first = cache.get::<u32>("a").await;
    let first_took = started.elapsed();
    let started = Instant::now();
    let mut rest = Vec::new();
    for _ in 0..20 {
        for k in ["b", "c", "a"] {
            rest.push(cache.get::<u32>(k).await.expect("held"));
        }
    }
    let rest_took = started.elapsed();
    server.resume();
    assert_eq!(first.expect("held"), Some(1));
    assert!(
        rest.chunks(3).all(|r| r == [Some(2), Some(3), Some(1)]),
        "{rest:?}"
    );
    // Without patience each of these reads waits out op_timeout (200 ms).
    assert!(
        first_took < Duration::from_millis(150),
        "the first read past the cap took {first_took:?}"
    );
    assert!(
        rest_took < Duration::from_millis(150),
        "60 reads of held values took {rest_took:?}: a server that stopped answering is not waited for again"
    );
    // Once the server answers again, held values are read afresh: a value changed on the
    // server without an announcement is seen.
    let mut raw = redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    cache.set("scratch", &9u32, None).await.expect("set");
    let nine: Vec<u8> = redis::cmd("GET")
        .arg("outage:scratch")
        .query_async(&mut raw)
        .await
        .expect("raw GET");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Each pass puts the unannounced value back: a refresh still in flight from the stop
        // may land the old one after it.
        redis::cmd("SET")
            .arg("outage:a")
            .arg(&nine)
            .query_async::<()>(&mut raw)
            .await
            .expect("raw SET");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let got = cache.get::<u32>("a").await.expect("get");
        if got == Some(9) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held value was never read afresh after the server came back: {got:?}"
        );
    }
}
