//! A per-endpoint send rate limit: GCRA over a caller-supplied clock.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per endpoint, the theoretical
//! arrival time of the next send, instead of a token count that would need refilling; a burst
//! is how far ahead of its schedule the sender may run. Time is milliseconds on the caller's
//! clock, as in [`crate::breaker`].

use std::time::Duration;

use crate::error::DispatchError;

/// Limits sends to `count` per `period`, allowing `burst` sends at once after a quiet spell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimiter {
    /// Time between sends at the steady rate.
    interval_us: u64,
    /// How far ahead of schedule a send may be: `(burst - 1)` intervals.
    tolerance_us: u64,
    /// The theoretical arrival time of the next send.
    tat_us: u64,
}

impl RateLimiter {
    /// `count` sends per `period`, with bursts of up to `burst` sends. All must be non-zero,
    /// and the period at least one microsecond per send.
    pub fn new(count: u32, period: Duration, burst: u32) -> Result<Self, DispatchError> {
        let bad = |reason: &str| Err(DispatchError::config("rate limit", reason));
        if count == 0 {
            return bad("the rate must allow at least one send");
        }
        if burst == 0 {
            return bad("the burst must be at least 1");
        }
        let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        let interval_us = period_us / u64::from(count);
        if interval_us == 0 {
            return bad("the rate is faster than one send per microsecond");
        }
        Ok(RateLimiter {
            interval_us,
            tolerance_us: interval_us.saturating_mul(u64::from(burst) - 1),
            tat_us: 0,
        })
    }

    /// `per_minute` sends per minute, the unit of `WebHook-Allowed-Rate`.
    pub fn per_minute(per_minute: u32, burst: u32) -> Result<Self, DispatchError> {
        Self::new(per_minute, Duration::from_secs(60), burst)
    }

    /// Takes a send slot if one is free at `now_ms`; otherwise takes nothing and says how long
    /// to wait (in whole milliseconds, rounded up, so asking again after it succeeds).
    pub fn try_acquire(&mut self, now_ms: u64) -> Result<(), Duration> {
        let now_us = now_ms.saturating_mul(1_000);
        let wait = self.wait_us(now_us);
        if wait > 0 {
            return Err(Duration::from_millis(wait.div_ceil(1_000)));
        }
        self.tat_us = self.tat_us.max(now_us).saturating_add(self.interval_us);
        Ok(())
    }

    /// How long until a send would be allowed, without taking it; zero if one may go now.
    pub fn wait_time(&self, now_ms: u64) -> Duration {
        let wait = self.wait_us(now_ms.saturating_mul(1_000));
        Duration::from_millis(wait.div_ceil(1_000))
    }

    fn wait_us(&self, now_us: u64) -> u64 {
        let allowed_at = self.tat_us.saturating_sub(self.tolerance_us);
        allowed_at.saturating_sub(now_us)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steady_rate_without_burst() {
        let mut r = RateLimiter::per_minute(60, 1).unwrap();
        assert_eq!(r.try_acquire(1_000), Ok(()));
        assert_eq!(r.try_acquire(1_000), Err(ms(1_000)));
        assert_eq!(r.try_acquire(1_999), Err(ms(1)));
        assert_eq!(r.try_acquire(2_000), Ok(()));
        assert_eq!(r.wait_time(2_000), ms(1_000));
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut r = RateLimiter::per_minute(60, 3).unwrap();
        for _ in 0..3 {
            assert_eq!(r.try_acquire(0), Ok(()));
        }
        assert_eq!(r.try_acquire(0), Err(ms(1_000)));
        assert_eq!(r.try_acquire(1_000), Ok(()));
        assert_eq!(r.try_acquire(1_000), Err(ms(1_000)));
        // A quiet spell refills the burst, but never beyond it.
        for _ in 0..3 {
            assert_eq!(r.try_acquire(60_000), Ok(()));
        }
        assert!(r.try_acquire(60_000).is_err());
    }

    #[test]
    fn refused_attempts_take_nothing() {
        let mut r = RateLimiter::per_minute(60, 1).unwrap();
        r.try_acquire(0).unwrap();
        for _ in 0..100 {
            assert!(r.try_acquire(500).is_err());
        }
        assert_eq!(r.try_acquire(1_000), Ok(()));
    }

    #[test]
    fn uneven_rates_round_the_wait_up() {
        // 7 per minute: 8571.43 ms apart.
        let mut r = RateLimiter::per_minute(7, 1).unwrap();
        r.try_acquire(0).unwrap();
        let wait = r.try_acquire(0).unwrap_err();
        assert_eq!(wait, ms(8_572));
        assert_eq!(r.try_acquire(8_572), Ok(()));
    }

    #[test]
    fn wait_time_does_not_consume() {
        let r = RateLimiter::per_minute(60, 2).unwrap();
        assert_eq!(r.wait_time(0), Duration::ZERO);
        assert_eq!(r.wait_time(0), Duration::ZERO);
    }

    #[test]
    fn other_periods() {
        let mut r = RateLimiter::new(10, Duration::from_secs(1), 1).unwrap();
        assert_eq!(r.try_acquire(0), Ok(()));
        assert_eq!(r.try_acquire(0), Err(ms(100)));
    }

    #[test]
    fn invalid_settings() {
        assert!(RateLimiter::per_minute(0, 1).is_err());
        assert!(RateLimiter::per_minute(1, 0).is_err());
        assert!(RateLimiter::new(2, Duration::from_nanos(1), 1).is_err());
        assert!(RateLimiter::new(1, Duration::ZERO, 1).is_err());
    }

    #[test]
    fn extreme_clocks_do_not_panic() {
        let mut r = RateLimiter::new(1, Duration::MAX, u32::MAX).unwrap();
        assert_eq!(r.try_acquire(u64::MAX), Ok(()));
        let mut r = RateLimiter::per_minute(60_000_000, 1).unwrap();
        assert_eq!(r.try_acquire(u64::MAX), Ok(()));
        assert!(r.try_acquire(0).is_err());
    }

    proptest! {
        /// Over any window, sends never exceed `burst + window / interval`.
        #[test]
        fn never_more_than_the_rate_allows(
            per_minute in 1u32..=600,
            burst in 1u32..=20,
            steps in proptest::collection::vec(0u64..=2_000, 1..200),
        ) {
            let mut r = RateLimiter::per_minute(per_minute, burst).unwrap();
            let mut now = 0u64;
            let mut sent = Vec::new();
            for step in steps {
                now += step;
                if r.try_acquire(now).is_ok() {
                    sent.push(now);
                }
            }
            // The interval is kept in whole microseconds, rounded down.
            let interval_ms = (60_000_000 / u64::from(per_minute)) as f64 / 1_000.0;
            for (i, &start) in sent.iter().enumerate() {
                for (j, &end) in sent.iter().enumerate().skip(i) {
                    let allowed = f64::from(burst) + ((end - start) as f64 / interval_ms).floor();
                    prop_assert!((j - i + 1) as f64 <= allowed + 1e-9, "{} sends in {} ms", j - i + 1, end - start);
                }
            }
        }

        /// Waiting as told always succeeds.
        #[test]
        fn the_wait_is_enough(per_minute in 1u32..=100_000, burst in 1u32..=5, start in 0u64..1_000_000) {
            let mut r = RateLimiter::per_minute(per_minute, burst).unwrap();
            let mut now = start;
            for _ in 0..20 {
                match r.try_acquire(now) {
                    Ok(()) => {}
                    Err(wait) => {
                        now += wait.as_millis() as u64;
                        prop_assert_eq!(r.try_acquire(now), Ok(()));
                    }
                }
            }
        }
    }
}
