//! A small web service: a handler whose data call is `#[cacheable]`, the `Caches` in the app
//! state, `/health` from [`Caches::health`] and each cache's breaker, and `/metrics` in
//! Prometheus text.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use lexigram_cache::{CacheError, Caches, cacheable};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

/// How many times the "database" was asked; the example prints it, the test checks it.
pub static DB_QUERIES: AtomicUsize = AtomicUsize::new(0);

/// What `/products/{id}` returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Product {
    /// The id from the path.
    pub id: u64,
    /// A made-up name.
    pub name: String,
    /// A made-up price in cents.
    pub price_cents: u64,
}

/// The slow data call, cached for 60 s per id.
#[cacheable(ttl = 60, key = "product:{id}")]
pub async fn load_product(id: u64) -> Result<Product, String> {
    DB_QUERIES.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    if id == 0 {
        return Err("product 0 does not exist".into());
    }
    Ok(Product {
        id,
        name: format!("product #{id}"),
        price_cents: 100 + id,
    })
}

/// The app state: the caches (for `/health`) and the metrics handle (for `/metrics`).
#[derive(Clone)]
pub struct AppState {
    /// The registry, also installed for `#[cacheable]`.
    pub caches: Caches,
    /// Renders the Prometheus text.
    pub prometheus: PrometheusHandle,
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The caches did not boot.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The Prometheus recorder could not be installed.
    #[error("cannot install the Prometheus recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    /// The listening address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; set LISTEN to a free address, e.g. LISTEN=127.0.0.1:3001"
    )]
    Listen {
        /// The address from `LISTEN` (or the default).
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Serving stopped with an I/O error.
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// A listener on `addr`, with the address in the error.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: addr.to_owned(),
            source,
        })
}

/// The router: `/products/{id}`, `/health`, `/metrics`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/products/{id}", get(product))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn product(Path(id): Path<u64>) -> impl IntoResponse {
    match load_product(id).await {
        Ok(p) => (StatusCode::OK, Json(p)).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

/// Per backend: whether it answers a ping, and its breaker. A backend whose breaker is open is
/// unhealthy even when it answers again: calls skip it until a probe succeeds.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.caches.health().await;
    let mut all_healthy = true;
    let body: Vec<serde_json::Value> = report
        .backends
        .iter()
        .map(|b| {
            let stats = state.caches.named(&b.name).map(|c| c.stats());
            let breaker_open = stats.as_ref().is_some_and(|s| s.breaker_open);
            let healthy = b.healthy && !breaker_open;
            all_healthy &= healthy;
            let error = b.error.clone().or_else(|| {
                breaker_open.then(|| {
                    "the circuit breaker is open: calls skip this backend until one probes it \
                     successfully"
                        .to_owned()
                })
            });
            serde_json::json!({
                "name": b.name,
                "kind": b.kind,
                "healthy": healthy,
                "answers": b.healthy,
                "breaker": if breaker_open { "open" } else { "closed" },
                "breaker_opens": stats.as_ref().map(|s| s.breaker_opens),
                "latency_us": b.latency.map(|l| l.as_micros() as u64),
                "error": error,
            })
        })
        .collect();
    let status = if all_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}
