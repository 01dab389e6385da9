//! Redis faults against real `redis-server` processes: a server that goes silent without a
//! reset (behind the test proxy), one restarted empty, and one that stops answering for a
//! while (`CLIENT PAUSE`, `DEBUG SLEEP`). The breaker opens and closes as documented and
//! `stats()` counts it.

use std::time::{Duration, Instant};

use lexigram_cache::{Cache, CacheOptions, RedisBackend};
use lexigram_cache_tests::proxy::{Mode, Proxy};
use lexigram_cache_tests::servers::RedisServer;

fn cache_at(url: &str, open_for: Duration) -> Cache {
    let backend = RedisBackend::builder(url)
        .prefix("faults:")
        .op_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("build");
    let mut options = CacheOptions::default();
    options.breaker_threshold = 3;
    options.breaker_open_for = open_for;
    Cache::with_options("faults", backend, options)
}

/// Reads `key` until it is a hit, or `limit` passes; how long it took.
async fn until_hit(cache: &Cache, key: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(_)) = cache.get::<String>(key).await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The old server goes silent without a reset (its connection stays open, nothing comes
/// back) and new connections reach another server: the backend drops the silent connection
/// after a few timeouts and hits resume on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_redis_is_left_for_a_new_connection() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let proxy = Proxy::start(&format!("127.0.0.1:{}", old.port())).await;
    let cache = cache_at(
        &format!("redis://{}", proxy.addr()),
        Duration::from_millis(300),
    );
    cache.set("k", &"old".to_string(), None).await.expect("set");
    let on_new = cache_at(&new.url(), Duration::from_millis(300));
    on_new
        .set("k", &"new".to_string(), None)
        .await
        .expect("set");
    assert_eq!(
        cache.get::<String>("k").await.expect("get").as_deref(),
        Some("old")
    );

    proxy.set_mode(Mode::BlackHole);
    for _ in 0..5 {
        let _ = cache.get::<String>("k").await;
    }
    proxy.reroute(&format!("127.0.0.1:{}", new.port()));
    let took = until_hit(&cache, "k", Duration::from_secs(8))
        .await
        .expect("hits never resumed after the old server went silent");
    println!("hits resumed {took:?} after new connections reached a live Redis");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        cache.get::<String>("k").await.expect("get").as_deref(),
        Some("new")
    );
}

/// The connection to Redis has TCP keepalive on, so the kernel closes it when the peer is
/// gone even while no call waits on it.
#[tokio::test]
async fn the_redis_connection_has_tcp_keepalive() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url(), Duration::from_secs(1));
    cache.set("k", &1u32, None).await.expect("set");
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( dport = :{} )", server.port()))
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.trim().is_empty(), "no connection to the server found");
    assert!(
        text.lines().all(|l| l.contains("keepalive")),
        "a connection without keepalive:\n{text}"
    );
}

/// Redis killed and started again with nothing in it: while it is down the breaker opens
/// (once) and calls skip it; once it is back a probe closes the breaker, the lost keys miss and
/// are filled again, and hits resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_opens_then_closes_the_breaker_and_refills() {
    let mut server = RedisServer::start();
    let port = server.port();
    let cache = cache_at(&server.url(), Duration::from_millis(500));
    let fill = |cache: Cache| async move {
        cache
            .get_or_insert_with("k", None, || async { "filled".to_string() })
            .await
    };
    assert_eq!(fill(cache.clone()).await, "filled");
    assert_eq!(fill(cache.clone()).await, "filled");
    let before = cache.stats();
    assert_eq!((before.hits, before.fills), (1, 1), "{before:?}");

    server.kill();
    for _ in 0..10 {
        assert_eq!(
            fill(cache.clone()).await,
            "filled",
            "callers never see the outage"
        );
    }
    let down = cache.stats();
    assert_eq!(down.breaker_opens, 1, "{down:?}");
    assert!(
        down.breaker_open && down.breaker_short_circuits > 0,
        "{down:?}"
    );
    assert!(down.errors >= 1, "{down:?}");

    let _server = RedisServer::start_at(port);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let _ = fill(cache.clone()).await;
        if !cache.stats().breaker_open {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never closed: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Empty after the restart: the key is filled again, then read back.
    let misses = cache.stats().misses;
    let took = until_hit(&cache, "k", Duration::from_secs(5)).await;
    let after = cache.stats();
    println!("restarted empty: hits resumed after {took:?}; {after:?}");
    assert!(took.is_some(), "hits never resumed: {after:?}");
    assert_eq!(
        after.breaker_opens, 1,
        "one outage opens the breaker once: {after:?}"
    );
    assert!(after.fills >= 2 && after.misses >= misses, "{after:?}");
}

