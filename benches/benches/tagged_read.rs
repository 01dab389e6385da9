//! A read of a tagged value beside the same read of an untagged one: on the memory backend,
//! on Redis with a near cache (the tag versions cached beside the value) and on Redis without
//! one (one batched read of the tags after the value), in one run against one spawned
//! redis-server. The tagged value carries three tags.
//!
//! `cargo bench -p lexigram-cache-benches --bench tagged_read`

use std::sync::OnceLock;
use std::time::Duration;

use criterion::{criterion_group, criterion_main};
use lexigram_cache::Cache;
use lexigram_cache_benches::{memory_near_remote, runtime};
use lexigram_cache_tests::servers::RedisServer;

const TAGS: [&str; 3] = ["user:42", "users", "tenant:7"];

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
            let value = "x".repeat(100);
            let hour = Duration::from_secs(3600);
            for c in [&memory, &near, &remote] {
                c.set("untagged", &value, hour).await.expect("seed");
                c.set_tagged("tagged", &value, hour, &TAGS)
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

async fn get(cache: &'static Cache, key: &'static str) -> String {
    cache.get::<String>(key).await.expect("get").expect("a hit")
}

fn warm() {
    let s = setup();
    runtime().block_on(async {
        for c in [&s.memory, &s.near, &s.remote] {
            get(c, "untagged").await;
            get(c, "tagged").await;
        }
    });
}

lexigram_cache_benches::hit_groups!(
    "tagged_read",
    warm(),
    [
        ("memory_untagged", |_task| get(&setup().memory, "untagged")),
        ("memory_tagged", |_task| get(&setup().memory, "tagged")),
        ("near_untagged", |_task| get(&setup().near, "untagged")),
        ("near_tagged", |_task| get(&setup().near, "tagged")),
        ("redis_untagged_no_near", |_task| get(
            &setup().remote,
            "untagged"
        )),
        ("redis_tagged_no_near", |_task| get(
            &setup().remote,
            "tagged"
        )),
    ]
);

criterion_group!(benches, single_task, many_tasks);
criterion_main!(benches);
