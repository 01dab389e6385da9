//! The envelope with compression: values written before compression existed still read,
//! compressed and uncompressed values round-trip, and no bytes with the compression flag set
//! panic or inflate past the limit.

use lexigram_cache::Compression;
use lexigram_cache::codec::{
    ENVELOPE_VERSION, Envelope, Format, HEADER_LEN, MAX_INFLATED, MissReason, fingerprint, payload,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Page {
    items: Vec<Item>,
    note: String,
}

fn page(n: u64) -> Page {
    Page {
        items: (0..n)
            .map(|id| Item {
                id,
                name: format!("product number {id} of the spring catalogue"),
            })
            .collect(),
        note: "repeated strings compress".into(),
    }
}

fn envelope(payload: &[u8], format: Format, fp: u64) -> Envelope<'_> {
    Envelope {
        format,
        fingerprint: fp,
        stored_at_ms: 1_700_000_000_000,
        expires_at_ms: 1_700_000_060_000,
        keep_until_ms: 1_700_000_060_000,
        compute_us: 1234,
        payload,
    }
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(&pair.iter().collect::<String>(), 16).expect("hex digits"))
        .collect()
}

/// `Item { id: 7, name: "seven" }` of key-space version 3 as MessagePack, in envelope layout 1
/// (all that builds before compression wrote), spelled out field by field.
fn legacy_bytes() -> Vec<u8> {
    hex("c7 01 01 00
         6e556ed03409691e
         0068e5cf8b010000
         6052e6cf8b010000
         6052e6cf8b010000
         d2040000
         10000000
         82 a2 6964 07 a4 6e616d65 a5 736576656e")
}

#[test]
fn envelopes_written_before_compression_still_decode() {
    let fp = fingerprint::<Item>(3);
    let bytes = legacy_bytes();
    let (item, env) = Envelope::decode::<Item>(&bytes, fp).expect("the old layout reads");
    let seven = Item {
        id: 7,
        name: "seven".into(),
    };
    assert_eq!(item, seven);
    assert_eq!(
        (env.stored_at_ms, env.expires_at_ms, env.compute_us),
        (1_700_000_000_000, 1_700_000_060_000, 1234)
    );
    // Below the threshold the envelope is still written byte for byte as before, so builds
    // without compression read what this one writes for small values.
    let payload = Format::MsgPack.to_vec(&seven).expect("serializes");
    let env = envelope(&payload, Format::MsgPack, fp);
    assert_eq!(env.to_bytes(), bytes);
    assert_eq!(env.encode(Compression::default()), bytes);
    assert_eq!(
        env.encode(Compression::above(1)),
        bytes,
        "16 bytes do not shrink"
    );
}

#[test]
fn large_values_are_compressed_and_round_trip_in_both_formats() {
    for format in [Format::MsgPack, Format::Json] {
        let fp = fingerprint::<Page>(0);
        let value = page(200);
        let raw = format.to_vec(&value).expect("serializes");
        assert!(raw.len() > 8 * 1024, "{}", raw.len());
        let plain = envelope(&raw, format, fp).to_bytes();
        let packed = envelope(&raw, format, fp).encode(Compression::default());
        assert!(
            packed.len() * 3 < plain.len(),
            "{format:?}: {} bytes compressed, {} plain",
            packed.len(),
            plain.len()
        );
        assert_eq!(packed[1], ENVELOPE_VERSION);
        assert_eq!(packed[3], 1, "the LZ4 flag");
        let (back, env) = Envelope::decode::<Page>(&packed, fp).expect("round trip");
        assert_eq!(back, value);
        assert_eq!(env.compute_us, 1234);
        assert_eq!(payload(&packed).expect("inflates").as_ref(), &raw[..]);
        // Off, and a threshold above the value, store it as it is.
        assert_eq!(envelope(&raw, format, fp).encode(Compression::OFF), plain);
        assert_eq!(
            envelope(&raw, format, fp).encode(Compression::above(raw.len() + 1)),
            plain
        );
        assert_ne!(
            envelope(&raw, format, fp).encode(Compression::above(raw.len())),
            plain,
            "the threshold is inclusive"
        );
    }
}

#[test]
fn incompressible_payloads_are_stored_as_they_are() {
    // Bytes from a simple generator: LZ4 cannot shrink them, so the envelope stays plain.
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let raw = Format::MsgPack
        .to_vec(&serde_bytes_like(noise))
        .expect("serializes");
    let env = envelope(&raw, Format::MsgPack, 1);
    assert_eq!(env.encode(Compression::default()), env.to_bytes());
}

/// The noise as one MessagePack binary rather than a list of small integers (which would
/// compress).
fn serde_bytes_like(noise: Vec<u8>) -> String {
    noise.iter().map(|b| char::from(b' ' + b % 94)).collect()
}

/// A header claiming LZ4 compression over `stored`.
fn compressed_envelope(stored: &[u8]) -> Vec<u8> {
    let mut bytes = envelope(stored, Format::MsgPack, fingerprint::<Page>(0)).to_bytes();
    bytes[1] = 2;
    bytes[3] = 1;
    bytes
}

#[test]
fn a_hostile_inflated_length_is_refused_before_allocating() {
    // Claims 4 GiB from a few bytes.
    let mut stored = u32::MAX.to_le_bytes().to_vec();
    stored.extend_from_slice(&[0x1F, b'a', 1, 0, 0xFF, 0xFF]);
    let bytes = compressed_envelope(&stored);
    assert!(matches!(
        Envelope::decode::<Page>(&bytes, fingerprint::<Page>(0)),
        Err(MissReason::TooLarge { .. })
    ));
    // Within the limit, but more than LZ4 can make of 6 bytes.
    let mut stored = ((MAX_INFLATED / 2) as u32).to_le_bytes().to_vec();
    stored.extend_from_slice(&[0x1F, b'a', 1, 0, 0xFF, 0xFF]);
    assert!(matches!(
        payload(&compressed_envelope(&stored)),
        Err(MissReason::TooLarge { .. })
    ));
    // No length at all.
    assert!(matches!(
        payload(&compressed_envelope(&[1, 2])),
        Err(MissReason::Truncated { .. })
    ));
}

#[test]
fn unknown_flags_are_a_miss() {
    let raw = Format::MsgPack.to_vec(&page(1)).expect("serializes");
    for flags in [2u8, 3, 8, 0x80] {
        let mut bytes = envelope(&raw, Format::MsgPack, 1).to_bytes();
        bytes[1] = 2;
        bytes[3] = flags;
        assert_eq!(
            Envelope::parse(&bytes).expect_err("a miss reason"),
            MissReason::UnknownFlags(flags)
        );
    }
    // Bit 2 says a tags section follows the payload: without one, the tags do not read, and
    // the cache treats the value as a miss.
    let mut bytes = envelope(&raw, Format::MsgPack, 1).to_bytes();
    bytes[1] = 2;
    bytes[3] = 4;
    assert!(lexigram_cache::codec::is_tagged(&bytes));
    assert!(matches!(
        lexigram_cache::codec::tags(&bytes),
        Err(MissReason::Undecodable(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_compressed_payloads_never_panic(
        claimed in prop_oneof![0u32..4096, any::<u32>()],
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut stored = claimed.to_le_bytes().to_vec();
        stored.extend_from_slice(&body);
        let bytes = compressed_envelope(&stored);
        if let Ok(inflated) = payload(&bytes) {
            prop_assert_eq!(inflated.len(), claimed as usize);
        }
        let _ = Envelope::decode::<Page>(&bytes, fingerprint::<Page>(0));
        let _ = Envelope::decode::<String>(&bytes, fingerprint::<Page>(0));
    }

    #[test]
    fn damaged_compressed_envelopes_never_panic(
        n in 20u64..200, at in 0usize..4096, byte in any::<u8>(), cut in 0usize..4096,
    ) {
        let raw = Format::MsgPack.to_vec(&page(n)).expect("serializes");
        let mut bytes = envelope(&raw, Format::MsgPack, fingerprint::<Page>(0))
            .encode(Compression::default());
        prop_assert_eq!(bytes[3], 1);
        let at = HEADER_LEN + at % (bytes.len() - HEADER_LEN);
        bytes[at] = byte;
        let keep = HEADER_LEN + cut % (bytes.len() - HEADER_LEN + 1);
        let _ = Envelope::decode::<Page>(&bytes, fingerprint::<Page>(0));
        bytes.truncate(keep);
        let _ = Envelope::decode::<Page>(&bytes, fingerprint::<Page>(0));
    }
}
