//! `#[cacheable(request_scope)]` inside `request_scope(...)`: repeated calls are answered from
//! the scope, typed, without the cache; outside a scope nothing changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use lexigram_cache::{
    Cache, Clock, MemoryBackend, RedisBackend, cacheable, function_stats, in_request_scope,
    inherit_request_scope, request_scope,
};
use lexigram_cache_tests::config::install_with_functions_off;
use lexigram_cache_tests::servers::RedisServer;

/// The installed registry (in memory) switches some functions off, as `cache.functions` can:
/// what they do not run twice, the scope saved.
async fn setup() {
    install_with_functions_off(&[
        "scope_request::switched_off",
        "scope_request::slow",
        "scope_request::kept_err",
        "scope_request::kept_nothing",
        "scope_request::generic",
    ])
    .await;
}

/// Body runs per (function, id). The tests run in parallel, so each uses its own ids.
static RUNS: Mutex<BTreeMap<(&str, u32), usize>> = Mutex::new(BTreeMap::new());

/// Counts a run of `function` for `id`; its number.
fn ran(function: &'static str, id: u32) -> usize {
    let mut runs = RUNS.lock().expect("runs");
    let n = runs.entry((function, id)).or_default();
    *n += 1;
    *n
}

fn runs(function: &'static str, id: u32) -> usize {
    RUNS.lock()
        .expect("runs")
        .get(&(function, id))
        .copied()
        .unwrap_or(0)
}

/// Never cached (configuration): every run is counted, and returns the run's number.
#[cacheable(ttl = 60, request_scope)]
async fn switched_off(id: u32) -> (u32, usize) {
    (id, ran("off", id))
}

#[tokio::test]
async fn repeated_calls_run_the_body_once_with_the_cache_switched_off() {
    setup().await;
    let (a, b, other) = request_scope(async {
        let a = switched_off(1).await;
        let b = switched_off(1).await;
        let other = switched_off(2).await;
        (a, b, other)
    })
    .await;
    assert_eq!(a, b, "the second call is the first call's value");
    assert_ne!(a, other, "another key runs the body");
    assert_eq!((runs("off", 1), runs("off", 2)), (1, 1));
    // The same calls outside a scope run the body every time: the option changes nothing.
    switched_off(1).await;
    switched_off(1).await;
    assert_eq!(runs("off", 1), 3);
}

#[tokio::test]
async fn two_scopes_do_not_share_values() {
    setup().await;
    let first = request_scope(async { (switched_off(9).await, switched_off(9).await) }).await;
    let second = request_scope(async { (switched_off(9).await, switched_off(9).await) }).await;
    assert_eq!(first.0, first.1);
    assert_eq!(second.0, second.1);
    assert_ne!(first.0, second.0, "the second scope ran the body itself");
    assert_eq!(runs("off", 9), 2);
}

#[tokio::test]
async fn concurrent_scopes_do_not_share_values() {
    setup().await;
    let (a, b) = tokio::join!(
        request_scope(async { (switched_off(10).await, switched_off(10).await) }),
        request_scope(async { (switched_off(10).await, switched_off(10).await) }),
    );
    assert_eq!(a.0, a.1);
    assert_eq!(b.0, b.1);
    assert_ne!(a.0, b.0);
    assert_eq!(runs("off", 10), 2);
}

static SHORT_RUNS: AtomicUsize = AtomicUsize::new(0);

/// A clock the test moves, so expiry does not depend on how fast a loaded machine ticks.
static CLOCK: LazyLock<Clock> = LazyLock::new(|| Clock::manual(1_000));
static SHORT_CACHE: LazyLock<Cache> = LazyLock::new(|| {
    let backend = MemoryBackend::builder()
        .clock(CLOCK.clone())
        .build()
        .expect("valid");
    Cache::from_backend("short", backend)
});

#[cacheable(ttl = "1ms", cache = *SHORT_CACHE, request_scope)]
async fn short_lived(id: u32) -> usize {
    let _ = id;
    SHORT_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::test]
