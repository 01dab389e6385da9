//! The production password rules, checked with `check_security` and the loader only: nothing
//! here connects anywhere.

use lexigram_cache::{BackendConfig, CacheConfig};
use lexigram_cache_tests::config::{from_vars, from_yaml, message};

fn redis_at(url: &str) -> CacheConfig {
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::redis("default", url)];
    c
}

#[test]
fn a_whitespace_password_is_no_password() {
    let mut c = redis_at("redis://10.0.0.5:6379");
    c.backends[0].password = Some("   ".into());
    let t = message(c.check_security(true));
    assert!(t.contains("no password"), "{t}");
    let t = message(redis_at("redis://:%20%20@10.0.0.5:6379").check_security(true));
    assert!(t.contains("no password"), "{t}");
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::memcached("mc", ["10.0.0.7:11211"])];
    c.backends[0].password = Some("\t".into());
    assert!(message(c.check_security(true)).contains("no password"));
}

#[test]
fn the_loopback_exemption_uses_the_host_the_client_connects_to() {
    // The client connects to 10.0.0.5; the `@localhost` is in the query.
    let t = message(redis_at("redis://10.0.0.5:6379/?x=@localhost").check_security(true));
    assert!(t.contains("no password"), "{t}");
    let t = message(redis_at("redis://10.0.0.5:6379/0#@127.0.0.1").check_security(true));
    assert!(t.contains("no password"), "{t}");
    // A user name alone is no password.
    let t = message(redis_at("redis://app@10.0.0.5:6379").check_security(true));
    assert!(t.contains("no password"), "{t}");
}

#[test]
fn a_numeric_password_is_read_as_text_and_never_echoed() {
    let c = from_vars(&[
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
        ("LEX_CACHE__BACKENDS__0__HOST", "10.0.0.5"),
        ("LEX_CACHE__BACKENDS__0__PASSWORD", "123456"),
    ])
    .expect("a numeric password from a variable loads");
    assert_eq!(
        c.backends[0].password.as_ref().map(|p| p.expose()),
        Some("123456")
    );
    assert!(message(c.check_security(true)).contains("weak password"));

    // Digits that a number would change are kept as written.
    for written in ["0x1F", "00987", "1e3", "+5", "9223372036854775808123"] {
        let c = from_vars(&[
            ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
            ("LEX_CACHE__BACKENDS__0__HOST", "10.0.0.5"),
            ("LEX_CACHE__BACKENDS__0__PASSWORD", written),
        ])
        .expect("loads");
        assert_eq!(
            c.backends[0].password.as_ref().map(|p| p.expose()),
            Some(written)
        );
    }

    let c = from_yaml(
        "cache:\n  backends:\n    - type: redis\n      host: 10.0.0.5\n      password: 987654321987\n",
    )
    .expect("a numeric password in YAML loads");
    assert_eq!(
        c.backends[0].password.as_ref().map(|p| p.expose()),
        Some("987654321987")
    );
    let t = format!("{c:?}");
    assert!(!t.contains("987654321987"), "{t}");

    // Shapes that are no password: the error names the field, not the value.
    for bad in ["[987654, 321987]", "{a: 987654321}", "9876.54321"] {
        let t = message(from_yaml(&format!(
            "cache:\n  backends:\n    - type: redis\n      host: 10.0.0.5\n      password: {bad}\n"
        )));
        assert!(t.contains("backends[0].password"), "{t}");
        assert!(!t.contains("987654") && !t.contains("321"), "{t}");
    }
}

#[test]
fn cluster_node_passwords_are_checked_and_named_by_their_field() {
    let mut c = CacheConfig::default();
    let mut b = BackendConfig::redis("default", "redis://:Zq8-long-and-random-4411@10.0.0.5:7000");
    b.nodes = vec![
        "redis://:Zq8-long-and-random-4411@10.0.0.6:7001".into(),
        "redis://:admin@10.0.0.7:7002".into(),
    ];
    c.backends = vec![b];
    let t = message(c.check_security(true));
    assert!(t.contains("weak password"), "{t}");
    assert!(t.contains("backends[0].nodes[1]"), "{t}");
    assert!(t.contains("LEX_CACHE__BACKENDS__0__NODES__1"), "{t}");
    assert!(!t.contains("admin"), "{t}");

    // Nodes without credentials take `password`; one weak `password` covers them all.
    let mut c = CacheConfig::default();
    let mut b = BackendConfig::memory("default");
    b.kind = lexigram_cache::BackendKind::Redis;
    b.nodes = vec![
        "redis://10.0.0.6:7001".into(),
        "redis://10.0.0.7:7002".into(),
    ];
    b.password = Some("secret".into());
    c.backends = vec![b];
    let t = message(c.check_security(true));
    assert!(
        t.contains("weak password") && t.contains("backends[0].password"),
        "{t}"
    );
    // Without any password: the first non-loopback node is named.
    c.backends[0].password = None;
    let t = message(c.check_security(true));
    assert!(
        t.contains("no password") && t.contains("backends[0].nodes[0]"),
        "{t}"
    );
}

#[tokio::test]
async fn an_at_after_the_host_is_refused_before_connecting() {
    for url in [
        "redis://127.0.0.1:1/?x=@localhost",
        "redis://:ab/cd@127.0.0.1:1",
    ] {
        let t = message(lexigram_cache::CacheModule::configure(redis_at(url)).await);
        assert!(
            t.contains("%2F") && t.contains("backends[0].redis_url"),
            "{t}"
        );
        assert!(!t.contains("ab/cd"), "{t}");
    }
}

#[test]
fn a_percent_encoded_weak_password_is_still_weak() {
    for url in [
        "redis://:pass%77ord@10.0.0.5:6379",
        "redis://app:%73%65%63%72%65%74@10.0.0.5:6379",
        "redis://:%20admin%20@10.0.0.5:6379",
    ] {
        let t = message(redis_at(url).check_security(true));
        assert!(t.contains("weak password"), "{url}: {t}");
    }
}

#[test]
fn ipv4_mapped_loopback_is_loopback() {
    for url in [
        "redis://[::ffff:127.0.0.1]:6379",
        "redis://[::ffff:7f00:1]:6379",
        "redis://[0:0:0:0:0:0:0:1]:6379",
        "redis://LOCALHOST:6379",
    ] {
        redis_at(url).check_security(true).expect(url);
    }
    let mut c = CacheConfig::default();
    c.backends = vec![BackendConfig::memcached("mc", ["[::ffff:127.0.0.1]:11211"])];
    c.check_security(true)
        .expect("memcached at a mapped loopback");
    // A mapped routable address is not.
    assert!(
        redis_at("redis://[::ffff:10.0.0.5]:6379")
            .check_security(true)
            .is_err()
    );
}
