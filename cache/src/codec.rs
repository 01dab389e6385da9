//! The value envelope stored by remote backends, and the value formats.
//!
//! Layout (all integers little-endian), 44 bytes of header then the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | magic `0xC7` |
//! | 1 | envelope format version: 1, or 2 when a flag is set |
//! | 2 | format id: 1 = MessagePack, 2 = JSON |
//! | 3 | flags: bits 0-1 the compression of the payload (0 = none, 1 = LZ4 block), bit 2 a tags section follows the payload, others 0 |
//! | 4..12 | type fingerprint: XXH3-64 of the Rust type name and the key-space version |
//! | 12..20 | stored at, ms since the UNIX epoch |
//! | 20..28 | logical expiry, ms since the UNIX epoch (0 = never) |
//! | 28..36 | keep-until for stale-if-error, ms since the UNIX epoch (0 = never) |
//! | 36..40 | measured compute time of the value, µs (for early refresh) |
//! | 40..44 | payload length |
//! | 44.. | payload |
//! | after the payload | with flag bit 2 only: the tags section |
//!
//! The tags section records the version each tag of the value had when it was written: a
//! count (2 bytes), then per tag its version (8 bytes), the length of its name (2 bytes) and
//! the name (UTF-8). A read compares them with the tags' current versions (see
//! [`Cache::set_tagged`](crate::Cache::set_tagged)).
//!
//! A compressed payload is the length of the serialized value (4 bytes) then its LZ4 block.
//! Envelopes without a flag are written as version 1, byte for byte what builds before
//! compression wrote, so both kinds read everywhere except compressed values on those older
//! builds, which see a newer version and miss.
//!
//! Bytes are only ever decoded as the type that wrote them: a wrong magic, an unknown format,
//! an unknown or newer envelope version, a different fingerprint or a payload that does not decode is a
//! [`MissReason`], which the cache treats as a miss (and the next fill overwrites the key).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de, de::DeserializeOwned};

/// First byte of every envelope.
pub const MAGIC: u8 = 0xC7;
/// The newest envelope layout version this build reads, and the one it writes for compressed
/// values (uncompressed ones are written as version 1).
pub const ENVELOPE_VERSION: u8 = 2;
/// The largest serialized value a compressed payload may inflate to. A stored value claiming
/// more is refused as a miss before anything is allocated, so a hostile or damaged value
/// cannot exhaust memory; values larger than this are stored uncompressed.
pub const MAX_INFLATED: usize = 64 * 1024 * 1024;
/// Flag bits of the compression codec.
const COMPRESSION_BITS: u8 = 0b11;
/// Flag bit of a tags section after the payload.
pub(crate) const TAGGED: u8 = 0b100;
/// Every flag bit this build knows.
const KNOWN_FLAGS: u8 = COMPRESSION_BITS | TAGGED;
/// Compression codec id of LZ4 block compression.
const LZ4: u8 = 1;
/// LZ4 cannot inflate a block by more than this factor (a run of one byte costs one byte per
/// 255 of output, plus a few bytes of block overhead), so a larger claimed length is a lie.
const LZ4_MAX_RATIO: usize = 255;

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

/// When remote payloads are compressed: serialized values of at least [`min_size`] bytes are
/// stored as an LZ4 block, when that is smaller. Small values are stored as they are, because
/// there compression saves a few bytes and costs a round of work on every hit.
///
/// In configuration, `compression:` takes a byte count (`1024`), a size with a unit (`"16KiB"`,
/// `"1MiB"`; `KB` and `MB` count 1000) or `off`; `0` is `off` too. Default `1KiB`.
///
/// LZ4 (the pure-Rust `lz4_flex`) rather than zstd: on the cache's values it decodes many
/// times faster, which every hit pays, while zstd's smaller output saves less time on a network
/// than its decoding costs (see the Compression section of the README for the measurement).
///
/// [`min_size`]: Compression::min_size
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// 0 = off.
    min_size: usize,
}

impl Compression {
    /// Never compress.
    pub const OFF: Compression = Compression { min_size: 0 };

    /// Compress serialized values of at least `bytes` bytes; `0` is [`Compression::OFF`].
    pub const fn above(bytes: usize) -> Self {
        Compression { min_size: bytes }
    }

