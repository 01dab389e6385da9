//! `#[cacheable]` on every supported shape, with run counters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use lexigram_cache::{Cache, CacheBackend, CacheError, Clock, MemoryBackend, cacheable};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

static FREE_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Docs and attributes survive the macro.
#[cacheable(ttl = 60)]
#[inline(never)]
pub async fn double(x: u64, label: String) -> u64 {
    FREE_RUNS.fetch_add(1, Ordering::SeqCst);
    let _ = label;
    x * 2
}

#[tokio::test]
async fn free_fn_with_automatic_key() {
    let before = FREE_RUNS.load(Ordering::SeqCst);
    assert_eq!(double(21, "a".into()).await, 42);
    assert_eq!(double(21, "a".into()).await, 42);
    assert_eq!(FREE_RUNS.load(Ordering::SeqCst) - before, 1);
    assert_eq!(double(21, "b".into()).await, 42);
    assert_eq!(FREE_RUNS.load(Ordering::SeqCst) - before, 2);
    let key = double_cache_key(21, "a".into());
    assert!(key.starts_with("macro_shapes::double:v0:"), "{key}");
    assert_eq!(key.len(), "macro_shapes::double:v0:".len() + 32);
    assert!(double_invalidate(21, "a".into()).await.expect("invalidate"));
    assert_eq!(double(21, "a".into()).await, 42);
    assert_eq!(FREE_RUNS.load(Ordering::SeqCst) - before, 3);
}

static USER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = "5m", key = "user:{id}", prefix = "shapes:")]
async fn load_user(id: u64) -> Result<User, std::io::Error> {
    USER_RUNS.fetch_add(1, Ordering::SeqCst);
    if id == 0 {
        return Err(std::io::Error::other("no user 0"));
    }
    Ok(User {
        id,
        name: format!("user {id}"),
    })
}

#[tokio::test]
async fn template_keys_and_companions() {
    assert_eq!(load_user_cache_key(7), "shapes:user:7");
    let before = USER_RUNS.load(Ordering::SeqCst);
    let a = load_user(7).await.expect("ok");
    let b = load_user(7).await.expect("ok");
    assert_eq!(a, b);
    assert_eq!(USER_RUNS.load(Ordering::SeqCst) - before, 1);
    // Errors are never stored.
    assert!(load_user(0).await.is_err());
    assert!(load_user(0).await.is_err());
    assert_eq!(USER_RUNS.load(Ordering::SeqCst) - before, 3);
    assert!(load_user_invalidate(7).await.expect("invalidate"));
    assert!(!load_user_invalidate(7).await.expect("second invalidate"));
    load_user(7).await.expect("ok");
    assert_eq!(USER_RUNS.load(Ordering::SeqCst) - before, 4);
}

// Result under other spellings.
type AppResult<T> = Result<T, AppError>;
#[derive(Debug)]
struct AppError;

static SPELL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(key = "anyhow:{ok}")]
async fn via_anyhow(ok: bool) -> anyhow::Result<u32> {
    SPELL_RUNS.fetch_add(1, Ordering::SeqCst);
    if ok { Ok(1) } else { anyhow::bail!("failed") }
}

#[cacheable(key = "io:{ok}")]
async fn via_io(ok: bool) -> std::io::Result<u32> {
    SPELL_RUNS.fetch_add(1, Ordering::SeqCst);
    if ok {
        Ok(2)
    } else {
        Err(std::io::Error::other("failed"))
    }
}

#[cacheable(key = "alias:{ok}")]
async fn via_alias(ok: bool) -> AppResult<u32> {
    SPELL_RUNS.fetch_add(1, Ordering::SeqCst);
    if ok { Ok(3) } else { Err(AppError) }
}

