//! The Redis backend against real `redis-server` processes: a single node, a TLS server and a
//! 3-master Cluster, all spawned on 127.0.0.1 by the test.

use std::time::Duration;

use lexigram_cache::{
    BackendConfig, BackendError, Cache, CacheBackend, CacheConfig, CacheError, CacheModule,
    RedisBackend,
};
use lexigram_cache_tests::conformance::{check_backend, check_huge_ttls};
use lexigram_cache_tests::servers::{RedisCluster, RedisServer, free_port};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
        tags: vec!["a".into(), "b".into()],
    }
}

/// The bytes under `key`, read with a plain client.
fn raw_get(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    redis::cmd("GET").arg(key).query(&mut conn).expect("GET")
}

async fn backend(url: &str, prefix: &str) -> RedisBackend {
    RedisBackend::builder(url)
        .prefix(prefix)
        .connect()
        .await
        .expect("connect to the spawned redis-server")
}

#[tokio::test]
async fn single_node_keeps_the_backend_contract() {
    let server = RedisServer::start();
    let b = backend(&server.url(), "conf:").await;
    check_backend(&b, "").await;
    assert_eq!(b.kind(), "redis");
    assert!(!b.is_cluster());
}

#[tokio::test]
async fn the_prefix_is_applied_exactly_once() {
    let server = RedisServer::start();
    let cache = Cache::from_backend("r", backend(&server.url(), "app:").await);
    cache.set("k", &1u32, None).await.expect("set");
    assert_eq!(server.raw("EXISTS app:k").trim(), ":1");
    assert_eq!(server.raw("EXISTS appapp:k").trim(), ":0");
    assert_eq!(server.raw("DBSIZE").trim(), ":1");
    assert_eq!(cache.get::<u32>("k").await.expect("get"), Some(1));
    assert!(cache.exists("k").await.expect("exists"));
    assert_eq!(
        cache.get_many::<u32>(&["k"]).await.expect("mget"),
        vec![Some(1)]
    );
    assert_eq!(cache.delete_pattern("k*").await.expect("pattern"), 1);
    assert_eq!(server.raw("DBSIZE").trim(), ":0");
}

#[tokio::test]
async fn ttls_are_set_in_milliseconds() {
    let server = RedisServer::start();
    let b = backend(&server.url(), "t:").await;
    b.set("short", b"v", Some(Duration::from_millis(1500)))
        .await
        .expect("set");
    let pttl: i64 = server
        .raw("PTTL t:short")
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("PTTL is an integer");
    assert!((1..=1500).contains(&pttl), "PTTL {pttl}");
    b.set("forever", b"v", None).await.expect("set");
    assert_eq!(server.raw("PTTL t:forever").trim(), ":-1");
    // A sub-millisecond ttl still expires (PX 1), it does not become "forever".
    b.set("tiny", b"v", Some(Duration::from_micros(10)))
        .await
        .expect("set");
    assert_ne!(server.raw("PTTL t:tiny").trim(), ":-1");
}

/// `PTTL` of `key` in milliseconds.
fn pttl(server: &RedisServer, key: &str) -> i64 {
    server
        .raw(&format!("PTTL {key}"))
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("PTTL is an integer")
}

#[tokio::test]
async fn huge_ttls_are_clamped_to_what_redis_accepts() {
    let server = RedisServer::start();
    let b = backend(&server.url(), "t:").await;
    let left = check_huge_ttls(&b, |key| pttl(&server, &format!("t:{key}"))).await;
    assert!(left <= 20 * 365 * 24 * 3600 * 1000, "PTTL {left}");
    b.set_many(&[("many", &b"n"[..])], Some(Duration::MAX))
        .await
        .expect("set_many");
    assert!(pttl(&server, "t:many") > 0);
}

