//! A near cache (L1) in front of Redis, kept coherent across processes.
//!
//! Start a server (`redis-server --port 6379`), then run
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run -p lexigram-cache-examples --example near`.
//! Without `REDIS_URL` the example uses `redis://127.0.0.1:6379`.
//!
//! The two caches here stand for two replicas of a service: each keeps its own near cache over
//! the same Redis (on by default for a Redis backend), and a write in one reaches the other
//! as an invalidation, never as the value.

use std::time::{Duration, Instant};

use lexigram_cache::{BackendConfig, Cache, CacheConfig, CacheError, CacheModule};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lexigram_cache_examples::logging::init();
    lexigram_cache_examples::exit(run().await)
}

/// One replica's cache: a Redis backend with the default near cache (`near.ttl` 5 s).
async fn replica(url: &str) -> Result<Cache, CacheError> {
    let mut backend = BackendConfig::redis("default", url);
    backend.prefix = "near-example:".into();
    let mut config = CacheConfig::default();
    config.backends = vec![backend];
    Ok(CacheModule::configure(config).await?.cache())
}

async fn run() -> Result<(), CacheError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (a, b) = (replica(&url).await?, replica(&url).await?);
    let ttl = Some(Duration::from_secs(60));

    a.set("price:7", &100u32, ttl).await?;
    // The first read goes to Redis; the next ones are served in the process, as the Rust value.
    for _ in 0..3 {
        let started = Instant::now();
        let price = b.get::<u32>("price:7").await?;
        println!("{:>10.3?}  b reads price:7 = {price:?}", started.elapsed());
    }

    // A change in `a` is announced on Redis; `b` drops its copy and reads the new value.
    let changed = Instant::now();
    a.set("price:7", &120u32, ttl).await?;
    let seen = loop {
        if b.get::<u32>("price:7").await? == Some(120) {
            break changed.elapsed();
        }
        if changed.elapsed() > Duration::from_secs(2) {
            println!("b did not see the change within 2 s (is its near cache subscribed?)");
            break changed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    println!("{seen:>10.3?}  from a's write to b reading price:7 = 120");

    let s = b.stats();
    println!(
        "b: near_hits={} near_invalidations={} hits={} misses={}",
        s.near_hits, s.near_invalidations, s.hits, s.misses
    );
    a.delete("price:7").await?;
    Ok(())
}
