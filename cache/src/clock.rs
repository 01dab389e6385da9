//! The time source used for expiry.
//!
//! Reading `Instant::now()` or `SystemTime::now()` costs tens of nanoseconds, as much as the
//! whole in-memory hit path, so the system clock here is *coarse*: a background thread stores
//! the time in milliseconds into an atomic once per millisecond, and a read is one relaxed
//! load. Entries can therefore live up to about a millisecond (more if the machine starves the
//! ticker thread) past their TTL, which no cache-aside user can observe as wrong.
//!
//! The time is monotonic: the wall time read once when the clock starts, plus the monotonic
//! time since. A wall clock stepped backwards or forwards later (NTP, an operator) does not
//! move it, so in-memory expiry neither stops nor jumps.
//!
//! Tests use [`Clock::manual`] to move time forward without sleeping.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of "now" in milliseconds, for in-memory expiry.
///
/// The system clock counts from the UNIX epoch at the moment it starts and then advances
/// monotonically, so it can drift from the wall clock by however far that is stepped while the
/// process runs. Nothing outside the process sees it: remote values carry the wall time, which
/// every process shares.
///
/// ```
/// use lexigram_cache::Clock;
/// use std::time::Duration;
///
/// let clock = Clock::manual(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The process-wide coarse system clock (millisecond resolution).
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that stands still at `start_ms` until [`Clock::advance`] or [`Clock::set_ms`]
    /// moves it. Clones share the same time.
    pub fn manual(start_ms: u64) -> Self {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(start_ms))),
        }
    }

    /// Milliseconds: since the UNIX epoch, as of the clock's start (see [`Clock`]).
    #[inline]
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            None => coarse_now_ms(),
            Some(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward. Does nothing on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            t.fetch_add(duration_ms(by), Ordering::Relaxed);
        }
    }

    /// Sets a manual clock. Does nothing on the system clock.
    pub fn set_ms(&self, ms: u64) {
        if let Some(t) = &self.manual {
            t.store(ms, Ordering::Relaxed);
        }
    }
}

/// Whole milliseconds of `d`, rounded up so that a 1 µs TTL does not become "already expired".
pub(crate) fn duration_ms(d: Duration) -> u64 {
    let ms = d.as_millis();
    let ms = if !d.as_nanos().is_multiple_of(1_000_000) {
        ms + 1
    } else {
        ms
    };
    u64::try_from(ms).unwrap_or(u64::MAX)
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

static COARSE: OnceLock<Arc<Coarse>> = OnceLock::new();

#[inline]
fn coarse_now_ms() -> u64 {
    COARSE.get_or_init(start_ticker).read()
}

/// The wall clock as of the ticker's last tick, in milliseconds since the UNIX epoch: for
/// the freshness of values read from a server, whose expiry is a wall time written by
/// whichever process stored them. A read is one relaxed load, where `SystemTime::now()` costs
/// as much as a near-cache hit; the price is that a value can be taken as fresh for about a
/// millisecond past its expiry.
#[inline]
pub(crate) fn coarse_wall_ms() -> u64 {
    COARSE
        .get_or_init(start_ticker)
        .wall
        .load(Ordering::Relaxed)
}

/// The shared coarse reading and what the ticker thread computes it from.
#[derive(Debug)]
struct Coarse {
    reading: AtomicU64,
    /// The wall clock itself, read at each tick.
    wall: AtomicU64,
    /// The wall time when the clock started.
    origin_wall_ms: u64,
    /// The monotonic instant when the clock started.
    origin: Instant,
}

impl Coarse {
    fn new(origin_wall_ms: u64, origin: Instant) -> Coarse {
        Coarse {
            reading: AtomicU64::new(origin_wall_ms),
            wall: AtomicU64::new(wall_ms()),
            origin_wall_ms,
            origin,
        }
    }

    #[inline]
    fn read(&self) -> u64 {
        self.reading.load(Ordering::Relaxed)
    }

    /// One tick of the ticker thread: the start's wall time plus the monotonic time since.
    /// Never the wall clock itself, which NTP or an operator may step either way: stepped
    /// back, expiry would stop until it caught up; stepped forward, every entry would expire.
    fn tick(&self) {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.reading.store(
            self.origin_wall_ms.saturating_add(elapsed),
            Ordering::Relaxed,
        );
        self.wall.store(wall_ms(), Ordering::Relaxed);
    }
}

fn start_ticker() -> Arc<Coarse> {
    let coarse = Arc::new(Coarse::new(wall_ms(), Instant::now()));
    let shared = Arc::clone(&coarse);
    let spawned = std::thread::Builder::new()
        .name("lexigram-cache-clock".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(1));
                shared.tick();
            }
        });
    if spawned.is_err() {
        // Without a ticker the clock would freeze and nothing would expire; a thread spawn
        // failure at this point means the process is out of resources anyway.
        tracing::error!("lexigram-cache: could not start the clock thread; expiry will be late");
    }
    coarse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_moves() {
        let c = Clock::system();
        let a = c.now_ms();
        std::thread::sleep(Duration::from_millis(20));
        assert!(c.now_ms() > a, "the coarse clock did not advance");
        assert!(c.now_ms().abs_diff(wall_ms()) < 1_000);
        let wall = coarse_wall_ms();
        assert!(
            wall.abs_diff(wall_ms()) < 1_000,
            "the coarse wall clock is {wall}, the wall clock {}",
            wall_ms()
        );
    }

    #[test]
    fn a_wall_clock_stepped_back_does_not_stop_the_clock() {
        // The clock started when the wall said one hour later than it says now: the wall
        // clock has since been stepped back an hour.
        let coarse = Coarse::new(wall_ms() + 3_600_000, Instant::now());
        coarse.tick();
        let before = coarse.read();
        std::thread::sleep(Duration::from_millis(30));
        coarse.tick();
        let after = coarse.read();
        assert!(
            after >= before + 30,
            "the clock stood still after the wall clock stepped back: {before} -> {after}"
        );
        assert!(after < before + 60_000, "{before} -> {after}");
    }

    #[test]
    fn rounding_up() {
        assert_eq!(duration_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_ms(Duration::from_millis(5)), 5);
    }
}
