//! Memcached faults against real `memcached` processes: one dead server of several, a server
//! restarted under a warm pool, a saturated pool, a connect that never completes, and boot with
//! a server down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lexigram_cache::{
    BackendConfig, BackendError, Cache, CacheBackend, CacheConfig, CacheError, CacheModule,
    CacheOptions, MemcachedBackend,
};
use lexigram_cache_tests::RunCounter;
use lexigram_cache_tests::proxy::Proxy;
use lexigram_cache_tests::servers::MemcachedServer;

fn backend(addrs: &[String]) -> MemcachedBackend {
    MemcachedBackend::builder(addrs.iter().cloned())
        .prefix("faults:")
        .op_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("valid addresses")
}

/// One of three servers dies: its keys fail (callers run their bodies), the other two serve
/// theirs, and the backend's breaker never opens, however the failures interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_server_of_three_does_not_open_the_breaker() {
    let mut servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let b = backend(&addrs);
    let cache = Cache::from_backend("three", b.clone());
    // Grouped by server: the dead server's keys come in a run, as a page listing its items.
    let mut keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    keys.sort_by_key(|k| b.server_for(k).to_owned());
    for k in &keys {
        cache.set(k, &format!("v-{k}"), None).await.expect("set");
    }
    let dead = addrs[1].clone();
    servers[1].kill();

    let hits = Arc::new(AtomicUsize::new(0));
    let dead_errors = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let (cache, b, keys) = (cache.clone(), b.clone(), keys.clone());
            let (hits, dead_errors, dead) = (hits.clone(), dead_errors.clone(), dead.clone());
            tokio::spawn(async move {
                for i in 0..75 {
                    let key = &keys[(t * 75 + i) % keys.len()];
                    let on_dead = b.server_for(key) == dead;
                    match cache.get::<String>(key).await {
                        Ok(Some(v)) => {
                            assert!(!on_dead, "a hit from the dead server");
                            assert_eq!(v, format!("v-{key}"));
                            hits.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(None) => panic!("{key} was stored and its server is alive"),
                        Err(e) => {
                            assert!(on_dead, "{key} lives on a live server and failed: {e}");
                            dead_errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let stats = cache.stats();
    let live = (0..300)
        .filter(|i| b.server_for(&keys[i % keys.len()]) != dead)
        .count();
    println!(
        "300 calls: {} hits, {} errors on the dead server, breaker opened {} times",
        hits.load(Ordering::SeqCst),
        dead_errors.load(Ordering::SeqCst),
        stats.breaker_opens
    );
    assert_eq!(stats.breaker_opens, 0, "{stats:?}");
    assert_eq!(stats.breaker_short_circuits, 0, "{stats:?}");
    assert_eq!(hits.load(Ordering::SeqCst), live);
    assert_eq!(dead_errors.load(Ordering::SeqCst), 300 - live);
}

/// A server of three that accepts connections but answers nothing (SIGSTOP): after a few
/// timeouts its keys fail fast instead of each costing the operation timeout, the breaker stays
/// closed, and once it answers again its keys hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_of_three_is_skipped_after_a_few_timeouts() {
    let servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let b = backend(&addrs);
    let cache = Cache::from_backend("stopped", b.clone());
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| b.server_for(k) == addrs[2])
        .expect("a key on the third server");
    cache.set(&key, &1u32, None).await.expect("set");
    servers[2].pause();
    let started = Instant::now();
    let mut timeouts = 0;
    for _ in 0..20 {
        match cache.get::<u32>(&key).await.expect_err("stopped") {
            CacheError::Backend {
                source: BackendError::ServerDown { server, reason },
                ..
            } => {
                assert_eq!(server, addrs[2]);
                timeouts += usize::from(reason.starts_with("operation timed out"));
            }
            other => panic!("not a one-server failure: {other:?}"),
        }
    }
    let took = started.elapsed();
    servers[2].resume();
    println!("20 calls to a stopped server: {timeouts} timeouts, {took:?}");
    assert!(timeouts <= 4, "{timeouts} calls waited out the timeout");
    // Twenty timeouts would take 6 s.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(cache.stats().breaker_opens, 0, "{:?}", cache.stats());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(cache.get::<u32>(&key).await.expect("back"), Some(1));
}

/// When every server is down the backend is down: the breaker opens as usual.
#[tokio::test]
async fn all_servers_dead_still_open_the_breaker() {
    let mut servers: Vec<MemcachedServer> = (0..2).map(|_| MemcachedServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let cache = Cache::from_backend("two", backend(&addrs));
    cache.set("a", &1u32, None).await.expect("set");
    for s in &mut servers {
        s.kill();
    }
    for i in 0..20 {
        let _ = cache.get::<u32>(&format!("k{i}")).await;
    }
    let stats = cache.stats();
    assert_eq!(stats.breaker_opens, 1, "{stats:?}");
    assert!(stats.breaker_open, "{stats:?}");
}

/// Every pooled connection of a server that restarted is dead: each is replaced by a fresh one
/// before anything counts as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_costs_at_most_one_error() {
    let mut server = MemcachedServer::start();
    let port = server.port();
    let b = backend(&[server.addr()]);
    b.set("k", b"v", None).await.expect("set");
    // Warm the pool with several connections at once.
    let warm: Vec<_> = (0..8)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.get("k").await })
        })
        .collect();
    for w in warm {
        w.await.expect("task").expect("get");
    }
    let idle = b.idle_connections()[0];
    assert!(
        idle >= 3,
        "the pool should hold several connections, has {idle}"
    );

    server.kill();
    let _server = MemcachedServer::start_at(port);

    let errors = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (b, errors) = (b.clone(), errors.clone());
            tokio::spawn(async move {
                for _ in 0..40 {
                    match b.get("k").await {
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("error after the restart: {e}");
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let errors = errors.load(Ordering::SeqCst);
    println!("{idle} dead pooled connections, 320 calls after the restart: {errors} errors");
    assert!(errors <= 1, "{errors} errors after a restart");
}

/// Calls queued behind a full pool did not find the server failing: they fail as `PoolBusy`,
/// which the breaker does not count, and the server stays healthy.
#[tokio::test]
async fn waiting_for_a_pooled_connection_is_not_a_server_failure() {
    let server = MemcachedServer::start();
    let b = MemcachedBackend::builder([server.addr()])
        .pool_size(1)
        .op_timeout(Duration::from_millis(200))
        .build()
        .expect("build");
    b.set("k", b"v", None).await.expect("set");
    // A call polled once holds the only connection and never lets go while it is not polled
    // again (a caller stuck elsewhere).
    let mut holder = Box::pin(b.get("k"));
    std::future::poll_fn(|cx| {
        let _ = holder.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.get("k").await })
        })
        .collect();
    for c in calls {
        let e = c.await.expect("task").expect_err("the pool is held");
        assert!(matches!(e, BackendError::PoolBusy { size: 1, .. }), "{e:?}");
        assert!(!e.counts_for_breaker(), "{e}");
        assert!(e.to_string().contains("pool_size"), "{e}");
    }
    drop(holder);
    assert_eq!(b.get("k").await.expect("get").as_deref(), Some(&b"v"[..]));
}

/// A listener whose accept queue is full: the kernel drops new SYNs, so a connect neither
/// succeeds nor fails (a server behind a dropped route).
struct Unanswered {
    addr: String,
    _listener: tokio::net::TcpListener,
    _queued: Vec<tokio::net::TcpStream>,
}

async fn unanswered() -> Unanswered {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr").to_string();
    let listener = socket.listen(0).expect("listen");
    let mut queued = Vec::new();
    // Fill the queue; a connect that does not complete at once means it is full.
    for _ in 0..4 {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(s)) => queued.push(s),
            _ => break,
        }
    }
    Unanswered {
        addr,
        _listener: listener,
        _queued: queued,
    }
}

