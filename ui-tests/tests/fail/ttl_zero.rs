use lexigram_cache::cacheable;

#[cacheable(ttl = 0)]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
