//! The request scope: a memo that lives for one unit of work (an HTTP request, a job), in
//! which `#[cacheable(request_scope)]` functions answer repeated calls without going to the
//! cache at all.
//!
//! Values are held as the function returned them (no serialization, no copy into a backend),
//! keyed by the function's scope name, the value's type and the cache key. The memo is a
//! tokio task-local: it is visible to the future given to [`request_scope`] and to everything
//! that future awaits, but not to tasks it spawns (wrap those in [`inherit_request_scope`]).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OnceCell;

tokio::task_local! {
    static CURRENT: Memo;
}

/// A value slot: filled once per scope; concurrent callers of one key wait for the first.
pub(crate) type Slot<V> = Arc<OnceCell<V>>;

/// A function's slots of one value type, by key; each an `Arc<OnceCell<V>>`.
type SlotsByKey = HashMap<Box<str>, Arc<dyn Any + Send + Sync>>;

/// The memo of one scope. Cloning shares it (tasks that inherit the scope see the same one).
#[derive(Clone, Default)]
struct Memo {
    /// Per (function scope name, value type): the slots by key. Two levels so a lookup
    /// borrows the key instead of allocating one.
    slots: Arc<Mutex<HashMap<(&'static str, TypeId), SlotsByKey>>>,
}

impl Memo {
    fn slot<V: Send + Sync + 'static>(&self, function: &'static str, key: &str) -> Slot<V> {
        let mut slots = self.slots.lock();
        let by_key = slots.entry((function, TypeId::of::<V>())).or_default();
        if let Some(slot) = by_key.get(key)
            && let Ok(slot) = Arc::clone(slot).downcast::<OnceCell<V>>()
        {
            return slot;
        }
        // Absent (the downcast cannot fail: the type is part of the map's key).
        let slot: Slot<V> = Arc::new(OnceCell::new());
        by_key.insert(key.into(), Arc::clone(&slot) as Arc<dyn Any + Send + Sync>);
        slot
    }

    fn forget(&self, function: &'static str, key: &str) -> bool {
        let mut slots = self.slots.lock();
        let mut removed = false;
        for ((name, _), by_key) in slots.iter_mut() {
            if *name == function {
                removed |= by_key.remove(key).is_some();
            }
        }
        removed
    }
}

/// Runs `work` in a new, empty request scope: inside it, each
/// `#[cacheable(request_scope)]` function runs (or reads from its cache) once per key, and
/// later calls with the same arguments return that value, typed, without touching the cache.
/// The values are dropped when `work` completes.
///
/// ```
/// use lexigram_cache::{cacheable, request_scope};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// static RUNS: AtomicUsize = AtomicUsize::new(0);
///
/// #[cacheable(ttl = 60, key = "permissions:{user}", request_scope)]
/// async fn permissions(user: u64) -> Vec<String> {
///     RUNS.fetch_add(1, Ordering::SeqCst);
///     vec![format!("read:{user}")]
/// }
///
/// # #[tokio::main] async fn main() {
/// request_scope(async {
///     permissions(7).await;
///     permissions(7).await; // from the scope: no cache read, no deserialization
/// })
/// .await;
/// assert_eq!(RUNS.load(Ordering::SeqCst), 1);
/// # }
/// ```
///
/// What a call of a `request_scope` function does inside a scope:
///
/// - the scope is asked first, before the cache (and before the in-memory fast path), so a
///   repeated call costs a lock and a clone, and reaches no backend;
/// - on a miss the call goes on as usual (the cache, then the body), and its value is kept in
///   the scope whether it came from the cache or from the body: one request sees one value
///   per key, even if the cache's value changes or expires meanwhile, and even when
///   configuration switched the function's caching off;
/// - values the function does not store are not kept either: an `Err` (unless `cache_err`),
///   a `None` (unless `cache_none`), a call whose key could not be built;
/// - concurrent calls with one key (`join!`, or tasks sharing the scope) wait for the first
///   instead of running the body too; if the first fails, the next waiting call runs its own;
/// - `<fn>_invalidate` also forgets the scope's value, so a request that changes data reads
///   it afresh; [`Cache::delete`](crate::Cache::delete), other writers and other processes do
///   not reach into a scope;
/// - answers from the scope are not counted in cache or function statistics: they never
///   reach a cache.
///
/// The scope has no size bound; it holds what the request read until `work` completes. A
/// `request_scope` inside another starts its own empty scope, which hides the outer one
/// until it completes. Tasks spawned inside the scope do not see it unless their future is
/// wrapped in [`inherit_request_scope`]. A function without the option never looks at the
/// scope, and one with it, called outside any scope, costs one task-local check.
pub async fn request_scope<F: Future>(work: F) -> F::Output {
    CURRENT.scope(Memo::default(), work).await
}

/// Wraps `work` so that it runs in the request scope current *where this is called* (or in
/// none, when there is none). For `tokio::spawn`, whose task would otherwise start outside
/// the scope:
///
/// ```
/// use lexigram_cache::{inherit_request_scope, in_request_scope, request_scope};
///
/// # #[tokio::main] async fn main() {
/// request_scope(async {
///     let plain = tokio::spawn(async { in_request_scope() });
///     let inherited = tokio::spawn(inherit_request_scope(async { in_request_scope() }));
///     assert!(!plain.await.unwrap());
///     assert!(inherited.await.unwrap());
/// })
/// .await;
/// # }
/// ```
///
/// The spawned task shares the scope's values (both ways) and keeps them alive while it runs.
pub fn inherit_request_scope<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let memo = CURRENT.try_with(Memo::clone).ok();
    async move {
        match memo {
            Some(memo) => CURRENT.scope(memo, work).await,
            None => work.await,
        }
    }
}

/// Whether the caller runs inside a [`request_scope`].
pub fn in_request_scope() -> bool {
    CURRENT.try_with(|_| ()).is_ok()
}

/// The slot for `function`'s value of type `V` under `key` in the current scope; `None`
/// outside any scope (one task-local read).
#[inline]
pub(crate) fn slot<V: Send + Sync + 'static>(function: &'static str, key: &str) -> Option<Slot<V>> {
    CURRENT.try_with(|memo| memo.slot::<V>(function, key)).ok()
}

/// Drops `function`'s values under `key` from the current scope; whether there was one.
pub(crate) fn forget(function: &'static str, key: &str) -> bool {
    CURRENT
        .try_with(|memo| memo.forget(function, key))
        .unwrap_or(false)
}