    /// The smallest serialized value that is compressed; `None` when compression is off.
    pub const fn min_size(self) -> Option<usize> {
        match self.min_size {
            0 => None,
            n => Some(n),
        }
    }

    /// `payload` compressed as a compressed envelope stores it, or `None` when it stays as it
    /// is: compression is off, the payload is below the threshold or above [`MAX_INFLATED`],
    /// or compressing would not make it smaller.
    fn compress(self, payload: &[u8]) -> Option<Vec<u8>> {
        let min = self.min_size()?;
        if payload.len() < min || payload.len() > MAX_INFLATED {
            return None;
        }
        let len = u32::try_from(payload.len()).ok()?;
        let mut out = vec![0; 4 + lz4_flex::block::get_maximum_output_size(payload.len())];
        out[..4].copy_from_slice(&len.to_le_bytes());
        let packed = lz4_flex::block::compress_into(payload, &mut out[4..]).ok()?;
        out.truncate(4 + packed);
        (out.len() < payload.len()).then_some(out)
    }
}

impl Default for Compression {
    /// Values of 1 KiB and more.
    fn default() -> Self {
        Compression::above(1024)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.min_size() {
            None => f.write_str("off"),
            Some(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("off") || t.eq_ignore_ascii_case("none") {
            return Ok(Compression::OFF);
        }
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(digits);
        let unit_bytes: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1024,
            "kb" => 1000,
            "mib" | "m" => 1024 * 1024,
            "mb" => 1_000_000,
            _ => return Err(compression_hint(text)),
        };
        number
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(unit_bytes))
            .map(Compression::above)
            .ok_or_else(|| compression_hint(text))
    }
}

fn compression_hint(text: &str) -> String {
    format!(
        "`{text}` is not a compression threshold: give a byte count (`1024`), a size such as \
         `16KiB` or `1MiB`, or `off`"
    )
}

impl Serialize for Compression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.min_size() {
            None => s.serialize_str("off"),
            Some(n) => s.serialize_u64(n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Threshold;
        impl de::Visitor<'_> for Threshold {
            type Value = Compression;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count, a size such as \"16KiB\", or \"off\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Compression, E> {
                usize::try_from(v)
                    .map(Compression::above)
                    .map_err(|_| E::custom(compression_hint(&v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Compression, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(compression_hint(&v.to_string())))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Compression, E> {
                if v {
                    Ok(Compression::default())
                } else {
                    Ok(Compression::OFF)
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Compression, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Threshold)
    }
}

/// The serialized value inside an envelope: its payload, inflated if it was stored
/// compressed. Never panics, and never allocates more than [`MAX_INFLATED`], whatever the bytes.
pub fn payload(bytes: &[u8]) -> Result<Cow<'_, [u8]>, MissReason> {
    let env = Envelope::parse(bytes)?;
    inflated(&env, bytes[3])
}

/// `env`'s payload inflated as its `flags` (already checked by `parse`) say.
fn inflated<'a>(env: &Envelope<'a>, flags: u8) -> Result<Cow<'a, [u8]>, MissReason> {
    match flags & COMPRESSION_BITS {
        0 => Ok(Cow::Borrowed(env.payload)),
        _ => inflate_lz4(env.payload).map(Cow::Owned),
    }
}

fn inflate_lz4(stored: &[u8]) -> Result<Vec<u8>, MissReason> {
    let (len, block) = stored
        .split_first_chunk::<4>()
        .ok_or(MissReason::Truncated { len: stored.len() })?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_INFLATED || len > block.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(16) {
        return Err(MissReason::TooLarge { claimed: len });
    }
    let out = lz4_flex::block::decompress(block, len).map_err(|e| {
        MissReason::Undecodable(format!("compressed payload does not inflate: {e}"))
    })?;
    if out.len() != len {
        return Err(MissReason::Undecodable(format!(
            "compressed payload inflates to {} bytes, its header says {len}",
            out.len()
        )));
    }
    Ok(out)
}

/// Whether `bytes` (an envelope) carries a tags section: one flag check, so untagged values
/// pay nothing more.
#[inline]
pub fn is_tagged(bytes: &[u8]) -> bool {
    bytes.get(3).is_some_and(|flags| flags & TAGGED != 0)
}

