//! In-process single flight on every backend path (typed memory and byte-level envelope).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use lexigram_cache::{Cache, CacheOptions, Clock, MemoryBackend, MemoryEngine, RedisBackend};
use lexigram_cache_tests::RunCounter;
use lexigram_cache_tests::servers::RedisServer;

/// Starts a leader whose body marks itself running, then never finishes on its own (sleeps,
/// or panics after `panic_after`), and returns once the body is running.
async fn start_leader(
    cache: &Cache,
    key: &'static str,
    runs: &RunCounter,
    panic_after: Option<Duration>,
) -> tokio::task::JoinHandle<u32> {
    let (cache, body_runs) = (cache.clone(), runs.clone());
    let leader = tokio::spawn(async move {
        cache
            .get_or_insert_with(key, None, || async move {
                body_runs.hit();
                match panic_after {
                    Some(after) => {
                        tokio::time::sleep(after).await;
                        panic!("body failed");
                    }
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
                0u32
            })
            .await
    });
    while runs.get() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    leader
}

fn caches() -> Vec<Cache> {
    caches_with(&CacheOptions::default(), &Clock::system())
}

/// Both memory engines, typed and through the byte-level trait (the envelope path).
fn caches_with(options: &CacheOptions, clock: &Clock) -> Vec<Cache> {
    let mut out = Vec::new();
    for engine in [MemoryEngine::S3Fifo, MemoryEngine::TinyLfu] {
        let b = MemoryBackend::builder()
            .engine(engine)
            .clock(clock.clone())
            .build()
            .expect("valid");
        out.push(Cache::with_options(
            format!("{engine:?}"),
            b.clone(),
            options.clone(),
        ));
        out.push(Cache::with_options(
            format!("{engine:?}-bytes"),
            Arc::new(b),
            options.clone(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_callers_one_key_one_run() {
    for cache in caches() {
        let runs = RunCounter::default();
        let calls = (0..1000).map(|_| {
            let cache = cache.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                cache
                    .get_or_insert_with("cold", None, || async {
                        runs.hit();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        "value".to_string()
                    })
                    .await
            })
        });
        for v in join_all(calls).await {
            assert_eq!(v.expect("task"), "value");
        }
        assert_eq!(
            runs.get(),
            1,
            "{}: body ran {} times",
            cache.name(),
            runs.get()
        );
        assert!(cache.stats().coalesced > 0, "{}", cache.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_keys_fill_in_parallel() {
    let body = Duration::from_millis(300);
    for cache in caches() {
        let runs = RunCounter::default();
        let started = Instant::now();
        let calls = (0..1000).map(|i| {
            let cache = cache.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                let key = format!("k{}", i % 8);
                cache
                    .get_or_insert_with(&key, None, || async move {
                        runs.hit();
                        tokio::time::sleep(body).await;
                        i % 8
                    })
                    .await
                    == i % 8
            })
        });
        assert!(
            join_all(calls)
                .await
                .into_iter()
                .all(|ok| ok.expect("task"))
        );
        let took = started.elapsed();
        assert_eq!(runs.get(), 8, "{}", cache.name());
        // Serial fills would take 8 × 300 ms = 2.4 s.
        assert!(took < body * 4, "{}: 8 keys took {took:?}", cache.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborted_leader_is_replaced() {
    for cache in caches() {
        let runs = RunCounter::default();
        let leader = start_leader(&cache, "k", &runs, None).await;
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let (cache, runs) = (cache.clone(), runs.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_insert_with("k", None, || async {
                            runs.hit();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            7u32
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader.abort();
        let done = tokio::time::timeout(Duration::from_secs(10), join_all(waiters))
            .await
            .expect("waiters must not hang after the leader was aborted");
        for v in done {
            assert_eq!(v.expect("task"), 7);
        }
        assert_eq!(
            runs.get(),
            2,
            "{}: one takeover, not one per waiter",
            cache.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panicking_leader_is_replaced() {
    for cache in caches() {
        let runs = RunCounter::default();
        let leader = start_leader(&cache, "p", &runs, Some(Duration::from_millis(100))).await;
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(
                    async move { cache.get_or_insert_with("p", None, || async { 3u32 }).await },
                )
            })
            .collect();
        assert!(leader.await.expect_err("leader panics").is_panic());
        let done = tokio::time::timeout(Duration::from_secs(10), join_all(waiters))
            .await
            .expect("waiters must not hang after the leader panicked");
        assert!(done.into_iter().all(|v| v.expect("task") == 3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reentrant_same_key_does_not_deadlock() {
    for cache in caches() {
        let inner_cache = cache.clone();
        let v = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_or_insert_with("r", None, || async move {
                // The body asks for its own key: it must run, not wait for itself.
                inner_cache
                    .get_or_insert_with("r", None, || async { 1u32 })
                    .await
                    + 1
            }),
        )
        .await
        .expect("re-entrant call deadlocked");
        assert_eq!(v, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_are_not_cached_and_not_shared() {
    for cache in caches() {
        let runs = RunCounter::default();
        let calls = (0..20).map(|_| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move {
                cache
                    .try_get_or_insert_with("e", None, || async {
                        let n = runs.hit();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        if n == 1 {
                            Err("first run fails")
                        } else {
                            Ok(n as u32)
                        }
                    })
                    .await
            })
        });
        let results: Vec<_> = join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        // The first success is shared by everyone still waiting.
        assert_eq!(runs.get(), 2, "{}", cache.name());
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .all(|v| *v == 2)
        );
        assert_eq!(cache.get::<u32>("e").await.expect("get"), Some(2));
    }
}

/// 20 callers of one key whose body fails after 200 ms, with `fill_wait` 500 ms: each
/// failure hands the flight to the next waiter, but no caller waits more than `fill_wait` in
/// total before running the body itself. (With a fresh wait per handover the last caller
/// returned after 20 × 200 ms = 4 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_behind_failing_bodies_wait_fill_wait_in_total() {
    let mut options = CacheOptions::default();
    options.fill_wait = Duration::from_millis(500);
    for cache in caches_with(&options, &Clock::system()) {
        let runs = RunCounter::default();
        let started = Instant::now();
        let calls = (0..20).map(|_| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move {
                let r: Result<u32, &str> = cache
                    .try_get_or_insert_with("failing", None, || async {
                        runs.hit();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Err("db down")
                    })
                    .await;
                (r, started.elapsed())
            })
        });
        let done = join_all(calls).await;
        let slowest = done
            .iter()
            .map(|r| r.as_ref().expect("task").1)
            .max()
            .expect("20 calls");
        assert!(
            done.iter().all(|r| r.as_ref().expect("task").0.is_err()),
            "{}: every call sees its own body's error",
            cache.name()
        );
        // 500 ms of waiting plus one 200 ms body, with a wide margin for a loaded machine.
        assert!(
            slowest < Duration::from_millis(2_000),
            "{}: the slowest caller took {slowest:?}",
            cache.name()
        );
        // Nobody got a value, so every caller ran its own body: as a leader, or after its wait.
        assert_eq!(runs.get(), 20, "{}", cache.name());
    }
}

/// Callers that waited for a leader whose body failed, while an expired value is inside its
/// stale-if-error window: the body runs once, and everyone gets the stale value.
async fn waiters_get_the_stale_value(cache: &Cache, advance: impl AsyncFnOnce()) {
    cache.set_stale_candidate().await;
    advance().await;
    let runs = RunCounter::default();
    let calls = (0..20).map(|_| {
        let (cache, runs) = (cache.clone(), runs.clone());
        tokio::spawn(async move {
            cache
                .try_get_or_insert_with("stale", Duration::from_millis(200), || async {
                    runs.hit();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err::<u32, _>("db down")
                })
                .await
        })
    });
    for r in join_all(calls).await {
        assert_eq!(r.expect("task"), Ok(1), "{}", cache.name());
    }
    assert_eq!(runs.get(), 1, "{}: the body ran once", cache.name());
    assert_eq!(cache.stats().stale_served, 20, "{}", cache.name());
}

trait StaleCandidate {
    async fn set_stale_candidate(&self);
}

impl StaleCandidate for Cache {
    /// Fills `stale` with 1 for 200 ms.
    async fn set_stale_candidate(&self) {
        let v: Result<u32, &str> = self
            .try_get_or_insert_with("stale", Duration::from_millis(200), || async { Ok(1) })
            .await;
        assert_eq!(v, Ok(1));
    }
}

fn stale_options() -> CacheOptions {
    let mut options = CacheOptions::default();
    options.fill_wait = Duration::from_millis(500);
    options.stale_if_error = Some(Duration::from_secs(60));
    options.ttl_jitter = 0.0;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_leader_hands_the_stale_value_to_its_waiters() {
    // The system clock: values read through the byte-level trait expire by wall-clock time.
    for cache in caches_with(&stale_options(), &Clock::system()) {
        waiters_get_the_stale_value(&cache, async || {
            tokio::time::sleep(Duration::from_millis(300)).await
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_leader_hands_the_stale_value_to_its_waiters_over_redis() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("stale:")
        .connect()
        .await
        .expect("connect");
    let cache = Cache::with_options("redis", backend, stale_options());
    waiters_get_the_stale_value(&cache, async || {
        tokio::time::sleep(Duration::from_millis(300)).await
    })
    .await;
}
