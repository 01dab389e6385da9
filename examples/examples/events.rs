//! Listens to a cache's events: a task prints every event, while the program reads through a
//! `#[cacheable]` function, writes, deletes, and overfills a small in-memory cache so that it
//! evicts. Each line shows the kind, the key and, for the function's calls, its scope.
//!
//! Run with `cargo run -p lexigram-cache-examples --example events`.

use std::sync::LazyLock;
use std::time::Duration;

use lexigram_cache::{Cache, EventError, MemoryBackend, cacheable};

/// A cache of four entries, so that a fifth value evicts one.
static CACHE: LazyLock<Cache> = LazyLock::new(|| {
    let backend = MemoryBackend::builder()
        .max_entries(4)
        .build()
        .expect("four entries is a valid bound");
    Cache::from_backend("catalog", backend)
});

/// Pretends to ask a slow service for a price.
#[cacheable(cache = &*CACHE, ttl = 60, key = "price:{sku}")]
async fn price(sku: &str) -> Result<u32, String> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(sku.len() as u32 * 100)
}

#[tokio::main]
async fn main() -> Result<(), lexigram_cache::CacheError> {
    lexigram_cache_examples::logging::init();
    let mut events = CACHE.events();
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => println!(
                    "{:<14} key={:<12} fn={}",
                    e.kind,
                    e.key.as_deref().unwrap_or("-"),
                    e.function.unwrap_or("-"),
                ),
                Err(EventError::Lagged(n)) => println!("(missed {n} events)"),
                Err(EventError::Closed) => break,
            }
        }
    });

    // A miss, the body's value stored, then a hit.
    price("apple").await.ok();
    price("apple").await.ok();
    // Calls on the cache itself carry no function.
    CACHE
        .set("banner", &"spring sale".to_string(), None)
        .await?;
    CACHE.get::<u32>("banner").await?; // another type: a decode failure, then a miss
    CACHE.delete("banner").await?;
    // Five more values with room for four: the engine evicts some.
    for sku in ["kiwi", "plum", "pear", "fig", "lime"] {
        price(sku).await.ok();
    }

    // Let the printer catch up, then stop it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    printer.abort();
    let _ = printer.await;
    println!("receivers left: {}", CACHE.event_receivers());
    Ok(())
}