/// The tags of an envelope and the version each had when the value was written; empty for an
/// untagged envelope. Never panics, whatever the bytes: a damaged section is a [`MissReason`].
pub fn tags(bytes: &[u8]) -> Result<Vec<(&str, u64)>, MissReason> {
    if !is_tagged(bytes) {
        return Ok(Vec::new());
    }
    let env = Envelope::parse(bytes)?;
    let damaged = || MissReason::Undecodable("damaged tags section".into());
    let mut rest = &bytes[HEADER_LEN + env.payload.len()..];
    let (count, tail) = rest.split_first_chunk::<2>().ok_or_else(damaged)?;
    rest = tail;
    let count = u16::from_le_bytes(*count);
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (version, tail) = rest.split_first_chunk::<8>().ok_or_else(damaged)?;
        let (len, tail) = tail.split_first_chunk::<2>().ok_or_else(damaged)?;
        let len = usize::from(u16::from_le_bytes(*len));
        let name = tail.get(..len).ok_or_else(damaged)?;
        let name = std::str::from_utf8(name).map_err(|_| damaged())?;
        out.push((name, u64::from_le_bytes(*version)));
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(damaged());
    }
    Ok(out)
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
    /// Flag bits this build does not know (a compression codec of a newer build, or damage).
    #[error("unknown envelope flags {0:#04x}: written by a newer build, or damaged")]
    UnknownFlags(u8),
    /// A compressed payload claims to inflate past [`MAX_INFLATED`], or further than its
    /// codec can inflate its stored bytes: refused before allocating.
    #[error(
        "compressed payload claims {claimed} bytes, more than it can hold or than {MAX_INFLATED} allowed"
    )]
    TooLarge {
        /// The inflated length the payload claims.
        claimed: usize,
    },
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
    /// The serialized value. From [`Envelope::parse`], the payload as stored, which may be
    /// compressed: [`payload`] inflates it.
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

/// [`fingerprint`], kept per thread for the last type and version asked: every read of a
/// server's value checks it, and hashing the type's name costs more than the rest of the
/// envelope's checks.
pub(crate) fn fingerprint_of<T: ?Sized + 'static>(version: u32) -> u64 {
    use std::any::TypeId;
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<Option<(TypeId, u32, u64)>> = const { Cell::new(None) };
    }
    let id = TypeId::of::<T>();
    LAST.with(|last| match last.get() {
        Some((t, v, fp)) if t == id && v == version => fp,
        _ => {
            let fp = fingerprint::<T>(version);
            last.set(Some((id, version, fp)));
            fp
        }
    })
}

