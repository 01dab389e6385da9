//! The near cache over a real three-master Redis Cluster: invalidations published by one cache
//! reach another whichever node either is connected to, and a subscriber whose node drops it
//! empties its tier and moves on to the next seed.

use std::time::{Duration, Instant};

use lexigram_cache::{Cache, CacheOptions, NearOptions, RedisBackend};
use lexigram_cache_tests::servers::RedisCluster;

const PREFIX: &str = "nearcluster:";
const CHANNEL: &str = "lexigram-cache:invalidate:0:nearcluster:";

fn near_cache(cluster: &RedisCluster, name: &str) -> Cache {
    let urls = cluster.urls();
    let mut builder = RedisBackend::builder(urls[0].clone()).prefix(PREFIX);
    for url in &urls[1..] {
        builder = builder.node(url.clone());
    }
    let mut near = NearOptions::default();
    near.ttl = Duration::from_secs(60);
    let mut options = CacheOptions::default();
    options.near = Some(near);
    options.breaker_threshold = 0;
    Cache::with_options(name, builder.build().expect("backend"), options)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn received(cache: &Cache, n: u64) {
    until(&format!("{n} invalidations received"), || {
        cache.stats().near_invalidations >= n
    })
    .await;
}

/// How many subscribers each node has on the invalidation channel (classic pub/sub counts
/// are per node).
fn subscribers(cluster: &RedisCluster) -> Vec<u64> {
    cluster
        .nodes()
        .iter()
        .map(|n| {
            let reply = n.raw(&format!("PUBSUB NUMSUB {CHANNEL}"));
            reply
                .lines()
                .last()
                .and_then(|l| l.trim().trim_start_matches(':').parse().ok())
                .unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {reply:?}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_deletes_on_any_slot_reach_the_other_cache() {
    let cluster = RedisCluster::start();
    let a = near_cache(&cluster, "a");
    let b = near_cache(&cluster, "b");
    until("both subscribe", || {
        a.stats().near_live && b.stats().near_live
    })
    .await;
    // Keys on every master: the messages do not depend on where the key lives.
    let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    let masters: std::collections::HashSet<_> = keys
        .iter()
        .filter_map(|k| cluster.master_of(cluster.keyslot(&format!("{PREFIX}{k}"))))
        .collect();
    assert_eq!(masters.len(), 3, "the keys spread over the three masters");
    let mut sent = 0;
    for k in &keys {
        a.set(k, &1u32, None).await.expect("set");
        sent += 1;
        received(&b, sent).await;
        assert_eq!(b.get::<u32>(k).await.expect("get"), Some(1));
    }
    let hits = b.stats().near_hits;
    for k in &keys {
        assert_eq!(b.get::<u32>(k).await.expect("get"), Some(1));
    }
    assert_eq!(
        b.stats().near_hits,
        hits + keys.len() as u64,
        "b serves every key from its near tier"
    );
    for k in &keys {
        a.set(k, &2u32, None).await.expect("set");
        sent += 1;
        received(&b, sent).await;
        assert_eq!(
            b.get::<u32>(k).await.expect("get"),
            Some(2),
            "{k} after a set"
        );
    }
    for k in &keys {
        assert!(a.delete(k).await.expect("delete"));
        sent += 1;
        received(&b, sent).await;
        assert_eq!(
            b.get::<u32>(k).await.expect("get"),
            None,
            "{k} after a delete"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_dropped_by_its_node_empties_the_tier_and_moves_to_another_seed() {
    let cluster = RedisCluster::start();
    let b = near_cache(&cluster, "b");
    let writer = {
        // Writes nobody announces to b: only the reset keeps b from serving what it read.
        let urls = cluster.urls();
        let mut builder = RedisBackend::builder(urls[0].clone()).prefix(PREFIX);
        for url in &urls[1..] {
            builder = builder.node(url.clone());
        }
        Cache::from_backend("writer", builder.build().expect("backend"))
    };
    until("b subscribes", || b.stats().near_live).await;
    let before = subscribers(&cluster);
    assert_eq!(
        before.iter().sum::<u64>(),
        1,
        "one subscription: {before:?}"
    );
    let node = before
        .iter()
        .position(|&n| n == 1)
        .expect("a subscribed node");

    writer.set("k", &1u32, None).await.expect("set");
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    assert!(b.stats().near_hits >= 1, "k is in b's tier");

    let killed = cluster.nodes()[node].raw("CLIENT KILL TYPE pubsub");
    assert!(killed.starts_with(":1"), "one subscriber killed: {killed}");
    until("b notices the loss", || b.stats().near_resets >= 1).await;
    writer.set("k", &2u32, None).await.expect("set");
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(2));

    until("b subscribes again", || b.stats().near_live).await;
    let after = subscribers(&cluster);
    assert_eq!(after.iter().sum::<u64>(), 1, "one subscription: {after:?}");
    assert_eq!(
        after[node], 0,
        "moved off the node that dropped it: {after:?}"
    );
    // Coherent again: a cache that announces its writes reaches b on its new node.
    let a = near_cache(&cluster, "a");
    until("a subscribes", || a.stats().near_live).await;
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(2));
    a.set("k", &3u32, None).await.expect("set");
    received(&b, 1).await;
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_turns_the_tier_on_for_a_cluster_by_default() {
    let cluster = RedisCluster::start();
    let mut config = lexigram_cache::CacheConfig::default();
    let mut b = lexigram_cache::BackendConfig::default();
    b.kind = lexigram_cache::BackendKind::Redis;
    b.nodes = cluster.urls().into_iter().map(Into::into).collect();
    b.prefix = PREFIX.into();
    config.backends = vec![b];
    let caches = lexigram_cache::CacheModule::configure(config)
        .await
        .expect("boots");
    let cache = caches.cache();
    let near = cache.options().near.clone().expect("a near tier");
    assert!(
        !near.ttl_only,
        "kept coherent by invalidations, not by its ttl alone"
    );
    until("the tier subscribes", || cache.stats().near_live).await;
}
