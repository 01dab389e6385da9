use lexigram_cache::cacheable;

#[cacheable(tll = 60)]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
