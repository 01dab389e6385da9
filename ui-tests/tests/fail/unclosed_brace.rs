use lexigram_cache::cacheable;

#[cacheable(key = "user:{id")]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