impl Envelope<'_> {
    /// Writes the header and payload into a new buffer, uncompressed (envelope version 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.write(1, 0, self.payload, &[])
    }

    /// Writes the header and payload into a new buffer, the payload compressed when
    /// `compression` says so (see [`Compression`]).
    pub fn encode(&self, compression: Compression) -> Vec<u8> {
        self.encode_tagged(compression, &[])
    }

    /// [`encode`](Self::encode), with a tags section recording each tag's version at write
    /// time when `tags` is not empty. More than `u16::MAX` tags, or a tag name longer than
    /// `u16::MAX` bytes, cannot be recorded: callers refuse those before they get here.
    pub fn encode_tagged(&self, compression: Compression, tags: &[(&str, u64)]) -> Vec<u8> {
        let tag_flag = if tags.is_empty() { 0 } else { TAGGED };
        match compression.compress(self.payload) {
            Some(packed) => self.write(ENVELOPE_VERSION, LZ4 | tag_flag, &packed, tags),
            None if tag_flag != 0 => self.write(ENVELOPE_VERSION, tag_flag, self.payload, tags),
            None => self.to_bytes(),
        }
    }

    fn write(&self, version: u8, flags: u8, payload: &[u8], tags: &[(&str, u64)]) -> Vec<u8> {
        let tags_len: usize = tags.iter().map(|(t, _)| 10 + t.len()).sum();
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 2 + tags_len);
        out.push(MAGIC);
        out.push(version);
        out.push(self.format.id());
        out.push(flags);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.extend_from_slice(&self.keep_until_ms.to_le_bytes());
        out.extend_from_slice(&self.compute_us.to_le_bytes());
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(payload);
        if flags & TAGGED != 0 {
            let count = u16::try_from(tags.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_le_bytes());
            for (tag, version) in tags.iter().take(usize::from(count)) {
                let name = &tag.as_bytes()[..tag.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(name);
            }
        }
        out
    }

    /// Parses the header. Never panics, whatever the bytes. `payload` is the payload as
    /// stored, compressed or not: [`payload`] gives the serialized value.
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
        if bytes[3] & !KNOWN_FLAGS != 0 || bytes[3] & COMPRESSION_BITS > LZ4 {
            return Err(MissReason::UnknownFlags(bytes[3]));
        }
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
        let rest = bytes.get(HEADER_LEN..).unwrap_or_default();
        // Untagged: the payload is the rest, exactly. Tagged: the tags section follows it.
        let payload = if bytes[3] & TAGGED == 0 {
            Some(rest).filter(|p| p.len() == len)
        } else {
            rest.get(..len)
        }
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

    /// Parses the header, checks the fingerprint, inflates a compressed payload and decodes it
    /// as `T`.
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
            .from_slice(&inflated(&env, bytes[3])?)
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
    fn the_kept_fingerprint_is_the_fingerprint_of_the_type_and_version_asked() {
        // Alternating types and versions on one thread: the kept one is never another's.
        for _ in 0..2 {
            for v in [0, 1, 0] {
                assert_eq!(fingerprint_of::<User>(v), fingerprint::<User>(v));
                assert_eq!(fingerprint_of::<String>(v), fingerprint::<String>(v));
            }
        }
        assert_ne!(fingerprint_of::<User>(0), fingerprint_of::<User>(1));
        assert_ne!(fingerprint_of::<User>(0), fingerprint_of::<String>(0));
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

    #[test]
    fn tagged_envelopes_carry_their_tag_versions_and_untagged_ones_stay_version_1() {
        let payload = Format::MsgPack.to_vec(&"v").expect("serializes");
        let env = Envelope {
            format: Format::MsgPack,
            fingerprint: 9,
            stored_at_ms: 1,
            expires_at_ms: 2,
            keep_until_ms: 3,
            compute_us: 4,
            payload: &payload,
        };
        let plain = env.encode_tagged(Compression::OFF, &[]);
        assert_eq!(
            plain,
            env.to_bytes(),
            "untagged bytes are what older builds wrote"
        );
        assert!(!is_tagged(&plain));
        assert_eq!(tags(&plain), Ok(vec![]));
        let tagged = env.encode_tagged(Compression::OFF, &[("user:7", 11), ("users", u64::MAX)]);
        assert!(is_tagged(&tagged));
        assert_eq!(tagged[1], ENVELOPE_VERSION);
        assert_eq!(tags(&tagged), Ok(vec![("user:7", 11), ("users", u64::MAX)]));
        let (back, _) = Envelope::decode::<String>(&tagged, 9).expect("decodes");
        assert_eq!(back, "v");
        // A section cut short, or with bytes past its end, is damage, never a panic.
        assert!(tags(&tagged[..tagged.len() - 1]).is_err());
        let mut longer = tagged.clone();
        longer.push(0);
        assert!(tags(&longer).is_err());
        // Compressed and tagged together.
        let big = Format::MsgPack
            .to_vec(&"x".repeat(4096))
            .expect("serializes");
        let env = Envelope {
            payload: &big,
            ..env
        };
        let both = env.encode_tagged(Compression::above(1024), &[("t", 1)]);
        assert_eq!(both[3], LZ4 | TAGGED);
        assert_eq!(tags(&both), Ok(vec![("t", 1)]));
        let (back, _) = Envelope::decode::<String>(&both, 9).expect("decodes");
        assert_eq!(back.len(), 4096);
    }

    proptest! {
        #[test]
        fn mutated_tagged_envelope_never_panics(at in 0usize..80, byte in any::<u8>(), cut in 0usize..90) {
            let payload = Format::MsgPack.to_vec(&"value").expect("serializes");
            let env = Envelope {
                format: Format::MsgPack, fingerprint: 1, stored_at_ms: 0, expires_at_ms: 0,
                keep_until_ms: 0, compute_us: 0, payload: &payload,
            };
            let mut bytes = env.encode_tagged(Compression::OFF, &[("a", 1), ("bc", 2)]);
            if at < bytes.len() { bytes[at] = byte; }
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = tags(&bytes);
            let _ = Envelope::decode::<String>(&bytes, 1);
        }

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
