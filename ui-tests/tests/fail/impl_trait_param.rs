use lexigram_cache::cacheable;

// `impl Trait` is a type parameter: every instantiation would share the automatic key.
#[cacheable(ttl = 60)]
async fn describe(value: impl serde::Serialize + Send + Sync) -> String {
    let _ = value;
    String::new()
}

fn main() {}
