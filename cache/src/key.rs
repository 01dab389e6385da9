//! Cache keys: the stable argument hash behind automatic keys.
//!
//! An automatic key is `{prefix}{scope}:v{version}:{hash}` where `scope` is
//! `module_path::fn_name` (`module_path::SelfType::method` for a method) and `hash` is the XXH3-128 of a canonical encoding of the arguments,
//! printed as 32 hex digits. The encoding is defined here, not by any serde format crate, so it
//! cannot change under us with a dependency update, and it streams into the hasher without
//! allocating. It is the same in every process, machine and build of the same source:
//!
//! - integers are widened (every unsigned to u64, every signed to i64), so changing a parameter
//!   from `u32` to `u64` keeps its keys; floats are widened to f64 with `-0.0` and NaN
//!   normalised;
//! - struct and enum *type* names are left out and field and variant *names* are put in, so
//!   renaming a type keeps the keys and reordering enum variants does too;
//! - maps are hashed independently of iteration order, so a `HashMap` argument gives the same
//!   key in every process although its iteration order is random.
//!
//! `std::hash::Hash` is not used: its output is allowed to differ between builds and platforms.

use serde::Serialize;
use serde::ser;
use xxhash_rust::xxh3::Xxh3Default;

/// Why an argument could not be hashed: its `Serialize` impl reported an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build a cache key from this argument: {0}")]
pub struct KeyError(String);

impl ser::Error for KeyError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        KeyError(msg.to_string())
    }
}

/// XXH3-128 over everything written to it. Short inputs, which most argument lists are, are
/// gathered in place and hashed in one pass; a longer one moves to the streaming hasher, which
/// gives the same hash.
#[derive(Clone)]
struct Xxh3 {
    buf: [u8; GATHERED],
    len: usize,
    stream: Option<Box<Xxh3Default>>,
}

/// Bytes hashed in one pass.
const GATHERED: usize = 96;

impl Xxh3 {
    #[inline]
    fn new() -> Self {
        Xxh3 {
            buf: [0; GATHERED],
            len: 0,
            stream: None,
        }
    }

    #[inline]
    fn update(&mut self, bytes: &[u8]) {
        if self.stream.is_none() && self.len + bytes.len() <= GATHERED {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            self.stream_mut().update(bytes);
        }
    }

    #[cold]
    fn stream_mut(&mut self) -> &mut Xxh3Default {
        let gathered = &self.buf[..self.len];
        self.stream.get_or_insert_with(|| {
            let mut stream = Box::new(Xxh3Default::new());
            stream.update(gathered);
            stream
        })
    }

    #[inline]
    fn digest128(&self) -> u128 {
        match &self.stream {
            None => xxhash_rust::xxh3::xxh3_128(&self.buf[..self.len]),
            Some(stream) => stream.digest128(),
        }
    }

    fn reset(&mut self) {
        self.len = 0;
        self.stream = None;
    }
}

/// Streams arguments into the key hash.
///
/// ```
/// use lexigram_cache::key::ArgsHasher;
///
/// let mut h = ArgsHasher::new();
/// h.arg(&42u64).unwrap();
/// h.arg("alice").unwrap();
/// let a = h.finish();
///
/// let mut h = ArgsHasher::new();
/// h.arg(&42u32).unwrap(); // integer width does not matter
/// h.arg(&String::from("alice")).unwrap();
/// assert_eq!(a, h.finish());
/// ```
#[derive(Clone)]
pub struct ArgsHasher {
    h: Xxh3,
}

impl Default for ArgsHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ArgsHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgsHasher").finish_non_exhaustive()
    }
}

impl ArgsHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        ArgsHasher { h: Xxh3::new() }
    }

    /// Adds one argument.
    #[inline]
    pub fn arg<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        self.h.update(&[tag::ARG]);
        value.serialize(Encoder { h: &mut self.h })
    }

    /// The 128-bit hash of the arguments added so far.
    pub fn finish(&self) -> u128 {
        self.h.digest128()
    }

    /// The encoded arguments, which the hash is of, while they are short enough to be kept.
    #[inline]
    pub(crate) fn gathered(&self) -> Option<&[u8]> {
        match self.h.stream {
            None => Some(&self.h.buf[..self.h.len]),
            Some(_) => None,
        }
    }
}

