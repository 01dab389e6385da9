//! Tags against real servers: `set_tagged` and `invalidate_tag` on memory, Redis (single node,
//! with and without a near cache, and Cluster) and Memcached; the `#[cacheable(tags = ...)]`
//! form; two OS processes sharing a Redis; a tag whose version was deleted is a miss, never the
//! old value; untagged values are untouched.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lexigram_cache::{
    Cache, CacheBackend, CacheModule, CacheOptions, MemcachedBackend, MemoryBackend, NearOptions,
    RedisBackend, cacheable,
};
use lexigram_cache_tests::child::ChildProcess;
use lexigram_cache_tests::proxy::Proxy;
use lexigram_cache_tests::servers::{MemcachedServer, RedisCluster, RedisServer};

/// Where the version of a tag lives (after the backend's prefix).
fn version_key(tag: &str) -> String {
    format!("\0lexigram-cache:tag:{tag}")
}

fn options(near: Option<NearOptions>) -> CacheOptions {
    let mut o = CacheOptions::default();
    o.near = near;
    o.breaker_threshold = 0;
    o
}

fn near(ttl_only: bool) -> NearOptions {
    let mut n = NearOptions::default();
    n.ttl = Duration::from_secs(60);
    n.ttl_only = ttl_only;
    n
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `add` stores only into an absent key: what tag versions are created with.
async fn check_add(b: &dyn CacheBackend) {
    let what = b.kind();
    assert!(
        b.add("add:k", b"1", None).await.expect("add"),
        "{what}: absent, stored"
    );
    assert!(
        !b.add("add:k", b"2", None).await.expect("add"),
        "{what}: present, refused"
    );
    assert_eq!(
        b.get("add:k").await.expect("get").as_deref(),
        Some(&b"1"[..]),
        "{what}"
    );
    b.delete("add:k").await.expect("delete");
    assert!(
        b.add("add:k", b"3", None).await.expect("add"),
        "{what}: absent again"
    );
    b.delete("add:k").await.expect("delete");
}

/// What every backend must do with tags.
async fn check_tags(cache: &Cache) {
    let what = cache.kind();
    let ttl = Duration::from_secs(60);
    cache
        .set_tagged("a", &1u32, ttl, &["user:7", "users"])
        .await
        .expect("set a");
    cache
        .set_tagged("b", &2u32, ttl, &["user:8", "users"])
        .await
        .expect("set b");
    cache.set("plain", &3u32, ttl).await.expect("set plain");
    // Read twice: the second read may come from a near tier, which must agree.
    for _ in 0..2 {
        assert_eq!(cache.get::<u32>("a").await.expect("get"), Some(1), "{what}");
        assert_eq!(cache.get::<u32>("b").await.expect("get"), Some(2), "{what}");
    }

    cache.invalidate_tag("user:7").await.expect("invalidate");
    assert_eq!(
        cache.get::<u32>("a").await.expect("get"),
        None,
        "{what}: a carries user:7"
    );
    assert!(!cache.exists("a").await.expect("exists"), "{what}");
    assert_eq!(
        cache.get::<u32>("b").await.expect("get"),
        Some(2),
        "{what}: b does not"
    );
    assert_eq!(
        cache
            .get_many::<u32>(&["a", "b", "plain"])
            .await
            .expect("get_many"),
        vec![None, Some(2), Some(3)],
        "{what}"
    );

    cache.invalidate_tag("users").await.expect("invalidate");
    assert_eq!(
        cache.get::<u32>("b").await.expect("get"),
        None,
        "{what}: b carries users"
    );
    assert_eq!(
        cache.get::<u32>("plain").await.expect("get"),
        Some(3),
        "{what}: untagged"
    );

    // Written again after the invalidation, a value carries the new version and reads.
    cache
        .set_tagged("a", &10u32, ttl, &["user:7", "users"])
        .await
        .expect("set a again");
    assert_eq!(
        cache.get::<u32>("a").await.expect("get"),
        Some(10),
        "{what}"
    );
    assert_eq!(
        cache.get_or_insert_with("a", ttl, || async { 99u32 }).await,
        10,
        "{what}: a fill reads the tagged value"
    );

    if cache.kind() != "memcached" {
        let mut keys = cache.keys("*", 100).await.expect("keys");
        keys.sort();
        assert_eq!(
            keys,
            ["a", "b", "plain"],
            "{what}: tag versions are not listed"
        );
    }

    // Bad tags are refused before anything is written.
    assert!(
        cache.set_tagged("bad", &1u32, ttl, &[""]).await.is_err(),
        "{what}"
    );
    assert_eq!(cache.get::<u32>("bad").await.expect("get"), None, "{what}");
}

#[tokio::test]
async fn memory_tags() {
    check_tags(&CacheModule::stub().cache()).await;
}

#[tokio::test]
async fn redis_tags_with_and_without_a_near_cache() {
    let server = RedisServer::start();
    let backend = || {
        RedisBackend::builder(server.url())
            .prefix("tags:")
            .build()
            .expect("backend")
    };
    check_add(&backend()).await;
    check_tags(&Cache::with_options("plain", backend(), options(None))).await;
    server.raw("FLUSHALL");
    let cache = Cache::with_options("near", backend(), options(Some(near(false))));
    until("the near tier subscribes", || cache.stats().near_live).await;
    check_tags(&cache).await;
}

#[tokio::test]
async fn redis_cluster_tags() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let mut builder = RedisBackend::builder(urls[0].as_str()).prefix("tags:");
    for u in &urls[1..] {
        builder = builder.node(u.as_str());
    }
    let backend = builder.connect().await.expect("connect to the cluster");
    assert!(backend.is_cluster());
    check_add(&backend).await;
    check_tags(&Cache::with_options("cluster", backend, options(None))).await;
}

