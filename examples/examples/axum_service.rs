//! A web service on the in-memory default, no server needed:
//! `cargo run -p lexigram-cache-examples --example axum_service`, then
//! `curl localhost:3000/products/7` (twice: the second is a cache hit),
//! `curl localhost:3000/health`, `curl localhost:3000/metrics`.
//! `LEX_CACHE__...` variables or an `application.yaml` switch it to Redis or Memcached.

use lexigram_cache::CacheModule;
use lexigram_cache_examples::axum_service::{AppState, app};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The recorder first: metric handles are registered with the recorder present at the
    // first cache call.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let caches = CacheModule::from_env().await?;
    caches.install();
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}  (try /products/7, /health, /metrics)");
    axum::serve(listener, app(AppState { caches, prometheus })).await?;
    Ok(())
}