#[tokio::test]
async fn every_result_spelling_caches_only_ok() {
    let before = SPELL_RUNS.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(via_anyhow(true).await.expect("ok"), 1);
        assert_eq!(via_io(true).await.expect("ok"), 2);
        assert_eq!(via_alias(true).await.expect("ok"), 3);
        assert!(via_anyhow(false).await.is_err());
        assert!(via_io(false).await.is_err());
        assert!(via_alias(false).await.is_err());
    }
    // 3 Ok runs once each, 3 Err runs three times each.
    assert_eq!(SPELL_RUNS.load(Ordering::SeqCst) - before, 3 + 9);
}

static OPT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(key = "opt:{id}")]
async fn find(id: u32) -> Option<u32> {
    OPT_RUNS.fetch_add(1, Ordering::SeqCst);
    (id > 0).then_some(id)
}

#[cacheable(key = "opt-none:{id}", cache_none)]
async fn find_remembering_none(id: u32) -> Option<u32> {
    OPT_RUNS.fetch_add(1, Ordering::SeqCst);
    (id > 0).then_some(id)
}

#[cacheable(key = "err:{id}", cache_err)]
async fn remembered_error(id: u32) -> Result<u32, String> {
    OPT_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(format!("no {id}"))
}

#[tokio::test]
async fn options_and_opt_ins() {
    let before = OPT_RUNS.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(find(5).await, Some(5));
        assert_eq!(find(0).await, None);
    }
    assert_eq!(OPT_RUNS.load(Ordering::SeqCst) - before, 1 + 3);
    let before = OPT_RUNS.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(find_remembering_none(0).await, None);
        assert_eq!(remembered_error(1).await, Err("no 1".to_string()));
    }
    assert_eq!(OPT_RUNS.load(Ordering::SeqCst) - before, 2);
}

// Methods: inherent, with self fields in the key and an explicit cache.
struct Repo {
    tenant: String,
    cache: Cache,
    runs: AtomicUsize,
}

impl Repo {
    #[cacheable(key = "t:{self.tenant}:user:{id}", cache = self.cache, ttl = 10)]
    async fn user(&self, id: u64) -> Result<User, std::io::Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(User {
            id,
            name: self.tenant.clone(),
        })
    }

    #[cacheable(cache = &self.cache, version = 2)]
    async fn count(&self, table: &str) -> u64 {
        self.runs.fetch_add(1, Ordering::SeqCst);
        table.len() as u64
    }
}

#[tokio::test]
async fn inherent_methods_with_self_in_the_key() {
    let clock = Clock::manual(0);
    let cache = Cache::from_backend(
        "repo",
        MemoryBackend::builder()
            .clock(clock.clone())
            .build()
            .expect("valid"),
    );
    let repo = Repo {
        tenant: "acme".into(),
        cache: cache.clone(),
        runs: AtomicUsize::new(0),
    };
    assert_eq!(repo.user_cache_key(3), "t:acme:user:3");
    repo.user(3).await.expect("ok");
    repo.user(3).await.expect("ok");
    assert_eq!(repo.runs.load(Ordering::SeqCst), 1);
    assert!(cache.exists("t:acme:user:3").await.expect("exists"));
    clock.advance(Duration::from_secs(11)); // ttl = 10
    repo.user(3).await.expect("ok");
    assert_eq!(repo.runs.load(Ordering::SeqCst), 2);

    assert_eq!(repo.count("users").await, 5);
    assert_eq!(repo.count("users").await, 5);
    assert_eq!(repo.runs.load(Ordering::SeqCst), 3);
    assert!(repo.count_cache_key("users").contains(":v2:"));
    assert!(repo.count_invalidate("users").await.expect("invalidate"));
}

// Trait impls: native async fn in traits, and #[async_trait].
trait Lookup {
    async fn lookup(&self, id: u32) -> u32;
}

struct Native {
    runs: AtomicUsize,
}

impl Lookup for Native {
    #[cacheable(key = "native:{id}", companions = false)]
    async fn lookup(&self, id: u32) -> u32 {
        self.runs.fetch_add(1, Ordering::SeqCst);
        id + 1
    }
}

#[async_trait]
trait AsyncLookup {
    async fn lookup(&self, id: u32) -> Result<u32, std::io::Error>;
}

