use lexigram_cache::cacheable;

struct Filter {
    tags: Vec<String>,
}

#[cacheable(ttl = 60, key = "f:{filter.tags}")]
async fn search(filter: Filter) -> u64 {
    filter.tags.len() as u64
}

fn main() {}
