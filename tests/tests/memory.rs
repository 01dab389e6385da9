//! The in-memory backend and the typed `Cache` over it, run once per engine.

use std::time::Duration;

use lexigram_cache::{
    Cache, CacheBackend, CacheError, CacheOptions, Clock, MemoryBackend, MemoryEngine, Ttl,
};
use lexigram_cache_tests::conformance::check_backend;
use serde::{Deserialize, Serialize};

const ENGINES: [MemoryEngine; 2] = [MemoryEngine::S3Fifo, MemoryEngine::TinyLfu];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn cache_on(engine: MemoryEngine, clock: &Clock) -> Cache {
    let backend = MemoryBackend::builder()
        .engine(engine)
        .clock(clock.clone())
        .build()
        .expect("valid options");
    Cache::from_backend("mem", backend)
}

#[tokio::test]
async fn byte_contract_holds_for_both_engines() {
    for engine in ENGINES {
        let b = MemoryBackend::builder()
            .engine(engine)
            .build()
            .expect("valid");
        check_backend(&b, "").await;
        let prefixed = MemoryBackend::builder()
            .engine(engine)
            .prefix("svc:")
            .build()
            .expect("valid");
        check_backend(&prefixed, "").await;
    }
}

#[tokio::test]
async fn typed_values_round_trip() {
    for engine in ENGINES {
        let cache = cache_on(engine, &Clock::system());
        let user = User {
            id: 7,
            name: "Ada".into(),
        };
        cache.set("user:7", &user, None).await.expect("set");
        assert_eq!(
            cache.get::<User>("user:7").await.expect("get"),
            Some(user.clone())
        );
        assert!(cache.exists("user:7").await.expect("exists"));
        assert_eq!(cache.get::<User>("user:8").await.expect("get"), None);

        cache
            .set_many(&[("a", 1u32), ("b", 2u32)], Duration::from_secs(5))
            .await
            .expect("set_many");
        assert_eq!(
            cache
                .get_many::<u32>(&["a", "x", "b"])
                .await
                .expect("get_many"),
            vec![Some(1), None, Some(2)]
        );
        assert_eq!(
            cache
                .delete_many(&["a", "b", "x"])
                .await
                .expect("delete_many"),
            2
        );
        assert!(cache.delete("user:7").await.expect("delete"));
        assert!(!cache.exists("user:7").await.expect("exists"));

        let s = cache.stats();
        assert_eq!(s.hits, 3, "{engine:?}: {s:?}");
        assert_eq!(s.misses, 2, "{engine:?}: {s:?}");
        assert_eq!(s.sets, 3, "{engine:?}: {s:?}");
        assert_eq!(s.deletes, 3, "{engine:?}: {s:?}");
    }
}

#[tokio::test]
async fn ttl_follows_the_clock() {
    for engine in ENGINES {
        let clock = Clock::manual(1_000_000);
        let cache = cache_on(engine, &clock);
        cache
            .set("short", &1u8, Duration::from_secs(10))
            .await
            .expect("set");
        cache.set("default", &2u8, None).await.expect("set"); // 5 minutes
        cache.set("forever", &3u8, Ttl::Never).await.expect("set");

        clock.advance(Duration::from_millis(9_999));
        assert_eq!(cache.get::<u8>("short").await.expect("get"), Some(1));
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            cache.get::<u8>("short").await.expect("get"),
            None,
            "{engine:?}"
        );
        assert!(!cache.exists("short").await.expect("exists"));

        clock.advance(Duration::from_secs(290));
        assert_eq!(cache.get::<u8>("default").await.expect("get"), None);
        clock.advance(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(cache.get::<u8>("forever").await.expect("get"), Some(3));
    }
}

#[tokio::test]
async fn zero_ttl_is_rejected_with_a_hint() {
    let cache = cache_on(MemoryEngine::S3Fifo, &Clock::system());
    let err = cache
        .set("k", &1u8, Duration::ZERO)
        .await
        .expect_err("zero ttl");
    assert!(matches!(err, CacheError::ZeroTtl));
    assert!(err.to_string().contains("use `None`"), "{err}");
    // get_or_insert_with returns the value but does not store it.
    let v = cache
        .get_or_insert_with("k", Duration::ZERO, || async { 5u8 })
        .await;
    assert_eq!(v, 5);
    assert_eq!(cache.get::<u8>("k").await.expect("get"), None);
    assert_eq!(cache.stats().errors, 1);
}

#[tokio::test]
async fn entry_bound_evicts() {
    for engine in ENGINES {
        let backend = MemoryBackend::builder()
            .engine(engine)
            .max_entries(100)
            .build()
            .expect("valid");
        let cache = Cache::from_backend("bounded", backend.clone());
        for i in 0..2_000u32 {
            cache.set(&format!("k{i}"), &i, None).await.expect("set");
        }
        let len = backend.len();
        assert!(
            len <= 150,
            "{engine:?} holds {len} entries with a bound of 100"
        );
        assert!(len >= 50, "{engine:?} holds only {len} entries");
        assert!(
            cache.stats().evictions > 0,
            "{engine:?} counted no evictions"
        );
    }
}

#[tokio::test]
async fn weight_bound_counts_bytes() {
    for engine in ENGINES {
        let backend = MemoryBackend::builder()
            .engine(engine)
            .max_weight(64 * 1024)
            .build()
            .expect("valid");
        let cache = Cache::from_backend("weighted", backend.clone());
        let blob = "x".repeat(4 * 1024);
        for i in 0..200u32 {
            cache
                .set(&format!("blob{i}"), &blob, None)
                .await
                .expect("set");
        }
        let len = backend.len();
        // 64 KiB / ~4 KiB per entry = about 16 entries.
        assert!(len <= 24, "{engine:?} holds {len} 4 KiB entries in 64 KiB");
        assert!(len >= 4, "{engine:?} holds only {len}");
    }
}

