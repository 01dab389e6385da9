use lexigram_cache::cacheable;

#[cacheable(ttl = 60)]
async fn load<T: serde::Serialize + Send>(value: T) -> u64 {
    let _ = value;
    1
}

fn main() {}
