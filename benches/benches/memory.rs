//! Memory hit path: `Cache::get` on both engines beside the raw stores it is built on, in one
//! run so the ratios are comparable (times from separate runs on a shared machine are not).
//!
//! `cargo bench -p lexigram-cache-benches --bench memory`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use lexigram_cache::{Cache, MemoryBackend, MemoryEngine};

const KEY: &str = "user:42";

fn memory_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("memory_hit");

    let moka: moka::sync::Cache<String, u64> = moka::sync::Cache::new(10_000);
    moka.insert(KEY.to_string(), 42);
    group.bench_function("moka_sync_get", |b| {
        b.iter(|| black_box(moka.get(black_box(KEY))))
    });

    let quick: quick_cache::sync::Cache<String, u64> = quick_cache::sync::Cache::new(10_000);
    quick.insert(KEY.to_string(), 42);
    group.bench_function("quick_cache_get", |b| {
        b.iter(|| black_box(quick.get(black_box(KEY))))
    });

    for (name, engine) in [
        ("cache_get_s3fifo", MemoryEngine::S3Fifo),
        ("cache_get_tinylfu", MemoryEngine::TinyLfu),
    ] {
        let cache = Cache::from_backend(
            "bench",
            MemoryBackend::builder()
                .engine(engine)
                .build()
                .expect("valid"),
        );
        rt.block_on(cache.set(KEY, &42u64, None)).expect("set");
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(cache.get::<u64>(black_box(KEY)).await) })
        });
    }
    group.finish();
}

criterion_group!(benches, memory_hit);
criterion_main!(benches);
