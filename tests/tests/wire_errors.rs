//! What a Redis backend says when it reaches a server but cannot work with it: TLS to a plain
//! port, a wrong password, a database that does not exist, a user without the rights the cache
//! needs, and a server that is not Redis at all. Each against a real server on 127.0.0.1.

use std::time::Duration;

use lexigram_cache::{BackendConfig, CacheConfig, CacheError, CacheModule, RedisBackend};
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};

const DOWN_HINT: &str = "check that the server is running";

async fn connect_error(url: &str, prefix: &str) -> String {
    let err = RedisBackend::builder(url)
        .prefix(prefix)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("the backend must not connect");
    err.to_string()
}

/// Boots a service whose default backend is `url` and returns its error.
async fn boot_error(url: &str, prefix: &str) -> String {
    let mut config = CacheConfig::default();
    let mut b = BackendConfig::redis("main", url);
    b.prefix = prefix.into();
    config.backends = vec![b];
    let err = CacheModule::configure(config)
        .await
        .expect_err("boot must fail");
    assert!(matches!(err, CacheError::Backend { .. }), "{err:?}");
    err.to_string()
}

#[tokio::test]
async fn rediss_to_a_plain_server_says_the_tls_handshake_failed() {
    let server = RedisServer::start();
    let text = connect_error(&format!("rediss://127.0.0.1:{}", server.port()), "").await;
    assert!(text.contains("TLS handshake"), "{text}");
    assert!(
        text.contains("redis://"),
        "says what to use instead: {text}"
    );
    assert!(!text.contains(DOWN_HINT), "{text}");
}

#[tokio::test]
async fn a_wrong_password_says_to_fix_the_password() {
    let server = RedisServer::start_with_password("right-Pa55word");
    let text = connect_error(
        &format!("redis://:wrong-Pa55word@127.0.0.1:{}", server.port()),
        "",
    )
    .await;
    assert!(text.contains("password"), "{text}");
    assert!(!text.contains(DOWN_HINT), "{text}");
    assert!(!text.contains("wrong-Pa55word"), "leaked: {text}");
}

#[tokio::test]
async fn a_database_index_out_of_range_says_which_exist() {
    let server = RedisServer::start();
    let text = connect_error(&format!("redis://127.0.0.1:{}/99", server.port()), "").await;
    assert!(text.contains("99") && text.contains("databases"), "{text}");
    assert!(!text.contains(DOWN_HINT), "{text}");
}

#[tokio::test]
async fn a_server_that_wants_a_password_fails_connect_and_boot() {
    let server = RedisServer::start_with_password("right-Pa55word");
    let url = format!("redis://127.0.0.1:{}", server.port());
    for text in [
        connect_error(&url, "app:").await,
        boot_error(&url, "app:").await,
    ] {
        assert!(text.contains("NOAUTH"), "the server's own error: {text}");
        assert!(text.contains("password"), "says what to set: {text}");
        assert!(!text.contains(DOWN_HINT), "{text}");
    }
}

#[tokio::test]
async fn a_user_without_rights_on_the_prefix_fails_connect_and_boot() {
    let server = RedisServer::start();
    let ok = server.raw("ACL SETUSER reader on >reader-Pa55word ~other:* +@all");
    assert!(ok.contains("OK"), "{ok}");
    let url = format!("redis://reader:reader-Pa55word@127.0.0.1:{}", server.port());
    for text in [
        connect_error(&url, "app:").await,
        boot_error(&url, "app:").await,
    ] {
        assert!(
            text.to_lowercase().contains("noperm"),
            "the server's own error: {text}"
        );
        assert!(text.contains("`reader`") && text.contains("app:"), "{text}");
        assert!(!text.contains(DOWN_HINT), "{text}");
        assert!(!text.contains("reader-Pa55word"), "leaked: {text}");
    }
    // The same user with rights on the prefix works.
    let ok = server.raw("ACL SETUSER reader ~app:*");
    assert!(ok.contains("OK"), "{ok}");
    RedisBackend::builder(url.as_str())
        .prefix("app:")
        .connect()
        .await
        .expect("rights on the prefix are enough");
}

#[tokio::test]
async fn a_redis_url_at_a_memcached_server_says_it_is_not_redis_in_one_line() {
    let server = MemcachedServer::start();
    let text = connect_error(&format!("redis://{}", server.addr()), "").await;
    assert!(text.contains("did not answer like Redis"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(!text.contains(DOWN_HINT), "{text}");
}
