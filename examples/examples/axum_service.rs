//! A web service on the in-memory default, no server needed:
//! `cargo run -p lexigram-cache-examples --example axum_service`, then
//! `curl 127.0.0.1:3000/products/7` (twice: the second is a cache hit),
//! `curl 127.0.0.1:3000/quote/1000` (its two reads of the pricing rules are one cache read:
//! every request runs in a request scope), `curl 127.0.0.1:3000/health`,
//! `curl 127.0.0.1:3000/metrics`.
//! `LISTEN=127.0.0.1:8080` listens elsewhere; `LEX_CACHE__...` variables or an
//! `application.yaml` switch it to Redis or Memcached; `RUST_LOG` sets the log level.

use std::process::ExitCode;

use lexigram_cache::CacheModule;
use lexigram_cache_examples::axum_service::{AppState, ServeError, app, bind};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> ExitCode {
    lexigram_cache_examples::logging::init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ServeError> {
    // The recorder first: metric handles are registered with the recorder present at the
    // first cache call.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let caches = CacheModule::from_env().await?;
    caches.install();
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = bind(&addr).await?;
    println!("listening on http://{addr}  (try /products/7, /quote/1000, /health, /metrics)");
    axum::serve(listener, app(AppState { caches, prometheus }))
        .await
        .map_err(ServeError::Serve)
}