struct ViaAsyncTrait {
    runs: AtomicUsize,
    cache: Cache,
}

#[async_trait]
impl AsyncLookup for ViaAsyncTrait {
    #[cacheable(key = "at:{id}", cache = self.cache)]
    async fn lookup(&self, id: u32) -> Result<u32, std::io::Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(id + 2)
    }
}

#[tokio::test]
async fn trait_impls() {
    let n = Native {
        runs: AtomicUsize::new(0),
    };
    assert_eq!(n.lookup(1).await, 2);
    assert_eq!(n.lookup(1).await, 2);
    assert_eq!(n.runs.load(Ordering::SeqCst), 1);

    let a = ViaAsyncTrait {
        runs: AtomicUsize::new(0),
        cache: Cache::from_backend("at", MemoryBackend::builder().build().expect("valid")),
    };
    let dynamic: &dyn AsyncLookup = &a;
    assert_eq!(dynamic.lookup(1).await.expect("ok"), 3);
    assert_eq!(dynamic.lookup(1).await.expect("ok"), 3);
    assert_eq!(a.runs.load(Ordering::SeqCst), 1);
    assert!(a.cache.exists("at:1").await.expect("exists"));
}

// Generic functions, with an explicit key.
#[cacheable(key = "show:{value}")]
async fn show<T: std::fmt::Display + Send + Sync>(value: T) -> String {
    format!("<{value}>")
}

#[tokio::test]
async fn generic_fn_and_send_future() {
    assert_eq!(show(5).await, "<5>");
    assert_eq!(show("x").await, "<x>");
    // The wrapped future stays Send: it can be spawned.
    let handle = tokio::spawn(async { lookup_id(99).await.ok() });
    assert_eq!(handle.await.expect("task"), Some(99));
    let handle = tokio::spawn(halve(4, "spawned".into()));
    assert_eq!(handle.await.expect("task"), 2);
}

/// Like `load_user`, without its run counter: `template_keys_and_companions` counts
/// `load_user`'s runs while other tests run in parallel.
#[cacheable(ttl = 60, key = "lookup:{id}")]
async fn lookup_id(id: u64) -> Result<u64, std::io::Error> {
    Ok(id)
}

/// Like `double`, without its run counter: `free_fn_with_automatic_key` counts `double`'s runs
/// while other tests run in parallel.
#[cacheable(ttl = 60)]
async fn halve(x: u64, label: String) -> u64 {
    let _ = label;
    x / 2
}

// Backend errors: skipped by default, converted with skip_on_error = false.
struct Broken;

#[async_trait]
impl CacheBackend for Broken {
    fn kind(&self) -> &'static str {
        "broken"
    }
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, lexigram_cache::BackendError> {
        Err(lexigram_cache::BackendError::Connection("refused".into()))
    }
    async fn set(
        &self,
        _: &str,
        _: &[u8],
        _: Option<Duration>,
    ) -> Result<(), lexigram_cache::BackendError> {
        Err(lexigram_cache::BackendError::Connection("refused".into()))
    }
    async fn delete(&self, _: &str) -> Result<bool, lexigram_cache::BackendError> {
        Err(lexigram_cache::BackendError::Connection("refused".into()))
    }
    async fn delete_pattern(&self, _: &str) -> Result<u64, lexigram_cache::BackendError> {
        Err(lexigram_cache::BackendError::Connection("refused".into()))
    }
    async fn clear(&self) -> Result<u64, lexigram_cache::BackendError> {
        Err(lexigram_cache::BackendError::Connection("refused".into()))
    }
    async fn ping(&self) -> Result<Duration, lexigram_cache::BackendError> {
        Err(lexigram_cache::BackendError::Connection("refused".into()))
    }
}

#[derive(Debug)]
enum ServiceError {
    Cache(String),
}

impl From<CacheError> for ServiceError {
    fn from(e: CacheError) -> Self {
        ServiceError::Cache(e.to_string())
    }
}

struct Svc {
    cache: Cache,
}

