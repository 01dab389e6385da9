//! Reads of one server that go out together while the server is busy.
//!
//! A read is sent at once while fewer than [`IN_FLIGHT`] round trips of reads are in flight
//! to its server. Past that, it waits for the next of them to end and goes out with every read
//! that waited with it, as one request (`MGET` on Redis, a pipeline of `mg` on Memcached).
//! Under load that makes one request of many: the client builds, sends and parses fewer
//! requests, and the server runs fewer commands, so a busy process spends less CPU on each
//! hit, where more requests in flight would only queue on the same connection and the same
//! server thread. A process that is not that busy sends each read at once, as if there were
//! no batching.
//!
//! The limit only saves work; it never holds a read for long. A waiting batch goes out after
//! [`PATIENCE`] even if no round trip has ended (a slow server, or a caller that holds its
//! read without polling it), and every read still ends within the operation timeout counted
//! from when it started, however long it waited.

use std::future::Future;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::BackendError;

/// Round trips of reads in flight to one server before more reads wait to go out together:
/// enough to keep a connection busy across a network's round trip, few enough that a busy
/// process makes one request of many. (Measured on loopback with 64 tasks reading: 2 and 4
/// took the least time per hit, 8 and 16 a fifth more.)
pub(crate) const IN_FLIGHT: usize = 4;

/// How long a batch waits for a round trip to end before it goes out anyway. Well above a
/// loopback or same-zone round trip under load, so that busy reads do batch; short enough
/// that a stalled round trip adds little to the reads queued behind it.
pub(crate) const PATIENCE: Duration = Duration::from_millis(2);

/// What one read answers.
pub(crate) type Read = Result<Option<Vec<u8>>, BackendError>;

/// The keys of a waiting batch, kept in the form its request takes, so that a read that
/// waits adds its key without an allocation of its own.
pub(crate) trait Keys: Send + 'static {
    /// No keys yet, with room for `n`.
    fn with_room(n: usize) -> Self;

    /// How many keys.
    fn len(&self) -> usize;
}

impl<K: Send + 'static> Keys for Vec<K> {
    fn with_room(n: usize) -> Self {
        Vec::with_capacity(n)
    }

    fn len(&self) -> usize {
        self.len()
    }
}

/// A server's end of batched reads: one request for several keys.
pub(crate) trait Batch<K: Keys>: Send + 'static {
    /// The batches of the server the reads go to.
    fn reads(&self) -> &Reads<K>;

    /// The values of `keys`, in their order, in one round trip that ends by `deadline`.
    fn read_many(
        &self,
        keys: K,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, BackendError>> + Send;
}

/// The reads in flight to one server, and those waiting to go out together.
pub(crate) struct Reads<K> {
    state: Mutex<State<K>>,
    limit: usize,
    op_timeout: Duration,
}

struct State<K> {
    in_flight: usize,
    /// The waiting batch.
    waiting: Waiting<K>,
    /// Counts the batches taken to go out, so that a read knows whether its batch still waits.
    taken: u64,
    /// The largest batch yet: the next one gets room for as many reads, so that it seldom
    /// grows while the lock is held.
    room: usize,
}

/// Reads waiting to go out together.
struct Waiting<K> {
    keys: K,
    replies: Vec<oneshot::Sender<Read>>,
    /// When the first of them started: they all end within the operation timeout of it.
    since: Option<Instant>,
}

impl<K: Keys> Waiting<K> {
    fn with_room(n: usize) -> Waiting<K> {
        Waiting {
            keys: K::with_room(n),
            replies: Vec::with_capacity(n),
            since: None,
        }
    }
}

