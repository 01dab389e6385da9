//! The store's side of tags (see [`crate::tags`]): reading and creating tag versions, writing a
//! new one, and checking a tagged value's recorded versions on read.
//!
//! Tag versions are entries of the same backend, under reserved keys: in the memory backend a
//! typed `u64`, on a remote backend 8 bytes. A near tier keeps the versions it read like any
//! other value, so a tagged near hit costs no round trip; another process's invalidation of a
//! tag drops its version from this tier like the invalidation of a key.

use std::sync::Arc;

use crate::backend::memory::{MemEntry, MemoryBackend, NEVER};
use crate::codec;
use crate::error::CacheError;
use crate::observe::{Counter, short_key};
use crate::tags::{self, Stamp, TAG_TTL};

use super::{Found, Store, Tier, near};

impl Store {
    /// The current versions of the tags under reserved keys `keys`, in order; `None` for a
    /// tag that has none. The near tier first, then one batched read of the rest.
    pub(crate) async fn tag_versions(&self, keys: &[&str]) -> Result<Vec<Option<u64>>, CacheError> {
        match &self.tier {
            Tier::Memory(m) => Ok(keys.iter().map(|k| memory_version(m, k)).collect()),
            Tier::Remote { backend, near } => {
                let mut out: Vec<Option<u64>> = Vec::with_capacity(keys.len());
                let mut missing: Vec<&str> = Vec::new();
                let mut tickets = Vec::new();
                for k in keys {
                    let cached = near.as_ref().and_then(|n| n.tag_version(k));
                    if cached.is_none() {
                        missing.push(k);
                        tickets.push(near.as_ref().and_then(|n| n.ticket(k)));
                    }
                    out.push(cached);
                }
                if missing.is_empty() {
                    return Ok(out);
                }
                let first = tags::tag_name(missing[0]);
                let raw = self
                    .remote("tags", first, backend.get_many(&missing))
                    .await?;
                let mut read = missing
                    .iter()
                    .zip(tickets)
                    .zip(raw)
                    .map(|((k, ticket), bytes)| {
                        let version = bytes.as_deref().and_then(tags::decode_version);
                        if let (Some(n), Some(t), Some(v)) = (near, ticket, version) {
                            n.insert_tag_version(k, t, v);
                        }
                        version
                    });
                for slot in out.iter_mut() {
                    if slot.is_none() {
                        *slot = read.next().flatten();
                    }
                }
                Ok(out)
            }
        }
    }

    /// The versions a value written now records for `tags`: the current ones, a tag without
    /// a version getting a new random one (add-if-absent, so that concurrent writers agree).
    /// `None` for no tags.
    pub(crate) async fn stamp<S: AsRef<str>>(
        &self,
        tags: &[S],
    ) -> Result<Option<Stamp>, CacheError> {
        if tags.is_empty() {
            return Ok(None);
        }
        let keys = tags::tag_keys(&self.name, tags)?;
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let versions = self.tag_versions(&refs).await?;
        let mut stamp = Vec::with_capacity(keys.len());
        for (key, version) in keys.into_iter().zip(versions) {
            let version = match version {
                Some(v) => v,
                None => self.create_version(&key).await?,
            };
            stamp.push((key, version));
        }
        Ok(Some(Arc::from(stamp)))
    }

