//! Byte-level backends.
//!
//! [`CacheBackend`] is the interface a store implements: bytes in, bytes out, keys as text.
//! [`Cache`](crate::Cache) puts the typed API, the value envelope and stampede protection on
//! top. The in-memory backend is special-cased by `Cache` so that a hit neither serializes nor
//! deserializes; through this trait it stores bytes like any other backend.

pub(crate) mod batch;
pub mod glob;
pub mod memcached;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::error::BackendError;

/// The key of `key`'s fill lock: in the reserved space (a NUL first), which no caller can
/// write, so no key a caller writes, whatever its text, is another key's lock.
pub(crate) fn lock_name(key: &str) -> String {
    let mut name = String::with_capacity(LOCK_PREFIX.len() + key.len());
    name.push_str(LOCK_PREFIX);
    name.push_str(key);
    name
}

/// What starts the key of every fill lock.
pub(crate) const LOCK_PREFIX: &str = "\0lexigram-cache:lock:";

/// A store of byte values under text keys.
///
/// Implement this to put a cache on your own store and hand it to
/// [`Cache::from_backend`](crate::Cache::from_backend). The trait is object safe.
///
/// Contract, for every method:
/// - keys are the caller's keys; the backend applies its own key prefix (once) if it has one;
/// - a *miss* is `Ok(None)` / `Ok(false)`: a missing or expired key is never an error;
/// - an `Err` means the store could not answer (network, timeout, protocol); callers treat it
///   as "unknown", and a cached function treats it as a miss;
/// - `ttl` is already resolved by the caller: `Some(d)` expires the value after `d`
///   (`d` is never zero), `None` means *no expiry at all* (not "a default");
/// - futures are cancel-safe: dropping one mid-way must leave the backend usable.
///
/// ```
/// use lexigram_cache::{CacheBackend, MemoryBackend};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let backend = MemoryBackend::builder().build().unwrap();
/// backend.set("k", b"v", None).await.unwrap();
/// assert_eq!(backend.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
/// # }
/// ```
#[async_trait]
pub trait CacheBackend: Send + Sync + 'static {
    /// A short name of the backend kind, such as `memory` or `redis`, for logs and health.
    fn kind(&self) -> &'static str;

    /// How long one operation may take before it fails as a timeout, if the backend bounds
    /// its operations. A cached call's cache budget defaults to it
    /// ([`CacheOptions::call_budget`](crate::CacheOptions::call_budget)). The default: `None`,
    /// the backend does not say.
    fn op_timeout(&self) -> Option<Duration> {
        None
    }

    /// The value under `key`, or `Ok(None)` when it is missing or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError>;

    /// Stores `value` under `key`, replacing any previous value. `ttl: None` means no expiry.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>)
    -> Result<(), BackendError>;

    /// Stores `value` under `key` only if the key holds nothing; `Ok(true)` if this call
    /// stored it. Tag versions are created with it, so that two processes creating the same
    /// tag agree on one version. The default reads, then writes: two processes can interleave
    /// there (each then keeps the version it wrote, and one's values read as misses in the
    /// other until the next write settles it). Stores shared between processes override it
    /// with one atomic command.
    async fn add(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        if self.get(key).await?.is_some() {
            return Ok(false);
        }
        self.set(key, value, ttl).await?;
        Ok(true)
    }

    /// Removes `key`. `Ok(true)` if something was removed.
    async fn delete(&self, key: &str) -> Result<bool, BackendError>;

    /// The values of several keys, in the order of `keys`. The default calls [`get`](Self::get)
    /// for each; network backends override it with one round trip.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Stores several values with one ttl. Not atomic: on error some may have been stored.
    async fn set_many(
        &self,
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        for (k, v) in items {
            self.set(k, v, ttl).await?;
        }
        Ok(())
    }

    /// Removes several keys; returns how many existed.
    async fn delete_many(&self, keys: &[&str]) -> Result<u64, BackendError> {
        let mut n = 0;
        for k in keys {
            n += u64::from(self.delete(k).await?);
        }
        Ok(n)
    }

    /// Removes every key matching a glob `pattern` (`*` any run, `?` one character, `\`
    /// escapes), matched against the caller's keys (without the backend prefix). Returns how
    /// many were removed. Backends that cannot list keys return [`BackendError::Unsupported`].
    async fn delete_pattern(&self, pattern: &str) -> Result<u64, BackendError>;

    /// Removes every key under this backend's prefix, and nothing else. Returns how many.
    async fn clear(&self) -> Result<u64, BackendError>;

    /// Up to `limit` keys (without the prefix) that match a glob `pattern`, in no particular
    /// order; for tools and debugging, not for request paths. Bytes, as stored: another client
    /// may have written keys that are not UTF-8, and [`clear`](Self::clear) removes those too.
    /// The default says the backend cannot list keys.
    async fn keys(&self, pattern: &str, limit: usize) -> Result<Vec<Vec<u8>>, BackendError> {
        let _ = (pattern, limit);
        Err(BackendError::Unsupported {
            backend: self.kind(),
            operation: "keys",
            hint: "this store cannot list its keys",
        })
    }

    /// Checks that the store answers; returns the round-trip time.
    async fn ping(&self) -> Result<Duration, BackendError>;

    /// Takes the distributed fill lock of `key` for `ttl` if nobody holds it, and reads the
    /// value of `key` after that, in one round trip where the store allows it. Stores shared
    /// between processes implement this so that one process fills a cold key while the others
    /// wait; the value read tells a waiter (and a holder that came after another) that the fill
    /// is done. The default grants every lock and only reads: a store private to one process
    /// needs no more than the in-process single flight that [`Cache`](crate::Cache) already
    /// does.
    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<LockAttempt, BackendError> {
        let _ = ttl;
        Ok(LockAttempt {
            token: Some(String::new()),
            value: self.get(key).await?,
        })
    }

    /// Releases the fill lock of `key` if it is still the one `token` was handed out for (a lock
    /// that expired and was taken by someone else is left alone).
    async fn unlock(&self, key: &str, token: &str) -> Result<(), BackendError> {
        let _ = (key, token);
        Ok(())
    }

    /// Stores `value` under `key` (as [`set`](Self::set)), then releases the fill lock as
    /// [`unlock`](Self::unlock) does, in one round trip where the store allows it. The lock is
    /// released even when the store fails; the error is the store's.
    async fn set_and_unlock(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        token: &str,
    ) -> Result<(), BackendError> {
        let stored = self.set(key, value, ttl).await;
        let unlocked = self.unlock(key, token).await;
        stored.and(unlocked)
    }
}

