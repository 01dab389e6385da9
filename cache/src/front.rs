//! The thread front: each thread keeps its last few reads of each in-process store (the memory
//! backend, a near tier), so that a repeated read takes no lock and touches no reference
//! count, which is what a hit through a shared map costs and what makes many cores fight
//! over one cache line.
//!
//! A store counts its changes ([`Front::changed`], after every insert, removal and clear); a
//! kept read is served only while the count is the one read before it was taken, so a read
//! that starts after a change has returned never sees what the change replaced. Stores are
//! named by an id that is never reused, unlike an address.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::memory::AnyValue;

/// Reads kept per thread, over all stores.
const SLOTS: usize = 8;

static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

/// What a store needs to be read through the thread fronts.
#[derive(Debug)]
pub(crate) struct Front {
    id: u64,
    changes: AtomicU64,
}

/// What a store's lookup found: a value fresh until clock ms `until`, and a word the store
/// keeps with it.
pub(crate) struct Found {
    pub(crate) value: AnyValue,
    pub(crate) until: u64,
    pub(crate) extra: (u64, u32),
}

struct Slot {
    store: u64,
    changes: u64,
    until: u64,
    extra: (u64, u32),
    kind: usize,
    key: Vec<u8>,
    value: Option<AnyValue>,
}

/// How a read names its key here: by the key's text, or by something the text is a function
/// of, so that a kept read is found without writing the text. An automatic key is
/// `{prefix}{scope}:v{version}:{hash of the encoded arguments}`, all but the arguments fixed
/// by its function, so the function's scope and the encoded arguments name it as exactly as
/// the text does, and a hit neither hashes nor formats.
pub(crate) trait FrontKey {
    /// `(kind, bytes)`: kind 0 for a key's text; otherwise a value no text key uses (an
    /// address), with bytes that name the key within that kind.
    fn ident(&self) -> (usize, &[u8]);
    /// The key's text, written on first use.
    fn text(&mut self) -> &str;
}

/// A key given by its text.
pub(crate) struct Text<'a>(pub(crate) &'a str);

impl FrontKey for Text<'_> {
    #[inline]
    fn ident(&self) -> (usize, &[u8]) {
        (0, self.0.as_bytes())
    }
    #[inline]
    fn text(&mut self) -> &str {
        self.0
    }
}

thread_local! {
    static KEPT: RefCell<[Slot; SLOTS]> = const {
        RefCell::new(
            [const {
                Slot {
                    store: 0,
                    changes: 0,
                    until: 0,
                    extra: (0, 0),
                    kind: 0,
                    key: Vec::new(),
                    value: None,
                }
            }; SLOTS],
        )
    };
}

/// The slot of `key`: keys of one function differ mostly at their end. A key of 8 bytes or
/// more is read with one load of its last 8; a copy of a variable length into a buffer that is
/// then read whole stalls the load until the copy's bytes drain from the store buffer, which
/// cost a hit more than the rest of this function.
#[inline]
fn slot_of(key: &[u8]) -> usize {
    let n = key.len();
    let tail = match key.get(n.wrapping_sub(8)..) {
        Some(last) if n >= 8 => {
            let mut word = [0u8; 8];
            word.copy_from_slice(last);
            u64::from_le_bytes(word)
        }
        _ => key.iter().fold(0u64, |t, &b| (t << 8) | u64::from(b)),
    };
    let h = (tail ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 61) as usize % SLOTS
}

/// `a == b`, without a call into the C library for the short keys most functions have:
/// overlapping loads from each end cover up to 32 bytes.
#[inline(always)]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    #[inline(always)]
    fn word8(s: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    }
    #[inline(always)]
    fn word4(s: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_le_bytes(w)
    }
    match n {
        0 => true,
        // The first, middle and last byte are every byte of a key this short.
        1..4 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..8 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        17..=32 => {
            word8(a, 0) == word8(b, 0)
                && word8(a, 8) == word8(b, 8)
                && word8(a, n - 16) == word8(b, n - 16)
                && word8(a, n - 8) == word8(b, n - 8)
        }
        _ => a == b,
    }
}

