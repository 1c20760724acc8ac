//! The time source of a broker: the system clock in production, a manual clock in tests so that
//! every timer (ack deadlines, backoff, delays, dedup windows) can be driven deterministically.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

/// A clock in milliseconds since the Unix epoch. Cheap to clone; clones share one time.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    Manual {
        now_ms: AtomicI64,
        /// Wakes sleepers whenever the manual time moves.
        moved: watch::Sender<i64>,
    },
}

impl Clock {
    pub fn system() -> Self {
        Clock(Arc::new(Source::System))
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual(start: Timestamp) -> Self {
        let ms = start.as_millisecond();
        Clock(Arc::new(Source::Manual {
            now_ms: AtomicI64::new(ms),
            moved: watch::channel(ms).0,
        }))
    }

    pub fn is_manual(&self) -> bool {
        matches!(*self.0, Source::Manual { .. })
    }

    pub fn now_ms(&self) -> i64 {
        match &*self.0 {
            Source::System => Timestamp::now().as_millisecond(),
            Source::Manual { now_ms, .. } => now_ms.load(Ordering::Acquire),
        }
    }

    pub fn now(&self) -> Timestamp {
        match &*self.0 {
            Source::System => Timestamp::now(),
            Source::Manual { now_ms, .. } => {
                Timestamp::from_millisecond(now_ms.load(Ordering::Acquire))
                    .unwrap_or(Timestamp::UNIX_EPOCH)
            }
        }
    }

    /// Moves a manual clock forward and wakes whoever sleeps until then. No effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual { now_ms, moved } = &*self.0 {
            let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            let now = now_ms.fetch_add(ms, Ordering::AcqRel) + ms;
            moved.send_replace(now);
        }
    }

    /// Resolves once the clock reads `deadline_ms` or later.
    pub async fn sleep_until_ms(&self, deadline_ms: i64) {
        match &*self.0 {
            Source::System => {
                let wait = deadline_ms.saturating_sub(self.now_ms());
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
            }
            Source::Manual { moved, .. } => {
                let mut rx = moved.subscribe();
                // `wait_for` checks the current value first, so an advance cannot be missed.
                let _ = rx.wait_for(|now| *now >= deadline_ms).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_on_advance() {
        let clock = Clock::manual(Timestamp::from_millisecond(1_000).unwrap());
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until_ms(1_500).await })
        };
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now_ms(), 1_500);
    }
}
