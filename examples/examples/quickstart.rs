//! Caches a slow function in memory, with no server and no configuration.
//!
//! Run with `cargo run -p lexigram-cache-examples --example quickstart`.

use std::time::{Duration, Instant};

use lexigram_cache::cacheable;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Weather {
    city: String,
    celsius: f32,
}

/// Pretends to call a slow upstream service. The first call per city runs the body; calls
/// within the next 60 seconds are answered from the cache.
#[cacheable(ttl = 60, key = "weather:{city}")]
async fn weather(city: &str) -> Result<Weather, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Weather {
        city: city.to_string(),
        celsius: 21.5,
    })
}

#[tokio::main]
async fn main() -> Result<(), std::io::Error> {
    lexigram_cache_examples::logging::init();
    for attempt in ["miss", "hit "] {
        let started = Instant::now();
        let w = weather("Lisbon").await?;
        println!(
            "{attempt} {:>10.3?}  {} is {}°C",
            started.elapsed(),
            w.city,
            w.celsius
        );
    }
    println!("key used: {}", weather_cache_key("Lisbon"));
    weather_invalidate("Lisbon").await.ok();

    // Nothing was installed, so the macro used the process-wide in-memory cache.
    let stats = lexigram_cache::installed().cache().stats();
    println!(
        "stats: hits={} misses={} fills={} hit ratio={:.2}",
        stats.hits,
        stats.misses,
        stats.fills,
        stats.hit_ratio()
    );
    Ok(())
}
