//! When each delivery attempt is due: a fixed list of delays with jitter.

use std::time::Duration;

use crate::error::DispatchError;

/// How far jitter moves a delay either way, as a fraction of it. Spreading retries keeps the
/// messages that failed together during one outage from all coming back in the same second.
pub const JITTER: f64 = 0.2;

/// The delays before each attempt: entry `i` is the wait before attempt `i + 1`, counted from
/// the previous attempt (for the first attempt, from when the message became due). The length
/// is the number of attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// Most attempts a schedule may have: more than this keeps a message retrying for weeks
    /// past the point where anyone is waiting for it.
    pub const MAX_ENTRIES: usize = 32;
    /// Longest single delay, a week: longer would outlive most retention settings.
    pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    /// A schedule from user-given delays: 1 to [`Self::MAX_ENTRIES`] entries, each at most
    /// [`Self::MAX_DELAY`].
    pub fn new(delays: Vec<Duration>) -> Result<Self, DispatchError> {
        if delays.is_empty() {
            return Err(DispatchError::config(
                "retry schedule",
                "it needs at least one entry (the first attempt)",
            ));
        }
        if delays.len() > Self::MAX_ENTRIES {
            return Err(DispatchError::config(
                "retry schedule",
                format!(
                    "{} entries, at most {} are allowed",
                    delays.len(),
                    Self::MAX_ENTRIES
                ),
            ));
        }
        if let Some((i, d)) = delays
            .iter()
            .enumerate()
            .find(|(_, d)| **d > Self::MAX_DELAY)
        {
            return Err(DispatchError::config(
                "retry schedule",
                format!("entry {} is {d:?}, longer than 7 days", i + 1),
            ));
        }
        Ok(RetrySchedule(delays))
    }

    /// The delays as given.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// How many attempts a message gets before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        // At most MAX_ENTRIES, so the conversion cannot fail; saturate rather than panic anyway.
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    /// The wait before attempt `attempt` (1-based), moved by up to ±20%. `unit_random` is a
    /// random number in `[0, 1]` (for example `rand::random::<f64>()`); 0.5 means no jitter,
    /// and values outside the range are clamped, so tests can pass fixed values. `None` when
    /// `attempt` is 0 or past the last attempt.
    pub fn delay_before(&self, attempt: u32, unit_random: f64) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let nominal = *self.0.get(index)?;
        let unit = if unit_random.is_nan() {
            0.5
        } else {
            unit_random.clamp(0.0, 1.0)
        };
        let factor = 1.0 + JITTER * (2.0 * unit - 1.0);
        // Whole milliseconds: finer means nothing to a scheduler, and rounding keeps 300 s
        // times 1.2 at 360 s rather than a hair under it. A week in ms fits f64 exactly.
        let millis = (nominal.as_millis() as f64 * factor).round();
        Some(Duration::from_millis(millis as u64))
    }
}

impl Default for RetrySchedule {
    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about a day
    /// and a quarter, the schedule Svix documents for its webhooks.
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 60 * MIN;
        RetrySchedule(
            [
                0,
                5,
                5 * MIN,
                30 * MIN,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_default_schedule() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 8);
        let nominal: Vec<_> = (1..=8).map(|a| s.delay_before(a, 0.5).unwrap()).collect();
        assert_eq!(
            nominal,
            [0, 5, 300, 1800, 7200, 18000, 36000, 36000].map(secs)
        );
        assert_eq!(s.delay_before(9, 0.5), None);
        assert_eq!(s.delay_before(0, 0.5), None);
        assert_eq!(s.delay_before(u32::MAX, 0.5), None);
    }

    #[test]
    fn jitter_spans_plus_minus_twenty_percent() {
        let s = RetrySchedule::default();
        assert_eq!(s.delay_before(3, 0.0), Some(secs(240)));
        assert_eq!(s.delay_before(3, 1.0), Some(secs(360)));
        assert_eq!(s.delay_before(3, 0.75), Some(secs(330)));
        assert_eq!(s.delay_before(2, 0.0), Some(secs(4)));
    }

    #[test]
    fn zero_stays_zero_and_odd_randoms_are_tamed() {
        let s = RetrySchedule::default();
        for r in [0.0, 0.3, 1.0, -5.0, 7.0, f64::NAN, f64::INFINITY] {
            assert_eq!(s.delay_before(1, r), Some(Duration::ZERO), "{r}");
        }
        assert_eq!(s.delay_before(3, -1.0), Some(secs(240)));
        assert_eq!(s.delay_before(3, 2.0), Some(secs(360)));
        assert_eq!(s.delay_before(3, f64::NAN), Some(secs(300)));
    }

    #[test]
    fn validation_bounds() {
        assert!(RetrySchedule::new(vec![]).is_err());
        assert!(RetrySchedule::new(vec![secs(0)]).is_ok());
        assert!(RetrySchedule::new(vec![secs(1); 32]).is_ok());
        assert!(RetrySchedule::new(vec![secs(1); 33]).is_err());
        assert!(RetrySchedule::new(vec![secs(0), RetrySchedule::MAX_DELAY]).is_ok());
        let err = RetrySchedule::new(vec![secs(0), RetrySchedule::MAX_DELAY + secs(1)]);
        assert!(err.unwrap_err().to_string().contains("entry 2"));
        let custom = RetrySchedule::new(vec![secs(1), secs(2)]).unwrap();
        assert_eq!(custom.max_attempts(), 2);
        assert_eq!(custom.delays(), &[secs(1), secs(2)]);
    }

    proptest! {
        #[test]
        fn jittered_delays_stay_within_bounds(
            delays in proptest::collection::vec(0u64..=RetrySchedule::MAX_DELAY.as_millis() as u64, 1..=32),
            attempt in 1u32..=32,
            r in any::<f64>(),
        ) {
            let s = RetrySchedule::new(delays.iter().copied().map(Duration::from_millis).collect()).unwrap();
            let got = s.delay_before(attempt, r);
            match delays.get(attempt as usize - 1) {
                None => prop_assert_eq!(got, None),
                Some(&ms) => {
                    let got = got.unwrap();
                    let nominal = Duration::from_millis(ms);
                    prop_assert!(got.as_millis() as f64 >= (ms as f64 * 0.8).floor());
                    prop_assert!(got.as_millis() as f64 <= (ms as f64 * 1.2).ceil());
                    prop_assert_eq!(got.is_zero(), nominal.is_zero());
                }
            }
        }
    }
}
