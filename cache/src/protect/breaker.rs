//! A circuit breaker per backend: after `threshold` consecutive failures (timeouts count),
//! calls skip the backend for `open_for`; then one call probes it, and its success closes the
//! breaker again. While open, nothing touches the network, so a sick server costs callers
//! nothing but the body they would run anyway.
//!
//! A probe carries its own deadline: letting it through opens the breaker for one more period,
//! so a probe whose caller is cancelled (a `timeout`, a dropped request, `select!`) and never
//! reports is replaced by the next caller after that period instead of wedging the breaker.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::BackendError;
use crate::events::EventKind;

/// Breaker state, shared by every clone of a cache.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    open_for: Duration,
    /// Consecutive failures.
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which calls skip the backend; 0 when closed. While a
    /// probe is out it holds the probe's deadline.
    open_until: AtomicU64,
    epoch: Instant,
    opened: AtomicU64,
    short_circuits: AtomicU64,
}

/// What the breaker says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Go ahead.
    Call,
    /// Go ahead as the probe of an open breaker.
    Probe,
    /// Skip the backend.
    Open(Duration),
}

impl Breaker {
    /// `threshold` 0 never opens.
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold,
            open_for,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            epoch: Instant::now(),
            opened: AtomicU64::new(0),
            short_circuits: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The end of an open period starting now; saturates, so `open_for` may be any duration.
    fn period_from_now(&self) -> u64 {
        let open_ms = u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX);
        self.now_ms().saturating_add(open_ms).max(1)
    }

    /// Whether a call may go to the backend. The closed case is one relaxed load.
    #[inline]
    pub(crate) fn permit(&self) -> Permit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Permit::Call;
        }
        let now = self.now_ms();
        if now < until {
            self.short_circuits.fetch_add(1, Ordering::Relaxed);
            return Permit::Open(Duration::from_millis(until - now));
        }
        // The period is over: the caller that moves it on by one period is the probe, and the
        // others keep skipping. Should the probe never report, that period ends too and the
        // next caller probes again.
        match self.open_until.compare_exchange(
            until,
            self.period_from_now(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Permit::Probe,
            // A probe that just succeeded closed the breaker.
            Err(0) => Permit::Call,
            Err(other) => {
                self.short_circuits.fetch_add(1, Ordering::Relaxed);
                Permit::Open(Duration::from_millis(other.saturating_sub(now)))
            }
        }
    }

    /// Records the outcome of a permitted call; says whether it opened or closed the breaker,
    /// for the cache's events.
    pub(crate) fn record(
        &self,
        name: &str,
        permit: Permit,
        outcome: Result<(), &BackendError>,
    ) -> Option<EventKind> {
        let failed = match outcome {
            Ok(()) => false,
            // A refused request, one server of several, a full pool: not the backend's health.
            Err(e) if !e.counts_for_breaker() => false,
            Err(_) => true,
        };
        if !failed {
            // Both loaded first: a success on a healthy backend, the usual call, then writes
            // nothing, and the cores calling it do not trade the breaker's cache line.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            if self.open_until.load(Ordering::Acquire) != 0
                && self.open_until.swap(0, Ordering::AcqRel) != 0
            {
                tracing::info!(
                    cache = name,
                    "circuit breaker closed: the backend answers again"
                );
                return Some(EventKind::BreakerClose);
            }
            return None;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.threshold == 0 {
            return None;
        }
        if permit == Permit::Probe || failures >= self.threshold {
            let was_closed = self
                .open_until
                .swap(self.period_from_now(), Ordering::AcqRel)
                == 0;
            if was_closed {
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    cache = name,
                    failures,
                    open_for = ?self.open_for,
                    "circuit breaker opened: the backend is skipped until a probe succeeds"
                );
                return Some(EventKind::BreakerOpen);
            }
        }
        None
    }

    /// Whether calls are being skipped now.
    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Times the breaker opened.
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Calls that skipped the backend.
    pub(crate) fn short_circuits(&self) -> u64 {
        self.short_circuits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> BackendError {
        BackendError::Timeout(Duration::from_millis(1))
    }

    #[test]
    fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert_eq!(b.permit(), Permit::Call);
            b.record("t", Permit::Call, Err(&timeout()));
        }
        assert!(!b.is_open());
        assert_eq!(
            b.record("t", Permit::Call, Err(&timeout())),
            Some(EventKind::BreakerOpen)
        );
        assert!(b.is_open());
        assert_eq!(b.opened(), 1);
        assert!(matches!(b.permit(), Permit::Open(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.permit(), Permit::Probe);
        assert!(matches!(b.permit(), Permit::Open(_)), "one probe at a time");
        // A failed probe opens it again for a full period.
        b.record("t", Permit::Probe, Err(&timeout()));
        assert!(matches!(b.permit(), Permit::Open(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(
            b.record("t", Permit::Probe, Ok(())),
            Some(EventKind::BreakerClose)
        );
        assert!(!b.is_open());
        assert_eq!(b.record("t", Permit::Call, Ok(())), None);
        assert_eq!(b.permit(), Permit::Call);
        assert_eq!(b.opened(), 1, "reopening from half-open is the same outage");
        assert!(b.short_circuits() >= 3);
    }

    /// A probe whose caller was cancelled never reports; after one more period the next
    /// caller probes instead.
    #[test]
    fn a_probe_that_never_reports_is_replaced_after_a_period() {
        let b = Breaker::new(1, Duration::from_millis(30));
        b.record("t", Permit::Call, Err(&timeout()));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.permit(), Permit::Probe);
        // Its future is dropped here: no `record`.
        assert!(matches!(b.permit(), Permit::Open(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            b.permit(),
            Permit::Probe,
            "a new probe after the lost one's period"
        );
        b.record("t", Permit::Probe, Ok(()));
        assert_eq!(b.permit(), Permit::Call);
    }

    /// Any `open_for`, up to `Duration::MAX`, opens without overflow and stays open.
    #[test]
    fn the_longest_open_period_does_not_overflow() {
        let b = Breaker::new(1, Duration::MAX);
        b.record("t", Permit::Call, Err(&timeout()));
        assert!(b.is_open());
        assert!(matches!(b.permit(), Permit::Open(d) if d > Duration::from_secs(1 << 40)));
        let secs = Breaker::new(1, Duration::from_secs(u64::MAX));
        secs.record("t", Permit::Call, Err(&timeout()));
        assert!(matches!(secs.permit(), Permit::Open(_)));
    }

    #[test]
    fn rejected_requests_and_successes_do_not_count() {
        let b = Breaker::new(2, Duration::from_secs(1));
        b.record("t", Permit::Call, Err(&timeout()));
        b.record("t", Permit::Call, Ok(()));
        b.record("t", Permit::Call, Err(&timeout()));
        b.record(
            "t",
            Permit::Call,
            Err(&BackendError::Rejected("too big".into())),
        );
        assert!(!b.is_open());
        let never = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            never.record("t", Permit::Call, Err(&timeout()));
        }
        assert!(!never.is_open());
    }
}
