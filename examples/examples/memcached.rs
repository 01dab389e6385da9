//! Caches a slow function in Memcached, spread over one or several servers.
//!
//! Start servers (`memcached -p 11211 &`, `memcached -p 11212 &`), then run
//! `MEMCACHED_SERVERS=127.0.0.1:11211,127.0.0.1:11212 cargo run -p lexigram-cache-examples --example memcached`.
//! Without `MEMCACHED_SERVERS` the example uses `127.0.0.1:11211`.

use std::time::{Duration, Instant};

use lexigram_cache::{BackendConfig, CacheConfig, CacheError, CacheModule, cacheable};

/// Pretends to render a page fragment. Any text works as a key part: keys are encoded for
/// memcached, so spaces, newlines and long keys are safe.
#[cacheable(ttl = 30, key = "fragment:{name}")]
async fn fragment(name: &str) -> String {
    tokio::time::sleep(Duration::from_millis(150)).await;
    format!("<div>{name}</div>")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lexigram_cache_examples::logging::init();
    lexigram_cache_examples::exit(run().await)
}

async fn run() -> Result<(), CacheError> {
    let servers = std::env::var("MEMCACHED_SERVERS").unwrap_or_else(|_| "127.0.0.1:11211".into());
    let servers: Vec<&str> = servers.split(',').map(str::trim).collect();
    println!("servers: {servers:?}");
    let mut backend = BackendConfig::memcached("default", servers.iter().copied());
    backend.prefix = "example:".into();
    let mut config = CacheConfig::default();
    config.backends = vec![backend];
    let caches = CacheModule::configure(config).await?;
    caches.install();

    for name in ["header", "footer with spaces", "header"] {
        let started = Instant::now();
        let html = fragment(name).await;
        println!("{:>10.3?}  {name:?} -> {html}", started.elapsed());
    }

    let cache = caches.cache();
    let keys = ["a", "b", "c"];
    let values = [1u32, 2, 3];
    let items: Vec<(&str, u32)> = keys.iter().copied().zip(values).collect();
    cache
        .set_many(&items, Some(Duration::from_secs(30)))
        .await?;
    println!("get_many: {:?}", cache.get_many::<u32>(&keys).await?);
    match cache.clear().await {
        Ok(n) => println!("clear removed {n} keys"),
        Err(e) => println!("clear: {e}"),
    }
    let s = cache.stats();
    println!(
        "stats: hits={} misses={} fills={}",
        s.hits, s.misses, s.fills
    );
    Ok(())
}
