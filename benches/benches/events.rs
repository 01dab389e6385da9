//! The memory hit path with no event receiver and with one receiver draining in a task, via
//! `Cache::get` and via a `#[cacheable]` function, in one run: with no receiver an event is
//! one relaxed load, so the two "none" rows are the plain hit path; the "one" rows add what
//! a listener costs (an event made, sent and received per hit). Only the ratios within one
//! run mean anything on a shared machine.
//!
//! `cargo bench -p lexigram-cache-benches --bench events`

use std::hint::black_box;
use std::sync::LazyLock;

use criterion::{Criterion, criterion_group, criterion_main};
use lexigram_cache::{Cache, CacheEvents, MemoryBackend, cacheable};
use lexigram_cache_benches::runtime;

const KEY: &str = "user:42";

static CACHE: LazyLock<Cache> = LazyLock::new(|| {
    Cache::from_backend("bench", MemoryBackend::builder().build().expect("valid"))
});

#[cacheable(cache = &*CACHE, ttl = 60, key = "double:{id}")]
async fn double(id: u64) -> u64 {
    id * 2
}

/// A receiver drained by a task on the runtime, as an application's listener would be;
/// stopped (and its receiver dropped) when the returned handle is aborted.
fn listen(mut events: CacheEvents) -> tokio::task::JoinHandle<()> {
    runtime().spawn(async move {
        // A lag is the listener falling behind the hit loop; it keeps draining.
        while !matches!(events.recv().await, Err(lexigram_cache::EventError::Closed)) {}
    })
}

fn hits(c: &mut Criterion) {
    let rt = runtime();
    rt.block_on(CACHE.set(KEY, &42u64, None)).expect("set");
    rt.block_on(double(21));
    let mut group = c.benchmark_group("events_memory_hit");
    for listeners in ["none", "one"] {
        let drain = (listeners == "one").then(|| listen(CACHE.events()));
        group.bench_function(format!("cache_get_{listeners}"), |b| {
            b.to_async(rt)
                .iter(|| async { black_box(CACHE.get::<u64>(black_box(KEY)).await) })
        });
        group.bench_function(format!("cacheable_{listeners}"), |b| {
            b.to_async(rt)
                .iter(|| async { black_box(double(black_box(21)).await) })
        });
        if let Some(drain) = drain {
            drain.abort();
            let _ = rt.block_on(drain);
        }
        assert_eq!(CACHE.event_receivers(), 0);
    }
    group.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);
