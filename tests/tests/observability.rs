//! Statistics, per-function statistics, metrics and health under a scripted sequence.
//! Its own test binary: it installs the process-wide metrics recorder and cache registry.

use std::time::Duration;

use lexigram_cache::{BackendConfig, Cache, CacheConfig, CacheModule, cacheable, function_stats};
use lexigram_cache_tests::servers::RedisServer;
use metrics_exporter_prometheus::PrometheusBuilder;

#[cacheable(ttl = 60, key = "lookup:{id}")]
async fn lookup(id: u32) -> Result<u32, String> {
    if id == 0 {
        return Err("no such id".into());
    }
    Ok(id * 10)
}

/// A method whose calls go to whichever cache its value holds.
struct Prices {
    cache: Cache,
}

impl Prices {
    #[cacheable(ttl = 60, key = "price:{id}", cache = self.cache)]
    async fn price(&self, id: u32) -> u32 {
        id + 1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_metrics_and_health_follow_a_scripted_sequence() {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("install the recorder before any cache call");
    let server = RedisServer::start();
    let mut config = CacheConfig::default();
    let mut memory = BackendConfig::memory("default");
    memory.default = true;
    let mut redis = BackendConfig::redis("shared", server.url());
    redis.prefix = "obs:".into();
    redis.op_timeout = Duration::from_millis(150);
    config.backends = vec![memory, redis];
    let caches = CacheModule::configure(config).await.expect("boot");
    caches.install();

    // The script: miss+fill, hit, hit, another miss+fill, an error (not stored), again.
    assert_eq!(lookup(1).await, Ok(10));
    assert_eq!(lookup(1).await, Ok(10));
    assert_eq!(lookup(1).await, Ok(10));
    assert_eq!(lookup(2).await, Ok(20));
    assert!(lookup(0).await.is_err());
    assert!(lookup(0).await.is_err());
    // Direct calls on the Redis cache.
    let shared = caches.named("shared").expect("configured");
    assert_eq!(shared.get::<u32>("a").await.expect("get"), None);
    shared.set("a", &1u32, None).await.expect("set");
    assert_eq!(shared.get::<u32>("a").await.expect("get"), Some(1));
    assert!(shared.delete("a").await.expect("delete"));

    let memory = caches.cache().stats();
    assert_eq!(
        (memory.hits, memory.misses, memory.fills, memory.sets),
        (2, 4, 4, 2),
        "{memory:?}"
    );
    let redis = shared.stats();
    assert_eq!(
        (redis.hits, redis.misses, redis.sets, redis.deletes),
        (1, 1, 1, 1),
        "{redis:?}"
    );
    let f = function_stats()
        .into_iter()
        .find(|f| f.function == "observability::lookup")
        .expect("lookup has stats");
    assert_eq!(
        (f.stats.hits, f.stats.misses, f.stats.fills),
        (2, 4, 4),
        "{f:?}"
    );

    // One method, two caches: each call's metrics carry the cache it went to.
    let on_memory = Prices {
        cache: caches.cache(),
    };
    let on_redis = Prices {
        cache: shared.clone(),
    };
    assert_eq!(on_memory.price(1).await, 2);
    assert_eq!(on_redis.price(1).await, 2);
    assert_eq!(on_redis.price(1).await, 2);

    let text = prometheus.render();
    for line in [
        r#"lexigram_cache_hits_total{cache="default",fn="observability::lookup"} 2"#,
        r#"lexigram_cache_misses_total{cache="default",fn="observability::lookup"} 4"#,
        r#"lexigram_cache_hits_total{cache="shared",fn=""} 1"#,
        r#"lexigram_cache_misses_total{cache="shared",fn=""} 1"#,
        r#"lexigram_cache_misses_total{cache="default",fn="observability::Prices::price"} 1"#,
        r#"lexigram_cache_misses_total{cache="shared",fn="observability::Prices::price"} 1"#,
        r#"lexigram_cache_hits_total{cache="shared",fn="observability::Prices::price"} 1"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(
        text.contains("lexigram_cache_backend_seconds"),
        "latency histogram:\n{text}"
    );

    // Health: the stopped Redis is reported with its error; memory stays healthy.
    assert!(caches.health().await.is_healthy());
    server.pause();
    let report = caches.health().await;
    server.resume();
    assert!(!report.is_healthy());
    let by_name = |n: &str| {
        report
            .backends
            .iter()
            .find(|b| b.name == n)
            .expect("listed")
            .clone()
    };
    assert!(by_name("default").healthy);
    let shared_health = by_name("shared");
    assert!(
        !shared_health.healthy && shared_health.error.is_some(),
        "{shared_health:?}"
    );
    assert_eq!(shared_health.kind, "redis");
    assert!(
        caches.health().await.is_healthy(),
        "healthy again after SIGCONT"
    );
}
