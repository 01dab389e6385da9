//! A small web service: a handler whose data call is `#[cacheable]`, the `Caches` in the app
//! state, `/health` from [`Caches::health`] and `/metrics` in Prometheus text.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use lexigram_cache::{Caches, cacheable};
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

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.caches.health().await;
    let status = if report.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body: Vec<serde_json::Value> = report
        .backends
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "kind": b.kind,
                "healthy": b.healthy,
                "latency_us": b.latency.map(|l| l.as_micros() as u64),
                "error": b.error,
            })
        })
        .collect();
    (status, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}