async fn a_value_outlives_its_ttl_in_the_scope() {
    // Outside a scope the 1 ms ttl expires between the calls.
    short_lived(1).await;
    CLOCK.advance(Duration::from_millis(5));
    short_lived(1).await;
    assert_eq!(SHORT_RUNS.load(Ordering::SeqCst), 2, "expired");

    let (a, b) = request_scope(async {
        let a = short_lived(2).await;
        CLOCK.advance(Duration::from_millis(5));
        (a, short_lived(2).await)
    })
    .await;
    assert_eq!(a, b);
    assert_eq!(SHORT_RUNS.load(Ordering::SeqCst), 3);
}

static SHARED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, key = "scope:shared:{id}", request_scope)]
async fn shared(id: u32) -> String {
    SHARED_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("computed {id}")
}

/// The scope is asked before the cache, and a value read from the cache is kept in the scope:
/// a request sees one value per key even when the cache changes under it.
#[tokio::test]
async fn the_scope_comes_before_the_cache_and_keeps_what_the_cache_gave() {
    setup().await;
    let cache = lexigram_cache::installed().cache();
    cache
        .set(&shared_cache_key(1), &"from the cache".to_owned(), None)
        .await
        .expect("set");
    let name = "scope_request::shared";
    let hits = || {
        function_stats()
            .into_iter()
            .find(|f| f.function == name)
            .map_or(0, |f| f.stats.hits)
    };
    let hits_before = hits();
    let (a, b) = request_scope(async {
        let a = shared(1).await;
        // Changed under the request: the request keeps the value it saw.
        cache
            .set(&shared_cache_key(1), &"changed".to_owned(), None)
            .await
            .expect("set");
        (a, shared(1).await)
    })
    .await;
    assert_eq!(a, "from the cache");
    assert_eq!(b, "from the cache");
    assert_eq!(hits() - hits_before, 1, "one cache read for two calls");
    assert_eq!(SHARED_RUNS.load(Ordering::SeqCst), 0, "never ran");
    // Outside, the cache's current value.
    assert_eq!(shared(1).await, "changed");
}

#[tokio::test]
async fn invalidate_forgets_the_value_in_the_scope() {
    setup().await;
    let (a, b, removed) = request_scope(async {
        let a = switched_off(20).await;
        assert_eq!(switched_off(20).await, a);
        let removed = switched_off_invalidate(20).await.expect("invalidate");
        (a, switched_off(20).await, removed)
    })
    .await;
    assert!(removed, "the scope held a value");
    assert_ne!(a, b, "read afresh after the invalidation");
    assert_eq!(runs("off", 20), 2);
}

#[tokio::test]
async fn a_nested_scope_starts_empty() {
    setup().await;
    request_scope(async {
        let outer = switched_off(30).await;
        let inner = request_scope(switched_off(30)).await;
        assert_ne!(outer, inner);
        assert_eq!(switched_off(30).await, outer, "the outer scope again");
    })
    .await;
    assert_eq!(runs("off", 30), 2);
}

#[cacheable(ttl = 60, request_scope)]
async fn slow(id: u32, fail: bool) -> Result<usize, String> {
    let n = ran("slow", id);
    tokio::time::sleep(Duration::from_millis(50)).await;
    if fail {
        Err(format!("run {n} failed"))
    } else {
        Ok(n)
    }
}

#[tokio::test]
async fn concurrent_calls_in_one_scope_run_the_body_once() {
    setup().await;
    let (a, b, c) =
        request_scope(async { tokio::join!(slow(40, false), slow(40, false), slow(40, false)) })
            .await;
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert_eq!(runs("slow", 40), 1);
}

#[tokio::test]
async fn a_failed_call_is_not_kept_and_a_waiting_call_runs_its_own_body() {
    setup().await;
    let ((a, b), c) = request_scope(async {
        let both = tokio::join!(slow(41, true), slow(41, true));
        (both, slow(41, true).await)
    })
    .await;
    assert!(a.is_err() && b.is_err() && c.is_err());
    assert_ne!(a, b, "the waiting call ran its own body");
    assert_eq!(runs("slow", 41), 3);
}

static KEPT_ERR_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, cache_err, request_scope)]
async fn kept_err(id: u32) -> Result<u32, String> {
    KEPT_ERR_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(format!("no {id}"))
}

static NONE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, request_scope)]
async fn nothing(id: u32) -> Option<u32> {
    let _ = id;
    NONE_RUNS.fetch_add(1, Ordering::SeqCst);
    None
}

