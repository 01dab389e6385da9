//! Memory hit through the macro against `cached` 4's macros, single task and 64 tasks, in one
//! run: the target is a hit at or below `cached`'s fastest macro, and only ratios within one
//! run mean anything on a shared machine.
//!
//! `cargo bench -p lexigram-cache-benches --bench macro_hit`

use std::hint::black_box;

use cached::macros::{cached, concurrent_cached};
use criterion::{Criterion, criterion_group, criterion_main};
use lexigram_cache::cacheable;
use lexigram_cache_benches::spread_over_tasks;

#[cacheable(ttl = 60)]
async fn ours_auto_key(id: u64) -> u64 {
    id * 2
}

#[cacheable(ttl = 60, key = "k:{id}")]
async fn ours_template_key(id: u64) -> u64 {
    id * 2
}

#[cached(ttl_secs = 60)]
async fn cached_ttl(id: u64) -> u64 {
    id * 2
}

#[concurrent_cached]
async fn cached_concurrent(id: u64) -> u64 {
    id * 2
}

/// The same store with a ttl, as ours has: the like-for-like anchor.
#[concurrent_cached(ttl_secs = 60)]
async fn cached_concurrent_ttl(id: u64) -> u64 {
    id * 2
}

macro_rules! contenders {
    ($m:ident) => {
        $m!("lexigram_auto_key", ours_auto_key);
        $m!("lexigram_template_key", ours_template_key);
        $m!("cached_ttl_secs", cached_ttl);
        $m!("cached_concurrent", cached_concurrent);
        $m!("cached_concurrent_ttl_secs", cached_concurrent_ttl);
    };
}

fn single_task(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("macro_hit_1_task");
    macro_rules! bench {
        ($name:expr, $f:ident) => {
            rt.block_on($f(42));
            group.bench_function($name, |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box($f(black_box(42)).await) })
            });
        };
    }
    contenders!(bench);
    group.finish();
}

const TASKS: u64 = 64;

fn many_tasks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("macro_hit_64_tasks");
    macro_rules! bench {
        ($name:expr, $f:ident) => {
            rt.block_on($f(7));
            group.bench_function($name, |b| {
                b.iter_custom(|iters| spread_over_tasks(&rt, iters, TASKS, |_| $f(black_box(7))))
            });
        };
    }
    contenders!(bench);
    group.finish();
}

criterion_group!(benches, single_task, many_tasks);
criterion_main!(benches);
