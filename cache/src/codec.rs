//! The value envelope stored by remote backends, and the value formats.
//!
//! Layout (all integers little-endian), 44 bytes of header then the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | magic `0xC7` |
//! | 1 | envelope format version (currently 1) |
//! | 2 | format id: 1 = MessagePack, 2 = JSON |
//! | 3 | flags (reserved, 0) |
//! | 4..12 | type fingerprint: XXH3-64 of the Rust type name and the key-space version |
//! | 12..20 | stored at, ms since the UNIX epoch |
//! | 20..28 | logical expiry, ms since the UNIX epoch (0 = never) |
//! | 28..36 | keep-until for stale-if-error, ms since the UNIX epoch (0 = never) |
//! | 36..40 | measured compute time of the value, µs (for early refresh) |
//! | 40..44 | payload length |
//! | 44.. | payload |
//!
//! Bytes are only ever decoded as the type that wrote them: a wrong magic, an unknown format,
//! an unknown or newer envelope version, a different fingerprint or a payload that does not decode is a
//! [`MissReason`], which the cache treats as a miss (and the next fill overwrites the key).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// First byte of every envelope.
pub const MAGIC: u8 = 0xC7;
/// The envelope layout version this build writes and the newest it reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 44;

/// How the payload inside the envelope is serialized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// MessagePack with named fields (`rmp-serde`): compact, and tolerant of added optional
    /// fields because fields are matched by name.
    #[default]
    #[serde(alias = "messagepack", alias = "msgpack")]
    MsgPack,
    /// JSON (`serde_json`): larger, but readable with `redis-cli GET`.
    Json,
}

impl Format {
    fn id(self) -> u8 {
        match self {
            Format::MsgPack => 1,
            Format::Json => 2,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Format::MsgPack),
            2 => Some(Format::Json),
            _ => None,
        }
    }

    /// Serializes `value` in this format.
    pub fn to_vec<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, String> {
        match self {
            Format::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
            Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        }
    }

    /// Deserializes a `T` from bytes in this format.
    pub fn from_slice<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Format::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
            Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }
}

/// Why stored bytes were not accepted as a value. Every variant is treated as a miss.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MissReason {
    /// Fewer bytes than the header, or than the payload length says.
    #[error("truncated envelope ({len} bytes)")]
    Truncated {
        /// How many bytes there were.
        len: usize,
    },
    /// The first byte is not [`MAGIC`]: the key holds something this toolkit did not write.
    #[error("not a lexigram-cache envelope (first byte {0:#04x})")]
    BadMagic(u8),
    /// Written by a newer build with an envelope layout this one cannot read.
    #[error("envelope version {0} is newer than this build reads ({ENVELOPE_VERSION})")]
    NewerVersion(u8),
    /// A version no build writes (0): the bytes only look like an envelope.
    #[error(
        "envelope version {0} is not one any build of lexigram-cache writes: the key holds something else"
    )]
    UnknownVersion(u8),
    /// The format id is unknown.
    #[error("unknown value format id {0}")]
    UnknownFormat(u8),
    /// Written for another type or another key-space version.
    #[error(
        "written for another type or version (fingerprint {found:#018x}, expected {expected:#018x})"
    )]
    WrongType {
        /// The fingerprint in the envelope.
        found: u64,
        /// The fingerprint of the type being read.
        expected: u64,
    },
    /// The payload did not decode as the expected type.
    #[error("payload does not decode: {0}")]
    Undecodable(String),
}

/// The envelope's header fields and a borrowed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Payload format.
    pub format: Format,
    /// Type fingerprint, see [`fingerprint`].
    pub fingerprint: u64,
    /// When the value was written, ms since the UNIX epoch.
    pub stored_at_ms: u64,
    /// Logical expiry, ms since the UNIX epoch; 0 means never.
    pub expires_at_ms: u64,
    /// Until when an expired value may still be served by stale-if-error; 0 means never.
    pub keep_until_ms: u64,
    /// How long computing the value took, in microseconds.
    pub compute_us: u32,
    /// The serialized value.
    pub payload: &'a [u8],
}

/// The fingerprint of type `T` in key-space `version`.
///
/// It uses `std::any::type_name`, whose text may change between compiler versions; if it does,
/// old entries read as misses and are refilled, which is safe.
pub fn fingerprint<T: ?Sized>(version: u32) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(std::any::type_name::<T>().as_bytes());
    h.update(&version.to_le_bytes());
    h.digest()
}

