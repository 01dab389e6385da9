//! The near cache (L1) in front of a real Redis: hits served in process, and the coherence
//! rules across caches that share the server. Each `Cache` here has a near tier of its own
//! with its own origin id, exactly as two processes would; `near_processes.rs` does it with two
//! OS processes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lexigram_cache::{Cache, CacheOptions, CacheStats, NearOptions, RedisBackend, cacheable};
use lexigram_cache_tests::servers::RedisServer;

fn options(near: Option<NearOptions>) -> CacheOptions {
    let mut o = CacheOptions::default();
    o.near = near;
    o.breaker_threshold = 0;
    o
}

fn backend(url: &str) -> RedisBackend {
    RedisBackend::builder(url)
        .prefix("near:")
        .build()
        .expect("backend")
}

/// A cache with a near tier, as a process would build it.
fn near_cache(url: &str, ttl: Duration) -> Cache {
    let mut near = NearOptions::default();
    near.ttl = ttl;
    Cache::with_options("near", backend(url), options(Some(near)))
}

/// A cache on the same keys with no near tier: it writes without telling anyone, like another
/// tool writing to the server.
fn plain_cache(url: &str) -> Cache {
    Cache::with_options("plain", backend(url), options(None))
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn live(cache: &Cache) {
    until("the near tier subscribes", || cache.stats().near_live).await;
}

/// Waits until `cache` has received `n` invalidations from others.
async fn received(cache: &Cache, n: u64) {
    until(&format!("{n} invalidations received"), || {
        cache.stats().near_invalidations >= n
    })
    .await;
}

fn stats(c: &Cache) -> CacheStats {
    c.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_served_in_process_while_the_server_is_stopped() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), Duration::from_secs(30));
    live(&cache).await;
    cache.set("k", &"v1".to_string(), None).await.expect("set");
    assert_eq!(
        cache.get::<String>("k").await.expect("get").as_deref(),
        Some("v1")
    );
    server.pause();
    let started = Instant::now();
    let got = cache.get::<String>("k").await;
    server.resume();
    assert_eq!(got.expect("served by the near tier").as_deref(), Some("v1"));
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "a near hit does not wait for the server (op timeout 500ms)"
    );
    assert!(stats(&cache).near_hits >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_deletes_patterns_and_clears_invalidate_the_other_cache() {
    let server = RedisServer::start();
    let a = near_cache(&server.url(), Duration::from_secs(60));
    let b = near_cache(&server.url(), Duration::from_secs(60));
    live(&a).await;
    live(&b).await;
    let mut sent = 0;

    a.set("k", &1u32, None).await.expect("set");
    sent += 1;
    received(&b, sent).await;
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    assert_eq!(
        b.get::<u32>("k").await.expect("get"),
        Some(1),
        "now in b's tier"
    );
    let hits = stats(&b).near_hits;
    assert!(hits >= 1, "b serves it in process");

    // set
    a.set("k", &2u32, None).await.expect("set");
    sent += 1;
    received(&b, sent).await;
    assert_eq!(
        b.get::<u32>("k").await.expect("get"),
        Some(2),
        "after a set"
    );

    // delete
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(2));
    assert!(a.delete("k").await.expect("delete"));
    sent += 1;
    received(&b, sent).await;
    assert_eq!(
        b.get::<u32>("k").await.expect("get"),
        None,
        "after a delete"
    );

    // delete_pattern
    a.set("user:1", &1u32, None).await.expect("set");
    sent += 1;
    received(&b, sent).await;
    assert_eq!(b.get::<u32>("user:1").await.expect("get"), Some(1));
    assert_eq!(a.delete_pattern("user:*").await.expect("pattern"), 1);
    sent += 1;
    received(&b, sent).await;
    assert_eq!(
        b.get::<u32>("user:1").await.expect("get"),
        None,
        "after a pattern delete"
    );

    // clear
    a.set("c", &1u32, None).await.expect("set");
    sent += 1;
    received(&b, sent).await;
    assert_eq!(b.get::<u32>("c").await.expect("get"), Some(1));
    a.clear().await.expect("clear");
    sent += 1;
    received(&b, sent).await;
    assert_eq!(b.get::<u32>("c").await.expect("get"), None, "after a clear");

    // a fill
    assert_eq!(b.get_or_insert_with("f", None, || async { 1u32 }).await, 1);
    received(&a, 1).await;
    b.get_or_insert_with("f", None, || async { 9u32 }).await;
    a.delete("f").await.expect("delete");
    sent += 1;
    received(&b, sent).await;
    let filled = a.get_or_insert_with("f", None, || async { 2u32 }).await;
    assert_eq!(filled, 2);
    sent += 1;
    received(&b, sent).await;
    assert_eq!(
        b.get::<u32>("f").await.expect("get"),
        Some(2),
        "after a fill"
    );

    // set_many and delete_many
    a.set_many(&[("m1", 1u32), ("m2", 2u32)], None)
        .await
        .expect("set_many");
    sent += 1;
    received(&b, sent).await;
    assert_eq!(
        b.get_many::<u32>(&["m1", "m2"]).await.expect("get_many"),
        vec![Some(1), Some(2)]
    );
    assert_eq!(a.delete_many(&["m1", "m2"]).await.expect("delete_many"), 2);
    sent += 1;
    received(&b, sent).await;
    assert_eq!(
        b.get_many::<u32>(&["m1", "m2"]).await.expect("get_many"),
        vec![None, None]
    );
    // Own echoes: a never counted its own messages as invalidations from others.
    assert_eq!(stats(&a).near_invalidations, 1, "only b's fill reached a");
}

