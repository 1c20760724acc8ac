//! Redelivery backoff: how long a failed delivery waits before it is handed out again.

use crate::{BrokerError, Limits};

/// Exponential backoff with jitter: attempt `n` waits about `initial * multiplier^(n-1)`, capped
/// at `max`; jitter spreads the retries of many messages that failed together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 1_000,
            max_ms: 600_000,
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    pub fn validate(&self, limits: &Limits) -> Result<(), BrokerError> {
        if self.max_ms > limits.max_delay_ms {
            return Err(BrokerError::invalid(
                "backoff.max_ms",
                format!("must be at most {}", limits.max_delay_ms),
            ));
        }
        if self.initial_ms > self.max_ms {
            return Err(BrokerError::invalid(
                "backoff.initial_ms",
                "must not exceed backoff.max_ms",
            ));
        }
        if !(self.multiplier.is_finite() && (1.0..=10.0).contains(&self.multiplier)) {
            return Err(BrokerError::invalid(
                "backoff.multiplier",
                "must be between 1.0 and 10.0",
            ));
        }
        Ok(())
    }

    /// The wait after delivery `attempt` (1-based) failed. `jitter` in `[0, 1)` picks a point in
    /// the upper half of the exponential step ("equal jitter"), so waits still grow with each attempt
    /// and never fall below half the nominal value.
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let nominal =
            (self.initial_ms as f64 * self.multiplier.powi(exponent)).min(self.max_ms as f64);
        let half = nominal / 2.0;
        (half + half * jitter.clamp(0.0, 1.0)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 2.0,
        };
        assert_eq!(b.delay_ms(1, 1.0), 100);
        assert_eq!(b.delay_ms(2, 1.0), 200);
        assert_eq!(b.delay_ms(3, 0.0), 200);
        assert_eq!(b.delay_ms(10, 1.0), 1_000);
        assert_eq!(b.delay_ms(u32::MAX, 1.0), 1_000);
    }

    #[test]
    fn rejects_nonsense() {
        let limits = Limits::default();
        let bad = Backoff {
            multiplier: f64::NAN,
            ..Backoff::default()
        };
        assert!(bad.validate(&limits).is_err());
        let bad = Backoff {
            initial_ms: 10,
            max_ms: 5,
            multiplier: 2.0,
        };
        assert!(bad.validate(&limits).is_err());
        assert!(Backoff::default().validate(&limits).is_ok());
    }
}
