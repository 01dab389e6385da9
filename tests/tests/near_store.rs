//! The store layer under the near cache: every remote call goes through the breaker and the
//! latency histogram, `get_many` hits reach the metrics, and the protections of a fill (XFetch
//! early refresh) keep working with a near tier in front of Redis; Memcached's near tier
//! relies on its ttl alone. Its own test binary: it installs the process-wide metrics recorder.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lexigram_cache::{
    BackendError, Cache, CacheError, CacheOptions, MemcachedBackend, NearOptions, RedisBackend,
};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

fn prometheus() -> &'static PrometheusHandle {
    static P: OnceLock<PrometheusHandle> = OnceLock::new();
    P.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder before any cache call")
    })
}

fn redis_cache(name: &str, url: &str, near: Option<NearOptions>, threshold: u32) -> Cache {
    let mut o = CacheOptions::default();
    o.near = near;
    o.breaker_threshold = threshold;
    o.breaker_open_for = Duration::from_secs(60);
    let backend = RedisBackend::builder(url)
        .prefix(format!("{name}:"))
        .op_timeout(Duration::from_millis(100))
        .build()
        .expect("backend");
    Cache::with_options(name, backend, o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_hits_and_every_remote_call_reach_the_metrics() {
    let text_before = prometheus().render();
    assert!(!text_before.contains(r#"cache="many""#));
    let server = RedisServer::start();
    let cache = redis_cache("many", &server.url(), None, 0);
    cache.set("a", &1u32, None).await.expect("set");
    cache.set("b", &2u32, None).await.expect("set");
    let got = cache
        .get_many::<u32>(&["a", "b", "c"])
        .await
        .expect("get_many");
    assert_eq!(got, vec![Some(1), Some(2), None]);
    assert!(cache.exists("a").await.expect("exists"));
    assert!(cache.delete("a").await.expect("delete"));
    assert_eq!(cache.delete_pattern("b*").await.expect("pattern"), 1);
    assert_eq!(
        cache.keys("*", 10).await.expect("keys"),
        Vec::<String>::new()
    );
    cache.clear().await.expect("clear");
    cache.raw("x").await.expect("raw");
    cache.ping().await.expect("ping");
    let text = prometheus().render();
    for line in [
        r#"lexigram_cache_hits_total{cache="many",fn=""} 2"#,
        r#"lexigram_cache_misses_total{cache="many",fn=""} 1"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    for op in [
        "get_many",
        "exists",
        "delete",
        "delete_pattern",
        "keys",
        "clear",
        "get",
        "ping",
    ] {
        let needle = format!(r#"lexigram_cache_backend_seconds_count{{cache="many",op="{op}"}}"#);
        assert!(text.contains(&needle), "`{op}` is not timed:\n{text}");
    }
}

/// With the breaker open, delete, exists, delete_pattern, clear, keys and raw are skipped
/// without touching the (stopped) server, each failing at once with `CircuitOpen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_skips_every_remote_call() {
    prometheus();
    let server = RedisServer::start();
    let cache = redis_cache("skipped", &server.url(), None, 1);
    cache.set("k", &1u32, None).await.expect("set");
    server.pause();
    assert!(cache.get::<u32>("k").await.is_err(), "opens the breaker");
    assert!(cache.stats().breaker_open);
    let started = Instant::now();
    let open = |r: Result<(), CacheError>| match r {
        Err(CacheError::Backend { source, .. }) => {
            matches!(source, BackendError::CircuitOpen { .. })
        }
        _ => false,
    };
    assert!(open(cache.delete("k").await.map(drop)), "delete");
    assert!(open(cache.exists("k").await.map(drop)), "exists");
    assert!(
        open(cache.delete_pattern("*").await.map(drop)),
        "delete_pattern"
    );
    assert!(open(cache.clear().await.map(drop)), "clear");
    assert!(open(cache.keys("*", 1).await.map(drop)), "keys");
    assert!(open(cache.raw("k").await.map(drop)), "raw");
    assert!(
        open(cache.delete_many(&["k"]).await.map(drop)),
        "delete_many"
    );
    let took = started.elapsed();
    server.resume();
    assert!(
        took < Duration::from_millis(90),
        "seven skipped calls took {took:?}; one call to the stopped server takes 100 ms"
    );
}

/// XFetch still refreshes a hot key shortly before it expires when the near tier serves it:
/// the tier keeps the value's expiry and compute time, so the fill path decides as it would
/// on a server read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_fires_through_the_near_tier() {
    prometheus();
    let server = RedisServer::start();
    let cache = redis_cache("xfetch", &server.url(), Some(NearOptions::default()), 0);
    while !cache.stats().near_live {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let body = || async {
        RUNS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        1u32
    };
    cache
        .get_or_insert_with("hot", Duration::from_millis(1500), body)
        .await;
    read_until_expiry_is_near(&cache, async || {
        cache
            .get_or_insert_with("hot", Duration::from_millis(1500), body)
            .await;
    })
    .await;
}

/// Reads a key with a 1.5 s ttl every 5 ms for 1.4 s, then asserts the near tier served it
/// and an early refresh fired before it expired.
async fn read_until_expiry_is_near(cache: &Cache, mut read: impl AsyncFnMut()) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1400) {
        read().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = cache.stats();
    assert!(s.near_hits > 10, "the tier served the key: {s:?}");
    assert!(
        s.early_refreshes >= 1,
        "no early refresh before expiry: {s:?}"
    );
}

/// Memcached cannot tell other processes of a change: with `ttl_only` its near tier serves
/// what it holds until the cap, then reads the server again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_near_tier_relies_on_its_ttl_cap() {
    prometheus();
    let server = MemcachedServer::start();
    let build = |near: Option<NearOptions>| {
        let mut o = CacheOptions::default();
        o.near = near;
        let backend = MemcachedBackend::builder([server.addr()])
            .prefix("mc:")
            .build()
            .expect("backend");
        Cache::with_options("mc", backend, o)
    };
    let mut near = NearOptions::default();
    near.ttl = Duration::from_millis(400);
    assert!(
        !build(Some(near.clone())).stats().near_live,
        "without ttl_only, Memcached gets no near tier"
    );
    near.ttl_only = true;
    let b = build(Some(near));
    let writer = build(None);
    writer.set("k", &1u32, None).await.expect("set");
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    writer.set("k", &2u32, None).await.expect("set");
    assert_eq!(
        b.get::<u32>("k").await.expect("get"),
        Some(1),
        "served from the tier: nothing told it of the write"
    );
    let started = Instant::now();
    while b.get::<u32>("k").await.expect("get") != Some(2) {
        assert!(started.elapsed() < Duration::from_secs(3), "past the cap");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "served until about the cap"
    );
}

static MACRO_CACHE: OnceLock<Cache> = OnceLock::new();
static MACRO_RUNS: AtomicUsize = AtomicUsize::new(0);

fn macro_cache() -> &'static Cache {
    MACRO_CACHE.get().expect("set by the test")
}

#[lexigram_cache::cacheable(ttl = "1500ms", key = "xm:{id}", cache = macro_cache())]
async fn slow(id: u32) -> u32 {
    MACRO_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    id
}

/// The macro's hit path serves the near tier without looking at the expiry: the tier keeps
/// a value only until a few compute times before its expiry, leaving that stretch to the
/// fill path, where XFetch refreshes it early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_fires_for_a_cached_function_served_by_the_near_tier() {
    prometheus();
    let server = RedisServer::start();
    let cache = MACRO_CACHE
        .get_or_init(|| redis_cache("xmacro", &server.url(), Some(NearOptions::default()), 0));
    while !cache.stats().near_live {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    slow(1).await;
    read_until_expiry_is_near(cache, async || assert_eq!(slow(1).await, 1)).await;
}
