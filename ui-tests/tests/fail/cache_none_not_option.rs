use lexigram_cache::cacheable;

#[cacheable(cache_none)]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
