//! A per-endpoint circuit breaker, as a pure state machine over a caller-supplied clock.
//!
//! An endpoint that keeps failing is left alone for a cool-down instead of receiving every
//! queued message's attempt; then one probe tests it. Cool-downs double while probes fail, so a
//! dead endpoint costs one request per [`BreakerConfig::max_cool_down`]. Time is milliseconds
//! on any clock the caller likes (the broker's clock in production, plain numbers in tests);
//! a clock that steps backwards only delays transitions, it never panics.

use std::time::Duration;

use crate::error::DispatchError;

/// Thresholds of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// The first cool-down after opening.
    pub cool_down: Duration,
    /// The cool-down stops doubling here. Also how long a probe may stay unanswered before
    /// another one is let through, so a lost result cannot wedge the breaker.
    pub max_cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
            max_cool_down: Duration::from_secs(10 * 60),
        }
    }
}

impl BreakerConfig {
    /// Checks the bounds: a threshold of at least 1, a non-zero cool-down, and a maximum no
    /// shorter than the first cool-down.
    pub fn validate(&self) -> Result<(), DispatchError> {
        let bad = |reason: &str| Err(DispatchError::config("circuit breaker", reason));
        if self.failure_threshold == 0 {
            return bad("the failure threshold must be at least 1");
        }
        if self.cool_down.is_zero() {
            return bad("the cool-down must be longer than zero");
        }
        if self.max_cool_down < self.cool_down {
            return bad("the maximum cool-down must not be shorter than the cool-down");
        }
        Ok(())
    }
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts flow; `consecutive_failures` counts towards the threshold.
    Closed {
        /// Failures since the last success.
        consecutive_failures: u32,
    },
    /// No attempts until `until_ms`.
    Open {
        /// When the next probe may go.
        until_ms: u64,
    },
    /// One probe may go, or has gone and its result is awaited.
    HalfOpen {
        /// When the outstanding probe was let through, if one was.
        probe_sent_ms: Option<u64>,
    },
}

/// What the caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send normally.
    Send,
    /// Send this one attempt as the probe, and report its result.
    Probe,
    /// Send nothing for this long.
    OpenFor(Duration),
    /// A probe is out; send nothing until its result is recorded.
    ProbeInFlight,
}

/// One endpoint's breaker. Report every attempt that was admitted with
/// [`CircuitBreaker::record_success`] or [`CircuitBreaker::record_failure`].
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// The cool-down the next opening will use; doubles while probes fail.
    next_cool_down: Duration,
    failing_since_ms: Option<u64>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Result<Self, DispatchError> {
        config.validate()?;
        Ok(CircuitBreaker {
            config,
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
            next_cool_down: config.cool_down,
            failing_since_ms: None,
        })
    }

    /// Carries over the start of a failure streak from before a restart (the caller stores
    /// it), so a restart does not reset the clock towards [`CircuitBreaker::should_disable`].
    pub fn with_failing_since(mut self, since_ms: Option<u64>) -> Self {
        self.failing_since_ms = since_ms;
        self
    }

    /// The current state, with an open breaker whose cool-down is over shown as half-open.
    pub fn state(&self, now_ms: u64) -> BreakerState {
        match self.state {
            BreakerState::Open { until_ms } if now_ms >= until_ms => BreakerState::HalfOpen {
                probe_sent_ms: None,
            },
            state => state,
        }
    }

    /// Asks whether an attempt may be sent now. Answering [`Admission::Probe`] records that the
    /// probe went, so ask only when about to send.
    pub fn admit(&mut self, now_ms: u64) -> Admission {
        match self.state {
            BreakerState::Closed { .. } => Admission::Send,
            BreakerState::Open { until_ms } if now_ms < until_ms => {
                Admission::OpenFor(Duration::from_millis(until_ms - now_ms))
            }
            BreakerState::Open { .. }
            | BreakerState::HalfOpen {
                probe_sent_ms: None,
            } => self.send_probe(now_ms),
            BreakerState::HalfOpen {
                probe_sent_ms: Some(sent),
            } => {
                if now_ms.saturating_sub(sent) >= duration_ms(self.config.max_cool_down) {
                    self.send_probe(now_ms)
                } else {
                    Admission::ProbeInFlight
                }
            }
        }
    }

    fn send_probe(&mut self, now_ms: u64) -> Admission {
        self.state = BreakerState::HalfOpen {
            probe_sent_ms: Some(now_ms),
        };
        Admission::Probe
    }

    /// An attempt succeeded: the breaker closes and the failure streak ends. A success that
    /// arrives while open (an attempt sent before opening) closes it too: the endpoint works.
    pub fn record_success(&mut self, _now_ms: u64) {
        self.state = BreakerState::Closed {
            consecutive_failures: 0,
        };
        self.next_cool_down = self.config.cool_down;
        self.failing_since_ms = None;
    }

    /// An attempt failed. Closed: counts towards the threshold and opens at it. Half-open: the
    /// probe failed, so the breaker opens again for twice as long (up to the maximum). Open: a
    /// late result of an earlier attempt, which changes nothing but the streak's start.
    pub fn record_failure(&mut self, now_ms: u64) {
        self.failing_since_ms.get_or_insert(now_ms);
        match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    self.open(now_ms);
                } else {
                    self.state = BreakerState::Closed {
                        consecutive_failures: failures,
                    };
                }
            }
            BreakerState::HalfOpen { .. } => self.open(now_ms),
            BreakerState::Open { .. } => {}
        }
    }

    fn open(&mut self, now_ms: u64) {
        let cool_down = self.next_cool_down;
        self.state = BreakerState::Open {
            until_ms: now_ms.saturating_add(duration_ms(cool_down)),
        };
        self.next_cool_down = cool_down.saturating_mul(2).min(self.config.max_cool_down);
    }

    /// When the current failure streak began: the first failure after the last success.
    pub fn failing_since(&self) -> Option<u64> {
        self.failing_since_ms
    }

    /// Whether the endpoint has failed without a single success for at least `period`
    /// (for example [`DEFAULT_DISABLE_AFTER`]), and should be disabled.
    pub fn should_disable(&self, now_ms: u64, period: Duration) -> bool {
        self.failing_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) >= duration_ms(period))
    }
}

