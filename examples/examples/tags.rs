//! Tags: a user's profile and their orders are cached under their own keys, each tagged with
//! the user (`user:{id}`); a category page is tagged `catalog`. When a user changes, one
//! `invalidate_tag` drops every value about them, whatever its key; other users' values stay.
//! With a Redis or Memcached backend the same call reaches every process sharing it.
//!
//! Run with `cargo run -p lexigram-cache-examples --example tags`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lexigram_cache::{cacheable, installed};

static QUERIES: AtomicUsize = AtomicUsize::new(0);

/// Pretends to query a database.
async fn query(what: String) -> String {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    what
}

#[cacheable(ttl = "10m", key = "profile:{id}", tags = ["user:{id}", "users"])]
async fn profile(id: u64) -> String {
    query(format!("profile of user {id}")).await
}

#[cacheable(ttl = "10m", key = "orders:{id}:{page}", tags = ["user:{id}"])]
async fn orders(id: u64, page: u32) -> String {
    query(format!("orders of user {id}, page {page}")).await
}

/// Runs every lookup once and says how many reached the database.
async fn requests(label: &str) {
    let before = QUERIES.load(Ordering::Relaxed);
    for id in [7, 8] {
        profile(id).await;
        orders(id, 1).await;
        orders(id, 2).await;
    }
    let catalog: Option<String> = installed()
        .cache()
        .get("catalog:books")
        .await
        .ok()
        .flatten();
    println!(
        "{label:<34} {} database queries, catalog cached: {}",
        QUERIES.load(Ordering::Relaxed) - before,
        catalog.is_some()
    );
}

#[tokio::main]
async fn main() -> Result<(), lexigram_cache::CacheError> {
    lexigram_cache_examples::logging::init();
    let cache = installed().cache();
    cache
        .set_tagged("catalog:books", &"12 books".to_string(), None, &["catalog"])
        .await?;

    requests("first requests").await;
    requests("again").await;
    cache.invalidate_tag("user:7").await?;
    requests("after invalidate_tag(\"user:7\")").await;
    cache.invalidate_tag("users").await?;
    requests("after invalidate_tag(\"users\")").await;
    cache.invalidate_tag("catalog").await?;
    requests("after invalidate_tag(\"catalog\")").await;
    Ok(())
}
