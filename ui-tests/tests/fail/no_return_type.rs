use lexigram_cache::cacheable;

#[cacheable(ttl = 60)]
async fn warm(id: u64) {
    let _ = id;
}

fn main() {}
