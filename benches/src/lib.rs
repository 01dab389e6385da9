//! Benchmarks live in benches/. This library holds what several of them share.

use std::future::Future;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

/// One 2-worker runtime for every group of a bench binary: a client connection is driven by
/// the runtime that opened it, so setup and measurement must share one.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// For criterion's `iter_custom`: the time `iters` calls take when `tasks` spawned tasks share
/// them, `call(task)` making one call. Each task makes `iters / tasks` (rounded up) calls; the
/// wall time is scaled back to exactly `iters`.
pub fn spread_over_tasks<F, Fut>(rt: &Runtime, iters: u64, tasks: u64, call: F) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future + Send,
    Fut::Output: Send,
{
    let per_task = iters.div_ceil(tasks).max(1);
    rt.block_on(async {
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks as usize)
            .map(|task| {
                let call = call.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        black_box(call(task).await);
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
        started
            .elapsed()
            .mul_f64(iters as f64 / (per_task * tasks) as f64)
    })
}

/// Defines the criterion functions `single_task` and `many_tasks` of a hit bench: after
/// `$prepare` (which seeds the keys), each `(name, call)` contender is measured in the group
/// `<$group>_1_task` from one task and in `<$group>_64_tasks` with [`spread_over_tasks`] over 64
/// tasks. `call` is a cloneable closure from the task's index to the future of one call; a
/// macro keeps every contender's future its own concrete type, so no boxing is measured.
#[macro_export]
macro_rules! hit_groups {
    ($group:literal, $prepare:expr, [$(($name:literal, $call:expr)),* $(,)?]) => {
        fn single_task(c: &mut ::criterion::Criterion) {
            $prepare;
            let rt = $crate::runtime();
            let mut group = c.benchmark_group(concat!($group, "_1_task"));
            $(
                group.bench_function($name, |b| {
                    let call = $call;
                    b.to_async(rt)
                        .iter(|| async { ::std::hint::black_box(call(0usize).await) })
                });
            )*
            group.finish();
        }

        fn many_tasks(c: &mut ::criterion::Criterion) {
            $prepare;
            let rt = $crate::runtime();
            let mut group = c.benchmark_group(concat!($group, "_64_tasks"));
            $(
                group.bench_function($name, |b| {
                    b.iter_custom(|iters| $crate::spread_over_tasks(rt, iters, 64, $call))
                });
            )*
            group.finish();
        }
    };
}

/// The three caches the near-cache benches compare, on one Redis at `url`: the in-memory
/// default, Redis behind a near tier (prefix `near:`), and Redis without one (`remote:`).
/// Returns once the near tier has subscribed, so that its hits are hits from the start.
pub async fn memory_near_remote(
    url: &str,
) -> (
    lexigram_cache::Cache,
    lexigram_cache::Cache,
    lexigram_cache::Cache,
) {
    use lexigram_cache::{Cache, CacheModule, CacheOptions, NearOptions, RedisBackend};
    let redis = |prefix: &str| {
        RedisBackend::builder(url)
            .prefix(prefix)
            .build()
            .expect("backend")
    };
    let mut near = CacheOptions::default();
    near.near = Some(NearOptions::default());
    let near = Cache::with_options("near", redis("near:"), near);
    let remote = Cache::with_options("remote", redis("remote:"), CacheOptions::default());
    let memory = CacheModule::stub().cache();
    while !near.stats().near_live {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (memory, near, remote)
}
