//! `request_scope` in its spellings and with the other options; the wrapper's future stays
//! `Send` (it can be spawned), also for an error type that is only `Send + Sync`.
#![deny(warnings)]

use lexigram_cache::{Cache, cacheable, inherit_request_scope, request_scope};

#[cacheable(ttl = 60, request_scope)]
async fn plain(id: u64) -> u64 { id }

#[cacheable(key = "r:{id}", request_scope = true, cache_err)]
async fn kept_errors(id: u64) -> Result<u64, String> { Ok(id) }

#[cacheable(key = "o:{id}", request_scope = false)]
async fn switched_off(id: u64) -> Option<u64> { Some(id) }

#[cacheable(ttl = 60, request_scope, skip_on_error = false)]
async fn boxed(id: u64) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    Ok(id)
}

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cacheable(key = "m:{id}", cache = self.cache, request_scope)]
    async fn method(&self, id: u64) -> Result<u64, std::io::Error> { Ok(id) }
}

fn spawnable<F: std::future::Future + Send + 'static>(f: F) -> F { f }

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let repo = Repo { cache: lexigram_cache::CacheModule::stub().cache() };
        let total = request_scope(async move {
            let spawned = tokio::spawn(inherit_request_scope(spawnable(plain(1))));
            plain(1).await
                + spawned.await.unwrap_or(0)
                + kept_errors(2).await.unwrap_or(0)
                + switched_off(3).await.unwrap_or(0)
                + boxed(4).await.unwrap_or(0)
                + repo.method(5).await.unwrap_or(0)
        })
        .await;
        assert_eq!(total, 16);
        let _ = spawnable(request_scope(boxed(4)));
    });
}
