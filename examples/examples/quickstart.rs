//! Caches a slow function in memory, with no server and no configuration.
//!
//! Run with `cargo run -p lexigram-cache-examples --example quickstart`.

use std::time::{Duration, Instant};

use lexigram_cache::CacheModule;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Weather {
    city: String,
    celsius: f32,
}

/// Pretends to call a slow upstream service.
async fn fetch_weather(city: &str) -> Weather {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Weather {
        city: city.to_string(),
        celsius: 21.5,
    }
}

#[tokio::main]
async fn main() {
    let cache = CacheModule::stub().cache();
    for attempt in 1..=2 {
        let started = Instant::now();
        let weather = cache
            .get_or_insert_with("weather:lisbon", Duration::from_secs(60), || {
                fetch_weather("Lisbon")
            })
            .await;
        let outcome = if attempt == 1 { "miss" } else { "hit " };
        println!(
            "call {attempt}: {outcome} {:>10.3?}  {} is {}°C",
            started.elapsed(),
            weather.city,
            weather.celsius
        );
    }
    let stats = cache.stats();
    println!(
        "stats: hits={} misses={} fills={} hit ratio={:.2}",
        stats.hits,
        stats.misses,
        stats.fills,
        stats.hit_ratio()
    );
}
