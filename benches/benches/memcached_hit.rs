//! A `#[cacheable]` hit on Memcached beside async-memcached 0.9's `get` of the same 100-byte
//! value, one task and 64 tasks, in one run against one spawned memcached (target: within
//! 10% of the raw client). async-memcached's client is one connection used through `&mut self`, so under 64 tasks
//! it gets one client per task, made before timing starts.
//!
//! `cargo bench -p lexigram-cache-benches --bench memcached_hit`

use std::sync::OnceLock;

use async_memcached::AsciiProtocol;
use criterion::{criterion_group, criterion_main};
use lexigram_cache::{BackendConfig, Cache, CacheConfig, CacheModule, cacheable};
use lexigram_cache_benches::runtime;
use lexigram_cache_tests::servers::MemcachedServer;
use tokio::sync::Mutex;

const TASKS: usize = 64;

fn payload() -> String {
    "x".repeat(100)
}

#[cacheable(ttl = 3600, key = "hit:{id}")]
async fn ours_macro(id: u64) -> String {
    let _ = id;
    payload()
}

struct Setup {
    _server: MemcachedServer,
    clients: Vec<Mutex<async_memcached::Client>>,
    cache: Cache,
    backend: lexigram_cache::MemcachedBackend,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

fn setup() -> &'static Setup {
    SETUP.get_or_init(|| {
        let server = MemcachedServer::start();
        runtime().block_on(async {
            let mut config = CacheConfig::default();
            let mut b = BackendConfig::memcached("default", [server.addr()]);
            b.prefix = "bench:".into();
            b.pool_size = TASKS;
            config.backends = vec![b];
            let caches = CacheModule::configure(config).await.expect("boot");
            caches.install();
            let mut clients = Vec::with_capacity(TASKS);
            for _ in 0..TASKS {
                clients.push(Mutex::new(
                    async_memcached::Client::new(format!("tcp://{}", server.addr()))
                        .await
                        .expect("async-memcached client"),
                ));
            }
            clients[0]
                .lock()
                .await
                .set("raw:42", payload().as_str(), Some(3600), None)
                .await
                .expect("seed raw key");
            ours_macro(42).await;
            let cache = caches.cache();
            cache
                .set("typed:42", &payload(), None)
                .await
                .expect("seed typed key");
            let backend = lexigram_cache::MemcachedBackend::builder([server.addr()])
                .prefix("bench:")
                .pool_size(TASKS)
                .build()
                .expect("backend");
            Setup {
                _server: server,
                clients,
                cache,
                backend,
            }
        })
    })
}

async fn raw_get(client: usize) -> Option<Vec<u8>> {
    let mut c = setup().clients[client].lock().await;
    c.get("raw:42")
        .await
        .expect("async-memcached get")
        .and_then(|v| v.data)
}

async fn ours_cache_get() -> Option<String> {
    setup().cache.get::<String>("typed:42").await.expect("get")
}

async fn ours_backend_get() -> Option<Vec<u8>> {
    use lexigram_cache::CacheBackend;
    setup().backend.get("typed:42").await.expect("get")
}

lexigram_cache_benches::hit_groups!(
    "memcached_hit",
    setup(),
    [
        ("async_memcached_get", raw_get),
        ("lexigram_macro", |_task| ours_macro(42)),
        ("lexigram_cache_get", |_task| ours_cache_get()),
        ("lexigram_backend_get", |_task| ours_backend_get()),
    ]
);

criterion_group!(benches, single_task, many_tasks);
criterion_main!(benches);
