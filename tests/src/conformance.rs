//! The `CacheBackend` contract, checked against any backend. Every backend's test file calls
//! [`check_backend`]; keys are namespaced by `ns` so runs against a shared server do not
//! collide.

use std::time::Duration;

use lexigram_cache::CacheBackend;

/// Runs every method of the trait and asserts the documented contract.
pub async fn check_backend(b: &dyn CacheBackend, ns: &str) {
    check_basics(b, ns).await;
    check_listing(b, ns).await;
}

/// Everything but `delete_pattern` and `clear`, for backends that cannot list keys.
pub async fn check_basics(b: &dyn CacheBackend, ns: &str) {
    let k = |s: &str| format!("{ns}{s}");

    // get/set/exists/delete
    assert_eq!(b.get(&k("missing")).await.expect("get"), None);
    assert!(b.get(&k("missing")).await.expect("get").is_none());
    b.set(&k("a"), b"alpha", None).await.expect("set");
    assert_eq!(
        b.get(&k("a")).await.expect("get").as_deref(),
        Some(&b"alpha"[..])
    );
    assert!(b.get(&k("a")).await.expect("get").is_some());
    b.set(&k("a"), b"", Some(Duration::from_secs(60)))
        .await
        .expect("overwrite with empty value");
    assert_eq!(
        b.get(&k("a")).await.expect("get").as_deref(),
        Some(&b""[..])
    );
    assert!(b.delete(&k("a")).await.expect("delete"));
    assert!(!b.delete(&k("a")).await.expect("delete again"));
    assert_eq!(b.get(&k("a")).await.expect("get"), None);

    // binary-safe values
    let binary: Vec<u8> = (0..=255u8).collect();
    b.set(&k("bin"), &binary, None).await.expect("set binary");
    assert_eq!(b.get(&k("bin")).await.expect("get"), Some(binary));

    // batches
    let (k1, k2, k3) = (k("m1"), k("m2"), k("m3"));
    b.set_many(&[(&k1, b"1"), (&k2, b"2")], Some(Duration::from_secs(60)))
        .await
        .expect("set_many");
    let got = b.get_many(&[&k1, &k3, &k2]).await.expect("get_many");
    assert_eq!(
        got,
        vec![Some(b"1".to_vec()), None, Some(b"2".to_vec())],
        "get_many keeps the order of the keys and reports misses as None"
    );
    assert_eq!(
        b.delete_many(&[&k1, &k2, &k3]).await.expect("delete_many"),
        2
    );

    b.ping().await.expect("ping");
}

/// `delete_pattern` and `clear`.
pub async fn check_listing(b: &dyn CacheBackend, ns: &str) {
    let k = |s: &str| format!("{ns}{s}");
    let binary: Vec<u8> = (0..=255u8).collect();
    b.set(&k("bin"), &binary, None).await.expect("set binary");

    // pattern delete
    for i in 0..5 {
        b.set(&k(&format!("user:{i}")), b"u", None)
            .await
            .expect("set");
    }
    b.set(&k("user:10"), b"u", None).await.expect("set");
    b.set(&k("order:1"), b"o", None).await.expect("set");
    assert_eq!(
        b.delete_pattern(&k("user:?"))
            .await
            .expect("delete_pattern ?"),
        5
    );
    assert!(b.get(&k("user:10")).await.expect("get").is_some());
    assert_eq!(
        b.delete_pattern(&k("user:*"))
            .await
            .expect("delete_pattern *"),
        1
    );
    assert!(b.get(&k("order:1")).await.expect("get").is_some());

    // clear removes what this backend wrote
    let before = b.clear().await.expect("clear");
    assert!(
        before >= 2,
        "clear removed {before} keys, expected the two left"
    );
    assert_eq!(b.get(&k("order:1")).await.expect("get"), None);
    assert_eq!(b.get(&k("bin")).await.expect("get"), None);
}

/// Ttls far past what a server accepts (20 years, `Duration::MAX`) are clamped, never refused
/// and never turned into "expire at once" or "never expire": each value is readable afterwards,
/// the server holds a positive ttl for it (`server_ttl` reads it for a key as passed to `b`),
/// and a lock taken for `Duration::MAX` is granted. Returns the server's ttl of the 20-year key,
/// for a caller that knows the server's unit to bound it.
pub async fn check_huge_ttls(b: &dyn CacheBackend, server_ttl: impl Fn(&str) -> i64) -> i64 {
    let twenty_years = Duration::from_secs(20 * 365 * 24 * 3600);
    b.set("decades", b"v", Some(twenty_years))
        .await
        .expect("set");
    assert_eq!(
        b.get("decades").await.expect("get").as_deref(),
        Some(&b"v"[..]),
        "a 20-year ttl is readable afterwards"
    );
    let left = server_ttl("decades");
    assert!(left > 0, "server-side ttl {left}");

    b.set("max", b"m", Some(Duration::MAX)).await.expect("set");
    assert_eq!(b.get("max").await.expect("get").as_deref(), Some(&b"m"[..]));
    assert!(server_ttl("max") > 0, "a clamped ttl, not a persistent key");
    assert!(
        b.try_lock("max", Duration::MAX)
            .await
            .expect("lock")
            .token
            .is_some()
    );
    left
}
