//! Payload compression candidates on cache-shaped values: lists of structs with repeated
//! strings, serialized the way the cache serializes them (MessagePack with named fields, and
//! JSON), at 1 KB, 16 KB, 256 KB and 1 MB. Each case measures compress + decompress of one value
//! (what one fill and one hit pay) and prints the stored size, so both sides of the trade are in
//! one run.
//!
//! `cargo bench -p lexigram-cache-benches --bench compression`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;

#[derive(Serialize)]
struct Product {
    id: u64,
    sku: String,
    name: String,
    category: &'static str,
    brand: &'static str,
    price_cents: u32,
    in_stock: bool,
    tags: Vec<&'static str>,
    description: String,
    updated_at: String,
}

const WORDS: &[&str] = &[
    "steel",
    "compact",
    "wireless",
    "kitchen",
    "premium",
    "outdoor",
    "classic",
    "portable",
    "silent",
    "smart",
    "garden",
    "travel",
    "ergonomic",
    "cotton",
    "leather",
    "solar",
    "family",
    "pro",
    "mini",
    "ultra",
    "eco",
    "vintage",
    "digital",
    "modular",
];
const CATEGORIES: &[&str] = &["home", "garden", "electronics", "sports", "toys", "books"];
const BRANDS: &[&str] = &["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"];
const TAGS: &[&str] = &["sale", "new", "bestseller", "limited", "gift", "eco"];

/// A small deterministic generator, so every run benches the same bytes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.next() as usize % from.len()]
    }
}

fn product(rng: &mut Lcg, id: u64) -> Product {
    let words = 6 + rng.next() as usize % 14;
    let description = (0..words)
        .map(|_| rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ");
    Product {
        id,
        sku: format!("SKU-{:08X}", rng.next()),
        name: format!(
            "{} {} {}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.next() % 1000
        ),
        category: rng.pick(CATEGORIES),
        brand: rng.pick(BRANDS),
        price_cents: (rng.next() % 100_000) as u32,
        in_stock: !rng.next().is_multiple_of(3),
        tags: (0..rng.next() % 4).map(|_| rng.pick(TAGS)).collect(),
        description,
        updated_at: format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            1 + rng.next() % 12,
            1 + rng.next() % 28,
            rng.next() % 24,
            rng.next() % 60,
            rng.next() % 60
        ),
    }
}

/// A serialized list of products at least `target` bytes long.
fn payload(target: usize, serialize: fn(&[Product]) -> Vec<u8>) -> Vec<u8> {
    let mut rng = Lcg(42);
    let mut items = Vec::new();
    loop {
        let bytes = serialize(&items);
        if bytes.len() >= target {
            return bytes;
        }
        // Grow in steps so building 1 MB does not serialize a thousand times.
        let step = 1 + (target - bytes.len()) / 300;
        for _ in 0..step {
            let id = items.len() as u64;
            items.push(product(&mut rng, id));
        }
    }
}

fn msgpack(items: &[Product]) -> Vec<u8> {
    rmp_serde::to_vec_named(items).expect("products serialize")
}

fn json(items: &[Product]) -> Vec<u8> {
    serde_json::to_vec(items).expect("products serialize")
}

type Compress = fn(&[u8]) -> Vec<u8>;
type Decompress = fn(&[u8], usize) -> Vec<u8>;

fn lz4_compress(b: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(b)
}
fn lz4_decompress(b: &[u8], len: usize) -> Vec<u8> {
    lz4_flex::block::decompress(b, len).expect("lz4 round trip")
}
fn zstd1_compress(b: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(b, 1).expect("zstd compresses")
}
fn zstd_decompress(b: &[u8], len: usize) -> Vec<u8> {
    zstd::bulk::decompress(b, len).expect("zstd round trip")
}

// zstd's contexts cost tens of microseconds to set up; a real codec would keep one per thread.
thread_local! {
    static ZSTD1: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(1).expect("zstd context"));
    static ZSTD3: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(3).expect("zstd context"));
    static UNZSTD: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd context"));
}
fn zstd1_ctx_compress(b: &[u8]) -> Vec<u8> {
    ZSTD1.with(|c| c.borrow_mut().compress(b).expect("zstd compresses"))
}
fn zstd3_ctx_compress(b: &[u8]) -> Vec<u8> {
    ZSTD3.with(|c| c.borrow_mut().compress(b).expect("zstd compresses"))
}
fn zstd_ctx_decompress(b: &[u8], len: usize) -> Vec<u8> {
    UNZSTD.with(|d| d.borrow_mut().decompress(b, len).expect("zstd round trip"))
}

const CODECS: &[(&str, Compress, Decompress)] = &[
    ("lz4_flex", lz4_compress, lz4_decompress),
    ("zstd_1", zstd1_compress, zstd_decompress),
    ("zstd_1_ctx", zstd1_ctx_compress, zstd_ctx_decompress),
    ("zstd_3_ctx", zstd3_ctx_compress, zstd_ctx_decompress),
];

const SIZES: &[(&str, usize)] = &[
    ("1KB", 1_000),
    ("16KB", 16_000),
    ("256KB", 256_000),
    ("1MB", 1_000_000),
];

fn compression(c: &mut Criterion) {
    for (format, serialize) in [
        ("msgpack", msgpack as fn(&[Product]) -> Vec<u8>),
        ("json", json),
    ] {
        let mut group = c.benchmark_group(format!("compression_{format}"));
        for &(size_name, target) in SIZES {
            let raw = payload(target, serialize);
            group.throughput(Throughput::Bytes(raw.len() as u64));
            for &(codec, compress, decompress) in CODECS {
                let packed = compress(&raw);
                assert_eq!(decompress(&packed, raw.len()), raw, "{codec} round trip");
                // Criterion has no column for size; print it beside the timings.
                println!(
                    "size {format} {size_name} {codec}: {} -> {} bytes ({:.1}%)",
                    raw.len(),
                    packed.len(),
                    100.0 * packed.len() as f64 / raw.len() as f64
                );
                group.bench_with_input(
                    BenchmarkId::new(format!("{codec}_roundtrip"), size_name),
                    &raw,
                    |b, raw| {
                        b.iter(|| {
                            let packed = compress(black_box(raw));
                            black_box(decompress(&packed, raw.len()))
                        })
                    },
                );
                group.bench_with_input(
                    BenchmarkId::new(format!("{codec}_decode"), size_name),
                    &packed,
                    |b, packed| b.iter(|| black_box(decompress(black_box(packed), raw.len()))),
                );
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = compression
}
criterion_main!(benches);