    /// Creates the version of the tag under `key` if it has none; the version it has after.
    async fn create_version(&self, key: &str) -> Result<u64, CacheError> {
        match &self.tier {
            Tier::Memory(m) => {
                let _one_writer = self.tag_lock.lock();
                if let Some(v) = memory_version(m, key) {
                    return Ok(v);
                }
                let v = tags::fresh_version();
                memory_write_version(m, key, v);
                Ok(v)
            }
            Tier::Remote { backend, .. } => {
                let name = tags::tag_name(key);
                // Another writer may create it first, and an eviction may remove it again
                // right after: a few rounds settle it.
                for _ in 0..3 {
                    let fresh = tags::fresh_version();
                    let added = self
                        .remote(
                            "tag_add",
                            name,
                            backend.add(key, &tags::encode_version(fresh), Some(TAG_TTL)),
                        )
                        .await?;
                    if added {
                        return Ok(fresh);
                    }
                    let stored = self.remote("tags", name, backend.get(key)).await?;
                    if let Some(v) = stored.as_deref().and_then(tags::decode_version) {
                        return Ok(v);
                    }
                    if stored.is_some() {
                        // Not a version (another client wrote the key): replace it.
                        self.remote(
                            "tag_set",
                            name,
                            backend.set(key, &tags::encode_version(fresh), Some(TAG_TTL)),
                        )
                        .await?;
                        return Ok(fresh);
                    }
                }
                Err(CacheError::Tag(format!(
                    "cache `{}`: the version of tag `{name}` disappears as soon as it is created; the server evicts keys faster than they are written",
                    self.name
                )))
            }
        }
    }

    /// Gives `tag` a new version: every value carrying it reads as a miss from now on, in
    /// this process and (through the backend, and the near tier's invalidations) in others.
    pub(crate) async fn invalidate_tag(&self, tag: &str) -> Result<(), CacheError> {
        let key = tags::tag_keys(&self.name, &[tag])?.remove(0);
        let version = tags::fresh_version();
        match &self.tier {
            Tier::Memory(m) => {
                let _one_writer = self.tag_lock.lock();
                memory_write_version(m, &key, version);
                Ok(())
            }
            Tier::Remote { backend, near } => {
                let stored = self
                    .remote(
                        "tag_set",
                        tag,
                        backend.set(&key, &tags::encode_version(version), Some(TAG_TTL)),
                    )
                    .await;
                self.forget(near.as_ref(), near::Change::Key(&key)).await;
                stored
            }
        }
    }

    /// `found`, read from `bytes`, unless `bytes` is a tagged value whose recorded versions are
    /// not all current; with its recorded versions, for the near tier. Untagged bytes cost one
    /// flag check.
    pub(crate) async fn check_tags<T>(
        &self,
        key: &str,
        bytes: &[u8],
        found: Found<T>,
    ) -> Result<(Found<T>, Option<Stamp>), CacheError> {
        if !codec::is_tagged(bytes) || matches!(found, Found::Miss) {
            return Ok((found, None));
        }
        let recorded = match codec::tags(bytes) {
            Ok(recorded) => recorded,
            Err(reason) => {
                self.count(Counter::DecodeFailures);
                tracing::warn!(cache = %self.name, key = short_key(key), %reason, "tagged value with a damaged tags section; treating as a miss");
                return Ok((Found::Miss, None));
            }
        };
        let stamp: Vec<(String, u64)> = recorded
            .into_iter()
            .map(|(name, v)| (tags::tag_key(name), v))
            .collect();
        let refs: Vec<&str> = stamp.iter().map(|(k, _)| k.as_str()).collect();
        let current = self.tag_versions(&refs).await?;
        let valid = stamp
            .iter()
            .zip(&current)
            .all(|((_, recorded), now)| *now == Some(*recorded));
        if valid {
            Ok((found, Some(Arc::from(stamp))))
        } else {
            tracing::debug!(cache = %self.name, key = short_key(key), "a tag of the value was invalidated; treating as a miss");
            Ok((Found::Miss, None))
        }
    }

    /// Whether a memory entry's recorded tag versions are all current; `true` untagged.
    #[inline]
    pub(crate) fn memory_tags_current(m: &MemoryBackend, entry: &MemEntry) -> bool {
        m.tags_current(entry)
    }
}

fn memory_version(m: &MemoryBackend, key: &str) -> Option<u64> {
    m.entry(key)?.value.downcast_ref::<u64>().copied()
}

fn memory_write_version(m: &MemoryBackend, key: &str, version: u64) {
    m.insert(
        key,
        MemEntry {
            value: Arc::new(version),
            expires_at: NEVER,
            keep_until: NEVER,
            weight: u32::try_from(key.len() + 8).unwrap_or(u32::MAX),
            tags: None,
        },
    );
}