/// How a read goes out.
pub(crate) enum Turn<'a, K: Keys, B: Batch<K>, F: FnOnce() -> B> {
    /// Now, on its own. The slot is given back when dropped (the read answered, or its caller
    /// gave it up), to the batch waiting then, if any.
    Now(Slot<'a, K, B, F>),
    /// With a batch: [`Wait::answer`].
    Later(Wait<'a, K>),
}

impl<K: Keys> Reads<K> {
    /// Batches for a server that may have `limit` (at least one) round trips of reads in
    /// flight before reads wait, each bounded by `op_timeout`.
    pub(crate) fn new(limit: usize, op_timeout: Duration) -> Reads<K> {
        Reads {
            state: Mutex::new(State {
                in_flight: 0,
                waiting: Waiting::with_room(0),
                taken: 0,
                room: 0,
            }),
            limit: limit.max(1),
            op_timeout,
        }
    }

    /// Where a read goes: out now, or with the waiting batch, whose keys `push` adds its key
    /// to; `batch` is what sends a batch, if this read's turn has to.
    pub(crate) fn turn<B: Batch<K>, F: FnOnce() -> B>(
        &self,
        push: impl FnOnce(&mut K),
        batch: F,
    ) -> Turn<'_, K, B, F> {
        let mut state = self.state.lock();
        if state.in_flight < self.limit && state.waiting.since.is_none() {
            state.in_flight += 1;
            return Turn::Now(Slot {
                reads: self,
                batch: Some(batch),
            });
        }
        let now = Instant::now();
        let first = match state.waiting.since {
            None => true,
            // A batch that waited past its patience (its first read's caller holds that read
            // without polling it) goes out now, and this read starts the next one.
            Some(since) if now.duration_since(since) > PATIENCE => {
                self.send_now(state, batch);
                state = self.state.lock();
                state.waiting.since.is_none()
            }
            Some(_) => false,
        };
        if first {
            state.waiting.since = Some(now);
        }
        let (reply, answer) = oneshot::channel();
        push(&mut state.waiting.keys);
        state.waiting.replies.push(reply);
        Turn::Later(Wait {
            reads: self,
            answer,
            first: first.then_some(state.taken),
        })
    }

    /// Sends the waiting batch, if any, on a slot of its own, past the limit: for a batch that
    /// waited its patience out.
    fn send_now<B: Batch<K>>(
        &self,
        mut state: MutexGuard<'_, State<K>>,
        batch: impl FnOnce() -> B,
    ) {
        let Some(waiting) = self.take(&mut state) else {
            return;
        };
        state.in_flight += 1;
        drop(state);
        spawn(self, batch(), waiting);
    }

    /// The waiting batch, taken to go out on the slot of a round trip that ended, or on a new
    /// one; `None` if no read waits.
    fn take(&self, state: &mut State<K>) -> Option<Waiting<K>> {
        state.waiting.since?;
        state.taken += 1;
        state.room = state.room.max(state.waiting.keys.len());
        let next = Waiting::with_room(state.room);
        Some(std::mem::replace(&mut state.waiting, next))
    }
}

/// Sends `waiting` and every batch that waits once it is answered, on one slot, in a task of
/// its own: the reads of a batch get their answers even if the caller whose turn sent it
/// stops waiting. Outside a runtime nothing can send it: its reads fail (their channels
/// close) and the slot is given back.
fn spawn<K: Keys, B: Batch<K>>(reads: &Reads<K>, batch: B, waiting: Waiting<K>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(send(batch, waiting));
        }
        Err(_) => {
            drop(waiting);
            reads.state.lock().in_flight -= 1;
        }
    }
}

/// A round trip's place among those in flight.
pub(crate) struct Slot<'a, K: Keys, B: Batch<K>, F: FnOnce() -> B> {
    reads: &'a Reads<K>,
    batch: Option<F>,
}

impl<K: Keys, B: Batch<K>, F: FnOnce() -> B> Drop for Slot<'_, K, B, F> {
    fn drop(&mut self) {
        let taken = {
            let mut state = self.reads.state.lock();
            let taken = self.reads.take(&mut state);
            if taken.is_none() {
                state.in_flight -= 1;
            }
            taken
        };
        if let Some(waiting) = taken {
            match self.batch.take() {
                Some(batch) => spawn(self.reads, batch(), waiting),
                None => {
                    drop(waiting);
                    self.reads.state.lock().in_flight -= 1;
                }
            }
        }
    }
}