#[tokio::test]
async fn another_type_under_the_key_is_a_counted_miss() {
    for engine in ENGINES {
        let cache = cache_on(engine, &Clock::system());
        cache
            .set("k", &"text".to_string(), None)
            .await
            .expect("set");
        assert_eq!(cache.get::<u64>("k").await.expect("get"), None);
        assert_eq!(cache.stats().decode_failures, 1);
        // The next fill overwrites it.
        let v = cache.get_or_insert_with("k", None, || async { 9u64 }).await;
        assert_eq!(v, 9);
        assert_eq!(cache.get::<u64>("k").await.expect("get"), Some(9));
    }
}

#[tokio::test]
async fn pattern_delete_and_clear() {
    for engine in ENGINES {
        let cache = cache_on(engine, &Clock::system());
        for i in 0..10u32 {
            cache
                .set(&format!("user:{i}"), &i, None)
                .await
                .expect("set");
            cache
                .set(&format!("order:{i}"), &i, None)
                .await
                .expect("set");
        }
        assert_eq!(cache.delete_pattern("user:*").await.expect("pattern"), 10);
        assert_eq!(cache.delete_pattern("order:1?").await.expect("pattern"), 0);
        assert_eq!(cache.delete_pattern("order:[").await.expect("literal"), 0);
        assert_eq!(cache.clear().await.expect("clear"), 10);
        assert_eq!(cache.get::<u32>("order:3").await.expect("get"), None);
    }
}

#[tokio::test]
async fn bad_options_are_clear_errors() {
    let err = MemoryBackend::builder()
        .max_entries(0)
        .build()
        .expect_err("zero entries");
    assert!(err.to_string().contains("memory.max_entries"), "{err}");
    let err = MemoryBackend::builder()
        .time_to_idle(Duration::from_secs(1))
        .build()
        .expect_err("tti on s3fifo");
    assert!(err.to_string().contains("tinylfu"), "{err}");
    MemoryBackend::builder()
        .engine(MemoryEngine::TinyLfu)
        .time_to_idle(Duration::from_secs(1))
        .build()
        .expect("tti on tinylfu");
}

#[tokio::test]
async fn disabled_cache_is_a_pass_through() {
    let mut options = CacheOptions::default();
    options.enabled = false;
    let cache = Cache::with_options(
        "off",
        MemoryBackend::builder().build().expect("valid"),
        options,
    );
    cache.set("k", &1u8, None).await.expect("set is a no-op");
    assert_eq!(cache.get::<u8>("k").await.expect("get"), None);
    let mut runs = 0;
    for _ in 0..3 {
        cache
            .get_or_insert_with("k", None, || async {
                runs += 1;
                1u8
            })
            .await;
    }
    assert_eq!(runs, 3);
}

/// The envelope path, in process: a `Cache` over a byte-level backend stores envelopes, and
/// foreign bytes under its keys read as misses that the next fill overwrites.
#[tokio::test]
async fn byte_backends_store_envelopes_and_survive_garbage() {
    let bytes = std::sync::Arc::new(MemoryBackend::builder().build().expect("valid"));
    let cache = Cache::from_backend("bytes", bytes.clone());
    let user = User {
        id: 1,
        name: "Grace".into(),
    };
    cache
        .set("u", &user, Duration::from_secs(60))
        .await
        .expect("set");
    let raw = bytes.get("u").await.expect("raw get").expect("stored");
    assert_eq!(raw[0], lexigram_cache::codec::MAGIC);
    assert_eq!(
        cache.get::<User>("u").await.expect("get"),
        Some(user.clone())
    );

    for garbage in [
        &b""[..],
        b"\xC7",
        b"{\"id\":1}",
        b"\xC7\x01\x01\x00garbage-garbage-garbage-garbage-garbage-garbage",
        &raw[..raw.len() - 3],
    ] {
        bytes.set("u", garbage, None).await.expect("raw set");
        assert_eq!(cache.get::<User>("u").await.expect("get"), None);
    }
    // Right envelope, other type.
    cache
        .set("u", &"not a user".to_string(), None)
        .await
        .expect("set");
    assert_eq!(cache.get::<User>("u").await.expect("get"), None);
    assert_eq!(cache.stats().decode_failures, 6);

    let filled = cache
        .get_or_insert_with("u", None, || async { user.clone() })
        .await;
    assert_eq!(filled, user);
    assert_eq!(cache.get::<User>("u").await.expect("get"), Some(user));
}

/// A value too heavy to store drops the one it would have replaced, and the thread that read
/// the old one just before must not be served it again from its recent reads.
#[tokio::test]
async fn a_value_too_heavy_to_store_leaves_no_old_value_behind() {
    let backend = MemoryBackend::builder()
        .max_weight(10_000)
        .build()
        .expect("backend");
    let cache = Cache::from_backend("heavy", backend);
    cache
        .set("k", &"small".to_string(), None)
        .await
        .expect("set");
    for _ in 0..3 {
        assert_eq!(
            cache.get::<String>("k").await.expect("get").as_deref(),
            Some("small")
        );
    }
    cache
        .set("k", &"x".repeat(5_000), None)
        .await
        .expect("a value too heavy is not an error");
    assert_eq!(
        cache.get::<String>("k").await.expect("get"),
        None,
        "the old value is out of date"
    );
}
