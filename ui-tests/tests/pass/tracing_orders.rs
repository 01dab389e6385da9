//! `#[tracing::instrument]` and `#[cacheable]` in either order, on a plain `async fn` and
//! inside an `#[async_trait]` impl, and what each order traces.
#![deny(warnings)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use lexigram_cache::cacheable;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static BY_NAME: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());

/// Counts spans by name.
struct Spans;

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        if let Ok(mut m) = BY_NAME.lock() {
            *m.entry(span.metadata().name()).or_default() += 1;
        }
        tracing::span::Id::from_u64(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn spans(name: &str) -> usize {
    BY_NAME.lock().map(|m| m.get(name).copied().unwrap_or(0)).unwrap_or(0)
}

/// Above: every call is traced, hits too.
#[cacheable(ttl = 60)]
#[tracing::instrument]
async fn traced_calls(id: u64) -> u64 { id }

/// Below: only calls that run the body are traced.
#[tracing::instrument]
#[cacheable(ttl = 60)]
async fn traced_runs(id: u64) -> u64 { id }

#[async_trait]
trait Lookup {
    async fn above(&self, id: u64) -> u64;
    async fn below(&self, id: u64) -> u64;
}

struct Repo;

#[async_trait]
impl Lookup for Repo {
    #[cacheable(ttl = 60)]
    #[tracing::instrument(skip(self))]
    async fn above(&self, id: u64) -> u64 { id + 1 }

    #[tracing::instrument(skip(self))]
    #[cacheable(ttl = 60)]
    async fn below(&self, id: u64) -> u64 { id + 2 }
}

#[tokio::main]
async fn main() {
    let _ = tracing::subscriber::set_global_default(Spans);
    for _ in 0..2 {
        assert_eq!(traced_calls(1).await, 1);
        assert_eq!(traced_runs(1).await, 1);
        assert_eq!(Repo.above(1).await, 2);
        assert_eq!(Repo.below(1).await, 3);
    }
    assert_eq!(spans("traced_calls"), 2);
    assert_eq!(spans("traced_runs"), 1);
    // async_trait moves the body into a boxed future that instrument wraps whole, so in an
    // `#[async_trait]` impl both orders trace every call.
    assert_eq!(spans("above"), 2);
    assert_eq!(spans("below"), 2);
}
