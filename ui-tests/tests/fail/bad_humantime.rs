use lexigram_cache::cacheable;

#[cacheable(ttl = "5 parsecs")]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
