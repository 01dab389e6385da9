use lexigram_cache::cacheable;

#[cacheable(ttl = 60, tags = "users")]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