#[tokio::test]
async fn memcached_tags_with_and_without_a_near_cache() {
    let server = MemcachedServer::start();
    let backend = |prefix: &str| {
        MemcachedBackend::builder([server.addr()])
            .prefix(prefix)
            .build()
            .expect("backend")
    };
    check_add(&backend("t0:")).await;
    check_tags(&Cache::with_options("plain", backend("t1:"), options(None))).await;
    check_tags(&Cache::with_options(
        "near",
        backend("t2:"),
        options(Some(near(true))),
    ))
    .await;
}

/// A tag whose version is gone (evicted, deleted, expired) is a miss for every value that
/// carries it, and a new version never brings those values back.
#[tokio::test]
async fn a_tag_whose_version_is_gone_is_a_miss_never_the_old_value() {
    let redis = RedisServer::start();
    let memcached = MemcachedServer::start();
    let redis_backend = RedisBackend::builder(redis.url())
        .prefix("gone:")
        .build()
        .expect("backend");
    let memcached_backend = MemcachedBackend::builder([memcached.addr()])
        .prefix("gone:")
        .build()
        .expect("backend");
    let memory = MemoryBackend::builder().build().expect("memory");

    // Redis: delete the version with a plain client.
    let cache = Cache::from_backend("redis", redis_backend);
    gone_is_a_miss(&cache, async {
        let client = redis::Client::open(redis.url()).expect("client");
        let mut conn = client.get_connection().expect("connection");
        let removed: u64 = redis::cmd("DEL")
            .arg(format!("gone:{}", version_key("t")))
            .query(&mut conn)
            .expect("DEL");
        assert_eq!(removed, 1, "the version lives under its reserved key");
    })
    .await;
    // Memcached: delete it through the backend's own byte interface.
    let cache = Cache::from_backend("memcached", memcached_backend.clone());
    gone_is_a_miss(&cache, async {
        assert!(
            memcached_backend
                .delete(&version_key("t"))
                .await
                .expect("delete")
        );
    })
    .await;
    // Memory: the version is an entry of the store like any other, removed through the
    // backend's own byte interface (the cache refuses to delete its reserved keys).
    let cache = Cache::from_backend("memory", memory.clone());
    gone_is_a_miss(&cache, async {
        assert!(
            CacheBackend::delete(&memory, &version_key("t"))
                .await
                .expect("delete")
        );
    })
    .await;
}

async fn gone_is_a_miss(cache: &Cache, remove_version: impl Future<Output = ()>) {
    let what = cache.kind();
    let ttl = Duration::from_secs(60);
    cache
        .set_tagged("old", &1u32, ttl, &["t"])
        .await
        .expect("set");
    cache.set("untagged", &2u32, ttl).await.expect("set");
    assert_eq!(
        cache.get::<u32>("old").await.expect("get"),
        Some(1),
        "{what}"
    );
    remove_version.await;
    assert_eq!(
        cache.get::<u32>("old").await.expect("get"),
        None,
        "{what}: version gone"
    );
    // A new value with the tag creates a new version; the old value stays a miss.
    cache
        .set_tagged("new", &3u32, ttl, &["t"])
        .await
        .expect("set");
    assert_eq!(
        cache.get::<u32>("new").await.expect("get"),
        Some(3),
        "{what}"
    );
    assert_eq!(
        cache.get::<u32>("old").await.expect("get"),
        None,
        "{what}: not revived"
    );
    assert_eq!(
        cache.get::<u32>("untagged").await.expect("get"),
        Some(2),
        "{what}"
    );
}