/// The hash of a single value, as [`ArgsHasher`] would give for one argument.
pub fn stable_hash<T: Serialize + ?Sized>(value: &T) -> Result<u128, KeyError> {
    let mut h = ArgsHasher::new();
    h.arg(value)?;
    Ok(h.finish())
}

/// Formats an automatic key: `{prefix}{scope}:v{version}:{hash as 32 hex digits}`.
///
/// ```
/// use lexigram_cache::key::auto_key;
/// assert_eq!(
///     auto_key("app:", "shop::load_user", 2, 0xab),
///     "app:shop::load_user:v2:000000000000000000000000000000ab"
/// );
/// ```
pub fn auto_key(prefix: &str, scope: &str, version: u32, hash: u128) -> String {
    let mut k = KeyText::new();
    write_auto_key(&mut k, prefix, scope, version, hash);
    k.into_string()
}

/// The text of a key, written on the stack while it is short, and otherwise into a buffer its
/// thread reuses, so that building the key of a hit never allocates; only a miss, which
/// stores the key, copies it into a `String` of its own.
///
/// ```
/// use lexigram_cache::key::KeyText;
/// use std::fmt::Write as _;
///
/// let mut k = KeyText::new();
/// k.push_str("user:");
/// write!(k, "{}", 42).unwrap();
/// assert_eq!(k.as_str(), "user:42");
/// // Two at once (a key built while another is alive) do not share a buffer.
/// let mut other = KeyText::new();
/// other.push_str("x");
/// assert_eq!((k.as_str(), other.as_str()), ("user:42", "x"));
/// assert_eq!(k.into_string(), "user:42");
/// // A long key moves off the stack, whole.
/// let long = "é".repeat(40);
/// let mut k = KeyText::new();
/// k.push_str("k:");
/// k.push_str(&long);
/// k.push('!');
/// assert_eq!(k.as_str(), format!("k:{long}!"));
/// ```
pub struct KeyText {
    /// The text while it fits: only whole `str`s and chars are copied in, so the bytes are
    /// UTF-8. A short key takes no thread-local buffer, which costs a look-up to take and one to
    /// give back.
    short: [u8; SHORT],
    len: usize,
    /// The whole text once it outgrew `short` (then `len` is `usize::MAX`).
    long: String,
}

/// Bytes a key may have and stay on the stack.
const SHORT: usize = 48;

/// `len` once the text lives in `long`.
const SPILLED: usize = usize::MAX;

thread_local! {
    /// The buffer of the last long key this thread dropped, emptied, capacity kept.
    static SPARE: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

impl Default for KeyText {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeyText {
    fn drop(&mut self) {
        let mut text = std::mem::take(&mut self.long);
        if text.capacity() > 0 && text.capacity() <= SPARE_MAX {
            text.clear();
            let _ = SPARE.try_with(|spare| spare.set(text));
        }
    }
}

/// A buffer larger than this is not kept for the next key.
const SPARE_MAX: usize = 4096;

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl KeyText {
    /// An empty key.
    #[inline]
    pub fn new() -> Self {
        KeyText {
            short: [0; SHORT],
            len: 0,
            long: String::new(),
        }
    }

    /// Appends `s`.
    #[inline]
    pub fn push_str(&mut self, s: &str) {
        let n = self.len;
        match self.short.get_mut(n..n.wrapping_add(s.len())) {
            Some(to) if n != SPILLED => {
                to.copy_from_slice(s.as_bytes());
                self.len = n + s.len();
            }
            _ => self.spill().push_str(s),
        }
    }

    /// The text in `long`, moved there if it is still in `short`.
    #[cold]
    fn spill(&mut self) -> &mut String {
        if self.len != SPILLED {
            let mut long = SPARE.try_with(std::cell::Cell::take).unwrap_or_default();
            long.push_str(short_text(&self.short[..self.len]));
            self.long = long;
            self.len = SPILLED;
        }
        &mut self.long
    }

    /// Appends `c`.
    #[inline]
    pub fn push(&mut self, c: char) {
        match u8::try_from(c) {
            Ok(b) if b.is_ascii() => self.push_ascii(b),
            _ => self.push_str(c.encode_utf8(&mut [0; 4])),
        }
    }

    /// Appends one ASCII byte (a digit, a sign): one store, where a copy of a length known
    /// only at run time is a call into the C library.
    #[inline]
    pub(crate) fn push_ascii(&mut self, b: u8) {
        debug_assert!(b.is_ascii());
        match self.short.get_mut(self.len) {
            Some(slot) if self.len != SPILLED => {
                *slot = b;
                self.len += 1;
            }
            _ => self.spill().push(char::from(b)),
        }
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self.short.get(..self.len) {
            Some(bytes) => short_text(bytes),
            None => &self.long,
        }
    }

    /// The text's bytes, unchecked: what a thread front compares.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self.short.get(..self.len) {
            Some(bytes) => bytes,
            None => self.long.as_bytes(),
        }
    }

    /// The text as a `String` of its own.
    pub fn into_string(self) -> String {
        self.as_str().to_owned()
    }
}

