use lexigram_cache::cacheable;

#[cacheable(key = "q:{q:?}")]
async fn format_spec(q: u64) -> u64 {
    q
}

#[cacheable(key = "n:{n:>5}")]
async fn width(n: u64) -> u64 {
    n
}

struct Query {
    page: u32,
}

#[cacheable(key = "p:{q. page}")]
async fn spaced_path(q: Query) -> u32 {
    q.page
}

#[cacheable(key = "user")]
async fn ignores_id(id: u64) -> u64 {
    id
}

fn main() {}
