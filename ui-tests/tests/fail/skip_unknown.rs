use lexigram_cache::cacheable;

#[cacheable(skip(conn))]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
