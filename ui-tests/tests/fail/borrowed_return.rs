use lexigram_cache::cacheable;

#[cacheable(ttl = 60)]
async fn label(id: u64) -> Option<&'static str> {
    (id > 0).then_some("positive")
}

// Stored with cache_err, so the error type must be owned too.
#[cacheable(ttl = 60, key = "e:{id}", cache_err)]
async fn checked(id: u64) -> Result<u64, &'static str> {
    if id > 0 { Ok(id) } else { Err("zero") }
}

fn main() {}