/// The text of `short`'s bytes, which are UTF-8 (only whole `str`s and chars go in).
#[inline]
fn short_text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl std::fmt::Write for KeyText {
    #[inline]
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// Appends `n` in decimal, after a `-` when `negative`. `u64` division is much cheaper than
/// `u128`'s, so every type that fits goes through the `u64` form.
macro_rules! decimal {
    ($name:ident, $n:ty, $len:expr) => {
        #[inline]
        pub(crate) fn $name(key: &mut KeyText, negative: bool, mut n: $n) {
            let mut digits = [0u8; $len];
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            if negative {
                at -= 1;
                digits[at] = b'-';
            }
            // Byte by byte: a copy of a variable length is a call into the C library, which
            // costs more than the few digits a key has.
            for d in &digits[at..] {
                key.push_ascii(*d);
            }
        }
    };
}
decimal!(push_u64, u64, 21);
decimal!(push_u128, u128, 40);

/// Appends an automatic key, `{prefix}{scope}:v{version}:{hash as 32 hex digits}`, to `out`
/// without allocating: the one formatter of automatic keys.
///
/// ```
/// use lexigram_cache::key::{KeyText, write_auto_key};
/// let mut k = KeyText::new();
/// write_auto_key(&mut k, "app:", "shop::load_user", 2, 0xab);
/// assert_eq!(k.as_str(), "app:shop::load_user:v2:000000000000000000000000000000ab");
/// ```
#[inline]
pub fn write_auto_key(out: &mut KeyText, prefix: &str, scope: &str, version: u32, hash: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str(prefix);
    out.push_str(scope);
    out.push_str(":v");
    push_u64(out, false, u64::from(version));
    let mut hex = [b':'; 33];
    for (at, digit) in hex[1..].iter_mut().enumerate() {
        *digit = HEX[((hash >> (124 - 4 * at)) & 0xf) as usize];
    }
    out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
}

mod tag {
    pub const ARG: u8 = 0xA0;
    pub const BOOL: u8 = 0x01;
    pub const I64: u8 = 0x02;
    pub const U64: u8 = 0x03;
    pub const I128: u8 = 0x04;
    pub const U128: u8 = 0x05;
    pub const F64: u8 = 0x06;
    pub const CHAR: u8 = 0x07;
    pub const STR: u8 = 0x08;
    pub const BYTES: u8 = 0x09;
    pub const NONE: u8 = 0x0A;
    pub const SOME: u8 = 0x0B;
    pub const UNIT: u8 = 0x0C;
    pub const VARIANT: u8 = 0x0E;
    pub const SEQ: u8 = 0x10;
    pub const TUPLE: u8 = 0x12;
    pub const END: u8 = 0x13;
    pub const MAP: u8 = 0x15;
    pub const STRUCT: u8 = 0x16;
}

struct Encoder<'a> {
    h: &'a mut Xxh3,
}