struct Users {
    cache: Cache,
    runs: AtomicUsize,
    /// Called inside the body, after it read its data: an invalidation racing the fill.
    during_body: Option<&'static str>,
}

impl Users {
    #[cacheable(ttl = 60, key = "profile:{id}", tags = ["user:{id}", "users"], cache = self.cache)]
    async fn profile(&self, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some(tag) = self.during_body {
            self.cache.invalidate_tag(tag).await.expect("invalidate");
        }
        format!("user {id}")
    }
}

async fn check_macro(cache: Cache) {
    let what = cache.kind();
    let users = Users {
        cache: cache.clone(),
        runs: AtomicUsize::new(0),
        during_body: None,
    };
    assert_eq!(users.profile(7).await, "user 7");
    assert_eq!(users.profile(7).await, "user 7");
    assert_eq!(users.profile(8).await, "user 8");
    assert_eq!(
        users.runs.load(Ordering::SeqCst),
        2,
        "{what}: one run per id"
    );
    cache.invalidate_tag("user:7").await.expect("invalidate");
    users.profile(7).await;
    users.profile(8).await;
    assert_eq!(
        users.runs.load(Ordering::SeqCst),
        3,
        "{what}: only 7 runs again"
    );
    cache.invalidate_tag("users").await.expect("invalidate");
    users.profile(7).await;
    users.profile(8).await;
    assert_eq!(
        users.runs.load(Ordering::SeqCst),
        5,
        "{what}: both run again"
    );

    // The body saw data an invalidation then changed: the versions were read before the body,
    // so the stored value is already stale and the next call runs again.
    let racing = Users {
        cache: cache.clone(),
        runs: AtomicUsize::new(0),
        during_body: Some("user:9"),
    };
    racing.profile(9).await;
    racing.profile(9).await;
    assert_eq!(
        racing.runs.load(Ordering::SeqCst),
        2,
        "{what}: a value filled across an invalidation of its tag is not served"
    );
}

#[tokio::test]
async fn the_macro_form_on_memory_redis_and_memcached() {
    check_macro(CacheModule::stub().cache()).await;
    let redis = RedisServer::start();
    let backend = RedisBackend::builder(redis.url())
        .prefix("m:")
        .build()
        .expect("backend");
    let cache = Cache::with_options("near", backend, options(Some(near(false))));
    until("the near tier subscribes", || cache.stats().near_live).await;
    check_macro(cache).await;
    let memcached = MemcachedServer::start();
    let backend = MemcachedBackend::builder([memcached.addr()])
        .prefix("m:")
        .build()
        .expect("backend");
    check_macro(Cache::from_backend("memcached", backend)).await;
}

