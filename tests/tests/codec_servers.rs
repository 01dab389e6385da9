//! Compression against real servers: a large value is stored smaller and reads back, a small
//! one is stored as it is, and a corrupt compressed value is a counted miss; plus the
//! `compression` setting as configuration spells it.

use std::time::Duration;

use lexigram_cache::codec::{ENVELOPE_VERSION, HEADER_LEN};
use lexigram_cache::{
    BackendConfig, Cache, CacheBackend, CacheConfig, CacheModule, Compression, RedisBackend,
};
use lexigram_cache_tests::config::from_vars as load;
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    category: String,
    tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Catalogue {
    products: Vec<Product>,
}

/// About 40 KB of MessagePack with the repeated strings real records have.
fn catalogue() -> Catalogue {
    Catalogue {
        products: (0..600)
            .map(|id| Product {
                id,
                name: format!("garden chair model {}", id % 37),
                category: ["garden", "kitchen", "outdoor"][id as usize % 3].into(),
                tags: vec!["sale".into(), "new".into()],
            })
            .collect(),
    }
}

fn small() -> Product {
    Product {
        id: 1,
        name: "one".into(),
        category: "garden".into(),
        tags: vec![],
    }
}

/// Boots one backend of `kind` from configuration, with `compression` spelled as in YAML.
async fn boot(b: BackendConfig) -> Cache {
    let mut config = CacheConfig::default();
    config.backends = vec![b];
    CacheModule::configure(config)
        .await
        .expect("boots against the spawned server")
        .cache()
}

fn strlen(server: &RedisServer, key: &str) -> usize {
    let reply = server.raw(&format!("STRLEN {key}"));
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("STRLEN {key} answered {reply:?}"))
}