/// What one [`try_lock`](CacheBackend::try_lock) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockAttempt {
    /// `Some` when this attempt took the lock: what to hand back to
    /// [`unlock`](CacheBackend::unlock). `None` when another holder has it.
    pub token: Option<String>,
    /// The value under the key, read after the lock was tried.
    pub value: Option<Vec<u8>>,
}

/// Forwards every method through a smart pointer, so `Arc<B>` and `Box<dyn CacheBackend>` are
/// backends too.
macro_rules! forward_backend {
    ($ptr:ident) => {
        #[async_trait]
        impl<B: CacheBackend + ?Sized> CacheBackend for $ptr<B> {
            fn kind(&self) -> &'static str {
                (**self).kind()
            }
            fn op_timeout(&self) -> Option<Duration> {
                (**self).op_timeout()
            }
            async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
                (**self).get(key).await
            }
            async fn set(
                &self,
                key: &str,
                value: &[u8],
                ttl: Option<Duration>,
            ) -> Result<(), BackendError> {
                (**self).set(key, value, ttl).await
            }
            async fn add(
                &self,
                key: &str,
                value: &[u8],
                ttl: Option<Duration>,
            ) -> Result<bool, BackendError> {
                (**self).add(key, value, ttl).await
            }
            async fn delete(&self, key: &str) -> Result<bool, BackendError> {
                (**self).delete(key).await
            }
            async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
                (**self).get_many(keys).await
            }
            async fn set_many(
                &self,
                items: &[(&str, &[u8])],
                ttl: Option<Duration>,
            ) -> Result<(), BackendError> {
                (**self).set_many(items, ttl).await
            }
            async fn delete_many(&self, keys: &[&str]) -> Result<u64, BackendError> {
                (**self).delete_many(keys).await
            }
            async fn delete_pattern(&self, pattern: &str) -> Result<u64, BackendError> {
                (**self).delete_pattern(pattern).await
            }
            async fn clear(&self) -> Result<u64, BackendError> {
                (**self).clear().await
            }
            async fn keys(
                &self,
                pattern: &str,
                limit: usize,
            ) -> Result<Vec<Vec<u8>>, BackendError> {
                (**self).keys(pattern, limit).await
            }
            async fn ping(&self) -> Result<Duration, BackendError> {
                (**self).ping().await
            }
            async fn try_lock(
                &self,
                key: &str,
                ttl: Duration,
            ) -> Result<LockAttempt, BackendError> {
                (**self).try_lock(key, ttl).await
            }
            async fn unlock(&self, key: &str, token: &str) -> Result<(), BackendError> {
                (**self).unlock(key, token).await
            }
            async fn set_and_unlock(
                &self,
                key: &str,
                value: &[u8],
                ttl: Option<Duration>,
                token: &str,
            ) -> Result<(), BackendError> {
                (**self).set_and_unlock(key, value, ttl, token).await
            }
        }
    };
}

forward_backend!(Arc);
forward_backend!(Box);