/// How long an endpoint may fail continuously before it is disabled by default.
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 60 * 60);

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig::default()).unwrap()
    }

    fn fail(b: &mut CircuitBreaker, now: u64, times: u32) {
        for _ in 0..times {
            b.record_failure(now);
        }
    }

    #[test]
    fn stays_closed_below_the_threshold() {
        let mut b = breaker();
        fail(&mut b, 0, 4);
        assert_eq!(
            b.state(0),
            BreakerState::Closed {
                consecutive_failures: 4
            }
        );
        assert_eq!(b.admit(0), Admission::Send);
        b.record_success(1);
        fail(&mut b, 2, 4);
        assert_eq!(b.admit(2), Admission::Send, "a success resets the count");
    }

    #[test]
    fn opens_at_the_threshold_for_the_cool_down() {
        let mut b = breaker();
        fail(&mut b, 1_000, 5);
        assert_eq!(b.state(1_000), BreakerState::Open { until_ms: 31_000 });
        assert_eq!(b.admit(1_000), Admission::OpenFor(Duration::from_secs(30)));
        assert_eq!(
            b.admit(30_999),
            Admission::OpenFor(Duration::from_millis(1))
        );
        assert_eq!(
            b.state(31_000),
            BreakerState::HalfOpen {
                probe_sent_ms: None
            }
        );
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let mut b = breaker();
        fail(&mut b, 0, 5);
        assert_eq!(b.admit(30 * SEC), Admission::Probe);
        assert_eq!(b.admit(30 * SEC), Admission::ProbeInFlight);
        assert_eq!(b.admit(31 * SEC), Admission::ProbeInFlight);
        b.record_success(32 * SEC);
        assert_eq!(
            b.state(32 * SEC),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        assert_eq!(b.admit(32 * SEC), Admission::Send);
        assert_eq!(b.failing_since(), None);
    }

    #[test]
    fn failed_probes_double_the_cool_down_up_to_the_max() {
        let mut b = breaker();
        fail(&mut b, 0, 5);
        let mut now = 0;
        let mut expected = [60, 120, 240, 480, 600, 600].map(|s| s * SEC).into_iter();
        // First opening: 30 s; each failed probe re-opens for twice as long, capped at 10 min.
        now += 30 * SEC;
        for _ in 0..6 {
            assert_eq!(b.admit(now), Admission::Probe);
            b.record_failure(now);
            let cool = expected.next().unwrap();
            assert_eq!(
                b.state(now),
                BreakerState::Open {
                    until_ms: now + cool
                }
            );
            now += cool;
        }
        // A success resets the cool-down to its first value.
        assert_eq!(b.admit(now), Admission::Probe);
        b.record_success(now);
        fail(&mut b, now, 5);
        assert_eq!(
            b.state(now),
            BreakerState::Open {
                until_ms: now + 30 * SEC
            }
        );
    }

    #[test]
    fn late_results_while_open() {
        let mut b = breaker();
        fail(&mut b, 0, 5);
        // A failure of an attempt sent before opening does not extend the cool-down.
        b.record_failure(10 * SEC);
        assert_eq!(b.state(10 * SEC), BreakerState::Open { until_ms: 30 * SEC });
        // A late success shows the endpoint works: close.
        b.record_success(11 * SEC);
        assert_eq!(b.admit(11 * SEC), Admission::Send);
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_breaker() {
        let mut b = breaker();
        fail(&mut b, 0, 5);
        assert_eq!(b.admit(30 * SEC), Admission::Probe);
        assert_eq!(b.admit(30 * SEC + 599 * SEC), Admission::ProbeInFlight);
        assert_eq!(b.admit(30 * SEC + 600 * SEC), Admission::Probe);
    }

    #[test]
    fn threshold_of_one_opens_on_the_first_failure() {
        let config = BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        };
        let mut b = CircuitBreaker::new(config).unwrap();
        b.record_failure(5);
        assert_eq!(b.state(5), BreakerState::Open { until_ms: 30_005 });
    }

    #[test]
    fn failing_since_and_should_disable() {
        let day = 24 * 60 * 60 * SEC;
        let mut b = breaker();
        assert!(!b.should_disable(10 * day, DEFAULT_DISABLE_AFTER));
        b.record_failure(day);
        assert_eq!(b.failing_since(), Some(day));
        // Later failures keep the streak's start.
        b.record_failure(2 * day);
        fail(&mut b, 3 * day, 10);
        assert_eq!(b.failing_since(), Some(day));
        assert!(!b.should_disable(6 * day - 1, DEFAULT_DISABLE_AFTER));
        assert!(b.should_disable(6 * day, DEFAULT_DISABLE_AFTER));
        b.record_success(6 * day);
        assert!(!b.should_disable(20 * day, DEFAULT_DISABLE_AFTER));
        // A clock that went backwards never disables.
        b.record_failure(7 * day);
        assert!(!b.should_disable(0, Duration::from_millis(1)));
    }

    #[test]
    fn failing_since_survives_a_restart() {
        let b = breaker().with_failing_since(Some(1_000));
        assert_eq!(b.failing_since(), Some(1_000));
        assert!(b.should_disable(1_000 + 5 * 24 * 3_600 * SEC, DEFAULT_DISABLE_AFTER));
        let mut b = b;
        b.record_failure(50_000);
        assert_eq!(b.failing_since(), Some(1_000));
    }

    #[test]
    fn a_clock_going_backwards_does_not_panic() {
        let mut b = breaker();
        fail(&mut b, 100 * SEC, 5);
        assert_eq!(b.admit(0), Admission::OpenFor(Duration::from_secs(130)));
        assert_eq!(b.admit(130 * SEC), Admission::Probe);
        assert_eq!(b.admit(0), Admission::ProbeInFlight);
        fail(&mut b, u64::MAX, 1);
        assert_eq!(
            b.state(u64::MAX - 1),
            BreakerState::Open { until_ms: u64::MAX }
        );
    }

    #[test]
    fn config_validation() {
        assert!(BreakerConfig::default().validate().is_ok());
        let bad = [
            BreakerConfig {
                failure_threshold: 0,
                ..BreakerConfig::default()
            },
            BreakerConfig {
                cool_down: Duration::ZERO,
                ..BreakerConfig::default()
            },
            BreakerConfig {
                max_cool_down: Duration::from_secs(29),
                ..BreakerConfig::default()
            },
        ];
        for config in bad {
            assert!(CircuitBreaker::new(config).is_err(), "{config:?}");
        }
    }
}
