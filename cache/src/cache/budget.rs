//! The cache budget of one cached call, and the writes that outlive their call.
//!
//! Every round trip of one fill (the read, the fill lock and its polls, the store and the
//! unlock) takes its time from one [`Budget`]. A round trip that would overrun it is cut, and
//! the call goes on without the cache: a frozen server costs a caller one budget, not one
//! operation timeout per round trip. Time spent waiting for another caller's body (between
//! lock polls, for an in-process leader) is not cache I/O and is bounded by `lock_wait` and
//! `fill_wait` instead.
//!
//! A write the budget cannot wait for is not cut: it goes on in a background task, so the
//! value still lands when the server answers again. At most [`BACKGROUND_CAP`] such writes
//! are in flight per cache; past that a write is dropped and counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Cache;
use crate::store::Store;

/// Writes in flight in the background per cache, at most: enough for any burst a healthy
/// server absorbs, and a bound on the memory a frozen one can make callers leave behind.
pub(crate) const BACKGROUND_CAP: usize = 1024;

/// A remainder too small for any round trip counts as spent, so that a call does not start
/// a round trip it is about to cut (a cut lock attempt may still take the lock on the server).
const LEAST: Duration = Duration::from_millis(1);

/// What is left of one call's cache budget.
pub(crate) struct Budget {
    /// `None`: unbounded (a backend that bounds nothing, with no budget configured).
    left: Option<Duration>,
    /// A round trip given this long that is cut counts as a backend timeout.
    full: Duration,
    /// The backend's own operation timeout, which bounds each of its round trips.
    bound: Option<Duration>,
}

impl Budget {
    pub(crate) fn new(budget: Option<Duration>, op_timeout: Option<Duration>) -> Budget {
        let full = match (budget, op_timeout) {
            (Some(b), Some(t)) => b.min(t),
            (Some(b), None) => b,
            (None, _) => Duration::ZERO,
        };
        Budget {
            left: budget,
            full,
            bound: op_timeout,
        }
    }

    /// Whether nothing is left for another round trip.
    pub(crate) fn spent(&self) -> bool {
        self.left.is_some_and(|left| left < LEAST)
    }

    /// Runs one round trip of the call within what is left: `None` when the budget was spent
    /// before or during it (the round trip is dropped, and counted as a timeout if it had as
    /// long as a full one).
    ///
    /// Not an `async fn`: one would keep the round trip twice in its state (the argument, and
    /// the copy moved into the await of whichever way it runs), which made the future of every
    /// cached call on a remote backend a few kB, past the block size the allocator serves per
    /// thread. Here the round trip is moved once, into the future returned.
    pub(crate) fn io<'a, R: 'a>(
        &'a mut self,
        store: &'a Store,
        op: &'static str,
        key: &'a str,
        round_trip: impl Future<Output = R> + 'a,
    ) -> impl Future<Output = Option<R>> + 'a {
        use futures::future::{Either, FutureExt};
        let left = match self.left {
            None => return Either::Left(round_trip.map(Some)),
            Some(left) => left,
        };
        if left < LEAST {
            return Either::Right(Either::Left(std::future::ready(None)));
        }
        let started = Instant::now();
        // With a whole operation timeout left, the backend's own timeout ends the round trip
        // at the same moment. Cutting it here first would hide that timeout from the backend,
        // which counts timeouts in a row to replace a connection whose peer went silent.
        let timed = if self.bound.is_some_and(|bound| left >= bound) {
            Either::Left(round_trip.map(Ok))
        } else {
            Either::Right(tokio::time::timeout(left, round_trip))
        };
        let full = self.full;
        Either::Right(Either::Right(timed.map(move |r| match r {
            Ok(r) => {
                self.left = Some(left.saturating_sub(started.elapsed()));
                Some(r)
            }
            Err(_) => {
                self.left = Some(Duration::ZERO);
                store.cut(op, key, left, left >= full);
                None
            }
        })))
    }

    /// Runs a write of the call within what is left; a write still going when the budget is
    /// spent finishes in the background (see [`Background`]).
    pub(crate) async fn write(
        &mut self,
        cache: &Cache,
        write: impl Future<Output = ()> + Send + 'static,
    ) {
        let Some(left) = self.left else {
            return write.await;
        };
        let mut write: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(write);
        let started = Instant::now();
        match tokio::time::timeout(left, &mut write).await {
            Ok(()) => self.left = Some(left.saturating_sub(started.elapsed())),
            Err(_) => {
                self.left = Some(Duration::ZERO);
                cache.in_background(write);
            }
        }
    }
}

/// The writes of one cache that outlived their call.
#[derive(Debug, Default)]
pub(crate) struct Background {
    in_flight: AtomicUsize,
    started: AtomicU64,
    dropped: AtomicU64,
}

impl Background {
    /// Writes handed to the background so far.
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Writes dropped because [`BACKGROUND_CAP`] were in flight.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Gives back a background write's place when its task ends, however it ends.
struct Place(Cache);

impl Drop for Place {
    fn drop(&mut self) {
        self.0
            .inner
            .background
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Cache {
    /// Finishes `write` in a task of its own, unless [`BACKGROUND_CAP`] writes are in flight
    /// already (or no runtime is running): then it is dropped and counted. Its errors are
    /// logged and counted where they happen, like those of any write.
    pub(crate) fn in_background(&self, write: impl Future<Output = ()> + Send + 'static) {
        let background = &self.inner.background;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            background.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if background.in_flight.fetch_add(1, Ordering::AcqRel) >= BACKGROUND_CAP {
            background.in_flight.fetch_sub(1, Ordering::AcqRel);
            let dropped = background.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // One line per thousand drops: a frozen server under load drops thousands.
            if dropped % 1000 == 1 {
                tracing::warn!(
                    cache = %self.name(),
                    dropped,
                    cap = BACKGROUND_CAP,
                    "a cache write was dropped: {BACKGROUND_CAP} writes are already waiting for the backend in the background"
                );
            }
            return;
        }
        background.started.fetch_add(1, Ordering::Relaxed);
        let place = Place(self.clone());
        runtime.spawn(async move {
            write.await;
            drop(place);
        });
    }
}
