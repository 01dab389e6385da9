use lexigram_cache::cacheable;

trait Users {
    #[cacheable(ttl = 60)]
    async fn name(&self, id: u64) -> String;
}

fn main() {}
