use lexigram_cache::{Cache, cacheable};

fn cache() -> Cache {
    lexigram_cache::CacheModule::stub().cache()
}

#[cacheable(cache = cache(), backend = "redis")]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