static MACRO_CACHE: OnceLock<Cache> = OnceLock::new();
static MACRO_VALUE: AtomicU32 = AtomicU32::new(1);

fn macro_cache() -> &'static Cache {
    MACRO_CACHE.get().expect("set by the test")
}

#[cacheable(ttl = 60, key = "macro:{id}", cache = macro_cache())]
async fn load(id: u32) -> u32 {
    let _ = id;
    MACRO_VALUE.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_macro_invalidate_companion_and_its_fills_invalidate_other_caches() {
    let server = RedisServer::start();
    let a = MACRO_CACHE.get_or_init(|| near_cache(&server.url(), Duration::from_secs(60)));
    let b = near_cache(&server.url(), Duration::from_secs(60));
    live(a).await;
    live(&b).await;
    assert_eq!(load(1).await, 1);
    received(&b, 1).await;
    assert_eq!(b.get::<u32>("macro:1").await.expect("get"), Some(1));
    assert_eq!(b.get::<u32>("macro:1").await.expect("get"), Some(1));
    MACRO_VALUE.store(2, Ordering::SeqCst);
    assert!(load_invalidate(1).await.expect("invalidate"));
    received(&b, 2).await;
    assert_eq!(b.get::<u32>("macro:1").await.expect("get"), None);
    assert_eq!(load(1).await, 2, "refilled");
    received(&b, 3).await;
    assert_eq!(b.get::<u32>("macro:1").await.expect("get"), Some(2));
}

/// A cache that cannot subscribe (its user may not use channels) never serves from its tier:
/// it sees a write that nobody announced to it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_the_subscription_succeeds_the_tier_is_bypassed() {
    let server = RedisServer::start();
    let reply = server.raw("ACL SETUSER nochannels on >pw ~* resetchannels +@all");
    assert!(reply.starts_with("+OK"), "{reply}");
    let url = format!("redis://nochannels:pw@127.0.0.1:{}", server.port());
    let b = near_cache(&url, Duration::from_secs(60));
    let writer = plain_cache(&server.url());
    writer.set("k", &1u32, None).await.expect("set");
    for _ in 0..3 {
        assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    }
    // Give the subscriber time to try (and fail) a few times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.set("k", &2u32, None).await.expect("set");
    assert_eq!(
        b.get::<u32>("k").await.expect("get"),
        Some(2),
        "an unsubscribed tier must not serve what it read before"
    );
    let s = stats(&b);
    assert!(!s.near_live);
    assert_eq!(s.near_hits, 0);
}

