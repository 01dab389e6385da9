//! Boots the caches from the `application.yaml` beside this file, layered with
//! `LEX_CACHE__...` environment variables.
//!
//! In memory, with no server:
//! `cargo run -p lexigram-cache-examples --example configured`
//!
//! On Redis, by environment alone:
//! `LEX_CACHE__BACKENDS__0__TYPE=redis LEX_CACHE__BACKENDS__0__REDIS_URL=redis://127.0.0.1:6379 cargo run -p lexigram-cache-examples --example configured`

use std::time::{Duration, Instant};

use lexigram_cache::config::ConfigSources;
use lexigram_cache::{CacheError, CacheModule, cacheable};

/// The attribute says 60 s; `application.yaml` overrides it with 2 s.
#[cacheable(ttl = 60, key = "price:{sku}")]
async fn price(sku: &str) -> f64 {
    tokio::time::sleep(Duration::from_millis(100)).await;
    sku.len() as f64 * 1.25
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lexigram_cache_examples::logging::init();
    lexigram_cache_examples::exit(run().await)
}

async fn run() -> Result<(), CacheError> {
    let mut sources = ConfigSources::from_process()?;
    if sources.file.is_none() {
        sources.file =
            Some(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/application.yaml").into());
    }
    let config = sources.load()?;
    // Passwords in URLs print as ***.
    println!("configuration: {:#?}", config.backends);
    let caches = CacheModule::configure(config).await?;
    caches.install();

    for wait in [
        Duration::ZERO,
        Duration::ZERO,
        Duration::from_millis(2100),
        Duration::ZERO,
    ] {
        tokio::time::sleep(wait).await;
        let started = Instant::now();
        let p = price("sku-42").await;
        println!(
            "after {wait:>6.1?} pause: price {p} in {:>9.3?}",
            started.elapsed()
        );
    }
    Ok(())
}
