//! Stampede harness: how many times does a 50 ms body run when 1000 callers in one process, or
//! 4 processes × 250 callers, ask for the same cold key at once? Ours beside `cached` 4 (plain
//! and `sync_writes = "by_key"`) and moka's `get_with`, in one run. Prints a table.
//!
//! `cargo bench -p lexigram-cache-benches --bench stampede`

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cached::macros::cached;
use lexigram_cache::{BackendConfig, CacheConfig, CacheModule, cacheable};
use lexigram_cache_tests::servers::{RedisServer, ScratchDir};

const BODY: Duration = Duration::from_millis(50);
static RUNS: AtomicUsize = AtomicUsize::new(0);

async fn body(id: u64) -> u64 {
    RUNS.fetch_add(1, Ordering::SeqCst);
    if let Ok(path) = std::env::var("STAMPEDE_RUN_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = f.write_all(b"run\n");
    }
    tokio::time::sleep(BODY).await;
    id * 2
}

#[cacheable(ttl = 60, key = "stampede:{id}")]
async fn ours(id: u64) -> u64 {
    body(id).await
}

#[cached(ttl_secs = 60)]
async fn cached_plain(id: u64) -> u64 {
    body(id).await
}

#[cached(ttl_secs = 60, sync_writes = "by_key")]
async fn cached_sync(id: u64) -> u64 {
    body(id).await
}

fn moka_cache() -> &'static moka::future::Cache<u64, u64> {
    static C: OnceLock<moka::future::Cache<u64, u64>> = OnceLock::new();
    C.get_or_init(|| moka::future::Cache::new(1000))
}

async fn moka_get_with(id: u64) -> u64 {
    moka_cache().get_with(id, body(id)).await
}

/// Runs `callers` concurrent calls of `contender` for key 7; returns (body runs, wall time).
async fn storm(contender: &str, callers: usize) -> (usize, Duration) {
    RUNS.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let contender = contender.to_owned();
            tokio::spawn(async move {
                let v = match contender.as_str() {
                    "lexigram" => ours(7).await,
                    "cached" => cached_plain(7).await,
                    "cached_sync_writes" => cached_sync(7).await,
                    "moka_get_with" => moka_get_with(7).await,
                    other => panic!("unknown contender {other}"),
                };
                assert_eq!(v, 14);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller");
    }
    (RUNS.load(Ordering::SeqCst), started.elapsed())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Child mode: boot (Redis when `STAMPEDE_REDIS` is set), wait for the common start, storm.
fn child(contender: &str) {
    let rt = runtime();
    rt.block_on(async {
        if let Ok(url) = std::env::var("STAMPEDE_REDIS") {
            let mut config = CacheConfig::default();
            let mut b = BackendConfig::redis("default", url.as_str());
            b.prefix = "stampede:".into();
            config.backends = vec![b];
            CacheModule::configure(config)
                .await
                .expect("boot")
                .install();
        }
        let start: u64 = std::env::var("STAMPEDE_START")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let now = now_ms();
        if start > now {
            tokio::time::sleep(Duration::from_millis(start - now)).await;
        }
        storm(contender, 250).await;
    });
}

/// 4 processes × 250 callers; returns (total body runs, wall time of the slowest process).
fn four_processes(contender: &str, redis: Option<&str>) -> (usize, Duration) {
    let dir = ScratchDir::new("stampede-bench");
    let log = dir.path().join("runs.log");
    let start = now_ms() + 1500;
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut cmd = Command::new(std::env::current_exe().expect("bench binary"));
            cmd.env("STAMPEDE_CHILD", contender)
                .env("STAMPEDE_RUN_LOG", &log)
                .env("STAMPEDE_START", start.to_string())
                .stdout(Stdio::null());
            if let Some(url) = redis {
                cmd.env("STAMPEDE_REDIS", url);
            }
            cmd.spawn().expect("spawn child")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("child").success(), "a child failed");
    }
    let wall = Duration::from_millis(now_ms().saturating_sub(start));
    let runs = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    (runs, wall)
}

fn main() {
    if let Ok(contender) = std::env::var("STAMPEDE_CHILD") {
        child(&contender);
        return;
    }
    // `cargo bench` passes criterion-style flags; this harness has none to read.
    let rt = runtime();
    println!("| scenario | contender | body runs | wall ms |");
    println!("|---|---|---:|---:|");
    for contender in ["lexigram", "cached", "cached_sync_writes", "moka_get_with"] {
        let (runs, wall) = rt.block_on(storm(contender, 1000));
        println!(
            "| 1000 callers, 1 process | {contender} | {runs} | {} |",
            wall.as_millis()
        );
    }
    let server = RedisServer::start();
    let (runs, wall) = four_processes("lexigram", Some(&server.url()));
    println!(
        "| 4 processes × 250 | lexigram on Redis | {runs} | {} |",
        wall.as_millis()
    );
    for contender in ["lexigram", "cached_sync_writes", "moka_get_with"] {
        let (runs, wall) = four_processes(contender, None);
        let label = if contender == "lexigram" {
            "lexigram in memory"
        } else {
            contender
        };
        println!(
            "| 4 processes × 250 | {label} | {runs} | {} |",
            wall.as_millis()
        );
    }
}