/// The subscriber connection is killed by the server; the tier empties itself (an epoch
/// bump), so a write it could not hear about is seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_empties_the_tier() {
    let server = RedisServer::start();
    let b = near_cache(&server.url(), Duration::from_secs(60));
    let writer = plain_cache(&server.url());
    live(&b).await;
    writer.set("k", &1u32, None).await.expect("set");
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    assert!(stats(&b).near_hits >= 1, "k is in b's tier");
    let killed = server.raw("CLIENT KILL TYPE pubsub");
    assert!(killed.starts_with(":1"), "one subscriber killed: {killed}");
    until("b notices the loss", || stats(&b).near_resets >= 1).await;
    // Unannounced: only the reset keeps b from serving 1.
    writer.set("k", &2u32, None).await.expect("set");
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(2));
    // And it comes back: subscribed again, serving from the tier.
    live(&b).await;
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(2));
    let before = stats(&b).near_hits;
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(2));
    assert!(stats(&b).near_hits > before, "the tier serves again");
}

/// A write nobody announces (another tool, a lost message) is served at most for the tier's
/// ttl cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unannounced_write_is_seen_after_the_ttl_cap() {
    let server = RedisServer::start();
    let b = near_cache(&server.url(), Duration::from_millis(300));
    let writer = plain_cache(&server.url());
    live(&b).await;
    writer.set("k", &1u32, None).await.expect("set");
    assert_eq!(b.get::<u32>("k").await.expect("get"), Some(1));
    writer.set("k", &2u32, None).await.expect("set");
    let started = Instant::now();
    loop {
        if b.get::<u32>("k").await.expect("get") == Some(2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still the old value 3 s after the write, with a 300 ms cap"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads of b race writes of a on one key; once b has heard every write, it serves the last
/// value: no read that was in flight during a write stored the value it read before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_writes_end_on_the_last_value() {
    let server = RedisServer::start();
    let a = near_cache(&server.url(), Duration::from_secs(60));
    let b = near_cache(&server.url(), Duration::from_secs(60));
    live(&a).await;
    live(&b).await;
    const WRITES: u32 = 300;
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let b = b.clone();
                        tokio::spawn(async move { b.get::<u32>("race").await })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
                if b.stats().near_invalidations >= u64::from(WRITES) {
                    break;
                }
            }
        })
    };
    for n in 1..=WRITES {
        a.set("race", &n, None).await.expect("set");
        if n % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    reader.await.expect("reader");
    received(&b, u64::from(WRITES)).await;
    assert_eq!(b.get::<u32>("race").await.expect("get"), Some(WRITES));
    assert_eq!(b.get::<u32>("race").await.expect("get"), Some(WRITES));
}

/// The tier holds values as their Rust type: a read of another type under the same key asks
/// the server and is a miss there (decode failure), never a wrong value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_another_type_is_not_served_from_the_tier() {
    let server = RedisServer::start();
    let b = near_cache(&server.url(), Duration::from_secs(60));
    live(&b).await;
    b.set("t", &7u32, None).await.expect("set");
    assert_eq!(b.get::<u32>("t").await.expect("get"), Some(7));
    assert_eq!(b.get::<String>("t").await.expect("get"), None);
    assert!(stats(&b).decode_failures >= 1);
}

/// `near.enabled` from configuration: on by default for Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_turns_the_tier_on_for_redis_by_default() {
    let server = RedisServer::start();
    let mut config = lexigram_cache::CacheConfig::default();
    let mut b = lexigram_cache::BackendConfig::default();
    b.kind = lexigram_cache::BackendKind::Redis;
    b.redis_url = Some(server.url().into());
    config.backends = vec![b.clone()];
    let caches = lexigram_cache::CacheModule::configure(config.clone())
        .await
        .expect("boots");
    let cache = caches.cache();
    live(&cache).await;
    assert!(cache.options().near.is_some());

    b.near.enabled = Some(false);
    config.backends = vec![b];
    let caches = lexigram_cache::CacheModule::configure(config)
        .await
        .expect("boots");
    assert!(caches.cache().options().near.is_none());
    assert!(!caches.cache().stats().near_live);
}

/// A TCP forwarder to Redis that can hold back the server's answers on every connection but
/// the first (the subscriber's, opened first): a read that the server has answered, still in
/// flight for its client.
struct HoldingProxy {
    port: u16,
    hold: tokio::sync::watch::Sender<bool>,
}

