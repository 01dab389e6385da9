//! The health of a Memcached backend over several real `memcached` servers: one dead server of
//! three makes its keys miss, not the whole backend unhealthy, and the ping and the health
//! report say which one.

use std::time::Duration;

use lexigram_cache::{BackendConfig, CacheConfig, CacheModule, MemcachedBackend};
use lexigram_cache_tests::servers::MemcachedServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_server_of_three_leaves_the_backend_healthy_and_is_named() {
    let mut servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let mut backend = BackendConfig::memcached("three", addrs.iter().cloned());
    backend.op_timeout = Duration::from_millis(300);
    backend.connect_timeout = Duration::from_millis(500);
    let mut config = CacheConfig::default();
    config.backends = vec![backend];
    let caches = CacheModule::configure(config).await.expect("boots");
    let cache = caches.cache();
    cache.ping().await.expect("all three answer");

    let dead = addrs[1].clone();
    servers[1].kill();
    // Twice: the first ping finds the server gone, the second meets its recorded failure.
    for _ in 0..2 {
        cache
            .ping()
            .await
            .expect("two of three servers answer, so the backend answers");
        let health = caches.health().await;
        assert!(health.is_healthy(), "{health:?}");
        // The report names the dead server, and only that one.
        let servers = &health.backends[0].servers;
        assert_eq!(
            servers.iter().map(|s| s.addr.as_str()).collect::<Vec<_>>(),
            addrs,
            "{health:?}"
        );
        for s in servers {
            if s.addr == dead {
                assert!(!s.healthy && s.latency.is_none(), "{s:?}");
                let why = s.error.as_deref().unwrap_or_default();
                assert!(why.contains(&dead), "says why, naming the server: {s:?}");
            } else {
                assert!(
                    s.healthy && s.latency.is_some() && s.error.is_none(),
                    "{s:?}"
                );
            }
        }
    }

    let direct = MemcachedBackend::builder(addrs.iter().cloned())
        .op_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("valid addresses");
    let each = direct.ping_each().await;
    assert_eq!(each.len(), 3);
    for (addr, pinged) in &each {
        if *addr == dead {
            let e = pinged
                .as_ref()
                .expect_err("the killed server does not answer");
            assert!(e.to_string().contains(&dead), "names the server: {e}");
        } else {
            assert!(pinged.is_ok(), "{addr}: {pinged:?}");
        }
    }

    // With every server gone, the ping fails.
    servers[0].kill();
    servers[2].kill();
    assert!(cache.ping().await.is_err());
    let health = caches.health().await;
    assert!(!health.is_healthy());
    assert_eq!(health.backends[0].servers.len(), 3, "{health:?}");
    assert!(
        health.backends[0].servers.iter().all(|s| !s.healthy),
        "{health:?}"
    );
}

/// A backend with a single server, or of another kind, lists no servers of its own: the
/// backend's line says it all.
#[tokio::test]
async fn one_server_backends_and_memory_list_no_servers() {
    let server = MemcachedServer::start();
    let mut config = CacheConfig::default();
    let mut one = BackendConfig::memcached("one", [server.addr()]);
    one.default = true;
    config.backends = vec![one, BackendConfig::memory("near")];
    let caches = CacheModule::configure(config).await.expect("boots");
    let health = caches.health().await;
    assert!(health.is_healthy(), "{health:?}");
    assert!(
        health.backends.iter().all(|b| b.servers.is_empty()),
        "{health:?}"
    );
}
