//! A cache over a real redis-server whose circuit breaker opens at the first failure, for the
//! tests of what calls do while the breaker skips the backend.

use std::time::Duration;

use lexigram_cache::{Cache, CacheOptions, RedisBackend};

use crate::servers::RedisServer;

/// A cache named `name` over `server` (keys under `name:`), 300 ms operation and connect
/// timeouts, a breaker that opens at one failure for `open_for`, and `k` = 1 stored while the
/// server runs. Pause the server to make the next call fail and open the breaker.
pub async fn cache_with_a_sensitive_breaker(
    server: &RedisServer,
    name: &str,
    open_for: Duration,
) -> Cache {
    let backend = RedisBackend::builder(server.url())
        .prefix(format!("{name}:"))
        .op_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    let mut options = CacheOptions::default();
    options.breaker_threshold = 1;
    options.breaker_open_for = open_for;
    let cache = Cache::with_options(name, backend, options);
    cache
        .set("k", &1u32, Duration::from_secs(60))
        .await
        .expect("set while the server runs");
    cache
}
