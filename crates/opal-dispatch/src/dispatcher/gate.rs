//! Whether one endpoint may be sent to now, and how much: its circuit breaker, its rate limit
//! (configured, or lowered by the endpoint's `WebHook-Allowed-Rate`), and a pause asked for by
//! `Retry-After`. Decisions read the broker's clock, so tests can move time.

use std::time::Duration;

use opal_core::{Clock, PushConfig};
use tokio::time::Instant;

use super::Settings;
use crate::breaker::{Admission, BreakerState, CircuitBreaker};
use crate::rate::RateLimiter;

/// Longest real-time sleep before the gate is asked again: the clock may be moved by a test,
/// and a pause may be lifted by a changed configuration.
const RECHECK: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(crate) struct Gate {
    clock: Clock,
    breaker: CircuitBreaker,
    disable_after: Duration,
    configured_rate: Option<u32>,
    /// From the validation handshake, per minute.
    allowed_per_minute: Option<u32>,
    rate: Option<RateLimiter>,
    paused_until_ms: Option<u64>,
}

impl Gate {
    pub(crate) fn new(settings: &Settings, config: &PushConfig) -> Self {
        let mut gate = Gate {
            clock: settings.clock.clone(),
            breaker: CircuitBreaker::new(settings.breaker).unwrap_or_else(|_| {
                CircuitBreaker::new(Default::default()).expect("defaults are valid")
            }),
            disable_after: settings.disable_after,
            configured_rate: None,
            allowed_per_minute: None,
            rate: None,
            paused_until_ms: None,
        };
        gate.configure(config);
        gate
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms().max(0) as u64
    }

    /// Follows a changed rate limit.
    pub(crate) fn configure(&mut self, config: &PushConfig) {
        if self.configured_rate != config.rate_limit_per_s || self.rate.is_none() {
            self.configured_rate = config.rate_limit_per_s;
            self.rebuild_rate();
        }
    }

    /// The endpoint's own limit from the validation handshake.
    pub(crate) fn limit_per_minute(&mut self, per_minute: u32) {
        self.allowed_per_minute = Some(per_minute);
        self.rebuild_rate();
    }

    fn rebuild_rate(&mut self) {
        let configured = self.configured_rate.map(|s| s.saturating_mul(60));
        let per_minute = match (configured, self.allowed_per_minute) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A second's worth at once after a quiet spell, at least one.
        self.rate = per_minute.and_then(|m| RateLimiter::per_minute(m, (m / 60).max(1)).ok());
    }

    /// How many deliveries may be pulled now (at most `room`), or a real-time instant to ask
    /// again at.
    pub(crate) fn permits(&mut self, room: usize) -> Result<usize, Instant> {
        let now_ms = self.now_ms();
        let later = |ms: u64| Instant::now() + Duration::from_millis(ms).min(RECHECK);
        if let Some(until) = self.paused_until_ms {
            if now_ms < until {
                return Err(later(until - now_ms));
            }
            self.paused_until_ms = None;
        }
        let mut count = match self.breaker.state(now_ms) {
            BreakerState::Closed { .. } => room,
            BreakerState::Open { until_ms } => return Err(later(until_ms - now_ms)),
            BreakerState::HalfOpen {
                probe_sent_ms: None,
            } => 1,
            BreakerState::HalfOpen { .. } => match self.breaker.admit(now_ms) {
                Admission::Probe => 1,
                _ => return Err(later(RECHECK.as_millis() as u64)),
            },
        };
        if let Some(rate) = &self.rate {
            let wait = rate.wait_time(now_ms);
            if !wait.is_zero() {
                return Err(later(wait.as_millis() as u64));
            }
            // One at a time: the send takes its slot when it is pulled, so a pull that finds
            // nothing wastes no more than one slot.
            count = 1;
        }
        Ok(count.max(1))
    }

    /// Whether a pulled delivery may be sent now (the breaker and a `Retry-After` pause; its
    /// rate was counted when it was pulled). A half-open breaker lets one through as its probe.
    pub(crate) fn may_send(&mut self) -> Result<(), Instant> {
        let now_ms = self.now_ms();
        let later = |ms: u64| Instant::now() + Duration::from_millis(ms).min(RECHECK);
        if let Some(until) = self.paused_until_ms
            && now_ms < until
        {
            return Err(later(until - now_ms));
        }
        match self.breaker.admit(now_ms) {
            Admission::Send | Admission::Probe => Ok(()),
            Admission::OpenFor(wait) => Err(later(wait.as_millis() as u64)),
            Admission::ProbeInFlight => Err(later(RECHECK.as_millis() as u64)),
        }
    }

    /// `count` deliveries were pulled: they take their share of the rate.
    pub(crate) fn took(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let now_ms = self.now_ms();
        if let Some(rate) = &mut self.rate {
            for _ in 0..count {
                let _ = rate.try_acquire(now_ms);
            }
        }
    }

    pub(crate) fn success(&mut self) {
        let now_ms = self.now_ms();
        self.breaker.record_success(now_ms);
    }

    /// A failed attempt; `pause` from a `Retry-After` holds every delivery back that long.
    pub(crate) fn failure(&mut self, pause: Option<Duration>) {
        let now_ms = self.now_ms();
        self.breaker.record_failure(now_ms);
        if let Some(pause) = pause {
            let until = now_ms.saturating_add(pause.as_millis().min(u128::from(u64::MAX)) as u64);
            self.paused_until_ms = Some(self.paused_until_ms.map_or(until, |p| p.max(until)));
        }
    }

    /// How long the endpoint has failed without a success, once that is past the period
    /// after which it is disabled.
    pub(crate) fn failing_too_long(&self) -> Option<Duration> {
        let now_ms = self.now_ms();
        self.breaker
            .should_disable(now_ms, self.disable_after)
            .then(|| {
                Duration::from_millis(
                    now_ms.saturating_sub(self.breaker.failing_since().unwrap_or(now_ms)),
                )
            })
    }
}