/// With a near cache, a tagged read whose versions the tier holds costs no round trip, and a
/// tagged read from the server costs one more than an untagged one: a single batched read of
/// all its tags.
#[tokio::test]
async fn a_tagged_read_costs_one_batched_read_of_its_tags_and_none_once_cached() {
    let server = RedisServer::start();
    let proxy = Proxy::start(&format!("127.0.0.1:{}", server.port())).await;
    let url = format!("redis://{}/0", proxy.addr());
    let backend = RedisBackend::builder(url.as_str())
        .prefix("rt:")
        .connect()
        .await
        .expect("connect");
    let writer = Cache::from_backend("writer", backend);
    let backend = RedisBackend::builder(url.as_str())
        .prefix("rt:")
        .connect()
        .await
        .expect("connect");
    let reader = Cache::with_options("reader", backend, options(Some(near(false))));
    until("the near tier subscribes", || reader.stats().near_live).await;
    let ttl = Duration::from_secs(60);
    writer
        .set_tagged("k", &1u32, ttl, &["a", "b", "c"])
        .await
        .expect("set");
    writer.set("u", &1u32, ttl).await.expect("set");

    proxy.reset_counts();
    assert_eq!(reader.get::<u32>("u").await.expect("get"), Some(1));
    assert_eq!(proxy.round_trips(), 1, "untagged: {}", proxy.transcript());

    proxy.reset_counts();
    assert_eq!(reader.get::<u32>("k").await.expect("get"), Some(1));
    assert_eq!(
        proxy.round_trips(),
        2,
        "tagged, from the server: the value and one read of three tags\n{}",
        proxy.transcript()
    );

    proxy.reset_counts();
    for _ in 0..3 {
        assert_eq!(reader.get::<u32>("k").await.expect("get"), Some(1));
    }
    assert_eq!(proxy.round_trips(), 0, "near hits: {}", proxy.transcript());

    // The writer (no near tier) invalidates; the reader hears of it and misses.
    let before = reader.stats().near_invalidations;
    let notifier = Cache::with_options(
        "notifier",
        RedisBackend::builder(url.as_str())
            .prefix("rt:")
            .build()
            .expect("backend"),
        options(Some(near(false))),
    );
    until("the notifier subscribes", || notifier.stats().near_live).await;
    notifier.invalidate_tag("b").await.expect("invalidate");
    until("the reader hears of it", || {
        reader.stats().near_invalidations > before
    })
    .await;
    assert_eq!(reader.get::<u32>("k").await.expect("get"), None);
}

fn child_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis".into()),
        ("LEX_CACHE__BACKENDS__0__PREFIX", "procs:".into()),
        ("LEX_CACHE__BACKENDS__0__REDIS_URL", url.into()),
        ("LEX_CACHE__BACKENDS__0__NEAR__TTL", "1m".into()),
    ]
}

/// The child side: does nothing unless `LEX_TEST_TAGS_CHILD` is set. Reads commands from
/// stdin, one a line, and answers each with one line starting with `=`: `get KEY` → the value
/// or `none`; `wait N` → once N invalidations came from others; `hits` → near hits so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_reader() {
    if std::env::var("LEX_TEST_TAGS_CHILD").is_err() {
        return;
    }
    let cache = CacheModule::from_env().await.expect("child boots").cache();
    until("the near tier subscribes", || cache.stats().near_live).await;
    println!("=ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd {
            "get" => {
                let v = cache.get::<u32>(arg).await.expect("child get");
                println!("={}", v.map_or("none".to_owned(), |v| v.to_string()));
            }
            "wait" => {
                let n: u64 = arg.parse().expect("a count");
                until("an invalidation from the parent", || {
                    cache.stats().near_invalidations >= n
                })
                .await;
                println!("=ok");
            }
            "hits" => println!("={}", cache.stats().near_hits),
            _ => break,
        }
        std::io::stdout().flush().expect("flush");
    }
}

/// Process A invalidates a tag; process B, which holds the tagged values and the tag's version
/// in its near cache, misses on its next read after the invalidation arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidated_in_one_process_is_a_miss_in_another() {
    let server = RedisServer::start();
    let mut config = lexigram_cache::CacheConfig::default();
    let mut b = lexigram_cache::BackendConfig::redis("default", server.url());
    b.prefix = "procs:".into();
    config.backends = vec![b];
    let a = CacheModule::configure(config)
        .await
        .expect("A boots")
        .cache();
    until("A's near tier subscribes", || a.stats().near_live).await;
    let ttl = Duration::from_secs(60);
    a.set_tagged("p7", &7u32, ttl, &["user:7"])
        .await
        .expect("set");
    a.set_tagged("p8", &8u32, ttl, &["user:8"])
        .await
        .expect("set");
    a.set("plain", &1u32, ttl).await.expect("set");

    let mut child = ChildProcess::spawn(
        "child_reader",
        "LEX_TEST_TAGS_CHILD",
        child_env(&server.url()),
    );
    for _ in 0..2 {
        assert_eq!(child.ask("get p7"), "7");
        assert_eq!(child.ask("get p8"), "8");
    }
    let hits: u64 = child.ask("hits").parse().expect("a number");
    assert!(hits >= 2, "B serves the tagged values from its near cache");

    a.invalidate_tag("user:7").await.expect("invalidate");
    assert_eq!(child.ask("wait 1"), "ok");
    assert_eq!(child.ask("get p7"), "none", "B after the invalidation");
    assert_eq!(child.ask("get p8"), "8", "another tag's value");
    assert_eq!(child.ask("get plain"), "1", "an untagged value");
}
