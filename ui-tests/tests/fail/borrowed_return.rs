use lexigram_cache::cacheable;

#[cacheable(ttl = 60)]
async fn label(id: u64) -> Option<&'static str> {
    (id > 0).then_some("positive")
}

fn main() {}
