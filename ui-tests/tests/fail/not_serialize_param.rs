use lexigram_cache::cacheable;

struct Connection;

#[cacheable(ttl = 60)]
async fn load(conn: &Connection, id: u64) -> u64 {
    let _ = conn;
    id
}

fn main() {}
