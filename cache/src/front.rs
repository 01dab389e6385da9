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
    key: String,
    value: Option<AnyValue>,
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
                    key: String::new(),
                    value: None,
                }
            }; SLOTS],
        )
    };
}

/// The slot of `key`: keys of one function differ mostly at their end.
#[inline]
fn slot_of(key: &str) -> usize {
    let bytes = key.as_bytes();
    let mut tail = [0u8; 8];
    let n = bytes.len().min(8);
    tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
    let h = (u64::from_le_bytes(tail) ^ bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 61) as usize % SLOTS
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
        let changes = self.changes.load(Ordering::Acquire);
        let at = slot_of(key);
        let mut read = Some(read);
        let kept = KEPT.try_with(|kept| {
            let kept = kept.try_borrow().ok()?;
            let slot = &kept[at];
            if slot.store != self.id
                || slot.changes != changes
                || slot.until <= now
                || slot.key != key
            {
                return None;
            }
            Some(read.take()?(slot.value.as_ref()?, slot.extra))
        });
        if let Ok(Some(r)) = kept {
            return Some(r);
        }
        let found = lookup()?;
        let r = read.take()?(&found.value, found.extra);
        let _ = KEPT.try_with(|kept| {
            if let Ok(mut kept) = kept.try_borrow_mut() {
                let slot = &mut kept[at];
                slot.store = self.id;
                slot.changes = changes;
                slot.until = found.until;
                slot.extra = found.extra;
                slot.key.clear();
                slot.key.push_str(key);
                // The value it replaces may run a user's Drop: after the borrow ends.
                let replaced = slot.value.replace(found.value);
                drop(kept);
                drop(replaced);
            }
        });
        Some(r)
    }
}
