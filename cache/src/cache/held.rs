//! Near values held past their ttl cap while the server is slow to answer.
//!
//! A near value past its cap is read again from the server before it is served again, so that
//! a change whose announcement was lost is seen within the cap. When the server does not
//! answer that read within [`PATIENCE`] (it is stopped, swapping, or its network is gone), the
//! value the tier holds is served instead, and the read goes on in a background task, whose
//! answer refreshes the tier. Until some re-read is answered again, held values are served at
//! once, with one re-read in the background at a time: a stopped server stops none of the
//! process's hot keys, where waiting out `op_timeout` would stall every caller that asks for a
//! key whose cap ran out, and with them every request those callers serve.
//!
//! A value changed elsewhere whose announcement was lost is served for at most the cap plus
//! the time the server takes to answer one read; a value past its own expiry is never served
//! (the held read checks it), and neither is one whose tags changed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Cache, CacheValue};
use crate::error::CacheError;
use crate::store::Found;

/// How long a re-read of a held value may take before the held value is served: well above
/// the round trip of a server that is merely busy, well below any `op_timeout`.
pub(crate) const PATIENCE: Duration = Duration::from_millis(10);

/// Whether the server has stopped answering re-reads.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// A re-read ran out of patience and none has been answered since.
    slow: AtomicBool,
    /// A background re-read is under way while `slow`.
    probing: AtomicBool,
}

impl Cache {
    /// Reads `key` like the store does, except that a near value past its cap is served
    /// when the server does not answer its re-read in time (see the module docs).
    pub(crate) async fn find<T: CacheValue>(
        &self,
        key: &str,
        version: u32,
    ) -> Result<Found<T>, CacheError> {
        let store = &self.inner.store;
        let Some(near) = store.near() else {
            return store.find(key, version).await;
        };
        if let Some((value, timing)) = near.get::<T>(key) {
            store.count_near_hit();
            return Ok(Found::Fresh(value, Some(timing)));
        }
        let Some((value, timing)) = near.get_held::<T>(key) else {
            return store.find(key, version).await;
        };
        let state = &self.inner.held;
        if state.slow.load(Ordering::Acquire) {
            if !state.probing.swap(true, Ordering::AcqRel) {
                self.probe::<T>(key, version);
            }
        } else {
            let mut read = Box::pin(self.clone().reread::<T>(key.to_owned(), version));
            match tokio::time::timeout(PATIENCE, &mut read).await {
                Ok(Ok(found)) => return Ok(found),
                // Logged and counted already; the store's rule for a server that cannot be
                // read applies.
                Ok(Err(_)) => {}
                Err(_) => {
                    state.slow.store(true, Ordering::Release);
                    spawn(async move {
                        let _ = read.await;
                    });
                }
            }
        }
        store.count_near_hit();
        Ok(Found::Fresh(value, Some(timing)))
    }

    /// Reads `key` from the server for the near tier; an answer means the server is no
    /// longer slow.
    async fn reread<T: CacheValue>(
        self,
        key: String,
        version: u32,
    ) -> Result<Found<T>, CacheError> {
        let found = self.inner.store.find_on_server::<T>(&key, version).await;
        if found.is_ok() {
            self.inner.held.slow.store(false, Ordering::Release);
        }
        found
    }

    /// The one background re-read while the server is slow.
    fn probe<T: CacheValue>(&self, key: &str, version: u32) {
        let cache = self.clone();
        let key = key.to_owned();
        spawn(async move {
            let _ = cache.clone().reread::<T>(key, version).await;
            cache.inner.held.probing.store(false, Ordering::Release);
        });
    }
}

/// Spawns a re-read on the current runtime. Without one (a cache used outside tokio) the
/// re-read is dropped: the next read past the cap tries again. Re-reads are bounded without a
/// cap of their own: one runs per read that ran out of patience before the server was known
/// to be slow, and then one at a time.
fn spawn(read: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(read);
    }
}
