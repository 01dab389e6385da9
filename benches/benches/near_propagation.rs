//! How long an invalidation takes to reach another cache's near tier over Redis pub/sub on
//! loopback: from the start of `set` in cache A to the moment cache B has applied the
//! message. Two caches in one process, each with its own connections and origin id, as two
//! processes would have. Criterion reports the mean; the percentiles of every sample taken
//! are printed at the end (target: p99 under 10 ms).
//!
//! `cargo bench -p lexigram-cache-benches --bench near_propagation`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lexigram_cache::{Cache, CacheOptions, NearOptions, RedisBackend};
use lexigram_cache_benches::runtime;
use lexigram_cache_tests::servers::RedisServer;

fn near_cache(url: &str, name: &str) -> Cache {
    let mut o = CacheOptions::default();
    o.near = Some(NearOptions::default());
    let backend = RedisBackend::builder(url)
        .prefix("prop:")
        .build()
        .expect("backend");
    Cache::with_options(name, backend, o)
}

/// One propagation: A writes, then B is polled until it counts one more invalidation.
async fn once(a: &Cache, b: &Cache, n: u64) -> Duration {
    let seen = b.stats().near_invalidations;
    let started = Instant::now();
    a.set("k", &n, None).await.expect("set");
    while b.stats().near_invalidations == seen {
        tokio::task::yield_now().await;
        assert!(started.elapsed() < Duration::from_secs(5), "never arrived");
    }
    started.elapsed()
}

fn propagation(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = runtime();
    let (a, b) = rt.block_on(async {
        let a = near_cache(&server.url(), "a");
        let b = near_cache(&server.url(), "b");
        while !(a.stats().near_live && b.stats().near_live) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (a, b)
    });
    let mut samples: Vec<Duration> = Vec::new();
    let mut group = c.benchmark_group("near_propagation");
    group.bench_function("set_to_invalidated_elsewhere", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let d = once(&a, &b, i).await;
                    samples.push(d);
                    total += d;
                }
                total
            })
        })
    });
    group.finish();
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "near_propagation: {} samples, p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
}

criterion_group!(benches, propagation);
criterion_main!(benches);