impl Encoder<'_> {
    #[inline]
    fn put(&mut self, t: u8, bytes: &[u8]) {
        self.h.update(&[t]);
        self.h.update(bytes);
    }
    #[inline]
    fn put_str(&mut self, t: u8, s: &[u8]) {
        self.h.update(&[t]);
        self.h.update(&(s.len() as u64).to_le_bytes());
        self.h.update(s);
    }
}

impl<'a> ser::Serializer for Encoder<'a> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = MapEncoder<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    #[inline]
    fn serialize_bool(mut self, v: bool) -> Result<(), KeyError> {
        self.put(tag::BOOL, &[u8::from(v)]);
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), KeyError> {
        self.serialize_i64(v.into())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), KeyError> {
        self.serialize_i64(v.into())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), KeyError> {
        self.serialize_i64(v.into())
    }
    #[inline]
    fn serialize_i64(mut self, v: i64) -> Result<(), KeyError> {
        self.put(tag::I64, &v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_i128(mut self, v: i128) -> Result<(), KeyError> {
        self.put(tag::I128, &v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), KeyError> {
        self.serialize_u64(v.into())
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), KeyError> {
        self.serialize_u64(v.into())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), KeyError> {
        self.serialize_u64(v.into())
    }
    #[inline]
    fn serialize_u64(mut self, v: u64) -> Result<(), KeyError> {
        self.put(tag::U64, &v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_u128(mut self, v: u128) -> Result<(), KeyError> {
        self.put(tag::U128, &v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), KeyError> {
        self.serialize_f64(v.into())
    }
    #[inline]
    fn serialize_f64(mut self, v: f64) -> Result<(), KeyError> {
        let v = if v.is_nan() {
            f64::NAN
        } else if v == 0.0 {
            0.0
        } else {
            v
        };
        self.put(tag::F64, &v.to_bits().to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_char(mut self, v: char) -> Result<(), KeyError> {
        self.put(tag::CHAR, &u32::from(v).to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_str(mut self, v: &str) -> Result<(), KeyError> {
        self.put_str(tag::STR, v.as_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_bytes(mut self, v: &[u8]) -> Result<(), KeyError> {
        self.put_str(tag::BYTES, v);
        Ok(())
    }
    #[inline]
    fn serialize_none(mut self) -> Result<(), KeyError> {
        self.put(tag::NONE, &[]);
        Ok(())
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(mut self, value: &T) -> Result<(), KeyError> {
        self.put(tag::SOME, &[]);
        value.serialize(self)
    }
    #[inline]
    fn serialize_unit(mut self) -> Result<(), KeyError> {
        self.put(tag::UNIT, &[]);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), KeyError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), KeyError> {
        self.put_str(tag::VARIANT, variant.as_bytes());
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        self.put_str(tag::VARIANT, variant.as_bytes());
        value.serialize(self)
    }
    fn serialize_seq(mut self, _len: Option<usize>) -> Result<Compound<'a>, KeyError> {
        self.put(tag::SEQ, &[]);
        Ok(Compound { h: self.h })
    }
    fn serialize_tuple(mut self, _len: usize) -> Result<Compound<'a>, KeyError> {
        self.put(tag::TUPLE, &[]);
        Ok(Compound { h: self.h })
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, KeyError> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, KeyError> {
        self.put_str(tag::VARIANT, variant.as_bytes());
        self.put(tag::TUPLE, &[]);
        Ok(Compound { h: self.h })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapEncoder<'a>, KeyError> {
        Ok(MapEncoder {
            outer: self.h,
            entry: Xxh3::new(),
            sum: 0,
            count: 0,
        })
    }
    fn serialize_struct(
        mut self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, KeyError> {
        self.put(tag::STRUCT, &[]);
        Ok(Compound { h: self.h })
    }
    fn serialize_struct_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, KeyError> {
        self.put_str(tag::VARIANT, variant.as_bytes());
        self.put(tag::STRUCT, &[]);
        Ok(Compound { h: self.h })
    }
}

struct Compound<'a> {
    h: &'a mut Xxh3,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        value.serialize(Encoder { h: self.h })
    }
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), KeyError> {
        Encoder { h: self.h }.put_str(tag::STR, key.as_bytes());
        self.element(value)
    }
    fn end(self) -> Result<(), KeyError> {
        self.h.update(&[tag::END]);
        Ok(())
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident) => {
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = KeyError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
                self.element(value)
            }
            fn end(self) -> Result<(), KeyError> {
                Compound::end(self)
            }
        }
    };
}
compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

macro_rules! fields {
    ($trait:ident) => {
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = KeyError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), KeyError> {
                self.field(key, value)
            }
            fn end(self) -> Result<(), KeyError> {
                Compound::end(self)
            }
        }
    };
}
fields!(SerializeStruct);
fields!(SerializeStructVariant);

/// Hashes each entry on its own and adds the digests, which makes the result independent of
/// the order the map yields its entries in, without buffering or sorting them.
struct MapEncoder<'a> {
    outer: &'a mut Xxh3,
    entry: Xxh3,
    sum: u128,
    count: u64,
}

impl ser::SerializeMap for MapEncoder<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), KeyError> {
        self.entry.reset();
        key.serialize(Encoder { h: &mut self.entry })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        value.serialize(Encoder { h: &mut self.entry })?;
        self.sum = self.sum.wrapping_add(self.entry.digest128());
        self.count += 1;
        Ok(())
    }
    fn end(self) -> Result<(), KeyError> {
        self.outer.update(&[tag::MAP]);
        self.outer.update(&self.count.to_le_bytes());
        self.outer.update(&self.sum.to_le_bytes());
        Ok(())
    }
}

/// Whether `key` is one of the cache's own (it starts with a NUL byte): fill locks and tag
/// versions live there, so callers may read such keys but not write them.
#[inline]
pub(crate) fn is_reserved(key: &str) -> bool {
    key.as_bytes().first() == Some(&0)
}

/// [`CacheError::ReservedKey`](crate::CacheError::ReservedKey) for a write of a reserved key.
pub(crate) fn writable(key: &str) -> Result<(), crate::CacheError> {
    if is_reserved(key) {
        return Err(crate::CacheError::ReservedKey(key.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn key_text_holds_what_was_pushed_on_the_stack_and_past_it() {
        let pieces = ["a", "é", "user:", "0123456789", "ü-漢", ""];
        for count in 0..40 {
            let mut k = KeyText::new();
            let mut expected = String::new();
            for i in 0..count {
                let piece = pieces[i % pieces.len()];
                match i % 3 {
                    0 => k.push_str(piece),
                    1 => piece.chars().for_each(|c| k.push(c)),
                    _ => piece.bytes().filter(u8::is_ascii).for_each(|b| {
                        k.push_ascii(b);
                    }),
                }
                match i % 3 {
                    2 => expected.extend(piece.chars().filter(char::is_ascii)),
                    _ => expected.push_str(piece),
                }
                assert_eq!(k.as_str(), expected, "after {} pieces", i + 1);
                assert_eq!(k.as_bytes(), expected.as_bytes());
            }
            assert_eq!(k.into_string(), expected);
        }
    }

    #[derive(Serialize)]
    struct Filter {
        tenant: String,
        limit: u32,
        tags: Vec<&'static str>,
        mode: Mode,
    }

    #[derive(Serialize)]
    enum Mode {
        Fast,
        #[allow(dead_code)]
        Slow {
            retries: u8,
        },
    }

    fn key_of(args: &[&dyn Fn(&mut ArgsHasher)]) -> String {
        let mut h = ArgsHasher::new();
        for a in args {
            a(&mut h);
        }
        auto_key("", "shop::users::load_user", 1, h.finish())
    }

    /// Pins the exact bytes of the key space. If this fails, the change would make every
    /// deployed service miss on every key after upgrading: bump the key format deliberately
    /// (and say so in the changelog) instead of editing the expected strings.
    #[test]
    fn golden_keys() {
        let k = key_of(&[&|h| h.arg(&42u64).expect("hashes"), &|h| {
            h.arg("alice").expect("hashes")
        }]);
        assert_eq!(
            k,
            "shop::users::load_user:v1:5ad8a225f1d0bb939937467cf7831e67"
        );

        let filter = Filter {
            tenant: "acme".into(),
            limit: 10,
            tags: vec!["a", "b"],
            mode: Mode::Fast,
        };
        let k = key_of(&[
            &|h| h.arg(&filter).expect("hashes"),
            &|h| h.arg(&Some(-3i32)).expect("hashes"),
            &|h| h.arg(&(1.5f64, 'x', ())).expect("hashes"),
        ]);
        assert_eq!(
            k,
            "shop::users::load_user:v1:132bbd37d8069e02ca3a630633446742"
        );
    }

    /// The encoding written out by hand, so the format is documented by a test as well as
    /// pinned: tag 0xA0 per argument, then 0x03 + u64 LE, 0x08 + u64 LE length + UTF-8.
    #[test]
    fn encoding_is_the_documented_bytes() {
        let mut bytes = vec![0xA0, 0x03];
        bytes.extend_from_slice(&42u64.to_le_bytes());
        bytes.extend_from_slice(&[0xA0, 0x08]);
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(b"alice");
        let mut h = ArgsHasher::new();
        h.arg(&42u64).expect("hashes");
        h.arg("alice").expect("hashes");
        assert_eq!(h.finish(), xxhash_rust::xxh3::xxh3_128(&bytes));
    }

    /// Past what is gathered in place the hash streams, and stays the hash of the bytes.
    #[test]
    fn long_arguments_hash_as_their_bytes() {
        for len in [0, 1, GATHERED - 18, GATHERED - 17, GATHERED, 300, 5000] {
            let text = "y".repeat(len);
            let mut bytes = vec![0xA0, 0x03];
            bytes.extend_from_slice(&7u64.to_le_bytes());
            bytes.extend_from_slice(&[0xA0, 0x08]);
            bytes.extend_from_slice(&(len as u64).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
            let mut h = ArgsHasher::new();
            h.arg(&7u64).expect("hashes");
            h.arg(&text).expect("hashes");
            assert_eq!(
                h.finish(),
                xxhash_rust::xxh3::xxh3_128(&bytes),
                "length {len}"
            );
        }
    }

    #[test]
    fn width_and_container_independence() {
        assert_eq!(stable_hash(&7u8), stable_hash(&7u64));
        assert_eq!(stable_hash(&-7i16), stable_hash(&-7i64));
        assert_ne!(stable_hash(&7u64), stable_hash(&7i64));
        assert_eq!(stable_hash("s"), stable_hash(&String::from("s")));
        assert_eq!(stable_hash(&vec![1u8, 2]), stable_hash(&[1u8, 2][..]));
        assert_eq!(stable_hash(&0.0f64), stable_hash(&-0.0f64));
    }

    #[test]
    fn maps_are_order_independent() {
        let mut a = HashMap::new();
        let mut b = BTreeMap::new();
        for i in 0..100u32 {
            a.insert(format!("k{i}"), i);
            b.insert(format!("k{i}"), i);
        }
        assert_eq!(stable_hash(&a), stable_hash(&b));
        b.insert("k0".into(), 1);
        assert_ne!(stable_hash(&a), stable_hash(&b));
    }

    #[test]
    fn argument_boundaries_matter() {
        // ("ab", "c") and ("a", "bc") must not collide.
        let mut x = ArgsHasher::new();
        x.arg("ab").expect("hashes");
        x.arg("c").expect("hashes");
        let mut y = ArgsHasher::new();
        y.arg("a").expect("hashes");
        y.arg("bc").expect("hashes");
        assert_ne!(x.finish(), y.finish());
        assert_ne!(stable_hash(&None::<u8>), stable_hash(&()));
        assert_ne!(
            stable_hash(&vec![vec![1u8], vec![]]),
            stable_hash(&vec![vec![], vec![1u8]])
        );
    }

    #[test]
    fn failing_serialize_is_an_error() {
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("nope"))
            }
        }
        assert!(stable_hash(&Bad).is_err());
    }
}
