//! Redis Cluster failover against real processes: three masters with a replica each; a master
//! is killed under load. Callers never see an error (their bodies run while its slots are
//! down), and caching resumes once the replica has been promoted.

use std::time::{Duration, Instant};

use lexigram_cache::{Cache, CacheOptions, RedisBackend};
use lexigram_cache_tests::RunCounter;
use lexigram_cache_tests::servers::RedisCluster;

const PREFIX: &str = "failover:";

/// One cached call: always the body's value, whatever the cluster does.
async fn call(cache: &Cache, key: &str, runs: &RunCounter) -> String {
    let value: Result<String, std::io::Error> = cache
        .try_get_or_insert_with(key, None, || async {
            runs.hit();
            Ok(format!("v-{key}"))
        })
        .await;
    let value = value.expect("a cached call never fails because of the cache");
    assert_eq!(value, format!("v-{key}"));
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_failed_over_without_errors_and_caching_resumes() {
    let mut cluster = RedisCluster::start_with_replicas();
    let mut builder = RedisBackend::builder(cluster.urls()[0].clone())
        .prefix(PREFIX)
        .op_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(500));
    for url in &cluster.urls()[1..] {
        builder = builder.node(url.clone());
    }
    let backend = builder.connect().await.expect("the cluster answers");
    let mut options = CacheOptions::default();
    options.breaker_open_for = Duration::from_millis(500);
    let cache = Cache::with_options("cluster", backend, options);

    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let runs = RunCounter::default();
    for k in &keys {
        call(&cache, k, &runs).await;
    }
    let filled = runs.get();
    for k in &keys {
        call(&cache, k, &runs).await;
    }
    assert_eq!(
        runs.get(),
        filled,
        "every key is cached before the failover"
    );

    // The key whose master dies, and the master.
    let victim = &keys[0];
    let slot = cluster.keyslot(&format!("{PREFIX}{victim}"));
    let master = cluster.master_of(slot).expect("a master serves the slot");
    cluster.kill(master);
    let killed = Instant::now();

    // Load until the victim's key is cached again: filled, then read without running the body.
    let mut down_runs = 0;
    let resumed = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(45),
            "caching never resumed after the failover; slot {slot} is served by {:?}",
            cluster.master_of(slot)
        );
        for k in &keys {
            call(&cache, k, &runs).await;
        }
        let before = runs.get();
        call(&cache, victim, &runs).await;
        if runs.get() == before {
            break killed.elapsed();
        }
        down_runs += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let promoted = cluster.master_of(slot);
    let stats = cache.stats();
    println!(
        "master {master} killed: caching resumed after {resumed:?} (slot {slot} now on {promoted:?}); \
         {down_runs} rounds ran bodies meanwhile; {stats:?}"
    );
    assert!(
        down_runs > 0,
        "the victim's body ran while its slot was down"
    );
    assert!(
        promoted.is_some_and(|p| p != master),
        "the replica was promoted: {promoted:?}"
    );
    // And all keys are served again (the others were never lost, the victim's was refilled).
    let settled = runs.get();
    for k in &keys {
        call(&cache, k, &runs).await;
    }
    let extra = runs.get() - settled;
    assert!(
        extra <= keys.len() / 2,
        "{extra} bodies ran after caching resumed"
    );
}
