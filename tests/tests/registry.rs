//! The process-wide registry: zero-config default, install, named backends, configure.
//! Its own test binary, because installing a registry is process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};

use lexigram_cache::config::ServiceConfig;
use lexigram_cache::{BackendConfig, BackendKind, CacheConfig, CacheError, CacheModule, cacheable};

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(key = "reg:{id}")]
async fn on_default(id: u32) -> u32 {
    RUNS.fetch_add(1, Ordering::SeqCst);
    id
}

#[cacheable(key = "reg:{id}", backend = "second")]
async fn on_second(id: u32) -> u32 {
    RUNS.fetch_add(1, Ordering::SeqCst);
    id
}

fn two_backends(enabled: bool) -> CacheConfig {
    let mut first = BackendConfig::memory("first");
    first.default = true;
    let mut config = CacheConfig::default();
    config.enabled = enabled;
    config.backends = vec![first, BackendConfig::memory("second")];
    config
}

/// One test, because the steps share the process-wide registry and must run in order.
#[tokio::test]
async fn registry_lifecycle() {
    // Zero-config: nothing installed, a process-wide memory cache is used.
    on_default(1).await;
    on_default(1).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    assert!(
        lexigram_cache::installed()
            .cache()
            .exists("reg:1")
            .await
            .expect("exists")
    );
    // A named backend that does not exist: the body still runs, uncached.
    on_second(1).await;
    on_second(1).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 3);

    // Install two backends: the default and a named one are separate stores.
    let caches = CacheModule::configure(two_backends(true))
        .await
        .expect("boots");
    caches.install();
    assert_eq!(caches.names().collect::<Vec<_>>(), ["first", "second"]);
    on_default(2).await;
    on_default(2).await;
    on_second(2).await;
    on_second(2).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 5);
    assert!(caches.cache().exists("reg:2").await.expect("exists"));
    let second = caches.named("second").expect("named");
    assert!(second.exists("reg:2").await.expect("exists"));
    assert_eq!(second.stats().hits, 1);
    // Installed from another thread too (the per-thread copy follows installs).
    let from_thread = std::thread::spawn(|| lexigram_cache::installed().cache().name().to_string())
        .join()
        .expect("thread");
    assert_eq!(from_thread, "first");

    // enabled: false makes everything a pass-through.
    CacheModule::configure(two_backends(false))
        .await
        .expect("boots")
        .install();
    on_default(3).await;
    on_default(3).await;
    assert_eq!(RUNS.load(Ordering::SeqCst), 7);

    let health = caches.health().await;
    assert!(health.is_healthy());
    assert_eq!(health.backends.len(), 2);
}

#[tokio::test]
async fn configuration_errors_name_the_field() {
    let mut config = two_backends(true);
    config.backends[1].default = true;
    let err = CacheModule::configure(config)
        .await
        .expect_err("two defaults");
    assert!(
        err.to_string()
            .contains("2 backends have `default: true` (first, second)"),
        "{err}"
    );

    let mut config = two_backends(true);
    config.backends[0].default = false;
    let err = CacheModule::configure(config)
        .await
        .expect_err("no default");
    assert!(
        err.to_string().contains("none has `default: true`"),
        "{err}"
    );

    let mut config = two_backends(true);
    config.backends[1].name = "first".into();
    let err = CacheModule::configure(config).await.expect_err("duplicate");
    assert!(err.to_string().contains("backends[1].name"), "{err}");

    let mut config = CacheConfig::default();
    config.backends[0].memory.max_entries = 0;
    let err = CacheModule::configure(config)
        .await
        .expect_err("zero entries");
    assert!(
        err.to_string().contains("backends[0].memory.max_entries"),
        "{err}"
    );

    let mut config = CacheConfig::default();
    config.service = ServiceConfig::default();
    config.backends[0].kind = BackendKind::Redis;
    let err = CacheModule::configure(config).await.expect_err("no url");
    assert!(matches!(err, CacheError::Config { .. }), "{err}");
    assert!(err.to_string().contains("backends[0].redis_url"), "{err}");

    let mut config = CacheConfig::default();
    config.backends[0].kind = BackendKind::Memcached;
    let err = CacheModule::configure(config)
        .await
        .expect_err("no servers");
    assert!(matches!(err, CacheError::Config { .. }), "{err}");
    assert!(err.to_string().contains("backends[0].servers"), "{err}");
}
