//! In-process single flight: at most one fill per key at a time.
//!
//! The first caller of a cold key becomes the *leader* and runs the body in its own task (it is
//! not spawned, so cancelling the caller cancels the body). Others become *waiters* on a watch
//! channel. The leader publishes its value through the channel; if the leader's future is
//! dropped or panics, its sender is dropped with it, the waiters wake up, and the first of them
//! to come back becomes the new leader. Nobody hangs on a leader that is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::backend::memory::AnyValue;

/// What a leader hands its waiters.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) value: AnyValue,
    /// The value is an expired one served because the body failed (stale-if-error).
    pub(crate) stale: bool,
}

type Slot = Option<Shared>;

#[derive(Default)]
pub(crate) struct SingleFlight {
    flights: Mutex<HashMap<String, (u64, watch::Receiver<Slot>)>>,
    next_id: AtomicU64,
}

pub(crate) enum Join<'a> {
    Leader(Leader<'a>),
    Waiter(watch::Receiver<Slot>),
}

pub(crate) struct Leader<'a> {
    owner: &'a SingleFlight,
    key: String,
    id: u64,
    tx: watch::Sender<Slot>,
}

impl SingleFlight {
    pub(crate) fn join(&self, key: &str) -> Join<'_> {
        let mut flights = self.flights.lock();
        if let Some((_, rx)) = flights.get(key) {
            return Join::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        flights.insert(key.to_owned(), (id, rx));
        Join::Leader(Leader {
            owner: self,
            key: key.to_owned(),
            id,
            tx,
        })
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

impl Leader<'_> {
    /// Hands the value to every waiter and ends the flight.
    pub(crate) fn publish(self, value: AnyValue, stale: bool) {
        // An error only means there are no waiters.
        let _ = self.tx.send(Some(Shared { value, stale }));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut flights = self.owner.flights.lock();
        if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            flights.remove(&self.key);
        }
        // `tx` is dropped after this, waking waiters that did not get a value.
    }
}

/// Waits for the leader. `None` when the leader went away without a value.
pub(crate) async fn wait(mut rx: watch::Receiver<Slot>) -> Option<Shared> {
    let waited = rx.wait_for(Option::is_some).await.map(|v| v.clone());
    match waited {
        Ok(v) => v,
        // The sender is gone; it may still have sent a value just before.
        Err(_) => rx.borrow().clone(),
    }
}

tokio::task_local! {
    /// The (cache, key) fills the current task is leading, so that a body that calls its own
    /// key again runs directly instead of waiting for itself.
    static FILLING: Vec<(usize, String)>;
}

pub(crate) fn is_reentrant(cache_id: usize, key: &str) -> bool {
    FILLING
        .try_with(|f| f.iter().any(|(c, k)| *c == cache_id && k == key))
        .unwrap_or(false)
}

/// Runs `fut` marked as filling `(cache_id, key)`.
pub(crate) async fn scoped<F: Future>(cache_id: usize, key: &str, fut: F) -> F::Output {
    let mut stack = FILLING.try_with(Clone::clone).unwrap_or_default();
    stack.push((cache_id, key.to_owned()));
    FILLING.scope(stack, fut).await
}