impl Envelope<'_> {
    /// Writes the header and payload into a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.push(MAGIC);
        out.push(ENVELOPE_VERSION);
        out.push(self.format.id());
        out.push(0);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.extend_from_slice(&self.keep_until_ms.to_le_bytes());
        out.extend_from_slice(&self.compute_us.to_le_bytes());
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.payload);
        out
    }

    /// Parses the header. Never panics, whatever the bytes.
    pub fn parse(bytes: &[u8]) -> Result<Envelope<'_>, MissReason> {
        let truncated = MissReason::Truncated { len: bytes.len() };
        let (&magic, _) = bytes.split_first().ok_or(truncated.clone())?;
        if magic != MAGIC {
            return Err(MissReason::BadMagic(magic));
        }
        if bytes.len() < HEADER_LEN {
            return Err(truncated);
        }
        match bytes[1] {
            0 => return Err(MissReason::UnknownVersion(0)),
            v if v > ENVELOPE_VERSION => return Err(MissReason::NewerVersion(v)),
            _ => {}
        }
        let format = Format::from_id(bytes[2]).ok_or(MissReason::UnknownFormat(bytes[2]))?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let len = u32_at(40) as usize;
        let payload = bytes
            .get(HEADER_LEN..)
            .filter(|p| p.len() == len)
            .ok_or(truncated)?;
        Ok(Envelope {
            format,
            fingerprint: u64_at(4),
            stored_at_ms: u64_at(12),
            expires_at_ms: u64_at(20),
            keep_until_ms: u64_at(28),
            compute_us: u32_at(36),
            payload,
        })
    }

    /// Parses the header, checks the fingerprint and decodes the payload as `T`.
    pub fn decode<T: DeserializeOwned>(
        bytes: &[u8],
        expected_fingerprint: u64,
    ) -> Result<(T, Envelope<'_>), MissReason> {
        let env = Envelope::parse(bytes)?;
        if env.fingerprint != expected_fingerprint {
            return Err(MissReason::WrongType {
                found: env.fingerprint,
                expected: expected_fingerprint,
            });
        }
        let value = env
            .format
            .from_slice(env.payload)
            .map_err(MissReason::Undecodable)?;
        Ok((value, env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
        extra: Option<BTreeMap<String, i32>>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct UserV2 {
        id: u64,
        name: String,
        #[serde(default)]
        email: Option<String>,
    }

    fn envelope_of<T: Serialize>(value: &T, format: Format, fp: u64) -> Vec<u8> {
        let payload = format.to_vec(value).expect("test values serialize");
        Envelope {
            format,
            fingerprint: fp,
            stored_at_ms: 1,
            expires_at_ms: 2,
            keep_until_ms: 3,
            compute_us: 4,
            payload: &payload,
        }
        .to_bytes()
    }

    #[test]
    fn foreign_and_damaged_bytes_are_reasons() {
        let fp = fingerprint::<User>(0);
        assert_eq!(
            Envelope::decode::<User>(b"", fp).expect_err("a miss reason"),
            MissReason::Truncated { len: 0 }
        );
        assert_eq!(
            Envelope::decode::<User>(b"{\"id\":1}", fp).expect_err("a miss reason"),
            MissReason::BadMagic(b'{')
        );
        let user = User {
            id: 1,
            name: "a".into(),
            tags: vec![],
            extra: None,
        };
        let good = envelope_of(&user, Format::MsgPack, fp);
        assert!(matches!(
            Envelope::decode::<User>(&good[..good.len() - 1], fp),
            Err(MissReason::Truncated { .. })
        ));
        let mut newer = good.clone();
        newer[1] = ENVELOPE_VERSION + 1;
        assert_eq!(
            Envelope::decode::<User>(&newer, fp).expect_err("a miss reason"),
            MissReason::NewerVersion(ENVELOPE_VERSION + 1)
        );
        let mut zero = good.clone();
        zero[1] = 0;
        let reason = Envelope::decode::<User>(&zero, fp).expect_err("a miss reason");
        assert_eq!(reason, MissReason::UnknownVersion(0));
        assert!(!reason.to_string().contains("newer"), "{reason}");
        let mut fmt = good.clone();
        fmt[2] = 9;
        assert_eq!(
            Envelope::decode::<User>(&fmt, fp).expect_err("a miss reason"),
            MissReason::UnknownFormat(9)
        );
        assert!(matches!(
            Envelope::decode::<String>(&good, fingerprint::<String>(0)),
            Err(MissReason::WrongType { .. })
        ));
        // Same type, another key-space version.
        assert!(matches!(
            Envelope::decode::<User>(&good, fingerprint::<User>(1)),
            Err(MissReason::WrongType { .. })
        ));
        // Right fingerprint, payload of another shape (a writer lying about its type).
        let liar = envelope_of(&"text", Format::MsgPack, fp);
        assert!(matches!(
            Envelope::decode::<User>(&liar, fp),
            Err(MissReason::Undecodable(_))
        ));
    }

    #[test]
    fn msgpack_named_fields_tolerate_added_optional_field() {
        let old = User {
            id: 7,
            name: "x".into(),
            tags: vec![],
            extra: None,
        };
        let bytes = Format::MsgPack.to_vec(&old).expect("serializes");
        let new: UserV2 = Format::MsgPack.from_slice(&bytes).expect("decodes");
        assert_eq!(new.id, 7);
        assert_eq!(new.email, None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Envelope::decode::<User>(&bytes, fingerprint::<User>(0));
            let _ = Envelope::decode::<String>(&bytes, fingerprint::<String>(0));
        }

        #[test]
        fn mutated_envelope_never_panics(
            id in any::<u64>(), at in 0usize..64, byte in any::<u8>(), cut in 0usize..80
        ) {
            let user = User { id, name: "n".into(), tags: vec!["t".into()], extra: None };
            let fp = fingerprint::<User>(0);
            let mut bytes = envelope_of(&user, Format::MsgPack, fp);
            if at < bytes.len() { bytes[at] = byte; }
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = Envelope::decode::<User>(&bytes, fp);
        }

        #[test]
        fn round_trips(
            id in any::<u64>(), name in ".{0,40}", tags in proptest::collection::vec(".{0,8}", 0..5),
            extra in proptest::option::of(proptest::collection::btree_map(".{0,5}", any::<i32>(), 0..4)),
            json in any::<bool>(), version in any::<u32>(),
        ) {
            let user = User { id, name, tags, extra };
            let format = if json { Format::Json } else { Format::MsgPack };
            let fp = fingerprint::<User>(version);
            let bytes = envelope_of(&user, format, fp);
            let (back, env) = Envelope::decode::<User>(&bytes, fp).expect("round trip");
            prop_assert_eq!(back, user);
            prop_assert_eq!(env.format, format);
            prop_assert_eq!((env.stored_at_ms, env.expires_at_ms, env.keep_until_ms, env.compute_us), (1, 2, 3, 4));
        }
    }
}
