//! Turning any cache key into a valid memcached key, one to one.
//!
//! memcached keys are at most 250 bytes with no spaces or control characters; cache keys may
//! hold anything. Every key is sent base64-encoded with the meta protocol's `b` flag, so its
//! bytes never reach the command line as they are ("a b\r\nflush_all" is just a key). A key
//! whose encoding would be too long is replaced by a hash, and the full key is stored in front
//! of the value and compared on read, so two long keys that share a hash can never read each
//! other's value.

use xxhash_rust::xxh3::xxh3_128;

/// The longest key (in bytes) whose base64 form fits memcached's 250-byte limit.
const RAW_MAX: usize = 186;
/// First byte of a hashed key. It never occurs in UTF-8 text, so no plain key can equal a
/// hashed one.
const HASHED_MARK: u8 = 0xFF;

/// A key as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireKey {
    /// The base64 text sent with the `b` flag.
    pub(crate) encoded: String,
    /// For a hashed key, the full key, stored in front of the value and checked on read.
    pub(crate) full: Option<Vec<u8>>,
}

impl WireKey {
    /// The wire form of `prefix` + `key`.
    pub(crate) fn new(prefix: &str, key: &str) -> WireKey {
        let len = prefix.len() + key.len();
        if len <= RAW_MAX {
            // Encoded from the two parts: every call builds a wire key, and joining them first
            // would cost an allocation each time.
            return WireKey {
                encoded: base64_of(prefix.bytes().chain(key.bytes()), len),
                full: None,
            };
        }
        let mut full = Vec::with_capacity(len);
        full.extend_from_slice(prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        let mut hashed = Vec::with_capacity(17);
        hashed.push(HASHED_MARK);
        hashed.extend_from_slice(&xxh3_128(&full).to_be_bytes());
        WireKey {
            encoded: base64(&hashed),
            full: Some(full),
        }
    }

    /// The bytes to store: the value, behind the full key for a hashed key.
    pub(crate) fn frame(&self, value: &[u8]) -> Vec<u8> {
        match &self.full {
            None => value.to_vec(),
            Some(full) => {
                let len = u32::try_from(full.len()).unwrap_or(u32::MAX);
                let mut out = Vec::with_capacity(4 + full.len() + value.len());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(full);
                out.extend_from_slice(value);
                out
            }
        }
    }

    /// The value inside stored bytes; `None` when they belong to another key with the same
    /// hash (or are not framed at all), which is a miss.
    pub(crate) fn unframe(&self, stored: Vec<u8>) -> Option<Vec<u8>> {
        let Some(full) = &self.full else {
            return Some(stored);
        };
        let len_bytes: [u8; 4] = stored.get(..4)?.try_into().ok()?;
        let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
        let end = 4usize.checked_add(len)?;
        (stored.get(4..end)? == full.as_slice()).then(|| stored[end..].to_vec())
    }

    /// How many bytes the framing adds to a value.
    pub(crate) fn overhead(&self) -> usize {
        self.full.as_ref().map_or(0, |f| 4 + f.len())
    }
}

/// Standard base64 with padding (RFC 4648), which memcached decodes for the `b` flag.
fn base64(bytes: &[u8]) -> String {
    base64_of(bytes.iter().copied(), bytes.len())
}

/// [`base64`] of the `len` bytes `bytes` yields.
fn base64_of(mut bytes: impl Iterator<Item = u8>, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(len.div_ceil(3) * 4);
    while let Some(first) = bytes.next() {
        let second = bytes.next();
        let third = second.and_then(|_| bytes.next());
        let present = 1 + usize::from(second.is_some()) + usize::from(third.is_some());
        let n = (u32::from(first) << 16)
            | (u32::from(second.unwrap_or(0)) << 8)
            | u32::from(third.unwrap_or(0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= present {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        // A key and its prefix are encoded as the bytes of both.
        assert_eq!(WireKey::new("foo", "bar").encoded, "Zm9vYmFy");
        assert_eq!(WireKey::new("fo", "ob").encoded, "Zm9vYg==");
    }

    #[test]
    fn long_keys_are_hashed_and_checked_on_read() {
        let long = "k".repeat(300);
        let k = WireKey::new("p:", &long);
        assert!(k.encoded.len() <= 250);
        let stored = k.frame(b"value");
        assert_eq!(k.unframe(stored.clone()), Some(b"value".to_vec()));
        let other = WireKey::new("p:", &"j".repeat(300));
        assert_eq!(
            other.unframe(stored),
            None,
            "another key's bytes are a miss"
        );
        assert_eq!(k.unframe(b"xx".to_vec()), None);
        assert_eq!(k.overhead(), 4 + 302);
        // The boundary: 186 bytes stay plain, 187 are hashed.
        assert!(WireKey::new("", &"a".repeat(186)).full.is_none());
        assert!(WireKey::new("", &"a".repeat(187)).full.is_some());
        assert_eq!(WireKey::new("", &"a".repeat(186)).encoded.len(), 248);
    }

    proptest! {
        #[test]
        fn every_key_is_a_valid_memcached_key(prefix in ".{0,20}", key in ".{0,400}") {
            let k = WireKey::new(&prefix, &key);
            prop_assert!(k.encoded.len() <= 250);
            prop_assert!(k.encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
        }

        #[test]
        fn distinct_keys_never_share_a_wire_key_and_value(a in ".{0,250}", b in ".{0,250}") {
            prop_assume!(a != b);
            let (ka, kb) = (WireKey::new("", &a), WireKey::new("", &b));
            // Equal wire keys can only come from a hash collision, and then the framing tells
            // the two apart.
            if ka.encoded == kb.encoded {
                prop_assert_eq!(kb.unframe(ka.frame(b"v")), None);
            }
        }
    }
}
