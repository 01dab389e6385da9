//! The hit path of `#[cacheable]`: the cache of `cache = expr` is borrowed for the hit (and
//! `self` still moves into the body), and a hit never serves a value that a write, a delete or
//! a clear made on another thread has replaced, although each thread keeps its last reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lexigram_cache::{Cache, CacheModule, cacheable};

#[derive(Clone)]
struct Repo {
    cache: Cache,
    name: String,
    runs: Arc<AtomicUsize>,
}

impl Repo {
    #[cacheable(ttl = 60, key = "path:{id}", cache = self.cache)]
    async fn borrowed(&self, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", self.name)
    }

    #[cacheable(ttl = 60, key = "path:owned:{id}", cache = self.cache)]
    async fn by_value(self: Arc<Self>, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", self.name)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_cache_of_self_is_borrowed_and_self_still_moves_into_the_body() {
    let repo = Repo {
        cache: CacheModule::stub().cache(),
        name: "r".into(),
        runs: Arc::default(),
    };
    assert_eq!(repo.borrowed(1).await, "r:1");
    assert_eq!(repo.borrowed(1).await, "r:1");
    assert_eq!(Arc::new(repo.clone()).by_value(2).await, "r:2");
    assert_eq!(Arc::new(repo.clone()).by_value(2).await, "r:2");
    assert_eq!(repo.runs.load(Ordering::SeqCst), 2, "each ran once");
    assert_eq!(repo.cache.stats().hits, 2);
}

/// Reads `path:{id}` through the macro on its own OS thread.
fn read_on_other_thread(repo: &Repo, id: u64) -> String {
    let repo = repo.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(repo.borrowed(id))
    })
    .join()
    .expect("reader thread")
}

#[tokio::test(flavor = "current_thread")]
async fn a_hit_sees_writes_deletes_and_clears_from_other_threads() {
    let repo = Repo {
        cache: CacheModule::stub().cache(),
        name: "body".into(),
        runs: Arc::default(),
    };
    let ttl = Duration::from_secs(60);
    // This thread reads the key many times, so it holds it in its front.
    for _ in 0..3 {
        assert_eq!(repo.borrowed(5).await, "body:5");
    }
    // Another thread writes; this thread's next hit has the new value.
    let writer = repo.cache.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(writer.set("path:5", &"written".to_string(), ttl))
            .expect("set")
    })
    .join()
    .expect("writer thread");
    assert_eq!(repo.borrowed(5).await, "written");
    assert_eq!(read_on_other_thread(&repo, 5), "written");

    // This thread writes; a thread that held the old value reads the new one.
    assert_eq!(read_on_other_thread(&repo, 5), "written");
    repo.cache
        .set("path:5", &"again".to_string(), ttl)
        .await
        .expect("set");
    assert_eq!(read_on_other_thread(&repo, 5), "again");
    assert_eq!(repo.borrowed(5).await, "again");

    // A delete, a pattern delete and a clear each make the next call run the body.
    for change in 0..3 {
        assert_ne!(repo.borrowed(5).await, "body:5");
        match change {
            0 => assert!(repo.cache.delete("path:5").await.expect("delete")),
            1 => assert_eq!(
                repo.cache.delete_pattern("path:*").await.expect("pattern"),
                1
            ),
            _ => assert_eq!(repo.cache.clear().await.expect("clear"), 1),
        }
        assert_eq!(repo.borrowed(5).await, "body:5", "after change {change}");
        repo.cache
            .set("path:5", &"stored".to_string(), ttl)
            .await
            .expect("set");
    }
}

/// Automatic keys, whose hits are found by the encoded arguments without writing the key.
struct Auto {
    cache: Cache,
    runs: Arc<AtomicUsize>,
}

impl Auto {
    #[cacheable(ttl = 60, cache = self.cache)]
    async fn first(&self, id: u64, name: String) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("first:{id}:{name}")
    }

    #[cacheable(ttl = 60, cache = self.cache)]
    async fn second(&self, id: u64, name: String) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("second:{id}:{name}")
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_automatic_key_hit_is_the_value_of_exactly_its_function_and_arguments() {
    let auto = Auto {
        cache: CacheModule::stub().cache(),
        runs: Arc::default(),
    };
    let long = "x".repeat(200);
    let calls = [
        (1, "a".to_string()),
        (2, "a".to_string()),
        (1, "b".to_string()),
        (1, long.clone()),
        (1, format!("{long}y")),
    ];
    // Twice over: the second round is all hits, each the value of its own call, from either
    // function, with arguments short enough to be kept whole and too long for that.
    for round in 0..2 {
        for (id, name) in &calls {
            assert_eq!(
                auto.first(*id, name.clone()).await,
                format!("first:{id}:{name}")
            );
            assert_eq!(
                auto.second(*id, name.clone()).await,
                format!("second:{id}:{name}")
            );
        }
        assert_eq!(auto.runs.load(Ordering::SeqCst), 10, "round {round}");
    }
    assert_eq!(auto.cache.stats().hits, 10);
    // The key a hit was found by is the key the value is stored under.
    let key = auto.first_cache_key(2, "a".into());
    assert_eq!(
        auto.cache.get::<String>(&key).await.expect("get"),
        Some("first:2:a".to_string())
    );
    auto.cache
        .set(&key, &"replaced".to_string(), None)
        .await
        .expect("set");
    assert_eq!(auto.first(2, "a".into()).await, "replaced");
    assert!(
        auto.first_invalidate(2, "a".into())
            .await
            .expect("invalidate")
    );
    assert_eq!(auto.first(2, "a".into()).await, "first:2:a");
    assert_eq!(
        auto.runs.load(Ordering::SeqCst),
        11,
        "ran again after the invalidation"
    );
    // Another cache has its own values.
    let other = Auto {
        cache: CacheModule::stub().cache(),
        runs: Arc::default(),
    };
    other
        .cache
        .set(&key, &"other".to_string(), None)
        .await
        .expect("set");
    assert_eq!(other.first(2, "a".into()).await, "other");
    assert_eq!(auto.first(2, "a".into()).await, "first:2:a");
}

#[cacheable(ttl = 60, key = "typed:{id}", cache = cache, skip(cache))]
async fn typed(cache: &Cache, id: u64) -> u32 {
    id as u32
}

#[tokio::test(flavor = "current_thread")]
async fn a_value_of_another_type_is_one_decode_failure_and_is_replaced() {
    let cache = CacheModule::stub().cache();
    cache
        .set("typed:1", &"a string".to_string(), None)
        .await
        .expect("set");
    assert_eq!(typed(&cache, 1).await, 1);
    let stats = cache.stats();
    assert_eq!((stats.decode_failures, stats.misses), (1, 1), "{stats:?}");
    assert_eq!(typed(&cache, 1).await, 1);
    assert_eq!(cache.stats().hits, 1, "the body's value replaced it");
    // A plain read of the wrong type still reports each read.
    assert_eq!(cache.get::<String>("typed:1").await.expect("get"), None);
    assert_eq!(cache.stats().decode_failures, 2);
}
