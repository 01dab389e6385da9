//! A `#[cacheable]` hit on Memcached beside async-memcached 0.9's `get` of the same 100-byte
//! value, one task and 64 tasks, in one run against one spawned memcached (DESIGN.md section
//! 9). async-memcached's client is one connection used through `&mut self`, so under 64 tasks
//! it gets one client per task, made before timing starts.
//!
//! `cargo bench -p lexigram-cache-benches --bench memcached_hit`

use std::hint::black_box;
use std::sync::OnceLock;

use async_memcached::AsciiProtocol;
use criterion::{Criterion, criterion_group, criterion_main};
use lexigram_cache::{BackendConfig, Cache, CacheConfig, CacheModule, cacheable};
use lexigram_cache_benches::{runtime, spread_over_tasks};
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

macro_rules! contenders {
    ($m:ident) => {
        $m!("async_memcached_get", |task| raw_get(task));
        $m!("lexigram_macro", |_task| ours_macro(42));
        $m!("lexigram_cache_get", |_task| ours_cache_get());
        $m!("lexigram_backend_get", |_task| ours_backend_get());
    };
}

fn single_task(c: &mut Criterion) {
    setup();
    let rt = runtime();
    let mut group = c.benchmark_group("memcached_hit_1_task");
    macro_rules! bench {
        ($name:expr, $call:expr) => {
            group.bench_function($name, |b| {
                let call = $call;
                b.to_async(rt)
                    .iter(|| async { black_box(call(0usize).await) })
            });
        };
    }
    contenders!(bench);
    group.finish();
}

fn many_tasks(c: &mut Criterion) {
    setup();
    let rt = runtime();
    let mut group = c.benchmark_group("memcached_hit_64_tasks");
    macro_rules! bench {
        ($name:expr, $call:expr) => {
            group.bench_function($name, |b| {
                b.iter_custom(|iters| spread_over_tasks(rt, iters, TASKS as u64, $call))
            });
        };
    }
    contenders!(bench);
    group.finish();
}

criterion_group!(benches, single_task, many_tasks);
criterion_main!(benches);
