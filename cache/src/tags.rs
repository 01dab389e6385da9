//! Tags by generation: each tag has a version, a random `u64` stored in the backend under a
//! reserved key; a tagged value records the versions its tags had when it was written, and a
//! read that finds any of them changed, or gone, is a miss.
//!
//! Invalidating a tag is one write (a new version), whatever the number of values carrying
//! it; nothing lists the values, so nothing grows with them and every backend that can store
//! a key can hold tags (Memcached and Redis Cluster too). A version that was evicted or
//! deleted is never recreated with its old number (a new one is random), so an evicted tag can
//! not bring old values back.

use std::sync::Arc;
use std::time::Duration;

use crate::error::CacheError;

/// Where tag versions live, in front of the tag's name: a NUL first, so no key a caller would
/// write (or a glob such as `user:*` would match) collides with it.
pub(crate) const TAG_KEY_PREFIX: &str = "\0lexigram-cache:tag:";

/// How long a tag version is kept after its last write. An unused tag's key goes away by
/// itself; a value outliving its tag's key reads as a miss, and its next fill creates a new
/// version. Thirty days is also the longest relative expiry Memcached accepts.
pub(crate) const TAG_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most tags one value can carry.
pub(crate) const MAX_TAGS: usize = 64;
/// The longest tag name, in bytes.
pub(crate) const MAX_TAG_LEN: usize = 200;

/// The versions of a value's tags at write time, as (reserved key, version).
pub(crate) type Stamp = Arc<[(String, u64)]>;

/// The reserved key of `tag`'s version.
pub(crate) fn tag_key(tag: &str) -> String {
    let mut key = String::with_capacity(TAG_KEY_PREFIX.len() + tag.len());
    key.push_str(TAG_KEY_PREFIX);
    key.push_str(tag);
    key
}

/// The tag name of a reserved key made by [`tag_key`].
pub(crate) fn tag_name(key: &str) -> &str {
    key.strip_prefix(TAG_KEY_PREFIX).unwrap_or(key)
}

/// A version as stored.
pub(crate) fn encode_version(version: u64) -> [u8; 8] {
    version.to_le_bytes()
}

/// A stored version; `None` for bytes that are not one (another client wrote the key), which
/// reads like a missing version.
pub(crate) fn decode_version(bytes: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A new version: random, so a version that disappeared (evicted, deleted, expired) is never
/// recreated with the number old values recorded.
pub(crate) fn fresh_version() -> u64 {
    rand::random()
}

/// Checks tag names before anything is read or written, and returns their reserved keys with
/// duplicates removed.
pub(crate) fn tag_keys<S: AsRef<str>>(cache: &str, tags: &[S]) -> Result<Vec<String>, CacheError> {
    let bad = |tag: &str, why: &str| CacheError::Tag(format!("cache `{cache}`: tag `{tag}` {why}"));
    if tags.len() > MAX_TAGS {
        return Err(CacheError::Tag(format!(
            "cache `{cache}`: a value can carry at most {MAX_TAGS} tags, this one has {}; tag by a coarser group",
            tags.len()
        )));
    }
    let mut keys: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.as_ref();
        if tag.is_empty() {
            return Err(bad(tag, "is empty; give every tag a name"));
        }
        if tag.len() > MAX_TAG_LEN {
            return Err(bad(
                tag,
                &format!(
                    "is longer than {MAX_TAG_LEN} bytes; use a shorter name (an id rather than a description)"
                ),
            ));
        }
        let key = tag_key(tag);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keys_and_versions_round_trip() {
        assert_eq!(tag_name(&tag_key("user:7")), "user:7");
        assert_eq!(decode_version(&encode_version(42)), Some(42));
        assert_eq!(decode_version(b"short"), None);
        let keys = tag_keys("c", &["a", "b", "a"]).expect("valid");
        assert_eq!(keys, vec![tag_key("a"), tag_key("b")]);
        assert!(tag_keys("c", &[""]).is_err());
        assert!(tag_keys("c", &["x".repeat(MAX_TAG_LEN + 1)]).is_err());
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        assert!(tag_keys("c", &many).is_err());
    }
}
