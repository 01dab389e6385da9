//! Reads that go out together while a server is busy, against real `redis-server` and
//! `memcached` processes: every caller gets its own key's value (or its miss), the batches
//! really are sent (Redis counts its `MGET`s), a caller that gives up does not take the others'
//! answers with it, a read held by a caller that stopped polling it holds no other read, and
//! a stalled server fails every read within the operation timeout of its start, however long
//! it waited for its batch.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::future::join_all;
use lexigram_cache::{CacheBackend, MemcachedBackend, RedisBackend};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};

/// Keys `k0..k{n}`; the even ones hold `v{i}`, the odd ones nothing.
fn expected(i: usize) -> Option<Vec<u8>> {
    i.is_multiple_of(2).then(|| format!("v{i}").into_bytes())
}

async fn seed(backend: &dyn CacheBackend, n: usize) {
    for i in 0..n {
        if let Some(v) = expected(i) {
            backend.set(&format!("k{i}"), &v, None).await.expect("seed");
        }
    }
}

/// `rounds` times, 64 reads at once over `n` keys; each answer checked against its key.
async fn read_concurrently(backend: &(dyn CacheBackend + Sync), n: usize, rounds: usize) {
    for round in 0..rounds {
        let reads = (0..64).map(|t| {
            let i = (t * 7 + round) % n;
            async move {
                let got = backend.get(&format!("k{i}")).await.expect("read");
                assert_eq!(got, expected(i), "key k{i} read another key's answer");
            }
        });
        join_all(reads).await;
    }
}

/// A Redis backend on `server`, under this file's prefix.
fn redis(server: &RedisServer) -> RedisBackend {
    RedisBackend::builder(server.url())
        .prefix("batch:")
        .build()
        .expect("build")
}

/// How many `MGET` commands the server has run.
fn mget_calls(server: &RedisServer) -> u64 {
    let info = server.raw("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_mget:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redis_reads_go_out_together_and_each_gets_its_own_key() {
    let server = RedisServer::start();
    let backend = redis(&server);
    seed(&backend, 50).await;
    assert_eq!(mget_calls(&server), 0);
    read_concurrently(&backend, 50, 40).await;
    assert!(
        mget_calls(&server) > 0,
        "64 reads at once on one connection should have gone out in batches"
    );
}

/// Three servers, each with its own batches: every read goes to its key's server and comes
/// back with its own key's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_memcached_reads_each_get_their_own_key() {
    let servers = [
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let backend = MemcachedBackend::builder(servers.iter().map(MemcachedServer::addr))
        .prefix("batch:")
        .build()
        .expect("build");
    seed(&backend, 50).await;
    let on: std::collections::HashSet<&str> = (0..50)
        .map(|i| backend.server_for(&format!("k{i}")))
        .collect();
    assert_eq!(on.len(), 3, "the keys should spread over the three servers");
    read_concurrently(&backend, 50, 40).await;
}

/// Callers that stop waiting (half of them, cut short by a timeout of a few microseconds)
/// leave the rest with their answers, and the backend keeps serving afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_given_up_leave_the_others_their_answers() {
    let server = RedisServer::start();
    let mc = MemcachedServer::start();
    let redis = redis(&server);
    let memcached = MemcachedBackend::builder([mc.addr()])
        .prefix("batch:")
        .build()
        .expect("build");
    let backends: [&(dyn CacheBackend + Sync); 2] = [&redis, &memcached];
    for backend in backends {
        seed(backend, 20).await;
        for round in 0..20 {
            let reads = (0..64usize).map(|t| {
                let i = (t + round) % 20;
                async move {
                    let key = format!("k{i}");
                    let read = backend.get(&key);
                    if t.is_multiple_of(2) {
                        let _ = tokio::time::timeout(Duration::from_micros(5), read).await;
                    } else {
                        assert_eq!(read.await.expect("read"), expected(i));
                    }
                }
            });
            join_all(reads).await;
        }
        read_concurrently(backend, 20, 2).await;
    }
}

/// A stopped server: 64 reads at once, most of which wait for a batch behind the reads in
/// flight. Each fails within its operation timeout (counted from its start), not one timeout
/// for the reads in flight and another for the batch after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_waiting_for_a_stalled_server_fail_within_their_timeout() {
    let op_timeout = Duration::from_millis(400);
    let server = RedisServer::start();
    let mc = MemcachedServer::start();
    let redis = RedisBackend::builder(server.url())
        .prefix("batch:")
        .op_timeout(op_timeout)
        .build()
        .expect("build");
    let memcached = MemcachedBackend::builder([mc.addr()])
        .prefix("batch:")
        .op_timeout(op_timeout)
        .build()
        .expect("build");
    // Connected (and the pool warm) before the servers stop.
    seed(&redis, 10).await;
    seed(&memcached, 10).await;
    read_concurrently(&redis, 10, 1).await;
    read_concurrently(&memcached, 10, 1).await;
    server.pause();
    mc.pause();
    let backends: [&(dyn CacheBackend + Sync); 2] = [&redis, &memcached];
    for backend in backends {
        let reads = (0..64).map(|t| async move {
            let started = Instant::now();
            let read = backend.get(&format!("k{}", t % 10)).await;
            (read.is_err(), started.elapsed())
        });
        for (failed, took) in join_all(reads).await {
            assert!(failed, "{} answered while stopped", backend.kind());
            assert!(
                took < op_timeout * 3 / 2,
                "a {} read waited {took:?}: past its timeout of {op_timeout:?}",
                backend.kind()
            );
        }
    }
    server.resume();
    mc.resume();
}

/// Reads of `keys`, each polled once and then kept without being polled again: callers stuck
/// elsewhere.
async fn held<'a>(backend: &'a RedisBackend, keys: &'a [String]) -> Vec<impl Future + 'a> {
    let mut held = Vec::new();
    for key in keys {
        let mut read = backend.get(key);
        std::future::poll_fn(|cx| {
            let _ = read.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        held.push(read);
    }
    held
}

/// Every slot held by reads whose callers stopped polling them, and the first read of the
/// waiting batch held too, so that neither a slot given back nor that read's own patience
/// sends the batch: the next read sends it (it waited past its patience) and gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_first_read_is_held_goes_out_with_the_next_read() {
    let server = RedisServer::start();
    let backend = redis(&server);
    seed(&backend, 10).await;
    // Four reads in flight (the limit), then the first read of a batch.
    let keys: Vec<String> = (0..5).map(|i| format!("k{}", i * 2)).collect();
    let held = held(&backend, &keys).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = tokio::time::timeout(Duration::from_secs(5), backend.get("k6")).await;
    assert_eq!(
        later
            .expect("a read behind a held batch never got its answer")
            .expect("read"),
        expected(6)
    );
    drop(held);
    read_concurrently(&backend, 10, 2).await;
}

/// Every slot held by reads whose callers stopped polling them: the next read waits for a
/// slot only its patience, then goes out anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_behind_held_slots_goes_out_after_its_patience() {
    let server = RedisServer::start();
    let backend = redis(&server);
    seed(&backend, 10).await;
    let keys: Vec<String> = (0..4).map(|i| format!("k{}", i * 2)).collect();
    let held = held(&backend, &keys).await;
    let behind = tokio::time::timeout(Duration::from_secs(5), backend.get("k8")).await;
    assert_eq!(
        behind
            .expect("a read behind held slots never got its answer")
            .expect("read"),
        expected(8)
    );
    drop(held);
    read_concurrently(&backend, 10, 2).await;
}
