//! The Memcached backend against real `memcached` processes spawned on 127.0.0.1.

use std::time::Duration;

use lexigram_cache::{
    BackendConfig, BackendError, Cache, CacheBackend, CacheConfig, CacheError, CacheModule,
    MemcachedBackend,
};
use lexigram_cache_tests::conformance::{check_basics, check_huge_ttls};
use lexigram_cache_tests::servers::MemcachedServer;

fn backend(servers: &[&MemcachedServer], prefix: &str) -> MemcachedBackend {
    MemcachedBackend::builder(servers.iter().map(|s| s.addr()))
        .prefix(prefix)
        .build()
        .expect("valid addresses")
}

#[tokio::test]
async fn one_server_keeps_the_backend_contract() {
    let server = MemcachedServer::start();
    let b = backend(&[&server], "conf:");
    check_basics(&b, "").await;
    assert_eq!(b.kind(), "memcached");
    for err in [
        b.delete_pattern("user:*")
            .await
            .expect_err("no key listing"),
        b.clear().await.expect_err("no key listing"),
    ] {
        assert!(
            matches!(
                err,
                BackendError::Unsupported {
                    backend: "memcached",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("memcached cannot list"), "{err}");
    }
}

#[tokio::test]
async fn three_servers_share_the_keys_and_a_dead_one_only_loses_its_own() {
    let a = MemcachedServer::start();
    let b = MemcachedServer::start();
    let mut c = MemcachedServer::start();
    let backend = MemcachedBackend::builder([a.addr(), b.addr(), c.addr()])
        .prefix("ring:")
        .connect_timeout(Duration::from_millis(300))
        .build()
        .expect("build");
    check_basics(&backend, "three:").await;

    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, &[u8])> = refs.iter().map(|k| (*k, k.as_bytes())).collect();
    backend.set_many(&items, None).await.expect("set_many");
    for server in [&a, &b, &c] {
        let on_it = refs
            .iter()
            .filter(|k| backend.server_for(k) == server.addr())
            .count();
        assert!(
            (60..140).contains(&on_it),
            "{} holds {on_it} of 300 keys",
            server.addr()
        );
    }

    let dead = c.addr();
    c.kill();
    let got = backend
        .get_many(&refs)
        .await
        .expect("the live servers answer");
    for (k, v) in refs.iter().zip(&got) {
        if backend.server_for(k) == dead {
            assert_eq!(v, &None, "{k} lived on the dead server: a miss");
        } else {
            assert_eq!(v.as_deref(), Some(k.as_bytes()), "{k} survives");
        }
    }
    let lost = refs
        .iter()
        .find(|k| backend.server_for(k) == dead)
        .expect("some key on the dead server");
    assert!(
        backend.get(lost).await.is_err(),
        "a direct read reports the error"
    );

    // Through the cache, the caller of a fill never sees the dead server.
    let cache = Cache::from_backend("mc", backend.clone());
    let value = cache
        .get_or_insert_with(lost, None, || async { 41u32 + 1 })
        .await;
    assert_eq!(value, 42);
    backend
        .ping()
        .await
        .expect("the others answer, so the backend does");
    let down: Vec<String> = backend
        .ping_each()
        .await
        .into_iter()
        .filter_map(|(addr, pinged)| pinged.is_err().then_some(addr))
        .collect();
    assert_eq!(down, [dead]);
}

#[tokio::test]
async fn any_key_is_safe_and_distinct() {
    let server = MemcachedServer::start();
    let b = backend(&[&server], "safe:");
    let keys = [
        "a b\r\nflush_all".to_owned(),
        "a b".to_owned(),
        "a b\r\n".to_owned(),
        "a_b".to_owned(),
        "tab\there".to_owned(),
        "\u{0}nul".to_owned(),
        "ключ 🔑".to_owned(),
        "k".repeat(300),
        format!("{}x", "k".repeat(299)),
        "k".repeat(186),
        "k".repeat(187),
        String::new(),
    ];
    for (i, k) in keys.iter().enumerate() {
        b.set(k, format!("value {i}").as_bytes(), None)
            .await
            .expect("any key is accepted");
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            b.get(k).await.expect("get"),
            Some(format!("value {i}").into_bytes()),
            "key {k:?} reads its own value"
        );
    }
    // The would-be injected command did not run: everything is still there.
    assert_eq!(
        b.get("a b").await.expect("get").as_deref(),
        Some(&b"value 1"[..])
    );
    let stats = server.raw("stats");
    assert!(stats.contains("STAT"), "{stats}");
    assert!(b.delete(&"k".repeat(300)).await.expect("delete long key"));
    assert_eq!(b.get(&"k".repeat(300)).await.expect("get"), None);
    assert!(
        b.get(&format!("{}x", "k".repeat(299)))
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn a_cancelled_request_never_hands_its_reply_to_the_next_one() {
    let server = MemcachedServer::start();
    let b = MemcachedBackend::builder([server.addr()])
        .pool_size(1)
        .op_timeout(Duration::from_millis(150))
        .build()
        .expect("build");
    b.set("first", b"A", None).await.expect("set");
    b.set("second", b"B", None).await.expect("set");
    assert_eq!(b.idle_connections(), vec![1]);

    // The request goes out, the frozen server does not answer, the call times out: its reply
    // ("A") is still on its way on that connection.
    server.pause();
    let err = b.get("first").await.expect_err("paused server");
    assert!(matches!(err, BackendError::Timeout(_)), "{err:?}");
    server.resume();
    assert_eq!(b.idle_connections(), vec![0], "the connection was dropped");
    assert_eq!(
        b.get("second").await.expect("get").as_deref(),
        Some(&b"B"[..]),
        "the next request reads its own reply"
    );

    // The same when the caller drops the future itself (task cancelled mid-flight).
    server.pause();
    let pending = tokio::spawn({
        let b = b.clone();
        async move { b.get("first").await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    pending.abort();
    let _ = pending.await;
    server.resume();
    assert_eq!(
        b.get("second").await.expect("get").as_deref(),
        Some(&b"B"[..])
    );
    assert_eq!(b.idle_connections(), vec![1]);
}

#[tokio::test]
async fn ttls_longer_than_thirty_days_do_not_expire_at_once() {
    let server = MemcachedServer::start();
    let b = backend(&[&server], "ttl:");
    b.set("long", b"v", Some(Duration::from_secs(40 * 24 * 3600)))
        .await
        .expect("set");
    assert_eq!(
        b.get("long").await.expect("get").as_deref(),
        Some(&b"v"[..])
    );
    b.set("short", b"v", Some(Duration::from_millis(1)))
        .await
        .expect("set");
    assert!(
        b.get("short").await.expect("get").is_some(),
        "rounded up to 1 s"
    );
}

/// Bytes that do not compress, so a value stays over the item limit with compression on.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn values_over_the_item_size_limit_are_a_clear_error_and_callers_still_get_theirs() {
    let server = MemcachedServer::start();
    let b = backend(&[&server], "big:");
    let big = vec![7u8; 2 * 1024 * 1024];
    let err = b
        .set("k", &big, None)
        .await
        .expect_err("refused before sending");
    assert!(matches!(err, BackendError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("max_item_size"), "{err}");

    // A client that believes the limit is higher: the server refuses, the error says so, and
    // the connection pool keeps working.
    let optimistic = MemcachedBackend::builder([server.addr()])
        .prefix("big:")
        .max_item_size(8 * 1024 * 1024)
        .build()
        .expect("build");
    let err = optimistic
        .set("k", &big, None)
        .await
        .expect_err("server refuses");
    assert!(matches!(err, BackendError::Rejected(_)), "{err:?}");
    optimistic
        .set("small", b"s", None)
        .await
        .expect("still usable");
    assert_eq!(
        optimistic.get("small").await.expect("get").as_deref(),
        Some(&b"s"[..])
    );

    let cache = Cache::from_backend("mc", b);
    let value = cache
        .get_or_insert_with("huge", None, || async { noise(2 * 1024 * 1024) })
        .await;
    assert_eq!(value.len(), 2 * 1024 * 1024, "the caller gets its value");
    assert!(cache.stats().errors >= 1, "the failed store is counted");
}

#[tokio::test]
async fn configure_builds_memcached_backends() {
    let server = MemcachedServer::start();
    let mut config = CacheConfig::default();
    let mut b = BackendConfig::memcached("default", [server.addr()]);
    b.prefix = "cfg:".into();
    config.backends = vec![b];
    let caches = CacheModule::configure(config.clone()).await.expect("boots");
    let cache = caches.cache();
    cache.set("n", &5u64, None).await.expect("set");
    assert_eq!(cache.get::<u64>("n").await.expect("get"), Some(5));
    assert!(caches.health().await.is_healthy());

    let mut dead = MemcachedServer::start();
    config.backends[0].servers = vec![dead.addr()];
    dead.kill();
    let err = CacheModule::configure(config.clone())
        .await
        .expect_err("the default backend is down");
    assert!(
        matches!(err, CacheError::Backend { .. }) && err.to_string().contains("`default`"),
        "{err}"
    );

    config.backends[0].servers = vec!["not an address".into()];
    let err = CacheModule::configure(config)
        .await
        .expect_err("bad address");
    assert!(err.to_string().contains("backends[0].servers[0]"), "{err}");
}

#[tokio::test]
async fn tls_with_the_right_ca_works_and_a_wrong_ca_fails_clearly() {
    let server = MemcachedServer::start_tls();
    let tls = server.tls().clone();
    let b = MemcachedBackend::builder([server.addr()])
        .prefix("tls:")
        .ca_file(&tls.ca)
        .build()
        .expect("build");
    check_basics(&b, "").await;

    for ca in [Some(&tls.other_ca), None] {
        let mut builder = MemcachedBackend::builder([server.addr()]).tls(true);
        if let Some(ca) = ca {
            builder = builder.ca_file(ca);
        }
        let err = builder
            .build()
            .expect("build")
            .get("k")
            .await
            .expect_err("untrusted certificate");
        let text = err.to_string();
        assert!(
            text.contains("ca_file") && text.contains(&server.addr()),
            "the error says to set ca_file and names the server: {text}"
        );
    }
    let err = MemcachedBackend::builder([server.addr()])
        .ca_file("/nonexistent/ca.pem")
        .build()
        .expect_err("missing CA file");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn text_authentication_with_a_password_that_is_never_printed() {
    let dir = lexigram_cache_tests::servers::ScratchDir::new("mc-auth");
    let auth = dir.path().join("auth");
    std::fs::write(&auth, "app:Str0ng-pass-99\n").expect("auth file");
    let server = MemcachedServer::start_with(&["-Y", auth.to_str().expect("utf-8")]);

    let mut config = CacheConfig::default();
    let mut b = BackendConfig::memcached("default", [server.addr()]);
    b.username = Some("app".into());
    b.password = Some("Str0ng-pass-99".into());
    config.backends = vec![b];
    let caches = CacheModule::configure(config.clone())
        .await
        .expect("authenticated");
    caches.cache().set("k", &3u8, None).await.expect("set");
    assert_eq!(caches.cache().get::<u8>("k").await.expect("get"), Some(3));

    config.backends[0].password = Some("wrong-pass-77".into());
    let err = CacheModule::configure(config.clone())
        .await
        .expect_err("wrong password");
    let text = format!("{err} {err:?} {config:?}");
    assert!(
        text.contains("authentication as `app` was refused"),
        "{text}"
    );
    assert!(!text.contains("wrong-pass-77"), "{text}");

    let unauthenticated = MemcachedBackend::builder([server.addr()])
        .build()
        .expect("build");
    let err = unauthenticated.get("k").await.expect_err("no credentials");
    assert!(
        err.to_string().contains("requires authentication") && err.to_string().contains("username"),
        "{err}"
    );
}

/// The seconds left on `key` as memcached reports them (`mg <key> t`); `-1` means no expiry.
fn server_ttl(server: &MemcachedServer, key: &str) -> i64 {
    let reply = server.raw(&format!("mg {key} t"));
    let flag = reply
        .split_whitespace()
        .find_map(|w| w.strip_prefix('t'))
        .unwrap_or_else(|| panic!("mg {key} t answered {reply:?}"));
    flag.parse().expect("the t flag is an integer")
}

#[tokio::test]
async fn ttls_past_2038_are_clamped_instead_of_expiring_at_once() {
    let server = MemcachedServer::start();
    let b = backend(&[&server], "ttl:");
    check_huge_ttls(&b, |key| server_ttl(&server, &format!("ttl:{key}"))).await;
}

#[tokio::test]
async fn credentials_are_never_sent_to_a_server_that_does_not_ask_for_them() {
    let server = MemcachedServer::start();
    let mut config = CacheConfig::default();
    let mut b = BackendConfig::memcached("default", [server.addr()]);
    b.username = Some("app".into());
    b.password = Some("Str0ng-pass-99".into());
    config.backends = vec![b];
    let err = CacheModule::configure(config.clone())
        .await
        .expect_err("credentials for a server without authentication");
    let text = err.to_string();
    assert!(
        text.contains("does not require authentication") && text.contains(&server.addr()),
        "{text}"
    );
    assert!(!text.contains("Str0ng-pass-99"), "{text}");
    assert_eq!(
        server.raw("get auth").trim(),
        "END",
        "the credentials were not stored as a value"
    );

    // A backend built by hand refuses every call the same way, and stores nothing.
    let direct = MemcachedBackend::builder([server.addr()])
        .credentials("app", "Str0ng-pass-99")
        .build()
        .expect("build");
    let err = direct.set("k", b"v", None).await.expect_err("refused");
    assert!(
        err.to_string().contains("does not require authentication"),
        "{err}"
    );
    assert_eq!(server.raw("get auth").trim(), "END");
    assert_eq!(server.raw("get k").trim(), "END");
}