impl Front {
    pub(crate) fn new() -> Front {
        Front {
            id: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
            changes: AtomicU64::new(0),
        }
    }

    /// Voids every kept read of this store. Called after the change itself, so that a read
    /// kept with the new count was looked up after the change.
    #[inline]
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// `read` of the value under `key` if it is fresh at `now`: the kept read when it is still
    /// valid, otherwise `lookup` (which finds a fresh value or nothing), whose result is kept.
    /// `read` runs while the value is borrowed; a call made from inside it (a `Clone` impl
    /// that reads a cache) goes to `lookup` and keeps nothing.
    #[inline]
    pub(crate) fn read<R>(
        &self,
        key: &str,
        now: u64,
        lookup: impl FnOnce() -> Option<Found>,
        read: impl FnOnce(&AnyValue, (u64, u32)) -> R,
    ) -> Option<R> {
        self.read_by(&mut Text(key), now, |_| lookup(), read)
    }

    /// [`read`](Self::read) of a key named by a [`FrontKey`]; `lookup` gets its text.
    #[inline]
    pub(crate) fn read_by<K: FrontKey, R>(
        &self,
        key: &mut K,
        now: u64,
        lookup: impl FnOnce(&str) -> Option<Found>,
        read: impl FnOnce(&AnyValue, (u64, u32)) -> R,
    ) -> Option<R> {
        let changes = self.changes.load(Ordering::Acquire);
        let (kind, bytes) = key.ident();
        let at = slot_of(bytes);
        let mut read = Some(read);
        let kept = KEPT.try_with(|kept| {
            let kept = kept.try_borrow().ok()?;
            let slot = &kept[at];
            if slot.store != self.id
                || slot.changes != changes
                || slot.until <= now
                || slot.kind != kind
                || !same_key(&slot.key, bytes)
            {
                return None;
            }
            Some(read.take()?(slot.value.as_ref()?, slot.extra))
        });
        if let Ok(Some(r)) = kept {
            return Some(r);
        }
        let found = lookup(key.text())?;
        let r = read.take()?(&found.value, found.extra);
        let (kind, bytes) = key.ident();
        let _ = KEPT.try_with(|kept| {
            if let Ok(mut kept) = kept.try_borrow_mut() {
                let slot = &mut kept[at];
                slot.store = self.id;
                slot.changes = changes;
                slot.until = found.until;
                slot.extra = found.extra;
                slot.kind = kind;
                slot.key.clear();
                slot.key.extend_from_slice(bytes);
                // The value it replaces may run a user's Drop: after the borrow ends.
                let replaced = slot.value.replace(found.value);
                drop(kept);
                drop(replaced);
            }
        });
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::{SLOTS, same_key, slot_of};

    #[test]
    fn same_key_agrees_with_equality_at_every_length() {
        let text = "k:0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ";
        for n in 0..text.len() {
            let a = &text.as_bytes()[..n];
            assert!(same_key(a, a));
            for at in 0..n {
                let mut b = a.to_vec();
                b[at] ^= 1;
                assert!(!same_key(a, &b), "length {n}, byte {at} differs");
            }
            assert!(!same_key(a, &text.as_bytes()[..n + 1]));
        }
    }

    #[test]
    fn slots_are_in_range_and_spread_over_keys_that_differ_at_the_end() {
        let mut used = [false; SLOTS];
        for id in 0..64 {
            for key in [format!("k:{id}"), format!("user:profile:{id}")] {
                let at = slot_of(key.as_bytes());
                assert!(at < SLOTS);
                used[at] = true;
            }
        }
        assert!(used.iter().filter(|u| **u).count() >= SLOTS / 2, "{used:?}");
        assert!(slot_of(b"") < SLOTS);
    }
}