#[tokio::test]
async fn pattern_delete_and_clear_stay_inside_the_prefix() {
    let server = RedisServer::start();
    let b = backend(&server.url(), "svc:").await;
    // Keys of another service, some of which look like ours without the prefix.
    server.raw("SET user:1 foreign");
    server.raw("SET other:svc:user:1 foreign");
    for i in 0..1200 {
        b.set(&format!("user:{i}"), b"u", None).await.expect("set");
    }
    b.set("session:1", b"s", None).await.expect("set");
    b.set("we*rd[key]", b"w", None).await.expect("set");
    // More keys than one SCAN batch, so the cursor loop must run.
    assert_eq!(b.delete_pattern("user:*").await.expect("pattern"), 1200);
    assert_eq!(b.delete_pattern(r"we\*rd[key]").await.expect("literal"), 1);
    assert!(b.get("session:1").await.expect("get").is_some());
    assert_eq!(b.clear().await.expect("clear"), 1);
    assert_eq!(server.raw("GET user:1").trim(), "$7\r\nforeign");
    assert_eq!(server.raw("DBSIZE").trim(), ":2");
}

#[tokio::test]
async fn pattern_delete_clear_and_keys_leave_fill_locks_alone_and_agree() {
    let server = RedisServer::start();
    let b = backend(&server.url(), "lk:").await;
    for k in ["user:1", "user:2", "order:1"] {
        b.set(k, b"v", None).await.expect("set");
    }
    // Another process is filling user:3 and order:2: their fill locks exist, values not yet.
    assert!(
        b.try_lock("user:3", Duration::from_secs(30))
            .await
            .expect("lock")
            .token
            .is_some()
    );
    assert!(
        b.try_lock("order:2", Duration::from_secs(30))
            .await
            .expect("lock")
            .token
            .is_some()
    );
    assert_eq!(server.raw("DBSIZE").trim(), ":5");

    let mut listed = b.keys("user:*", 100).await.expect("keys");
    listed.sort();
    assert_eq!(listed, [&b"user:1"[..], &b"user:2"[..]]);
    assert_eq!(
        b.delete_pattern("user:*").await.expect("pattern"),
        listed.len() as u64,
        "delete_pattern counts what keys() lists"
    );
    assert!(
        b.try_lock("user:3", Duration::from_secs(30))
            .await
            .expect("lock")
            .token
            .is_none(),
        "the other process still holds its fill lock"
    );

    // Another client's key that is not UTF-8: listed as its bytes, and counted by clear.
    assert_eq!(server.raw(r#"SET "lk:order:\xff" v"#).trim(), "+OK");
    let mut rest = b.keys("*", 100).await.expect("keys");
    rest.sort();
    assert_eq!(rest, [&b"order:1"[..], &b"order:\xff"[..]]);
    assert_eq!(b.clear().await.expect("clear"), rest.len() as u64);
    assert!(
        b.try_lock("order:2", Duration::from_secs(30))
            .await
            .expect("lock")
            .token
            .is_none(),
        "clear leaves in-flight fill locks to their holders"
    );
    assert_eq!(
        server.raw("DBSIZE").trim(),
        ":2",
        "only the two locks are left"
    );
}

#[tokio::test]
async fn clear_without_a_prefix_is_refused_unless_allowed() {
    let server = RedisServer::start();
    let b = backend(&server.url(), "").await;
    b.set("k", b"v", None).await.expect("set");
    let err = b.clear().await.expect_err("refused");
    assert!(matches!(err, BackendError::Rejected(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("prefix") && text.contains("allow_unprefixed_clear"),
        "{text}"
    );
    assert_eq!(server.raw("DBSIZE").trim(), ":1", "nothing was deleted");

    let everything = RedisBackend::builder(server.url())
        .allow_unprefixed_clear(true)
        .connect()
        .await
        .expect("connect");
    assert_eq!(everything.clear().await.expect("clear"), 1);
    assert_eq!(server.raw("DBSIZE").trim(), ":0");
}

#[tokio::test]
async fn a_corrupt_or_foreign_value_is_a_miss_and_is_overwritten() {
    let server = RedisServer::start();
    let cache = Cache::from_backend("r", backend(&server.url(), "c:").await);

    server.raw("SET c:user garbage-bytes");
    assert_eq!(cache.get::<User>("user").await.expect("no error"), None);
    assert!(cache.stats().decode_failures >= 1);
    let filled = cache
        .get_or_insert_with("user", None, || async { user(7) })
        .await;
    assert_eq!(filled, user(7));
    assert_eq!(cache.get::<User>("user").await.expect("get"), Some(user(7)));
    let raw = raw_get(&server, "c:user").expect("stored");
    assert_eq!(
        raw[0], 0xC7,
        "the fill overwrote the garbage with an envelope"
    );

    // A value another type wrote (a String envelope) is a miss for `User`, not an error.
    cache
        .set("user", &"not a user".to_string(), None)
        .await
        .expect("set");
    let before = cache.stats().decode_failures;
    assert_eq!(cache.get::<User>("user").await.expect("no error"), None);
    assert_eq!(cache.stats().decode_failures, before + 1);
    // A key holding another Redis type is an error from the server, which callers see as an
    // error (cached functions see it as a miss); a fill replaces it.
    server.raw("DEL c:user");
    server.raw("LPUSH c:user x");
    assert!(cache.get::<User>("user").await.is_err());
    let filled = cache
        .get_or_insert_with("user", None, || async { user(8) })
        .await;
    assert_eq!(filled, user(8));
    assert_eq!(cache.get::<User>("user").await.expect("get"), Some(user(8)));
}

/// The writer half of `two_processes_share_one_key`: does nothing unless the parent test
/// runs this binary with `LEX_TEST_SHARED_REDIS` set.
#[tokio::test]
async fn child_process_writer() {
    let Ok(url) = std::env::var("LEX_TEST_SHARED_REDIS") else {
        return;
    };
    let mut config = CacheConfig::default();
    let mut b = BackendConfig::redis("shared", url.as_str());
    b.prefix = "shared:".into();
    config.backends = vec![b];
    let caches = CacheModule::configure(config).await.expect("child boots");
    caches
        .cache()
        .set("user:42", &user(42), Some(Duration::from_secs(60)))
        .await
        .expect("child writes");
}

#[tokio::test]
async fn two_processes_share_one_key() {
    let server = RedisServer::start();
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_process_writer", "--quiet"])
        .env("LEX_TEST_SHARED_REDIS", server.url())
        .output()
        .expect("run the child process");
    assert!(
        out.status.success(),
        "the writer process failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut config = CacheConfig::default();
    let mut b = BackendConfig::redis("shared", server.url());
    b.prefix = "shared:".into();
    config.backends = vec![b];
    let caches = CacheModule::configure(config).await.expect("boots");
    assert_eq!(
        caches.cache().get::<User>("user:42").await.expect("read"),
        Some(user(42)),
        "this process reads the typed value the other process wrote"
    );
}

static LOOKUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[lexigram_cache::cacheable(ttl = 60, key = "user:{id}")]
async fn load_user(id: u64) -> Result<User, std::io::Error> {
    LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(user(id))
}

/// The only test in this binary that installs a registry (installing is process-wide).
#[tokio::test]
async fn cacheable_functions_use_an_installed_redis_backend() {
    let server = RedisServer::start();
    let mut config = CacheConfig::default();
    let mut b = BackendConfig::redis("default", server.url());
    b.prefix = "svc:".into();
    config.backends = vec![b];
    CacheModule::configure(config)
        .await
        .expect("boots")
        .install();
    assert_eq!(load_user(9).await.expect("first call"), user(9));
    assert_eq!(load_user(9).await.expect("second call"), user(9));
    assert_eq!(LOOKUPS.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(server.raw("EXISTS svc:user:9").trim(), ":1");
    let pttl: i64 = server
        .raw("PTTL svc:user:9")
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("PTTL");
    assert!(
        (1..=66_000).contains(&pttl),
        "ttl = 60 s ± 10% jitter, got {pttl} ms"
    );
}

#[tokio::test]
async fn passwords_never_show_in_debug_display_or_errors() {
    let password = "s3cret-Pa55";
    let server = RedisServer::start_with_password(password);
    let good = format!("redis://:{password}@127.0.0.1:{}", server.port());

    let mut config = CacheConfig::default();
    let mut b = BackendConfig::redis("main", good.as_str());
    b.prefix = "p:".into();
    config.backends = vec![b];
    let caches = CacheModule::configure(config.clone())
        .await
        .expect("boots with the right password");
    caches.cache().set("k", &1u8, None).await.expect("set");
    let backend = RedisBackend::builder(good.as_str())
        .connect()
        .await
        .expect("connect");
    for shown in [
        format!("{config:?}"),
        format!("{caches:?}"),
        format!("{backend:?}"),
        backend.servers().to_owned(),
    ] {
        assert!(!shown.contains(password), "leaked: {shown}");
    }

    // The wrong password: the error names the backend and the redacted URL, never a password.
    let wrong = format!("redis://:wrong-{password}@127.0.0.1:{}", server.port());
    config.backends[0].redis_url = Some(wrong.as_str().into());
    let err = CacheModule::configure(config.clone())
        .await
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(text.contains("`main`"), "{text}");
    assert!(!text.contains(password), "leaked: {text}");
    assert!(
        text.contains(&format!("redis://:***@127.0.0.1:{}", server.port())),
        "{text}"
    );

    // Nobody listening: same rules.
    let dead = format!("redis://app:{password}@127.0.0.1:{}", free_port(false));
    config.backends[0].redis_url = Some(dead.as_str().into());
    let err = CacheModule::configure(config).await.expect_err("no server");
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("`main`") && text.contains("app:***@"),
        "{text}"
    );
    assert!(!text.contains(password), "leaked: {text}");
}

#[tokio::test]
async fn a_secondary_backend_may_be_down_at_boot_and_reconnects_later() {
    let port = free_port(false);
    let mut config = CacheConfig::default();
    let mut primary = BackendConfig::memory("local");
    primary.default = true;
    let mut remote = BackendConfig::redis("remote", format!("redis://127.0.0.1:{port}"));
    remote.prefix = "late:".into();
    remote.connect_timeout = Duration::from_millis(300);
    config.backends = vec![primary, remote];
    // Failed calls open the breaker; let it probe again soon.
    config.service.breaker_open_for = Duration::from_millis(200);
    let caches = CacheModule::configure(config)
        .await
        .expect("a secondary backend that is down is only a warning");
    let remote = caches.named("remote").expect("configured");
    let err = remote.get::<u8>("k").await.expect_err("nobody listening");
    assert!(
        matches!(
            err,
            CacheError::Backend {
                source: BackendError::Connection(_),
                ..
            }
        ),
        "{err:?}"
    );

    let _server = RedisServer::start_at(port);
    // Failed attempts are retried at most once a second. A write fails until one reaches the
    // server: a connection error, then `CircuitOpen` while the breaker skips the backend.
    let mut stored = false;
    for _ in 0..50 {
        if remote.set("k", &5u8, None).await.is_ok() {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "never reconnected");
    assert_eq!(remote.get::<u8>("k").await.expect("get"), Some(5));
}

#[tokio::test]
async fn a_stopped_server_times_out_instead_of_hanging() {
    let server = RedisServer::start();
    let b = RedisBackend::builder(server.url())
        .prefix("s:")
        .op_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect");
    b.set("k", b"v", None).await.expect("set");
    server.pause();
    let err = b.get("k").await.expect_err("paused server");
    server.resume();
    assert!(matches!(err, BackendError::Timeout(_)), "{err:?}");
    // The same connection serves again once the server runs.
    let mut value = None;
    for _ in 0..50 {
        if let Ok(v) = b.get("k").await {
            value = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn tls_with_the_right_ca_works_and_a_wrong_ca_fails_clearly() {
    let server = RedisServer::start_tls();
    let tls = server.tls().clone();
    let url = format!("rediss://127.0.0.1:{}", tls.port);
    let b = RedisBackend::builder(url.as_str())
        .prefix("tls:")
        .ca_file(&tls.ca)
        .connect()
        .await
        .expect("TLS connection with the test CA");
    check_backend(&b, "").await;
    assert_eq!(server.raw("EXISTS tls:missing").trim(), ":0");

    for ca in [Some(&tls.other_ca), None] {
        let mut builder = RedisBackend::builder(url.as_str()).prefix("tls:");
        if let Some(ca) = ca {
            builder = builder.ca_file(ca);
        }
        let err = builder.connect().await.expect_err("untrusted certificate");
        let text = err.to_string();
        assert!(
            text.contains("ca_file") && text.contains(&url),
            "the error says to set ca_file and names the server: {text}"
        );
    }

    let err = RedisBackend::builder(url.as_str())
        .ca_file("/nonexistent/ca.pem")
        .build()
        .expect_err("missing CA file");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn cluster_keeps_the_backend_contract_across_slots_and_masters() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let mut builder = RedisBackend::builder(urls[0].as_str()).prefix("cl:");
    for u in &urls[1..] {
        builder = builder.node(u.as_str());
    }
    let b = builder.connect().await.expect("connect to the cluster");
    assert!(b.is_cluster());
    check_backend(&b, "").await;

    // Many keys spread over every master; multi-key calls split by slot.
    let keys: Vec<String> = (0..300).map(|i| format!("item:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, &[u8])> = refs.iter().map(|k| (*k, k.as_bytes())).collect();
    b.set_many(&items, Some(Duration::from_secs(60)))
        .await
        .expect("set_many across slots");
    let slots: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.keyslot(&format!("cl:{k}")))
        .collect();
    assert!(slots.len() > 100, "keys span many slots");
    for node in cluster.nodes() {
        let size: u64 = node
            .raw("DBSIZE")
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("DBSIZE");
        assert!(size > 0, "every master holds some of the keys");
    }
    let got = b.get_many(&refs).await.expect("get_many across slots");
    for (k, v) in keys.iter().zip(&got) {
        assert_eq!(v.as_deref(), Some(k.as_bytes()));
    }
    assert_eq!(b.delete_many(&refs[..100]).await.expect("delete_many"), 100);

    // A foreign key on the cluster survives pattern delete and clear.
    let foreign = RedisBackend::builder(urls[0].as_str())
        .cluster(true)
        .connect()
        .await
        .expect("a cluster client from one seed");
    foreign
        .set("{x}item:1", b"foreign", None)
        .await
        .expect("set foreign");
    assert_eq!(b.delete_pattern("item:1*").await.expect("pattern"), 100);
    assert_eq!(b.clear().await.expect("clear"), 100);
    assert!(
        foreign.get("{x}item:1").await.expect("get").is_some(),
        "still there"
    );
}

/// Waits until a node other than `down` reports the master on `down`'s port as failing
/// (`fail?` or `fail`) in `CLUSTER NODES`.
fn wait_flagged_failing(cluster: &RedisCluster, down: usize) {
    let port = cluster.nodes()[down].port();
    let witness = &cluster.nodes()[(down + 1) % 3];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = witness.raw("CLUSTER NODES");
        let flagged = nodes.lines().any(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1).unwrap_or("");
            let flags = fields.next().unwrap_or("");
            addr.starts_with(&format!("127.0.0.1:{port}@"))
                && flags.split(',').any(|f| f == "fail?" || f == "fail")
        });
        if flagged {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the paused master was never flagged: {nodes}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_cluster_scan_with_a_failing_master_is_an_error_naming_it() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let mut builder = RedisBackend::builder(urls[0].as_str())
        .prefix("fl:")
        .op_timeout(Duration::from_millis(300));
    for u in &urls[1..] {
        builder = builder.node(u.as_str());
    }
    let b = builder.connect().await.expect("connect to the cluster");
    let keys: Vec<String> = (0..90).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    b.set_many(&items, None).await.expect("set_many");
    assert_eq!(b.keys("*", 1000).await.expect("keys").len(), 90);
    // Seeds by host name, where the cluster announces addresses: the scan still finds them.
    let mut by_name =
        RedisBackend::builder(urls[0].replace("127.0.0.1", "localhost")).prefix("fl:");
    for u in &urls[1..] {
        by_name = by_name.node(u.replace("127.0.0.1", "localhost"));
    }
    let by_name = by_name.connect().await.expect("connect by host name");
    assert_eq!(by_name.keys("*", 1000).await.expect("keys").len(), 90);

    let down = 2;
    let port = cluster.nodes()[down].port();
    cluster.nodes()[down].pause();
    wait_flagged_failing(&cluster, down);
    let name = format!("127.0.0.1:{port}");
    let listed = b.keys("*", 1000).await.map(|k| k.len() as u64);
    let deleted = b.delete_pattern("k*").await;
    let cleared = b.clear().await;
    cluster.nodes()[down].resume();
    for result in [listed, deleted, cleared] {
        let err = result.expect_err("a master is missing: no partial count");
        assert!(err.to_string().contains(&name), "names {name}: {err}");
    }
}
