//! Every supported shape compiles.
use lexigram_cache::{Cache, cacheable};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
}

#[cacheable(ttl = 60)]
async fn free(id: u64, name: &str) -> u64 {
    id + name.len() as u64
}

#[cacheable(ttl = "1h30m", key = "user:{id}", prefix = "p:", version = 3)]
pub async fn templated(id: u64) -> Result<User, std::io::Error> {
    Ok(User { id })
}

#[cacheable(ttl = "never", cache_none, protect = false, early_refresh = true, beta = 1.5)]
async fn optional(id: u64) -> Option<u64> {
    Some(id)
}

#[cacheable(backend = "default", stale_if_error = "10m", skip(trace_id))]
async fn skipping(id: u64, trace_id: String) -> Result<u64, String> {
    let _ = trace_id;
    Ok(id)
}

#[cacheable(key = "g:{value}")]
async fn generic<T: std::fmt::Display + Send + Sync>(value: T) -> String {
    value.to_string()
}

struct Repo {
    cache: Cache,
    tenant: String,
}

impl Repo {
    #[cacheable(key = "t:{self.tenant}:{id}", cache = self.cache)]
    async fn get(&self, id: u64) -> Result<u64, std::io::Error> {
        Ok(id)
    }
}

trait Lookup {
    async fn find(&self, id: u64) -> u64;
}

impl Lookup for Repo {
    #[cacheable(key = "find:{id}", companions = false)]
    async fn find(&self, id: u64) -> u64 {
        id
    }
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

#[tokio::main]
async fn main() {
    let repo = Repo {
        cache: lexigram_cache::CacheModule::stub().cache(),
        tenant: "t".into(),
    };
    assert_eq!(free(1, "ab").await, 3);
    assert!(templated(1).await.is_ok());
    assert_eq!(optional(2).await, Some(2));
    assert_eq!(skipping(3, "x".into()).await, Ok(3));
    assert_eq!(generic(4).await, "4");
    assert_eq!(repo.get(5).await.unwrap(), 5);
    assert_eq!(repo.find(6).await, 6);
    assert_eq!(templated_cache_key(1), "p:user:1");
    assert_eq!(repo.get_cache_key(5), "t:t:5");
    let _ = assert_send(free(1, "x"));
    let _ = assert_send(repo.get(1));
}
