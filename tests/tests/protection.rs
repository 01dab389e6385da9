//! Protection across processes and under faults, against spawned servers: the distributed fill
//! lock (4 processes × 250 callers, a lock holder killed mid-body), the circuit breaker with a
//! stopped and a killed Redis, XFetch early refresh and stale-if-error.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lexigram_cache::{
    Cache, CacheModule, CacheOptions, Clock, MemoryBackend, RedisBackend, cacheable,
};
use lexigram_cache_tests::breaker::cache_with_a_sensitive_breaker;
use lexigram_cache_tests::servers::{MemcachedServer, RedisServer, ScratchDir, signal};

const CALLERS: usize = 250;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends one line to the run log named by `LEX_TEST_RUN_LOG`: one line per body run, across
/// every process.
fn record_run() {
    if let Ok(path) = std::env::var("LEX_TEST_RUN_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open run log");
        f.write_all(b"run\n").expect("append run log");
    }
}

fn runs(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

#[cacheable(ttl = 60, key = "cold:{id}")]
async fn expensive(id: u32) -> Result<String, std::io::Error> {
    record_run();
    let body_ms = std::env::var("LEX_TEST_BODY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    tokio::time::sleep(Duration::from_millis(body_ms)).await;
    Ok(format!("value {id}"))
}

/// The child side of the multi-process tests; does nothing unless `LEX_TEST_CHILD` is set.
/// Boots from `LEX_CACHE__...` variables, waits for the common start time, then runs 250
/// concurrent callers of one cold key and prints how many got the right value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_callers() {
    if std::env::var("LEX_TEST_CHILD").is_err() {
        return;
    }
    let caches = CacheModule::from_env().await.expect("child boots");
    caches.install();
    let start_at: u64 = std::env::var("LEX_TEST_START_AT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let now = unix_ms();
    if start_at > now {
        tokio::time::sleep(Duration::from_millis(start_at - now)).await;
    }
    let callers: Vec<_> = (0..CALLERS).map(|_| tokio::spawn(expensive(7))).collect();
    let mut right = 0;
    for c in callers {
        if c.await.expect("caller task").expect("body never fails") == "value 7" {
            right += 1;
        }
    }
    println!("RIGHT {right}");
}

fn spawn_child(env: &[(String, String)]) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_callers", "--nocapture", "--quiet"])
        .env("LEX_TEST_CHILD", "1")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child process")
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().expect("child output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn backend_env(kind: &str, addr: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("LEX_CACHE__BACKENDS__0__TYPE".to_owned(), kind.to_owned()),
        (
            "LEX_CACHE__BACKENDS__0__PREFIX".to_owned(),
            "stampede:".to_owned(),
        ),
    ];
    match kind {
        "redis" => env.push(("LEX_CACHE__BACKENDS__0__REDIS_URL".into(), addr.into())),
        _ => env.push(("LEX_CACHE__BACKENDS__0__SERVERS__0".into(), addr.into())),
    }
    env
}

fn four_processes_run_the_body_once(kind: &str, addr: &str) {
    let dir = ScratchDir::new("stampede");
    let log = dir.path().join("runs.log");
    let mut env = backend_env(kind, addr);
    env.push(("LEX_TEST_RUN_LOG".into(), log.display().to_string()));
    env.push(("LEX_TEST_START_AT".into(), (unix_ms() + 1500).to_string()));
    let children: Vec<Child> = (0..4).map(|_| spawn_child(&env)).collect();
    for child in children {
        let out = finish(child);
        assert!(out.contains(&format!("RIGHT {CALLERS}")), "{out}");
    }
    assert_eq!(
        runs(&log),
        1,
        "4 processes × {CALLERS} callers over {kind}: the body ran once in total"
    );
}

#[test]
fn four_processes_share_one_fill_over_redis() {
    let server = RedisServer::start();
    four_processes_run_the_body_once("redis", &server.url());
}

#[test]
fn four_processes_share_one_fill_over_memcached() {
    let server = MemcachedServer::start();
    four_processes_run_the_body_once("memcached", &server.addr());
}

#[test]
fn a_killed_lock_holder_is_replaced_after_the_lock_ttl() {
    let server = RedisServer::start();
    let dir = ScratchDir::new("holder");
    let log = dir.path().join("runs.log");
    let mut env = backend_env("redis", &server.url());
    env.push(("LEX_TEST_RUN_LOG".into(), log.display().to_string()));
    env.push(("LEX_CACHE__SERVICE__LOCK_TTL".into(), "1s".into()));

    // The holder takes the lock and never finishes its body.
    let mut holder_env = env.clone();
    holder_env.push(("LEX_TEST_BODY_MS".into(), "600000".into()));
    let mut holder = spawn_child(&holder_env);
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs(&log) == 0 {
        assert!(
            Instant::now() < deadline,
            "the holder never started its body"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(holder.id(), "KILL");
    let _ = holder.wait();

    // The others find the lock taken, and get a value once its ttl has run out.
    let started = Instant::now();
    let mut env = env.clone();
    env.push(("LEX_TEST_BODY_MS".into(), "50".into()));
    // Were the waiters to sit out `lock_wait` instead of taking the expired lock, this test
    // would take two minutes; the bound below is far from both.
    env.push(("LEX_CACHE__SERVICE__LOCK_WAIT".into(), "120s".into()));
    let others: Vec<Child> = (0..2).map(|_| spawn_child(&env)).collect();
    for child in others {
        let out = finish(child);
        assert!(out.contains(&format!("RIGHT {CALLERS}")), "{out}");
    }
    assert_eq!(
        runs(&log),
        2,
        "the dead holder's run, then exactly one more"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waiters took the expired lock instead of waiting out lock_wait"
    );
}

fn resilient_cache(url: &str) -> (Cache, RedisBackend) {
    let backend = RedisBackend::builder(url)
        .prefix("faults:")
        .op_timeout(Duration::from_millis(100))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .expect("build");
    let mut options = CacheOptions::default();
    options.breaker_threshold = 3;
    options.breaker_open_for = Duration::from_millis(300);
    (
        Cache::with_options("faults", backend.clone(), options),
        backend,
    )
}

/// Calls that must all return the body's value, whatever the server does.
async fn load(cache: &Cache, rounds: usize, runs: &Arc<AtomicUsize>) {
    for round in 0..rounds {
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let cache = cache.clone();
                let runs = runs.clone();
                tokio::spawn(async move {
                    let key = format!("k{}", (round + i) % 5);
                    let v: Result<String, std::io::Error> = cache
                        .try_get_or_insert_with(&key, None, || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            Ok(format!("v-{key}"))
                        })
                        .await;
                    (key, v)
                })
            })
            .collect();
        for c in calls {
            let (key, v) = c.await.expect("task");
            assert_eq!(v.expect("never an error"), format!("v-{key}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_killed_redis_never_reaches_the_caller() {
    let mut server = RedisServer::start();
    let port = server.port();
    let (cache, _backend) = resilient_cache(&server.url());
    let runs = Arc::new(AtomicUsize::new(0));
    load(&cache, 3, &runs).await;
    let hits_before = cache.stats().hits;
    assert!(hits_before > 0);

    // Frozen server: reads time out, the breaker opens, calls then skip the network.
    server.pause();
    load(&cache, 10, &runs).await;
    let stats = cache.stats();
    assert!(stats.breaker_opens >= 1, "{stats:?}");
    assert!(stats.breaker_short_circuits > 0, "{stats:?}");
    server.resume();

    // Back: after the open period one probe closes the breaker and hits resume.
    tokio::time::sleep(Duration::from_millis(400)).await;
    load(&cache, 3, &runs).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    load(&cache, 3, &runs).await;
    assert!(!cache.stats().breaker_open, "closed again");
    let hits_after_pause = cache.stats().hits;
    load(&cache, 2, &runs).await;
    assert!(cache.stats().hits > hits_after_pause, "hits resume");

    // Killed, then restarted on the same port.
    server.kill();
    load(&cache, 10, &runs).await;
    assert!(cache.stats().breaker_opens >= 2);
    let _restarted = RedisServer::start_at(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        load(&cache, 1, &runs).await;
        let before = cache.stats().hits;
        load(&cache, 1, &runs).await;
        if cache.stats().hits > before && !cache.stats().breaker_open {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hits never resumed after a restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfetch_refreshes_a_hot_key_before_it_expires() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .prefix("hot:")
        .connect()
        .await
        .expect("connect");
    let mut options = CacheOptions::default();
    // A large beta makes every hit of a value with a measured compute time refresh it (the
    // statistics of ordinary betas are tested in protect::early).
    options.beta = 1e9;
    let cache = Cache::with_options("hot", backend, options);
    let runs = AtomicUsize::new(0);
    let body = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, std::io::Error>(runs.load(Ordering::SeqCst))
    };
    let first = cache
        .try_get_or_insert_with("k", Duration::from_secs(60), body)
        .await
        .expect("first");
    assert_eq!(first, 1);
    for _ in 0..5 {
        cache
            .try_get_or_insert_with("k", Duration::from_secs(60), body)
            .await
            .expect("hit");
    }
    let stats = cache.stats();
    assert_eq!(
        stats.misses, 1,
        "callers never saw a miss after the first fill"
    );
    assert!(stats.early_refreshes >= 5, "{stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 6);

    // Switched off: hits stay hits.
    let mut options = CacheOptions::default();
    options.early_refresh = false;
    options.beta = 1e9;
    let plain = Cache::with_options(
        "plain",
        RedisBackend::builder(server.url())
            .prefix("plain:")
            .build()
            .expect("build"),
        options,
    );
    for _ in 0..3 {
        plain
            .try_get_or_insert_with("k", Duration::from_secs(60), body)
            .await
            .expect("call");
    }
    assert_eq!(plain.stats().early_refreshes, 0);
}

#[tokio::test]
async fn stale_if_error_serves_the_old_value_inside_the_window_only() {
    let clock = Clock::manual(1_000);
    let backend = MemoryBackend::builder()
        .clock(clock.clone())
        .build()
        .expect("build");
    let mut options = CacheOptions::default();
    options.stale_if_error = Some(Duration::from_secs(10));
    options.ttl_jitter = 0.0;
    let cache = Cache::with_options("stale", backend, options);
    let ok = || async { Ok::<_, String>(1u32) };
    let fail = || async { Err::<u32, _>("db down".to_owned()) };

    assert_eq!(
        cache
            .try_get_or_insert_with("k", Duration::from_secs(1), ok)
            .await,
        Ok(1)
    );
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(
        cache.get::<u32>("k").await.expect("get"),
        None,
        "expired for readers"
    );
    assert_eq!(
        cache
            .try_get_or_insert_with("k", Duration::from_secs(1), fail)
            .await,
        Ok(1),
        "inside the window the failed refill serves the stale value"
    );
    assert_eq!(cache.stats().stale_served, 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        cache
            .try_get_or_insert_with("k", Duration::from_secs(1), fail)
            .await,
        Err("db down".to_owned()),
        "after the window the error comes through"
    );
    assert_eq!(cache.stats().stale_served, 1);
}

static STALE_CLOCK: std::sync::LazyLock<Clock> = std::sync::LazyLock::new(|| Clock::manual(1_000));
static STALE_CACHE: std::sync::LazyLock<Cache> = std::sync::LazyLock::new(|| {
    let mut options = CacheOptions::default();
    options.ttl_jitter = 0.0;
    Cache::with_options(
        "macro-stale",
        MemoryBackend::builder()
            .clock(STALE_CLOCK.clone())
            .build()
            .expect("build"),
        options,
    )
});
static PRICE_FAILS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cacheable(cache = &*STALE_CACHE, ttl = 1, stale_if_error = "10s", key = "price:{sku}")]
async fn price(sku: &str) -> Result<u32, String> {
    if PRICE_FAILS.load(Ordering::SeqCst) {
        return Err(format!("pricing service down for {sku}"));
    }
    Ok(42)
}

#[tokio::test]
async fn the_macro_option_stale_if_error_reaches_the_runtime() {
    assert_eq!(price("a").await, Ok(42));
    PRICE_FAILS.store(true, Ordering::SeqCst);
    STALE_CLOCK.advance(Duration::from_secs(2));
    assert_eq!(price("a").await, Ok(42), "expired, body fails: stale value");
    STALE_CLOCK.advance(Duration::from_secs(10));
    assert!(price("a").await.is_err(), "past the window: the error");
    assert_eq!(STALE_CACHE.stats().stale_served, 1);
}

/// A probe whose caller gives up (a `timeout`, a dropped request) must not keep the breaker
/// open: once the server answers again, later calls close it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_does_not_keep_the_breaker_open() {
    let server = RedisServer::start();
    let cache = cache_with_a_sensitive_breaker(&server, "probe", Duration::from_millis(200)).await;

    // A frozen server: one timeout opens the breaker.
    server.pause();
    assert!(cache.get::<u32>("k").await.is_err(), "the read times out");
    assert!(cache.stats().breaker_open, "{:?}", cache.stats());

    // After the open period the next call is the probe; its caller gives up mid-call.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let probe = tokio::time::timeout(Duration::from_millis(50), cache.get::<u32>("k")).await;
    assert!(
        probe.is_err(),
        "the probe was cancelled while the server was frozen"
    );
    server.resume();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(1)) = cache.get::<u32>("k").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker stayed open after its probe was cancelled: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!cache.stats().breaker_open);
}
