//! A hit served by the near cache (L1) of a Redis backend beside the same hit on the memory
//! backend and on Redis without L1: through `Cache::get` and through `#[cacheable]`, one task
//! and 64 tasks, in one run against one spawned redis-server.
//!
//! `cargo bench -p lexigram-cache-benches --bench near_hit`

use std::sync::OnceLock;

use criterion::{criterion_group, criterion_main};
use lexigram_cache::{Cache, cacheable};
use lexigram_cache_benches::{memory_near_remote, runtime};
use lexigram_cache_tests::servers::RedisServer;

fn payload() -> String {
    "x".repeat(100)
}

struct Setup {
    _server: RedisServer,
    memory: Cache,
    near: Cache,
    remote: Cache,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

fn setup() -> &'static Setup {
    SETUP.get_or_init(|| {
        let server = RedisServer::start();
        runtime().block_on(async {
            let (memory, near, remote) = memory_near_remote(&server.url()).await;
            for c in [&memory, &near, &remote] {
                // An hour: the near tier caps its copy at its own ttl (5 s) and refills it
                // from the server, as a service would see it.
                c.set("typed:42", &payload(), std::time::Duration::from_secs(3600))
                    .await
                    .expect("seed");
            }
            Setup {
                _server: server,
                memory,
                near,
                remote,
            }
        })
    })
}

fn memory() -> &'static Cache {
    &setup().memory
}
fn near() -> &'static Cache {
    &setup().near
}
fn remote() -> &'static Cache {
    &setup().remote
}

#[cacheable(ttl = 3600, key = "m:{id}", cache = memory())]
async fn macro_memory(id: u64) -> String {
    let _ = id;
    payload()
}

#[cacheable(ttl = 3600, key = "m:{id}", cache = near())]
async fn macro_near(id: u64) -> String {
    let _ = id;
    payload()
}

#[cacheable(ttl = 3600, key = "m:{id}", cache = remote())]
async fn macro_remote(id: u64) -> String {
    let _ = id;
    payload()
}

async fn get(cache: &Cache) -> Option<String> {
    cache.get::<String>("typed:42").await.expect("get")
}

fn warm() {
    setup();
    runtime().block_on(async {
        macro_memory(42).await;
        macro_near(42).await;
        macro_remote(42).await;
    });
}

lexigram_cache_benches::hit_groups!(
    "near_hit",
    warm(),
    [
        ("memory_get", |_task| get(memory())),
        ("near_get", |_task| get(near())),
        ("redis_get_no_near", |_task| get(remote())),
        ("memory_macro", |_task| macro_memory(42)),
        ("near_macro", |_task| macro_near(42)),
        ("redis_macro_no_near", |_task| macro_remote(42)),
    ]
);

criterion_group!(benches, single_task, many_tasks);
criterion_main!(benches);
