use lexigram_cache::cacheable;

#[cacheable(key = "user:{user_id}")]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
