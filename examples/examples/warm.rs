//! Warms a cache before serving: loads the popular products, four at a time, and prints what
//! happened to each key. One product is already cached and skipped, one is missing from the
//! "database" and one load panics; the others are loaded anyway. Afterwards the `#[cacheable]`
//! function answers from the cache.
//!
//! Run with `cargo run -p lexigram-cache-examples --example warm`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lexigram_cache::{WarmOptions, cacheable, installed};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
}

static QUERIES: AtomicUsize = AtomicUsize::new(0);

/// Pretends to query a slow database.
async fn query_product(id: u64) -> Result<Product, String> {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    match id {
        13 => Err(format!("no product {id} in the database")),
        99 => panic!("the driver broke on product {id}"),
        _ => Ok(Product {
            id,
            name: format!("product {id}"),
        }),
    }
}

/// What request handlers call.
#[cacheable(ttl = "10m", key = "product:{id}")]
async fn product(id: u64) -> Result<Product, String> {
    query_product(id).await
}

#[tokio::main]
async fn main() -> Result<(), lexigram_cache::CacheError> {
    lexigram_cache_examples::logging::init();
    // The same cache `product` uses: nothing is installed, so it is the in-memory default.
    let cache = installed().cache();
    let popular: Vec<u64> = (1..=10).chain([13, 99]).collect();
    // A request that came in first already cached product 1: the warm-up skips it.
    product(1).await.ok();

    // Quiet the panic hook for the load that panics on purpose; the report has its message.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let report = cache
        .warm(
            popular.iter().map(|&id| product_cache_key(id)),
            |key: String| async move {
                let id = key
                    .strip_prefix("product:")
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| format!("not a product key: {key}"))?;
                query_product(id).await
            },
            WarmOptions::default()
                .concurrency(4)
                .skip_existing(true)
                .ttl(Duration::from_secs(600)),
        )
        .await?;
    std::panic::set_hook(hook);

    println!("warmed in {:.2?}: {report}", report.elapsed);
    for (key, outcome) in report.iter() {
        println!("  {key:<12} {outcome}");
    }

    let queries = QUERIES.load(Ordering::Relaxed);
    let started = Instant::now();
    for &id in &popular[..10] {
        product(id).await.ok();
    }
    println!(
        "10 requests afterwards: {:.2?}, {} more database queries",
        started.elapsed(),
        QUERIES.load(Ordering::Relaxed) - queries
    );
    Ok(())
}
