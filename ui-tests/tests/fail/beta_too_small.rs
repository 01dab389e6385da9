use lexigram_cache::cacheable;

// Smaller than 0.001: early refresh would in practice never start.
#[cacheable(ttl = 60, beta = 0.0004)]
async fn rate(id: u64) -> u64 {
    id
}

fn main() {}