impl Svc {
    #[cacheable(key = "k:{id}", cache = self.cache)]
    async fn lenient(&self, id: u32) -> Result<u32, ServiceError> {
        Ok(id)
    }

    #[cacheable(key = "k:{id}", cache = self.cache, skip_on_error = false)]
    async fn strict(&self, id: u32) -> Result<u32, ServiceError> {
        Ok(id)
    }
}

#[tokio::test]
async fn backend_errors_are_skipped_or_converted() {
    let svc = Svc {
        cache: Cache::from_backend("broken", Broken),
    };
    assert_eq!(
        svc.lenient(4).await.expect("value despite a broken cache"),
        4
    );
    match svc.strict(4).await {
        Err(ServiceError::Cache(msg)) => assert!(msg.contains("refused"), "{msg}"),
        other => panic!("expected the cache error, got {other:?}"),
    }
    assert!(svc.cache.stats().errors >= 2);
}

/// A shared backend that counts its reads.
#[derive(Default)]
struct Counting {
    values: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
    gets: AtomicUsize,
}

#[async_trait]
impl CacheBackend for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, lexigram_cache::BackendError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        Ok(self.values.lock().expect("lock").get(key).cloned())
    }
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        _: Option<Duration>,
    ) -> Result<(), lexigram_cache::BackendError> {
        self.values
            .lock()
            .expect("lock")
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<bool, lexigram_cache::BackendError> {
        Ok(self.values.lock().expect("lock").remove(key).is_some())
    }
    async fn delete_pattern(&self, _: &str) -> Result<u64, lexigram_cache::BackendError> {
        Ok(0)
    }
    async fn clear(&self) -> Result<u64, lexigram_cache::BackendError> {
        Ok(0)
    }
    async fn ping(&self) -> Result<Duration, lexigram_cache::BackendError> {
        Ok(Duration::ZERO)
    }
}

#[tokio::test]
async fn a_miss_with_skip_on_error_false_reads_the_backend_once_like_any_miss() {
    let reads = |strict: bool| async move {
        let backend = std::sync::Arc::new(Counting::default());
        let svc = Svc {
            cache: Cache::from_backend("counting", ArcBackend(backend.clone())),
        };
        let v = if strict {
            svc.strict(5).await.expect("value")
        } else {
            svc.lenient(5).await.expect("value")
        };
        assert_eq!(v, 5);
        (
            backend.gets.load(Ordering::SeqCst),
            svc.cache.stats().misses,
        )
    };
    let (lenient_gets, lenient_misses) = reads(false).await;
    let (strict_gets, strict_misses) = reads(true).await;
    assert_eq!((lenient_misses, strict_misses), (1, 1), "one miss each");
    assert_eq!(
        strict_gets, lenient_gets,
        "returning read errors costs no extra read"
    );
}

/// Shares a backend with the test, which reads its counts.
struct ArcBackend<B>(std::sync::Arc<B>);

#[async_trait]
impl<B: CacheBackend> CacheBackend for ArcBackend<B> {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, lexigram_cache::BackendError> {
        self.0.get(key).await
    }
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), lexigram_cache::BackendError> {
        self.0.set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool, lexigram_cache::BackendError> {
        self.0.delete(key).await
    }
    async fn delete_pattern(&self, p: &str) -> Result<u64, lexigram_cache::BackendError> {
        self.0.delete_pattern(p).await
    }
    async fn clear(&self) -> Result<u64, lexigram_cache::BackendError> {
        self.0.clear().await
    }
    async fn ping(&self) -> Result<Duration, lexigram_cache::BackendError> {
        self.0.ping().await
    }
}

static STAMPEDE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(key = "stampede")]
async fn slow_value() -> u64 {
    STAMPEDE_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    7
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_callers_through_the_macro() {
    let calls: Vec<_> = (0..1000).map(|_| tokio::spawn(slow_value())).collect();
    for c in calls {
        assert_eq!(c.await.expect("task"), 7);
    }
    assert_eq!(STAMPEDE_RUNS.load(Ordering::SeqCst), 1);
}
