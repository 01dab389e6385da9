//! Starts the example service on a loopback port and talks HTTP/1.1 to it.

use std::sync::atomic::Ordering;

use lexigram_cache::CacheModule;
use lexigram_cache_examples::axum_service::{AppState, DB_QUERIES, app};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

#[tokio::test]
async fn the_service_answers_twice_with_one_body_run() {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("recorder");
    let caches = CacheModule::stub();
    caches.install();
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

    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("lexigram_cache_hits_total{cache=\"default\",fn=\"lexigram_cache_examples::axum_service::load_product\"} 1"),
        "{metrics}"
    );
}