/// A server that accepts but answers nothing for a while: the breaker opens, and closes after
/// the server answers again.
async fn stall_opens_and_closes_the_breaker(server: &RedisServer, stall: impl FnOnce()) {
    let cache = cache_at(&server.url(), Duration::from_millis(300));
    cache.set("k", &"v".to_string(), None).await.expect("set");
    assert!(cache.get::<String>("k").await.expect("get").is_some());
    stall();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        let v = cache
            .get_or_insert_with("k", None, || async { "body".to_string() })
            .await;
        assert!(v == "v" || v == "body");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stalled = cache.stats();
    assert_eq!(stalled.breaker_opens, 1, "{stalled:?}");
    assert!(stalled.breaker_short_circuits > 0, "{stalled:?}");
    let took = until_hit(&cache, "k", Duration::from_secs(8)).await;
    let after = cache.stats();
    println!("hits resumed {took:?} after the stall; {after:?}");
    assert!(took.is_some(), "hits never resumed: {after:?}");
    assert!(!after.breaker_open, "{after:?}");
    assert_eq!(after.breaker_opens, 1, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_opens_then_closes_the_breaker() {
    let server = RedisServer::start();
    stall_opens_and_closes_the_breaker(&server, || {
        assert!(server.raw("CLIENT PAUSE 1500 ALL").starts_with("+OK"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_opens_then_closes_the_breaker() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let port = server.port();
    stall_opens_and_closes_the_breaker(&server, || {
        // DEBUG SLEEP blocks the whole server, and this connection's reply with it.
        std::thread::spawn(move || {
            lexigram_cache_tests::servers::text_command(port, "DEBUG SLEEP 1.5")
        });
        std::thread::sleep(Duration::from_millis(50));
    })
    .await;
}

/// Redis down long enough for the client's own reconnect attempts to give up, then back: the
/// first call after it returns is served (its connection is opened then), so the breaker's
/// first probe closes the breaker instead of failing on the refusal left from the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_after_a_long_outage_reaches_the_restarted_server() {
    let mut server = RedisServer::start();
    let port = server.port();
    let cache = cache_at(&server.url(), Duration::from_secs(2));
    cache.set("k", &"v".to_string(), None).await.expect("set");
    server.kill();
    let down = Instant::now();
    while down.elapsed() < Duration::from_millis(4500) {
        let _ = cache.get::<String>("k").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cache.stats().breaker_open, "{:?}", cache.stats());
    let opens = cache.stats().breaker_opens;
    let _server = RedisServer::start_at(port);
    // Nobody calls while it comes back, and the open period runs out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let first = cache.get::<String>("k").await;
    let after = cache.stats();
    assert!(
        matches!(first, Ok(None)),
        "the first call after the restart reaches the (empty) server: {first:?}"
    );
    assert!(
        !after.breaker_open,
        "the probe closed the breaker: {after:?}"
    );
    assert_eq!(after.breaker_opens, opens, "{after:?}");
}

/// A black hole that also swallows the replacement connection, while the breaker is open:
/// the backend keeps trying to replace the silent connection in the background, so once new
/// connections reach a live Redis the breaker's first probe finds the new connection instead
/// of timing out on the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_connection_is_retried_while_the_breaker_is_open() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let proxy = Proxy::start(&format!("127.0.0.1:{}", old.port())).await;
    let cache = cache_at(&format!("redis://{}", proxy.addr()), Duration::from_secs(2));
    cache.set("k", &"old".to_string(), None).await.expect("set");
    let on_new = cache_at(&new.url(), Duration::from_secs(2));
    on_new
        .set("k", &"new".to_string(), None)
        .await
        .expect("set");

    proxy.set_mode(Mode::BlackHole);
    for _ in 0..5 {
        let _ = cache.get::<String>("k").await;
    }
    assert!(cache.stats().breaker_open, "{:?}", cache.stats());
    // The first replacement attempt is swallowed too (connect timeout 500 ms).
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.reroute(&format!("127.0.0.1:{}", new.port()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let opens = cache.stats().breaker_opens;
    let probe = cache.get::<String>("k").await;
    let after = cache.stats();
    assert_eq!(
        probe.expect("the probe reaches the live server").as_deref(),
        Some("new")
    );
    assert!(!after.breaker_open, "{after:?}");
    assert_eq!(after.breaker_opens, opens, "{after:?}");
}

/// The same black hole met by cached calls, whose round trips run under the call's budget:
/// the backend still sees its own timeouts (the budget does not cut a round trip that has a
/// whole operation timeout to run), so it replaces the silent connection and the calls are
/// served from the cache again once new connections reach a live Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_calls_through_a_black_hole_move_to_a_new_connection() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let proxy = Proxy::start(&format!("127.0.0.1:{}", old.port())).await;
    let cache = cache_at(
        &format!("redis://{}", proxy.addr()),
        Duration::from_millis(300),
    );
    let on_new = cache_at(&new.url(), Duration::from_millis(300));
    on_new
        .set("k", &"cached".to_string(), None)
        .await
        .expect("set");
    let call = || cache.get_or_insert_with("k", None, || async { "from the body".to_string() });
    assert_eq!(call().await, "from the body", "a cold call over the proxy");

    proxy.set_mode(Mode::BlackHole);
    for _ in 0..5 {
        assert_eq!(call().await, "from the body");
    }
    proxy.reroute(&format!("127.0.0.1:{}", new.port()));
    let started = Instant::now();
    while call().await != "cached" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cached calls never reached the live server: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "cached calls served again {:?} after the reroute",
        started.elapsed()
    );
}

/// The server closes the cache's connection (`CLIENT KILL`, as a restart or an idle timeout
/// would): the call that finds it closed may fail, and the next call opens a new connection
/// and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_closes_is_replaced_by_the_next_call() {
    let server = RedisServer::start();
    let cache = cache_at(&server.url(), Duration::from_secs(5));
    cache.set("k", &"v".to_string(), None).await.expect("set");
    let killed = server.raw("CLIENT KILL TYPE normal");
    assert!(
        killed.starts_with(":1"),
        "one connection closed: {killed:?}"
    );
    // Give the client time to see the end of the stream.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = cache.get::<String>("k").await;
    let next = cache.get::<String>("k").await;
    assert_eq!(
        next.expect("the next call is served on a new connection")
            .as_deref(),
        Some("v"),
        "first call after the close: {first:?}"
    );
    assert!(!cache.stats().breaker_open, "{:?}", cache.stats());
}
