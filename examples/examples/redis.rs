//! Caches a slow function in Redis, so every replica of a service shares the cached value.
//!
//! Start a server (`redis-server --port 6379`), then run
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run -p lexigram-cache-examples --example redis`.
//! Without `REDIS_URL` the example uses `redis://127.0.0.1:6379`.

use std::time::{Duration, Instant};

use lexigram_cache::{BackendConfig, CacheConfig, CacheError, CacheModule, cacheable};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
}

/// Pretends to query a database. Run the example twice: the second run finds the value that
/// the first run stored in Redis, because the key is the same in every process.
#[cacheable(ttl = 30, key = "profile:{id}")]
async fn profile(id: u64) -> Result<Profile, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Profile {
        id,
        name: format!("user #{id}"),
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lexigram_cache_examples::logging::init();
    lexigram_cache_examples::exit(run().await)
}

async fn run() -> Result<(), CacheError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut backend = BackendConfig::redis("default", url.as_str());
    backend.prefix = "example:".into();
    let mut config = CacheConfig::default();
    config.backends = vec![backend];
    // The URL is printed with any password replaced by ***.
    println!(
        "connecting to {}",
        config.backends[0]
            .redis_url
            .as_ref()
            .map_or(String::new(), ToString::to_string)
    );
    let caches = CacheModule::configure(config).await?;
    caches.install();

    for _ in 0..2 {
        let started = Instant::now();
        match profile(7).await {
            Ok(p) => println!(
                "{:>10.3?}  profile {} = {:?}",
                started.elapsed(),
                p.id,
                p.name
            ),
            Err(e) => println!("the body failed: {e}"),
        }
    }
    println!(
        "stored under the Redis key `example:{}` for 30 s",
        profile_cache_key(7)
    );

    let cache = caches.cache();
    cache
        .set(
            "greeting",
            &"hello from Rust".to_string(),
            Some(Duration::from_secs(30)),
        )
        .await?;
    println!(
        "typed read back: {:?}",
        cache.get::<String>("greeting").await?
    );
    let removed = cache.delete_pattern("greeting*").await?;
    println!("delete_pattern(\"greeting*\") removed {removed} key(s)");

    let health = caches.health().await;
    for b in &health.backends {
        println!(
            "health: {} ({}) healthy={} latency={:?}",
            b.name, b.kind, b.healthy, b.latency
        );
    }
    let s = cache.stats();
    println!(
        "stats: hits={} misses={} fills={}",
        s.hits, s.misses, s.fills
    );
    Ok(())
}