static KEPT_NONE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, cache_none, request_scope)]
async fn kept_nothing(id: u32) -> Option<u32> {
    let _ = id;
    KEPT_NONE_RUNS.fetch_add(1, Ordering::SeqCst);
    None
}

#[tokio::test]
async fn errors_and_nones_are_kept_only_with_cache_err_and_cache_none() {
    setup().await;
    request_scope(async {
        assert!(slow(50, true).await.is_err());
        assert!(slow(50, true).await.is_err());
        assert_eq!(kept_err(50).await, Err("no 50".into()));
        assert_eq!(kept_err(50).await, Err("no 50".into()));
        assert_eq!(nothing(50).await, None);
        assert_eq!(nothing(50).await, None);
        assert_eq!(kept_nothing(50).await, None);
        assert_eq!(kept_nothing(50).await, None);
    })
    .await;
    assert_eq!(runs("slow", 50), 2, "Err is not kept");
    assert_eq!(
        KEPT_ERR_RUNS.load(Ordering::SeqCst),
        1,
        "cache_err keeps it"
    );
    assert_eq!(NONE_RUNS.load(Ordering::SeqCst), 2, "None is not kept");
    assert_eq!(
        KEPT_NONE_RUNS.load(Ordering::SeqCst),
        1,
        "cache_none keeps it"
    );
}

#[tokio::test]
async fn spawned_tasks_see_the_scope_only_when_inherited() {
    setup().await;
    request_scope(async {
        let mine = switched_off(60).await;
        let plain = tokio::spawn(async { (in_request_scope(), switched_off(60).await) })
            .await
            .expect("task");
        let inherited = tokio::spawn(inherit_request_scope(async {
            (in_request_scope(), switched_off(60).await)
        }))
        .await
        .expect("task");
        assert!(!plain.0, "a plain task is outside the scope");
        assert_ne!(plain.1, mine, "a plain task runs the body");
        assert_eq!(
            inherited,
            (true, mine),
            "an inherited task shares the scope"
        );
    })
    .await;
    assert_eq!(runs("off", 60), 2);
    assert!(!in_request_scope());
    // Outside any scope, inheriting is running as is.
    assert!(!inherit_request_scope(async { in_request_scope() }).await);
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Label(String);

#[cacheable(ttl = 60, key = "generic:{id}", request_scope)]
async fn generic<
    T: From<u32> + Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
>(
    id: u32,
) -> T {
    ran(std::any::type_name::<T>(), id);
    T::from(id)
}

impl From<u32> for Label {
    fn from(id: u32) -> Label {
        Label(format!("label {id}"))
    }
}

/// Instantiations of a generic function share a scope name and, here, a key: the scope keeps
/// their values apart by type.
#[tokio::test]
async fn values_of_two_types_under_one_key_stay_apart() {
    setup().await;
    request_scope(async {
        assert_eq!(generic::<u64>(70).await, 70);
        assert_eq!(generic::<Label>(70).await, Label("label 70".into()));
        assert_eq!(generic::<u64>(70).await, 70);
        assert_eq!(generic::<Label>(70).await, Label("label 70".into()));
    })
    .await;
    assert_eq!(runs("u64", 70), 1);
    assert_eq!(runs(std::any::type_name::<Label>(), 70), 1);
}

static REMOTE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, key = "remote:{id}", cache = cache, skip(cache), request_scope)]
async fn remote(cache: &Cache, id: u32) -> usize {
    let _ = id;
    REMOTE_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

/// A scope hit does not reach the backend: it answers after the Redis server is gone, where
/// the same call outside the scope is a miss that runs the body.
#[tokio::test]
async fn a_scope_hit_does_not_reach_redis() {
    let mut server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("scope:")
        .connect()
        .await
        .expect("connect to the spawned redis-server");
    let cache = Cache::from_backend("remote", backend);
    request_scope(async {
        assert_eq!(remote(&cache, 1).await, 1);
        server.kill();
        assert_eq!(remote(&cache, 1).await, 1, "from the scope");
    })
    .await;
    assert_eq!(REMOTE_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(
        remote(&cache, 1).await,
        2,
        "outside: the server is gone, a miss"
    );
}
