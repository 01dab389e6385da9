use lexigram_cache::cacheable;

struct Repo;

impl Repo {
    #[cacheable(ttl = 60)]
    async fn load(self, id: u64) -> u64 {
        id
    }
}

fn main() {}
