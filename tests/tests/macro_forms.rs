//! Receivers other than `&self`, `skip(self)`, and template names that are raw identifiers.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lexigram_cache::cacheable;

struct Tenant {
    db: String,
    runs: AtomicUsize,
}

impl Tenant {
    // Written as users coming from `self: &Arc<Self>` write it.
    #[allow(clippy::needless_arbitrary_self_type)]
    #[cacheable(ttl = 60, key = "forms:ref:{self.db}:{id}")]
    async fn typed_ref(self: &Self, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", self.db)
    }

    #[cacheable(ttl = 60, key = "forms:arcref:{self.db}:{id}")]
    async fn arc_ref(self: &Arc<Self>, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", self.db)
    }

    #[cacheable(ttl = 60, key = "forms:arc:{self.db}:{id}")]
    async fn arc(self: Arc<Self>, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", self.db)
    }

    #[cacheable(ttl = 60, key = "forms:pin:{self.db}:{id}")]
    async fn pinned(self: Pin<&Self>, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", self.db)
    }

    /// `self` is never in an automatic key: two tenants share this value.
    #[cacheable(ttl = 60, skip(self))]
    async fn shared(&self, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", self.db)
    }
}

fn tenant(db: &str) -> Arc<Tenant> {
    Arc::new(Tenant {
        db: db.into(),
        runs: AtomicUsize::new(0),
    })
}

#[tokio::test]
async fn typed_receivers_cache_like_ref_self() {
    let t = tenant("a");
    for _ in 0..3 {
        assert_eq!(t.typed_ref(1).await, "a:1");
        assert_eq!(t.arc_ref(2).await, "a:2");
        assert_eq!(t.clone().arc(3).await, "a:3");
        assert_eq!(Pin::new(&*t).pinned(4).await, "a:4");
    }
    assert_eq!(t.runs.load(Ordering::SeqCst), 4);
    assert_eq!(t.arc_ref_cache_key(2), "forms:arcref:a:2");
}

#[tokio::test]
async fn skip_self_is_accepted_and_instances_share_the_automatic_key() {
    let (a, b) = (tenant("a"), tenant("b"));
    assert_eq!(a.shared(1).await, "a:1");
    // Documented: the automatic key leaves `self` out.
    assert_eq!(b.shared(1).await, "a:1");
    assert_eq!(a.shared_cache_key(1), b.shared_cache_key(1));
    assert_eq!(b.runs.load(Ordering::SeqCst), 0);
}

static RAW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, key = "forms:kind:{r#type}", skip(trace))]
async fn by_kind(r#type: u32, trace: u64) -> u32 {
    RAW_RUNS.fetch_add(1, Ordering::SeqCst);
    let _ = trace;
    r#type * 10
}

#[tokio::test]
async fn raw_identifiers_in_templates_and_skipped_template_params() {
    assert_eq!(by_kind_cache_key(3, 1), "forms:kind:3");
    assert_eq!(by_kind(3, 1).await, 30);
    assert_eq!(by_kind(3, 2).await, 30);
    assert_eq!(by_kind(4, 1).await, 40);
    assert_eq!(RAW_RUNS.load(Ordering::SeqCst), 2);
}

#[async_trait::async_trait]
trait Named {
    async fn name(&self, id: u64) -> String;
}

static AT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[async_trait::async_trait]
impl Named for Tenant {
    /// `self` in the template, and a parameter named like the expansion's own key binding.
    #[cacheable(ttl = 60, key = "forms:at:{self.db}:{__lex_key}")]
    async fn name(&self, __lex_key: u64) -> String {
        AT_RUNS.fetch_add(1, Ordering::SeqCst);
        format!("{}:{__lex_key}", self.db)
    }
}

#[tokio::test]
async fn async_trait_methods_with_self_in_the_template() {
    let (a, b) = (tenant("x"), tenant("y"));
    for _ in 0..2 {
        assert_eq!(a.name(1).await, "x:1");
        assert_eq!(b.name(1).await, "y:1");
    }
    assert_eq!(AT_RUNS.load(Ordering::SeqCst), 2);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cacheable(ttl = 60)]
async fn boxed_error(id: u64) -> Result<u64, BoxError> {
    if id == 0 {
        return Err("no zero".into());
    }
    Ok(id * 3)
}

#[cacheable(ttl = 60)]
async fn plain_boxed_error(id: u64) -> Result<u64, Box<dyn std::error::Error>> {
    if id == 0 {
        return Err("no zero".into());
    }
    Ok(id * 5)
}

/// `Box<dyn Error>` is not `Send`, but a body that never holds one across an await has a
/// `Send` future, and so must the wrapper: the runtime never holds the error across an await
/// either (it used to, while releasing the fill lock or storing an early refresh).
#[tokio::test]
async fn a_plain_boxed_error_return_keeps_the_future_send() {
    let ok = tokio::spawn(async { plain_boxed_error(2).await.map_err(|e| e.to_string()) })
        .await
        .expect("task");
    assert_eq!(ok, Ok(10));
    let err = tokio::spawn(async { plain_boxed_error(0).await.map_err(|e| e.to_string()) })
        .await
        .expect("task");
    assert_eq!(err, Err("no zero".to_owned()));
}

#[tokio::test]
async fn a_boxed_error_return_can_be_spawned() {
    let ok = tokio::spawn(boxed_error(2)).await.expect("task");
    assert_eq!(ok.ok(), Some(6));
    let err = tokio::spawn(boxed_error(0)).await.expect("task");
    assert_eq!(err.err().map(|e| e.to_string()).as_deref(), Some("no zero"));
}
