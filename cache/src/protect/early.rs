//! XFetch early refresh (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache
//! Stampede Prevention", VLDB 2015), and TTL jitter.

use std::time::Duration;

/// Whether a read at `now_ms` of a value expiring at `expires_ms`, whose computation took
/// `delta_ms`, should refresh it now: `now - delta * beta * ln(u) >= expiry`, with `u` uniform
/// in (0, 1]. The closer to expiry and the slower the computation, the likelier.
pub(crate) fn should_refresh(
    now_ms: u64,
    expires_ms: u64,
    delta_ms: f64,
    beta: f64,
    u: f64,
) -> bool {
    if expires_ms == 0 || delta_ms <= 0.0 || beta <= 0.0 {
        return false;
    }
    let u = u.clamp(f64::MIN_POSITIVE, 1.0);
    now_ms as f64 - delta_ms * beta * u.ln() >= expires_ms as f64
}

/// Whether any draw could make [`should_refresh`] true: the largest `-ln(u)` a draw gives
/// (`u` is clamped to `f64::MIN_POSITIVE`) is under 709, so a value further than
/// `709 * delta * beta` from its expiry is never refreshed, and a hit on it needs no draw.
pub(crate) fn may_refresh(now_ms: u64, expires_ms: u64, delta_ms: f64, beta: f64) -> bool {
    expires_ms != 0
        && delta_ms > 0.0
        && beta > 0.0
        && expires_ms as f64 - now_ms as f64 <= delta_ms * beta * 709.0
}

/// `ttl` scaled by a factor in `[1 - jitter, 1 + jitter]` chosen by `u` in `[0, 1)`, so keys
/// written together do not expire together. Never below 1 ms; a ttl scaled past the largest
/// `Duration` is the largest `Duration` (any ttl is accepted, up to `Duration::MAX`).
pub(crate) fn jittered(ttl: Duration, jitter: f64, u: f64) -> Duration {
    if jitter.is_nan() || jitter <= 0.0 {
        return ttl;
    }
    let factor = 1.0 + jitter.min(1.0) * (2.0 * u - 1.0);
    Duration::try_from_secs_f64(ttl.as_secs_f64() * factor.max(0.0))
        .unwrap_or(Duration::MAX)
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn the_rule_at_fixed_draws() {
        // 100 ms before expiry, a 10 ms computation: only a very small u triggers.
        assert!(!should_refresh(900, 1000, 10.0, 1.0, 0.5));
        assert!(should_refresh(900, 1000, 10.0, 1.0, 1e-5));
        // At or past expiry, always.
        assert!(should_refresh(1000, 1000, 10.0, 1.0, 1.0));
        // No expiry or no measured cost: never.
        assert!(!should_refresh(900, 0, 10.0, 1.0, 1e-9));
        assert!(!should_refresh(900, 1000, 0.0, 1.0, 1e-9));
        // A larger beta refreshes earlier.
        assert!(should_refresh(900, 1000, 10.0, 50.0, 0.5));
    }

    /// Whenever no draw may refresh, not even the most extreme one does.
    #[test]
    fn may_refresh_is_false_only_where_no_draw_refreshes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..100_000 {
            let expires: u64 = rng.random_range(1..10_000_000);
            let now: u64 = rng.random_range(0..10_000_000);
            let delta: f64 = rng.random_range(0.001..10_000.0);
            let beta: f64 = rng.random_range(0.01..10.0);
            if !may_refresh(now, expires, delta, beta) {
                assert!(
                    !should_refresh(now, expires, delta, beta, 0.0),
                    "now {now} expires {expires} delta {delta} beta {beta}"
                );
            }
        }
        // Near expiry a draw may refresh; far from it none may.
        assert!(may_refresh(900, 1000, 10.0, 1.0));
        assert!(!may_refresh(0, 3_600_000, 0.05, 1.0));
        assert!(!may_refresh(900, 0, 10.0, 1.0));
    }

    /// Over many simulated reads of a hot key, refreshes cluster just before expiry: the rate
    /// rises steeply in the last few computation times and is close to zero before.
    #[test]
    fn refreshes_cluster_just_before_expiry() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (expires, delta) = (10_000u64, 100.0);
        let mut first_refresh = Vec::new();
        for _ in 0..500 {
            // One read per ms from t = 0 until the first refresh.
            let t = (0..=expires)
                .find(|&now| should_refresh(now, expires, delta, 1.0, rng.random::<f64>()))
                .expect("at expiry at the latest");
            first_refresh.push(expires - t);
        }
        first_refresh.sort_unstable();
        let median = first_refresh[first_refresh.len() / 2];
        // With one read per ms the first refresh comes within a few deltas of expiry.
        assert!((100..=600).contains(&median), "median lead {median} ms");
        assert!(
            first_refresh.iter().all(|&lead| lead < 2_000),
            "never far ahead"
        );
    }

    #[test]
    fn jitter_stays_in_its_band_and_spreads() {
        let ttl = Duration::from_secs(100);
        assert_eq!(jittered(ttl, 0.0, 0.9), ttl);
        assert_eq!(jittered(ttl, 0.1, 0.0), Duration::from_secs(90));
        assert_eq!(jittered(ttl, 0.1, 0.5), ttl);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let all: Vec<Duration> = (0..1000)
            .map(|_| jittered(ttl, 0.1, rng.random()))
            .collect();
        assert!(all.iter().all(|d| (90..=110).contains(&d.as_secs())));
        let distinct: std::collections::HashSet<_> = all.iter().map(Duration::as_millis).collect();
        assert!(distinct.len() > 500);
        assert_eq!(
            jittered(Duration::from_millis(1), 1.0, 0.0),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn the_longest_ttls_saturate_instead_of_panicking() {
        for ttl in [Duration::from_secs(u64::MAX), Duration::MAX] {
            assert_eq!(jittered(ttl, 0.1, 0.99), Duration::MAX);
            assert!(jittered(ttl, 0.1, 0.0) > Duration::from_secs(u64::MAX / 2));
        }
        assert_eq!(
            jittered(Duration::from_secs(5), f64::NAN, 0.5),
            Duration::from_secs(5)
        );
    }
}
