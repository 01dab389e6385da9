//! A small web service: a handler whose data call is `#[cacheable]`, the `Caches` in the app
//! state, `/health` from [`Caches::health`] and each cache's breaker, `/metrics` in
//! Prometheus text, and a middleware ([`one_scope_per_request`]) that runs each request in a
//! [`request_scope`], so a `#[cacheable(request_scope)]` call repeated within one request
//! reads the cache once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lexigram_cache::{CacheError, Caches, cacheable, request_scope};
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

/// How many times the pricing rules were loaded.
pub static PRICING_QUERIES: AtomicUsize = AtomicUsize::new(0);

/// The pricing rules of a region.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pricing {
    /// Value added tax, in percent.
    pub vat_percent: u64,
    /// Shipping, in cents.
    pub shipping_cents: u64,
}

/// Pricing rules, cached for 60 s, and read once per request however many parts of the
/// request ask for them: the second call in a request is answered by the request scope
/// without a cache read (no round trip or decoding on a remote backend), and every part of
/// the request sees the same rules even if they change in the cache meanwhile.
#[cacheable(ttl = 60, key = "pricing:{region}", request_scope)]
pub async fn pricing_rules(region: String) -> Result<Pricing, String> {
    PRICING_QUERIES.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(Pricing {
        vat_percent: if region == "eu" { 20 } else { 0 },
        shipping_cents: 499,
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

/// The router: `/products/{id}`, `/quote/{net_cents}`, `/health`, `/metrics`, each request
/// in its own request scope.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/products/{id}", get(product))
        .route("/quote/{net_cents}", get(quote))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn(one_scope_per_request))
        .with_state(state)
}

/// Runs the rest of the request in a fresh request scope, dropped with the response.
pub async fn one_scope_per_request(request: Request, next: Next) -> Response {
    request_scope(next.run(request)).await
}

async fn product(Path(id): Path<u64>) -> impl IntoResponse {
    match load_product(id).await {
        Ok(p) => (StatusCode::OK, Json(p)).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e).into_response(),
    }
}

/// A price quote for an amount: two independent parts of it each ask for the pricing rules.
async fn quote(Path(net_cents): Path<u64>) -> impl IntoResponse {
    match tokio::try_join!(price_with_vat(net_cents), shipping_cents()) {
        Ok((price, shipping)) => Json(serde_json::json!({
            "price_cents": price,
            "shipping_cents": shipping,
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn price_with_vat(net_cents: u64) -> Result<u64, String> {
    let rules = pricing_rules("eu".into()).await?;
    Ok(net_cents + net_cents * rules.vat_percent / 100)
}

async fn shipping_cents() -> Result<u64, String> {
    Ok(pricing_rules("eu".into()).await?.shipping_cents)
}

/// Per backend: whether it answers a ping, and its breaker. A backend whose breaker is open is
/// unhealthy even when it answers again: calls skip it until a probe succeeds. A Memcached
/// backend over several servers lists each: one down makes its keys miss, not the backend
/// unhealthy, and is named here.
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
                "servers": b.servers.iter().map(|s| serde_json::json!({
                    "addr": s.addr,
                    "up": s.healthy,
                    "latency_us": s.latency.map(|l| l.as_micros() as u64),
                    "error": s.error,
                })).collect::<Vec<_>>(),
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
