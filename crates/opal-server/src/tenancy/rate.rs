//! Rate limits: the generic cell rate algorithm (GCRA), on the server's [`Clock`].
//!
//! `governor` implements the same algorithm, but on its own clocks; quotas here must follow the
//! clock the rest of the server uses (key expiry, tests with a manual clock), and need little
//! else: one theoretical arrival time per limited thing.

use opal_core::Clock;

/// A sustained rate of `per_second` units with a burst of one second's worth.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    per_second: u64,
    /// Theoretical arrival time in nanoseconds since the epoch.
    tat_ns: i128,
}

/// Why units were not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// They would fit after this wait.
    Later(RetryAfter),
    /// More than a whole burst: they never fit.
    Never,
}

/// How long to wait before the refused request would fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryAfter {
    pub(crate) ms: u64,
}

impl RetryAfter {
    /// For `Retry-After`: whole seconds, rounded up, at least 1.
    pub(crate) fn secs(self) -> u64 {
        self.ms.div_ceil(1000).max(1)
    }
}

const NANOS_PER_SECOND: i128 = 1_000_000_000;

impl RateLimit {
    pub(crate) fn per_second(per_second: u64) -> Self {
        RateLimit {
            per_second: per_second.max(1),
            tat_ns: i128::MIN / 2,
        }
    }

    /// Takes `units` now, or says how long until they would fit (and takes nothing).
    pub(crate) fn take(&mut self, clock: &Clock, units: u64) -> Result<(), Refused> {
        // Each unit costs 1/per_second of a second, computed per call in nanoseconds (rounded
        // up): exact for any rate a u64 can state, unlike a per-unit interval that rounds to
        // zero for rates above a billion per second.
        let rate = i128::from(self.per_second);
        let cost = (i128::from(units) * NANOS_PER_SECOND + rate - 1) / rate;
        if cost > NANOS_PER_SECOND {
            return Err(Refused::Never);
        }
        let now = i128::from(clock.now_ms()) * 1_000_000;
        let new_tat = self.tat_ns.max(now) + cost;
        let allowed_at = new_tat - NANOS_PER_SECOND;
        if allowed_at <= now {
            self.tat_ns = new_tat;
            Ok(())
        } else {
            let wait_ns = u64::try_from(allowed_at - now).unwrap_or(u64::MAX);
            Err(Refused::Later(RetryAfter {
                ms: wait_ns.div_ceil(1_000_000),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn clock() -> Clock {
        Clock::manual(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn a_burst_of_one_second_then_the_sustained_rate() {
        let clock = clock();
        let mut limit = RateLimit::per_second(10);
        for _ in 0..10 {
            limit.take(&clock, 1).unwrap();
        }
        let refused = limit.take(&clock, 1).unwrap_err();
        assert_eq!(refused, Refused::Later(RetryAfter { ms: 100 }));
        assert_eq!(RetryAfter { ms: 100 }.secs(), 1);
        assert_eq!(RetryAfter { ms: 1001 }.secs(), 2);
        clock.advance(Duration::from_millis(100));
        limit.take(&clock, 1).unwrap();
        assert!(limit.take(&clock, 1).is_err());
        // A quiet second refills the burst, and no more than that.
        clock.advance(Duration::from_secs(5));
        limit.take(&clock, 10).unwrap();
        assert!(limit.take(&clock, 1).is_err());
    }

    #[test]
    fn a_refused_request_takes_nothing() {
        let clock = clock();
        let mut limit = RateLimit::per_second(100);
        limit.take(&clock, 60).unwrap();
        assert_eq!(
            limit.take(&clock, 50).unwrap_err(),
            Refused::Later(RetryAfter { ms: 100 })
        );
        limit.take(&clock, 40).unwrap();
    }

    #[test]
    fn high_rates_are_not_rounded_away() {
        let clock = clock();
        let mut limit = RateLimit::per_second(100_000_000_000);
        // 10 MB in one second is far below 100 GB/s: always allowed.
        for _ in 0..1000 {
            limit.take(&clock, 10_000).unwrap();
        }
        let mut exact = RateLimit::per_second(3);
        exact.take(&clock, 3).unwrap();
        assert_eq!(
            exact.take(&clock, 1).unwrap_err(),
            Refused::Later(RetryAfter { ms: 334 })
        );
    }

    #[test]
    fn more_than_a_burst_never_fits() {
        let clock = clock();
        let mut limit = RateLimit::per_second(5);
        assert_eq!(limit.take(&clock, 6).unwrap_err(), Refused::Never);
        limit.take(&clock, 5).unwrap();
    }
}
