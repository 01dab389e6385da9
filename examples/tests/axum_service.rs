//! Starts the example service on a loopback port and talks HTTP/1.1 to it.

use std::sync::atomic::Ordering;

use std::time::{Duration, Instant};

use lexigram_cache::{BackendConfig, CacheConfig, CacheModule, Caches, function_stats};
use lexigram_cache_examples::axum_service::{AppState, DB_QUERIES, PRICING_QUERIES, app, bind};
use lexigram_cache_tests::servers::{RedisServer, free_port};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// The registry `#[cacheable]` uses, installed once for every test here (with the Prometheus
/// recorder first): installing another while a test runs would empty its cache.
async fn installed() -> (Caches, PrometheusHandle) {
    static INSTALLED: OnceCell<(Caches, PrometheusHandle)> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let prometheus = PrometheusBuilder::new()
                .install_recorder()
                .expect("recorder");
            let caches = CacheModule::stub();
            caches.install();
            (caches, prometheus)
        })
        .await
        .clone()
}

#[tokio::test]
async fn the_service_answers_twice_with_one_body_run() {
    let (caches, prometheus) = installed().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app(AppState { caches, prometheus }))
            .await
            .expect("serve");
    });

    let (status, first) = http_get(addr, "/products/7").await;
    assert_eq!(status, 200, "{first}");
    assert!(first.contains("\"name\":\"product #7\""), "{first}");
    let (status, second) = http_get(addr, "/products/7").await;
    assert_eq!(status, 200);
    assert_eq!(first, second);
    assert_eq!(
        DB_QUERIES.load(Ordering::SeqCst),
        1,
        "one body run for two requests"
    );

    let (status, body) = http_get(addr, "/products/0").await;
    assert_eq!(status, 404, "{body}");

    let (status, health) = http_get(addr, "/health").await;
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("\"healthy\":true"), "{health}");
    assert!(health.contains("\"breaker\":\"closed\""), "{health}");

    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("lexigram_cache_hits_total{cache=\"default\",fn=\"lexigram_cache_examples::axum_service::load_product\"} 1"),
        "{metrics}"
    );
}

async fn serve(state: AppState) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app(state)).await.expect("serve");
    });
    addr
}

/// The middleware runs each request in its own request scope: the quote asks for the pricing
/// rules twice, concurrently, and reads the cache once; the next request reads the shared
/// cache (once) and does not run the body.
#[tokio::test]
async fn two_calls_in_one_request_read_the_cache_once() {
    let (caches, prometheus) = installed().await;
    let addr = serve(AppState { caches, prometheus }).await;
    let stats = || {
        function_stats()
            .into_iter()
            .find(|f| f.function == "lexigram_cache_examples::axum_service::pricing_rules")
            .map(|f| (f.stats.hits, f.stats.misses))
            .unwrap_or_default()
    };

    let (status, body) = http_get(addr, "/quote/1000").await;
    assert_eq!(status, 200, "{body}");
    let quote: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(quote["price_cents"], 1200, "{body}");
    assert_eq!(quote["shipping_cents"], 499, "{body}");
    assert_eq!(PRICING_QUERIES.load(Ordering::SeqCst), 1);
    assert_eq!(
        stats(),
        (0, 1),
        "the second call came from the request scope"
    );

    let (status, again) = http_get(addr, "/quote/1000").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, body);
    assert_eq!(
        PRICING_QUERIES.load(Ordering::SeqCst),
        1,
        "the shared cache"
    );
    assert_eq!(
        stats(),
        (1, 1),
        "one cache read for the request's two calls"
    );
}

/// Redis comes back while the breaker is still open: the ping answers, but calls still skip
/// the backend, so `/health` must not say all is well.
#[tokio::test]
async fn health_reports_an_open_breaker_after_the_server_is_back() {
    let port = free_port(false);
    let mut config = CacheConfig::default();
    config.backends.push(BackendConfig::redis(
        "remote",
        format!("redis://127.0.0.1:{port}").as_str(),
    ));
    config.backends[0].default = true;
    config.service.circuit_breaker_enabled = true;
    config.service.breaker_threshold = 1;
    config.service.breaker_open_for = Duration::from_secs(120);
    let caches = CacheModule::configure(config).await.expect("boot");
    let remote = caches.named("remote").expect("remote");
    assert!(remote.get::<u32>("k").await.is_err(), "the server is down");
    assert!(remote.stats().breaker_open, "one failure opens it");

    let _server = RedisServer::start_at(port);
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let addr = serve(AppState { caches, prometheus }).await;
    // The backend reconnects on its own; wait (bounded) until its ping answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, remote) = loop {
        let (status, body) = http_get(addr, "/health").await;
        let backends: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
        let remote = backends
            .into_iter()
            .find(|b| b["name"] == "remote")
            .unwrap_or_else(|| panic!("no remote entry: {body}"));
        if remote["answers"] == true || Instant::now() > deadline {
            break (status, remote);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(remote["answers"], true, "{remote}");
    assert_eq!(remote["breaker"], "open", "{remote}");
    assert_eq!(remote["healthy"], false, "{remote}");
    assert_eq!(status, 503, "{remote}");
}

#[tokio::test]
async fn an_address_in_use_is_named_in_the_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let e = bind(&addr).await.expect_err("the address is in use");
    let text = e.to_string();
    assert!(text.contains(&addr) && text.contains("LISTEN"), "{text}");
    assert!(!text.contains("Os {"), "Display, not Debug: {text}");
}