/// The size memcached reports for `key` (`mg <key> s`).
fn item_size(server: &MemcachedServer, key: &str) -> usize {
    let reply = server.raw(&format!("mg {key} s"));
    reply
        .split_whitespace()
        .find_map(|w| w.strip_prefix('s'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("mg {key} s answered {reply:?}"))
}

/// Stores the catalogue and the small value, reads both back, and returns the stored sizes of
/// (catalogue, small) as `stored_len` reports them.
async fn store_both(cache: &Cache, stored_len: impl Fn(&str) -> usize) -> (usize, usize) {
    let ttl = Some(Duration::from_secs(60));
    cache.set("big", &catalogue(), ttl).await.expect("set big");
    cache.set("small", &small(), ttl).await.expect("set small");
    assert_eq!(
        cache.get::<Catalogue>("big").await.expect("get big"),
        Some(catalogue())
    );
    assert_eq!(
        cache.get::<Product>("small").await.expect("get small"),
        Some(small())
    );
    assert_eq!(cache.stats().decode_failures, 0);
    (stored_len("c:big"), stored_len("c:small"))
}

fn redis_config(server: &RedisServer, compression: Compression) -> BackendConfig {
    let mut b = BackendConfig::redis("default", server.url());
    b.prefix = "c:".into();
    b.compression = compression;
    b
}

fn memcached_config(server: &MemcachedServer, compression: Compression) -> BackendConfig {
    let mut b = BackendConfig::memcached("default", [server.addr()]);
    b.prefix = "c:".into();
    b.compression = compression;
    b
}

#[tokio::test]
async fn redis_stores_a_large_value_compressed_and_a_small_one_as_it_is() {
    let server = RedisServer::start();
    let plain = boot(redis_config(&server, Compression::OFF)).await;
    let (big_plain, small_plain) = store_both(&plain, |k| strlen(&server, k)).await;
    let packed = boot(redis_config(&server, Compression::default())).await;
    let (big_packed, small_packed) = store_both(&packed, |k| strlen(&server, k)).await;
    assert!(big_plain > 16 * 1024, "the catalogue is {big_plain} bytes");
    assert!(
        big_packed * 4 < big_plain,
        "compressed {big_packed} bytes, plain {big_plain}"
    );
    assert_eq!(
        small_packed, small_plain,
        "below the threshold nothing changes"
    );
    assert!(small_plain < 1024 + HEADER_LEN);
    // The bytes on the server say so too: version 2 with the LZ4 flag, and a plain small one.
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let big: Vec<u8> = redis::cmd("GET")
        .arg("c:big")
        .query(&mut conn)
        .expect("GET");
    assert_eq!((big[1], big[3]), (ENVELOPE_VERSION, 1));
    let small: Vec<u8> = redis::cmd("GET")
        .arg("c:small")
        .query(&mut conn)
        .expect("GET");
    assert_eq!((small[1], small[3]), (1, 0));
    // A build with compression off still reads compressed values: the flag decides, not the
    // setting.
    assert_eq!(
        plain.get::<Catalogue>("big").await.expect("get"),
        Some(catalogue())
    );
}

#[tokio::test]
async fn memcached_stores_a_large_value_compressed_and_a_small_one_as_it_is() {
    let server = MemcachedServer::start();
    let plain = boot(memcached_config(&server, Compression::OFF)).await;
    let (big_plain, small_plain) = store_both(&plain, |k| item_size(&server, k)).await;
    let packed = boot(memcached_config(&server, Compression::default())).await;
    let (big_packed, small_packed) = store_both(&packed, |k| item_size(&server, k)).await;
    assert!(big_plain > 16 * 1024, "the catalogue is {big_plain} bytes");
    assert!(
        big_packed * 4 < big_plain,
        "compressed {big_packed} bytes, plain {big_plain}"
    );
    assert_eq!(small_packed, small_plain);
}

#[tokio::test]
async fn memcached_takes_a_value_compressed_below_its_item_limit() {
    // 300 KB of records with a 256 KB item limit: refused plain, stored compressed.
    let server = MemcachedServer::start_with(&["-I", "256k", "-o", "slab_chunk_max=131072"]);
    let big = Catalogue {
        products: (0..4500)
            .map(|id| Product {
                id,
                name: format!("garden chair model {}", id % 37),
                category: "garden".into(),
                tags: vec!["sale".into()],
            })
            .collect(),
    };
    let ttl = Some(Duration::from_secs(60));
    let mut b = memcached_config(&server, Compression::OFF);
    b.max_item_size = 256 * 1024;
    let plain = boot(b.clone()).await;
    assert!(
        plain.set("big", &big, ttl).await.is_err(),
        "too large plain"
    );
    b.compression = Compression::default();
    let packed = boot(b).await;
    packed.set("big", &big, ttl).await.expect("fits compressed");
    assert_eq!(
        packed.get::<Catalogue>("big").await.expect("get"),
        Some(big)
    );
}

#[tokio::test]
async fn a_corrupt_compressed_value_is_a_counted_miss_and_is_refilled() {
    let server = RedisServer::start();
    let cache = boot(redis_config(&server, Compression::default())).await;
    cache
        .set("big", &catalogue(), Some(Duration::from_secs(60)))
        .await
        .expect("set");
    let raw = RedisBackend::builder(server.url())
        .connect()
        .await
        .expect("connect");
    let mut bytes = raw.get("c:big").await.expect("get").expect("stored");
    // Damage the LZ4 block, and separately claim a huge inflated size.
    let mid = HEADER_LEN + 4 + (bytes.len() - HEADER_LEN - 4) / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b = 0xFF;
    }
    raw.set("c:big", &bytes, None).await.expect("overwrite");
    assert_eq!(cache.get::<Catalogue>("big").await.expect("a miss"), None);
    let mut huge = bytes.clone();
    huge[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    raw.set("c:big", &huge, None).await.expect("overwrite");
    assert_eq!(cache.get::<Catalogue>("big").await.expect("a miss"), None);
    assert_eq!(cache.stats().decode_failures, 2);
    // The next fill overwrites it.
    let value = cache
        .get_or_insert_with("big", Some(Duration::from_secs(60)), || async {
            catalogue()
        })
        .await;
    assert_eq!(value, catalogue());
    assert_eq!(
        cache.get::<Catalogue>("big").await.expect("get"),
        Some(catalogue())
    );
}

#[test]
fn the_setting_takes_sizes_units_and_off() {
    let redis = [
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis"),
        ("LEX_CACHE__BACKENDS__0__REDIS_URL", "redis://127.0.0.1:1"),
    ];
    let with = |value: &'static str| {
        let mut vars = redis.to_vec();
        vars.push(("LEX_CACHE__BACKENDS__0__COMPRESSION", value));
        load(&vars)
    };
    let threshold = |value| {
        with(value)
            .unwrap_or_else(|e| panic!("{value}: {e}"))
            .backends[0]
            .compression
            .min_size()
    };
    assert_eq!(
        load(&redis).expect("loads").backends[0].compression,
        Compression::default()
    );
    assert_eq!(Compression::default().min_size(), Some(1024));
    assert_eq!(threshold("4096"), Some(4096));
    assert_eq!(threshold("16KiB"), Some(16 * 1024));
    assert_eq!(threshold("2 MiB"), Some(2 * 1024 * 1024));
    assert_eq!(threshold("10kb"), Some(10_000));
    assert_eq!(threshold("off"), None);
    assert_eq!(threshold("0"), None);
    let err = with("lots").expect_err("not a size").to_string();
    assert!(
        err.contains("compression") && err.contains("16KiB"),
        "{err}"
    );
    let err = with("-5").expect_err("negative").to_string();
    assert!(err.contains("compression"), "{err}");
}

#[tokio::test]
async fn compression_on_a_memory_backend_is_refused() {
    // The memory backend stores values unserialized: the setting would do nothing there.
    let config = load(&[("LEX_CACHE__BACKENDS__0__COMPRESSION", "4096")]).expect("loads");
    let err = CacheModule::configure(config)
        .await
        .expect_err("misplaced")
        .to_string();
    assert!(
        err.contains("compression") && err.contains("memory"),
        "{err}"
    );
}
