//! The cache budget of one cached call, against a real `redis-server` frozen with SIGSTOP: the
//! cache I/O of a call (the read, the fill lock, the store) shares one deadline, so a call
//! pays the operation timeout once, not once per round trip, and the store it could not wait
//! for finishes in the background.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lexigram_cache::{
    BackendConfig, Cache, CacheConfig, CacheModule, CacheOptions, RedisBackend, cacheable,
};
use lexigram_cache_tests::servers::RedisServer;

const OP_TIMEOUT: Duration = Duration::from_millis(300);
const BODY: Duration = Duration::from_millis(50);

fn cache_at(url: &str, op_timeout: Duration) -> Cache {
    let backend = RedisBackend::builder(url)
        .prefix("budget:")
        .op_timeout(op_timeout)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("build");
    let mut options = CacheOptions::default();
    // High enough that the breaker stays closed: every call meets the frozen server.
    options.breaker_threshold = 100_000;
    Cache::with_options("budget", backend, options)
}

/// A cold call's body, tagged with its key.
async fn body(key: String) -> String {
    tokio::time::sleep(BODY).await;
    format!("value of {key}")
}

/// Reads `key` until it holds a value, or `limit` passes.
async fn until_stored(cache: &Cache, key: &str, limit: Duration) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(v)) = cache.get::<String>(key).await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Before the budget, a cold call against a frozen server paid the timeout for the read, again
/// for the fill lock, and again for the store (about 950 ms here). Now the read spends the
/// budget, the lock is skipped, the body runs, and the store goes on in the background: the
/// call returns after about one timeout plus the body, and the value lands once the server
/// thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_call_against_a_frozen_redis_pays_one_op_timeout() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url(), OP_TIMEOUT);
    cache.ping().await.expect("redis answers before the pause");

    server.pause();
    let calls = (0..8).map(|i| {
        let cache = cache.clone();
        tokio::spawn(async move {
            let key = format!("cold-{i}");
            let started = Instant::now();
            let v = cache
                .get_or_insert_with(&key, None, || body(key.clone()))
                .await;
            assert_eq!(v, format!("value of {key}"));
            started.elapsed()
        })
    });
    let took = futures::future::join_all(calls).await;
    server.resume();
    let slowest = took
        .into_iter()
        .map(|t| t.expect("call"))
        .max()
        .unwrap_or_default();
    println!("slowest cold call while Redis was frozen: {slowest:?}");
    // One timeout plus the body is 350 ms; two timeouts are what the old path paid at least.
    assert!(
        slowest < 2 * OP_TIMEOUT,
        "a cold call took {slowest:?} against a frozen server"
    );

    for i in 0..8 {
        let key = format!("cold-{i}");
        assert_eq!(
            until_stored(&cache, &key, Duration::from_secs(3))
                .await
                .as_deref(),
            Some(format!("value of {key}").as_str()),
            "the store of {key} never landed after the server thawed"
        );
    }
    let stats = cache.stats();
    assert_eq!(stats.background_writes, 8, "{stats:?}");
    assert_eq!(stats.background_writes_dropped, 0, "{stats:?}");
    assert_eq!(stats.sets, 8, "{stats:?}");
    // The eight reads timed out; the stores that finished in the background did not fail.
    assert_eq!(stats.errors, 8, "{stats:?}");
    assert!(!stats.breaker_open, "{stats:?}");
}

static FROZEN: OnceLock<Cache> = OnceLock::new();

#[cacheable(cache = FROZEN.get().expect("set by the test"), ttl = 60, key = "report:{id}")]
async fn report(id: u32) -> String {
    tokio::time::sleep(BODY).await;
    format!("report {id}")
}

/// The same budget holds for `#[cacheable]` functions, call after call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacheable_calls_against_a_frozen_redis_pay_one_op_timeout_each() {
    let server = RedisServer::start();
    let cache = FROZEN.get_or_init(|| cache_at(&server.url(), OP_TIMEOUT));
    cache.ping().await.expect("redis answers before the pause");

    server.pause();
    let mut slowest = Duration::ZERO;
    for id in 0..4 {
        let started = Instant::now();
        assert_eq!(report(id).await, format!("report {id}"));
        slowest = slowest.max(started.elapsed());
    }
    server.resume();
    println!("slowest #[cacheable] call while Redis was frozen: {slowest:?}");
    assert!(
        slowest < 2 * OP_TIMEOUT,
        "a cold call took {slowest:?} against a frozen server"
    );
    // The last store was still waiting when the server thawed.
    assert_eq!(
        until_stored(cache, "report:3", Duration::from_secs(3)).await,
        Some("report 3".to_owned())
    );
    let stats = cache.stats();
    assert_eq!(stats.background_writes, 4, "{stats:?}");
}

