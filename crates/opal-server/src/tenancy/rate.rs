//! Rate limits: the generic cell rate algorithm (GCRA), on the server's [`Clock`].
//!
//! `governor` implements the same algorithm, but on its own clocks; quotas here must follow the
//! clock the rest of the server uses (key expiry, tests with a manual clock), and need little
//! else: one theoretical arrival time per limited thing.

use opal_core::Clock;

/// A sustained rate of `per_second` units with a burst of one second's worth.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    /// Microseconds each unit uses up.
    interval_us: u64,
    /// How far ahead of now the theoretical arrival time may run (the burst).
    burst_us: u64,
    /// Theoretical arrival time in microseconds since the epoch.
    tat_us: i64,
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

impl RateLimit {
    pub(crate) fn per_second(per_second: u64) -> Self {
        let interval_us = 1_000_000 / per_second.max(1);
        RateLimit {
            interval_us: interval_us.max(1),
            burst_us: 1_000_000,
            tat_us: i64::MIN,
        }
    }

    /// Takes `units` now, or says how long until they would fit (and takes nothing).
    pub(crate) fn take(&mut self, clock: &Clock, units: u64) -> Result<(), Refused> {
        let now_us = clock.now_ms().saturating_mul(1000);
        let cost = self.interval_us.saturating_mul(units);
        if cost > self.burst_us {
            return Err(Refused::Never);
        }
        let tat = self.tat_us.max(now_us);
        let new_tat = tat.saturating_add(i64::try_from(cost).unwrap_or(i64::MAX));
        let allowed_at = new_tat.saturating_sub(i64::try_from(self.burst_us).unwrap_or(0));
        if allowed_at <= now_us {
            self.tat_us = new_tat;
            Ok(())
        } else {
            let wait_us = u64::try_from(allowed_at - now_us).unwrap_or(u64::MAX);
            Err(Refused::Later(RetryAfter {
                ms: wait_us.div_ceil(1000),
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
    fn more_than_a_burst_never_fits() {
        let clock = clock();
        let mut limit = RateLimit::per_second(5);
        assert_eq!(limit.take(&clock, 6).unwrap_err(), Refused::Never);
        limit.take(&clock, 5).unwrap();
    }
}