/// A connect that the operation timeout cuts short starts the reconnect pause like a failed
/// one: the next calls fail fast instead of each waiting out the timeout again.
#[tokio::test]
async fn a_connect_cut_by_the_op_timeout_pauses_reconnects() {
    let hole = unanswered().await;
    let b = MemcachedBackend::builder([hole.addr.clone()])
        .op_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("build");
    let first = b.get("k").await.expect_err("nothing answers");
    assert!(matches!(first, BackendError::Timeout(_)), "{first:?}");
    let started = Instant::now();
    for _ in 0..5 {
        let e = b.get("k").await.expect_err("nothing answers");
        assert!(
            matches!(&e, BackendError::Connection(m) if m.contains(&hole.addr)),
            "a call during the pause should fail fast naming the server: {e:?}"
        );
    }
    // Five more timeouts would take a second.
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

/// A backend with one of its three servers down boots, and serves the others' keys.
#[tokio::test]
async fn boots_with_one_of_three_servers_down() {
    let servers: Vec<MemcachedServer> = (0..2).map(|_| MemcachedServer::start()).collect();
    let mut dead = MemcachedServer::start();
    let dead_addr = dead.addr();
    dead.kill();
    let mut config = CacheConfig::default();
    let addrs = vec![servers[0].addr(), dead_addr.clone(), servers[1].addr()];
    let mut configured = BackendConfig::memcached("default", addrs.clone());
    // The prefix of `backend`, so that both place keys on the same servers.
    configured.prefix = "faults:".into();
    config.backends = vec![configured];
    let caches = CacheModule::configure(config.clone())
        .await
        .expect("two of three servers answer");
    let cache = caches.cache();
    let b = backend(&addrs);
    let live_key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| b.server_for(k) != dead_addr)
        .expect("some key on a live server");
    cache.set(&live_key, &7u32, None).await.expect("set");
    assert_eq!(cache.get::<u32>(&live_key).await.expect("get"), Some(7));

    // The same check the registry runs, on the backend: it names the server that is down.
    let report = b
        .ensure_connected()
        .await
        .expect("at least one server answers");
    assert_eq!(report, vec![dead_addr.clone()]);

    // None answering is still an error at boot.
    let mut all_dead = MemcachedServer::start();
    let gone = all_dead.addr();
    all_dead.kill();
    config.backends = vec![BackendConfig::memcached("default", [gone.clone()])];
    let err = CacheModule::configure(config)
        .await
        .expect_err("no server answers");
    assert!(err.to_string().contains(&gone), "{err}");
}

