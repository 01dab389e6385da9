use lexigram_cache::cacheable;

struct Handle;

#[cacheable(ttl = 60)]
async fn open(id: u64) -> Handle {
    let _ = id;
    Handle
}

fn main() {}
