//! Two OS processes share a Redis, each with its near cache (booted from `LEX_CACHE__...`
//! variables, where the near cache is on by default): process A updates and deletes a key;
//! process B's next read after the invalidation arrives sees the change, although B held the
//! old value in its near cache.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use lexigram_cache::{Cache, CacheModule};
use lexigram_cache_tests::child::ChildProcess;
use lexigram_cache_tests::servers::RedisServer;

fn env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LEX_CACHE__BACKENDS__0__TYPE", "redis".into()),
        ("LEX_CACHE__BACKENDS__0__PREFIX", "procs:".into()),
        ("LEX_CACHE__BACKENDS__0__REDIS_URL", url.into()),
        ("LEX_CACHE__BACKENDS__0__NEAR__TTL", "1m".into()),
    ]
}

async fn wait_live(cache: &Cache) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.stats().near_live {
        assert!(Instant::now() < deadline, "near cache never subscribed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The child side: does nothing unless `LEX_TEST_NEAR_CHILD` is set. Reads commands from
/// stdin, one a line, and answers each with one line starting with `=`:
/// `get KEY` → the value or `none`; `wait N` → once N invalidations came from others;
/// `hits` → how many reads the near cache served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_reader() {
    if std::env::var("LEX_TEST_NEAR_CHILD").is_err() {
        return;
    }
    let cache = CacheModule::from_env().await.expect("child boots").cache();
    wait_live(&cache).await;
    println!("=ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd {
            "get" => {
                let v = cache.get::<u32>(arg).await.expect("child get");
                println!("={}", v.map_or("none".to_owned(), |v| v.to_string()));
            }
            "wait" => {
                let n: u64 = arg.parse().expect("a count");
                let deadline = Instant::now() + Duration::from_secs(10);
                while cache.stats().near_invalidations < n {
                    assert!(Instant::now() < deadline, "invalidation {n} never came");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                println!("=ok");
            }
            "hits" => println!("={}", cache.stats().near_hits),
            _ => break,
        }
        std::io::stdout().flush().expect("flush");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_sees_an_update_and_a_delete_after_the_invalidation() {
    let server = RedisServer::start();
    let mut config = lexigram_cache::CacheConfig::default();
    let mut b = lexigram_cache::BackendConfig::redis("default", server.url());
    b.prefix = "procs:".into();
    config.backends = vec![b];
    let a = CacheModule::configure(config)
        .await
        .expect("A boots")
        .cache();
    wait_live(&a).await;
    a.set("p", &1u32, None).await.expect("set");

    let mut child = ChildProcess::spawn("child_reader", "LEX_TEST_NEAR_CHILD", env(&server.url()));
    assert_eq!(child.ask("get p"), "1");
    assert_eq!(child.ask("get p"), "1");
    let hits: u64 = child.ask("hits").parse().expect("a number");
    assert!(hits >= 1, "B holds p in its near cache");

    a.set("p", &2u32, None).await.expect("update");
    assert_eq!(child.ask("wait 1"), "ok");
    assert_eq!(child.ask("get p"), "2", "B's next read after the update");

    a.delete("p").await.expect("delete");
    assert_eq!(child.ask("wait 2"), "ok");
    assert_eq!(child.ask("get p"), "none", "B's next read after the delete");
}