/// The request line of the fill lock's `add` (`ms <key> <len> b T<ttl> ME c`).
const LOCK_ADD: &[u8] = b" ME c\r\n";

/// A backend through `proxy` with one pooled connection, open and idle.
async fn warm_backend_through(proxy: &Proxy) -> MemcachedBackend {
    let b = MemcachedBackend::builder([proxy.addr()])
        .prefix("lost:")
        .pool_size(1)
        .op_timeout(Duration::from_secs(2))
        .build()
        .expect("build");
    b.ping().await.expect("ping through the proxy");
    assert_eq!(b.idle_connections(), vec![1]);
    proxy.reset_counts();
    b
}

/// The server took the fill lock, then the connection died before its answer came back: the
/// `add` is not sent again on a fresh connection, where it would find our own lock and report
/// it held by another caller until the lock expires. The attempt fails instead.
#[tokio::test]
async fn a_lock_attempt_whose_reply_was_lost_is_not_sent_again() {
    let server = MemcachedServer::start();
    let proxy = Proxy::start(&server.addr()).await;
    let b = warm_backend_through(&proxy).await;
    proxy.lose_reply_to(LOCK_ADD);
    let attempt = b.try_lock("k", Duration::from_secs(30)).await;
    let (trips, transcript) = (proxy.round_trips(), proxy.transcript());
    assert!(
        attempt.is_err(),
        "the reply was lost, yet the attempt reports {attempt:?} after {trips} round trips:\n{transcript}"
    );
    assert_eq!(trips, 1, "the add was sent again:\n{transcript}");
    // The server did apply it: the lock exists, only its holder does not know its token.
    let again = b
        .try_lock("k", Duration::from_secs(30))
        .await
        .expect("lock");
    assert!(again.token.is_none(), "{again:?}");
}

/// A cached call whose fill-lock reply was lost runs its body at once, instead of waiting
/// `lock_wait` for a holder that is itself.
#[tokio::test]
async fn a_fill_whose_lock_reply_was_lost_runs_the_body_at_once() {
    let server = MemcachedServer::start();
    let proxy = Proxy::start(&server.addr()).await;
    let b = warm_backend_through(&proxy).await;
    let mut options = CacheOptions::default();
    options.lock_wait = Duration::from_secs(4);
    options.call_budget = Some(Duration::from_secs(10));
    let cache = Cache::with_options("lost", b, options);
    proxy.lose_reply_to(LOCK_ADD);
    let runs = RunCounter::default();
    let started = Instant::now();
    let v = cache
        .get_or_insert_with("k", Duration::from_secs(60), || async {
            runs.hit();
            7u32
        })
        .await;
    let took = started.elapsed();
    assert_eq!((v, runs.get()), (7, 1));
    // Waiting for the lock it holds itself takes the whole `lock_wait` of 4 s.
    assert!(
        took < Duration::from_secs(2),
        "{took:?}:\n{}",
        proxy.transcript()
    );
    assert_eq!(cache.stats().coalesced, 0, "{:?}", cache.stats());
}

/// A pooled connection that a server restart closed is found closed before the lock's `add`
/// is written: the attempt goes out once, on a fresh connection, and takes the lock.
#[tokio::test]
async fn a_lock_attempt_on_a_pooled_connection_closed_by_a_restart_is_sent_on_a_fresh_one() {
    let mut server = MemcachedServer::start();
    let port = server.port();
    let proxy = Proxy::start(&server.addr()).await;
    let b = warm_backend_through(&proxy).await;
    server.kill();
    let _server = MemcachedServer::start_at(port);
    // Until the close has reached the pooled connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.reset_counts();
    let attempt = b
        .try_lock("k", Duration::from_secs(30))
        .await
        .expect("sent on a fresh connection");
    assert!(attempt.token.is_some(), "{attempt:?}");
    assert_eq!(
        proxy.round_trips(),
        1,
        "the add was written to the closed connection first:\n{}",
        proxy.transcript()
    );
}