static FROZEN_TAGGED: OnceLock<Cache> = OnceLock::new();

#[cacheable(
    cache = FROZEN_TAGGED.get().expect("set by the test"),
    ttl = 60,
    key = "tagged:{id}",
    tags = ["user:{id}"]
)]
async fn tagged_report(id: u32) -> String {
    tokio::time::sleep(BODY).await;
    format!("report {id}")
}

/// A tagged function's read of its tags' versions is one more round trip of the same
/// budget, not one more `op_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_call_against_a_frozen_redis_pays_one_op_timeout() {
    let server = RedisServer::start();
    let cache = FROZEN_TAGGED.get_or_init(|| cache_at(&server.url(), OP_TIMEOUT));
    cache.ping().await.expect("redis answers before the pause");

    server.pause();
    let started = Instant::now();
    assert_eq!(tagged_report(1).await, "report 1");
    let took = started.elapsed();
    server.resume();
    println!("a tagged #[cacheable] call while Redis was frozen: {took:?}");
    assert!(
        took < 2 * OP_TIMEOUT,
        "a cold tagged call took {took:?} against a frozen server"
    );
}

/// A frozen server under load leaves at most `1024` writes waiting in the background per
/// cache; past that, writes are dropped and counted, and the calls still return at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_writes_past_the_cap_are_dropped_and_counted() {
    const CALLS: u64 = 1200;
    let server = RedisServer::start();
    // Long enough that no background write times out before every call has handed its own
    // over.
    let op_timeout = Duration::from_secs(2);
    let cache = cache_at(&server.url(), op_timeout);
    cache.ping().await.expect("redis answers before the pause");

    server.pause();
    let started = Instant::now();
    let calls = (0..CALLS).map(|i| {
        let cache = cache.clone();
        tokio::spawn(async move {
            let key = format!("many-{i}");
            cache
                .get_or_insert_with(&key, None, || async move { format!("value {i}") })
                .await
        })
    });
    for call in futures::future::join_all(calls).await {
        assert!(call.expect("call").starts_with("value "));
    }
    let took = started.elapsed();
    let stats = cache.stats();
    server.resume();
    println!("{CALLS} concurrent cold calls against a frozen Redis took {took:?}: {stats:?}");
    assert!(took < 2 * op_timeout, "{took:?}");
    assert_eq!(
        stats.background_writes + stats.background_writes_dropped,
        CALLS,
        "{stats:?}"
    );
    assert!(stats.background_writes <= 1024, "{stats:?}");
    assert!(stats.background_writes_dropped >= CALLS - 1024, "{stats:?}");
}

/// `backends[].call_budget` shorter than `op_timeout` cuts the read itself: the call returns
/// after the budget, and the cut read counts as a failure like a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_call_budget_cuts_a_round_trip_short() {
    let server = RedisServer::start();
    let mut backend = BackendConfig::redis("budget", server.url());
    backend.op_timeout = Duration::from_secs(2);
    backend.call_budget = Some(Duration::from_millis(200));
    let mut config = CacheConfig::default();
    config.backends = vec![backend];
    config.service.breaker_threshold = 100_000;
    let caches = CacheModule::configure(config).await.expect("boots");
    let cache = caches.cache();
    assert_eq!(
        cache.options().call_budget,
        Some(Duration::from_millis(200))
    );

    server.pause();
    let started = Instant::now();
    let v = cache
        .get_or_insert_with("cut", None, || body("cut".to_owned()))
        .await;
    let took = started.elapsed();
    server.resume();
    assert_eq!(v, "value of cut");
    println!("a cold call with a 200 ms budget and a 2 s op_timeout took {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let stats = cache.stats();
    assert_eq!(stats.errors, 1, "the cut read counts: {stats:?}");
    assert_eq!(stats.background_writes, 1, "{stats:?}");
    assert_eq!(
        until_stored(&cache, "cut", Duration::from_secs(3)).await,
        Some("value of cut".to_owned())
    );
}
