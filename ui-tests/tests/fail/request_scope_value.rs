use lexigram_cache::cacheable;

#[cacheable(ttl = 60, request_scope = "request")]
async fn load(id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, scope = "request")]
async fn spelled_as_elsewhere(id: u64) -> u64 {
    id
}

fn main() {}
