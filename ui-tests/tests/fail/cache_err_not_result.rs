use lexigram_cache::cacheable;

#[cacheable(cache_err)]
async fn load(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