impl HoldingProxy {
    async fn start(upstream: u16) -> HoldingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (hold, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Ok((client, _)) = listener.accept().await {
                let first = n == 0;
                n += 1;
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(got) = sr.read(&mut buf).await else {
                            return;
                        };
                        if got == 0 {
                            return;
                        }
                        if !first && rx.wait_for(|held| !*held).await.is_err() {
                            return;
                        }
                        if cw.write_all(&buf[..got]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HoldingProxy { port, hold }
    }
}

/// The server answers b's read with the old value; before the answer reaches b, a's write
/// and its invalidation do. The invalidation wins: b returns the old value to that read (it
/// was in flight), but does not keep it, and its next read sees the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_that_races_an_in_flight_read_wins() {
    let server = RedisServer::start();
    let proxy = HoldingProxy::start(server.port()).await;
    let a = near_cache(&server.url(), Duration::from_secs(60));
    let b = near_cache(
        &format!("redis://127.0.0.1:{}", proxy.port),
        Duration::from_secs(60),
    );
    live(&a).await;
    live(&b).await;
    // Opens b's data connection (the proxy's second) on another key.
    assert_eq!(b.get::<u32>("warm").await.expect("get"), None);
    a.set("k", &1u32, None).await.expect("set");
    received(&b, 1).await;

    proxy.hold.send_replace(true);
    let in_flight = {
        let b = b.clone();
        tokio::spawn(async move { b.get::<u32>("k").await })
    };
    // The GET reaches the server and is answered (held in the proxy) before the write.
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.set("k", &2u32, None).await.expect("set");
    received(&b, 2).await;
    proxy.hold.send_replace(false);
    assert_eq!(
        in_flight.await.expect("task").expect("get"),
        Some(1),
        "the read in flight returns what the server answered"
    );
    assert_eq!(
        b.get::<u32>("k").await.expect("get"),
        Some(2),
        "the value read before the invalidation was not kept"
    );
}

/// `near` from a YAML file and from `LEX_CACHE__BACKENDS__<i>__NEAR__...`, and the messages of
/// its validation.
#[test]
fn near_settings_load_from_yaml_and_env_and_are_validated() {
    use lexigram_cache::config::ConfigSources;
    let dir = lexigram_cache_tests::servers::ScratchDir::new("near-config");
    let file = dir.path().join("application.yaml");
    std::fs::write(
        &file,
        "cache:\n  backends:\n    - name: default\n      type: redis\n      redis_url: redis://127.0.0.1:1\n      near:\n        max_entries: 50\n        ttl: 2s\n",
    )
    .expect("write yaml");
    let mut sources = ConfigSources::default();
    sources.file = Some(file);
    sources.vars = vec![(
        "LEX_CACHE__BACKENDS__0__NEAR__ENABLED".into(),
        "false".into(),
    )];
    let config = sources.load().expect("loads");
    let near = &config.backends[0].near;
    assert_eq!(
        (near.enabled, near.max_entries, near.ttl),
        (Some(false), 50, Duration::from_secs(2))
    );

    let mut sources = ConfigSources::default();
    sources.vars = vec![
        ("LEX_CACHE__BACKENDS__0__TYPE".into(), "redis".into()),
        (
            "LEX_CACHE__BACKENDS__0__REDIS_URL".into(),
            "redis://127.0.0.1:1".into(),
        ),
        (
            "LEX_CACHE__BACKENDS__0__NEAR__MAX_ENTRIES".into(),
            "0".into(),
        ),
    ];
    let e = sources
        .load()
        .and_then(|c| c.validate())
        .expect_err("zero entries")
        .to_string();
    assert!(
        e.contains("backends[0].near.max_entries") && e.contains("near.enabled: false"),
        "{e}"
    );

    let mut sources = ConfigSources::default();
    sources.vars = vec![("LEX_CACHE__BACKENDS__0__NEAR__TTL".into(), "2s".into())];
    let e = sources
        .load()
        .and_then(|c| c.validate())
        .expect_err("near on memory")
        .to_string();
    assert!(e.contains("backends[0].near"), "{e}");
}