/// A read waiting for its batch.
pub(crate) struct Wait<'a, K> {
    reads: &'a Reads<K>,
    answer: oneshot::Receiver<Read>,
    /// For the first read of a batch, which sends it if no round trip ends within
    /// [`PATIENCE`]: the count of batches taken when it started waiting.
    first: Option<u64>,
}

impl<K: Keys> Wait<'_, K> {
    /// The read's answer, once its batch has gone out and come back.
    pub(crate) async fn answer<B: Batch<K>>(self, batch: impl FnOnce() -> B) -> Read {
        let Wait {
            reads,
            mut answer,
            first,
        } = self;
        if let Some(number) = first {
            let mut rescue = Rescue {
                reads,
                number,
                batch: Some(batch),
            };
            if let Ok(read) = tokio::time::timeout(PATIENCE, &mut answer).await {
                rescue.batch = None;
                return flatten(read);
            }
            // Dropped here: sends the batch if it still waits.
        }
        flatten(answer.await)
    }
}

/// Sends the batch of the first read when dropped, if the batch still waits: when the read
/// gave up waiting for a round trip to end, and when its caller stopped waiting before that
/// (the reads waiting with it must not depend on it).
struct Rescue<'a, K: Keys, B: Batch<K>, F: FnOnce() -> B> {
    reads: &'a Reads<K>,
    number: u64,
    batch: Option<F>,
}

impl<K: Keys, B: Batch<K>, F: FnOnce() -> B> Drop for Rescue<'_, K, B, F> {
    fn drop(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let state = self.reads.state.lock();
        if state.taken == self.number {
            self.reads.send_now(state, batch);
        }
    }
}

fn flatten(answer: Result<Read, oneshot::error::RecvError>) -> Read {
    answer.unwrap_or_else(|_| {
        Err(BackendError::Other(
            "the batched read was dropped with its runtime".into(),
        ))
    })
}

/// The task of a slot: sends the batch, hands out the answers, and goes on while reads wait.
async fn send<K: Keys, B: Batch<K>>(batch: B, mut waiting: Waiting<K>) {
    let reads = batch.reads();
    let mut held = Held { reads, held: true };
    loop {
        let Waiting {
            keys,
            replies,
            since,
        } = waiting;
        let deadline = since.unwrap_or_else(Instant::now) + reads.op_timeout;
        let expected = keys.len();
        match batch.read_many(keys, deadline).await {
            Ok(values) if values.len() == expected => {
                for (reply, value) in replies.into_iter().zip(values) {
                    // A read whose caller stopped waiting has no receiver: nothing to do.
                    let _ = reply.send(Ok(value));
                }
            }
            Ok(values) => fail(
                replies,
                &BackendError::Protocol(format!(
                    "a read of {expected} keys answered {} values",
                    values.len()
                )),
            ),
            Err(e) => fail(replies, &e),
        }
        // The slot goes on to the batch that waits now; with none, it is given back, under
        // the same lock, so that no read starts to wait for a slot that is free.
        let mut state = reads.state.lock();
        match reads.take(&mut state) {
            Some(next) => waiting = next,
            None => {
                state.in_flight -= 1;
                held.held = false;
                return;
            }
        }
    }
}

/// The slot of a batch's task, given back if the runtime drops the task half-way.
struct Held<'a, K> {
    reads: &'a Reads<K>,
    held: bool,
}

impl<K> Drop for Held<'_, K> {
    fn drop(&mut self) {
        if self.held {
            self.reads.state.lock().in_flight -= 1;
        }
    }
}

fn fail(replies: Vec<oneshot::Sender<Read>>, e: &BackendError) {
    for reply in replies {
        let _ = reply.send(Err(e.clone()));
    }
}
