//! A `#[cacheable]` hit on Redis beside the raw `redis` crate's GET of a 100-byte value, one
//! task and 64 tasks, in one run against one spawned redis-server (target: within 10% of the
//! raw client). The raw client is measured three times: on a plain `MultiplexedConnection`
//! at its defaults (the fastest way to use it here), on one with `TCP_NODELAY` (the socket
//! setting the cache keeps, see the backend's `tcp_settings`), and on a `ConnectionManager`
//! (which reconnects, like the cache's connection does).
//!
//! `cargo bench -p lexigram-cache-benches --bench redis_hit`

use std::sync::OnceLock;

use criterion::{criterion_group, criterion_main};
use lexigram_cache::{BackendConfig, Cache, CacheConfig, CacheModule, cacheable};
use lexigram_cache_benches::runtime;
use lexigram_cache_tests::servers::RedisServer;
use redis::aio::{ConnectionManager, MultiplexedConnection};

/// 100 bytes of text: the raw client reads these bytes; the cache reads them inside its
/// envelope.
fn payload() -> String {
    "x".repeat(100)
}

#[cacheable(ttl = 3600, key = "hit:{id}")]
async fn ours_macro(id: u64) -> String {
    let _ = id;
    payload()
}

struct Setup {
    _server: RedisServer,
    raw: ConnectionManager,
    multiplexed: MultiplexedConnection,
    /// The same client with `TCP_NODELAY`, the socket setting the cache uses (Nagle's
    /// batching of concurrent callers' commands costs latency on a network).
    nodelay: MultiplexedConnection,
    cache: Cache,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

fn setup() -> &'static Setup {
    SETUP.get_or_init(|| {
        let server = RedisServer::start();
        runtime().block_on(async {
            let mut config = CacheConfig::default();
            let mut b = BackendConfig::redis("default", server.url());
            b.prefix = "bench:".into();
            // This bench measures server hits; the near cache has its own bench (near_hit).
            b.near.enabled = Some(false);
            config.backends = vec![b];
            let caches = CacheModule::configure(config).await.expect("boot");
            caches.install();
            let client = redis::Client::open(server.url()).expect("client");
            let multiplexed = client
                .get_multiplexed_async_connection()
                .await
                .expect("raw multiplexed connection");
            let info = redis::IntoConnectionInfo::into_connection_info(server.url())
                .expect("url")
                .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
            let nodelay = redis::Client::open(info)
                .expect("client")
                .get_multiplexed_async_connection()
                .await
                .expect("raw nodelay connection");
            let mut raw = ConnectionManager::new(client)
                .await
                .expect("raw connection");
            redis::cmd("SET")
                .arg("raw:42")
                .arg(payload())
                .query_async::<()>(&mut raw)
                .await
                .expect("seed raw key");
            ours_macro(42).await;
            let cache = caches.cache();
            cache
                .set("typed:42", &payload(), None)
                .await
                .expect("seed typed key");
            Setup {
                _server: server,
                raw,
                multiplexed,
                nodelay,
                cache,
            }
        })
    })
}

/// The raw client's GET of the seeded key on `conn`.
async fn raw_get_on(mut conn: impl redis::aio::ConnectionLike) -> Vec<u8> {
    redis::cmd("GET")
        .arg("raw:42")
        .query_async::<Vec<u8>>(&mut conn)
        .await
        .expect("raw GET")
}

async fn raw_get() -> Vec<u8> {
    raw_get_on(setup().raw.clone()).await
}

async fn raw_multiplexed_get() -> Vec<u8> {
    raw_get_on(setup().multiplexed.clone()).await
}

async fn raw_nodelay_get() -> Vec<u8> {
    raw_get_on(setup().nodelay.clone()).await
}

async fn ours_cache_get() -> Option<String> {
    setup().cache.get::<String>("typed:42").await.expect("get")
}

lexigram_cache_benches::hit_groups!(
    "redis_hit",
    setup(),
    [
        ("raw_redis_multiplexed_get", |_task| raw_multiplexed_get()),
        ("raw_redis_nodelay_get", |_task| raw_nodelay_get()),
        ("raw_redis_get", |_task| raw_get()),
        ("lexigram_macro", |_task| ours_macro(42)),
        ("lexigram_cache_get", |_task| ours_cache_get()),
    ]
);

criterion_group!(benches, single_task, many_tasks);
criterion_main!(benches);
