//! Resends on one endpoint: which are being sent, when the loop looks for due ones, and one
//! resend's attempt. A resend reads its message back by position, goes out like a delivery
//! (same signing, format, attempt log and gate) and is settled in the broker's resend queue,
//! never in the subscription's ack state.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use opal_core::{BrokerError, Message, PushConfig, Resend, ResendTarget, StartPosition};
use tokio::time::Instant;

use super::endpoint::{Shared, at_least_retry_after, scheduled_wait};

/// How often an endpoint looks for due resends without being told: only resends set for later
/// before a restart need it (the broker's watch announces new ones, and the loop knows the
/// retries it set), so a late look costs them at most this much.
const RESEND_POLL: Duration = Duration::from_secs(5);

/// What one endpoint's loop knows about its resends.
#[derive(Debug)]
pub(crate) struct Book {
    /// Taken and not yet settled: still due in the broker, so not taken again.
    in_flight: HashSet<ResendTarget>,
    /// The next look nobody asked for.
    poll_at: Instant,
    /// The next look asked for: resends were queued, or a retry this loop set comes due.
    wake_at: Option<Instant>,
}

impl Book {
    /// A book that looks at once: resends may wait from before a restart.
    pub(crate) fn new(now: Instant) -> Self {
        Book {
            in_flight: HashSet::new(),
            poll_at: now,
            wake_at: None,
        }
    }

    pub(crate) fn wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    pub(crate) fn wants_look(&self, now: Instant) -> bool {
        now >= self.poll_at || self.wake_at.is_some_and(|w| now >= w)
    }

    /// When a waiting pull should give way to a look.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.wake_at
    }

    /// After a look at `now`; `filled` when it took all the room it had (more may be due).
    fn looked(&mut self, now: Instant, filled: bool) {
        self.poll_at = if filled { now } else { now + RESEND_POLL };
        self.wake_at = self.wake_at.filter(|w| *w > now);
    }
}

impl Shared {
    /// Up to `room` due resends not already being sent, marked as being sent.
    pub(super) async fn take_due_resends(&self, room: usize) -> Vec<Resend> {
        let skip = self.book().in_flight.len();
        let due = self.ctx.broker.due_resends(&self.name, room + skip).await;
        let mut book = self.book();
        let due = match due {
            Ok(due) => due,
            Err(e) => {
                if !matches!(e, BrokerError::SubscriptionNotFound(_)) {
                    tracing::warn!(subscription = %self.name, error = %e, "could not read due resends");
                }
                book.looked(Instant::now(), false);
                return Vec::new();
            }
        };
        let mut taken = Vec::new();
        for resend in due {
            if taken.len() == room {
                break;
            }
            if book.in_flight.insert(resend.target()) {
                taken.push(resend);
            }
        }
        book.looked(Instant::now(), taken.len() == room);
        taken
    }

    /// One attempt of a resend, then its settlement: dropped once delivered, after the
    /// schedule's last attempt, or when its message is gone; otherwise kept for the next wait
    /// of the schedule.
    pub(super) async fn resend(&self, config: &Arc<PushConfig>, resend: Resend) {
        let target = resend.target();
        let next = match self.read(target).await {
            Ok(Some(message)) => self.resend_message(config, &message, resend).await,
            Ok(None) => {
                tracing::warn!(subscription = %self.name, partition = target.partition, offset = target.offset, "a message to resend is no longer stored (retention removed it); resend dropped");
                None
            }
            Err(e) => {
                tracing::warn!(subscription = %self.name, partition = target.partition, offset = target.offset, error = %e, "could not read a message to resend; it is tried again later");
                self.book().in_flight.remove(&target);
                return;
            }
        };
        let at = next.map(|wait| {
            let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            Timestamp::from_millisecond(self.ctx.clock.now_ms().saturating_add(ms))
                .unwrap_or(Timestamp::MAX)
        });
        let settled = self
            .ctx
            .broker
            .settle_resend(&self.name, target.partition, target.offset, at)
            .await;
        if let Err(e) = settled
            && !matches!(e, BrokerError::SubscriptionNotFound(_))
        {
            tracing::warn!(subscription = %self.name, error = %e, "could not settle a resend; it is sent again");
        }
        let mut book = self.book();
        book.in_flight.remove(&target);
        if let Some(wait) = next {
            book.wake(Instant::now() + wait);
            drop(book);
            self.resend_timer.notify_one();
        }
    }

    /// POSTs a resend's message; the wait before its next attempt, if it gets one.
    async fn resend_message(
        &self,
        config: &Arc<PushConfig>,
        message: &Message,
        resend: Resend,
    ) -> Option<Duration> {
        let outcome = self.push(config, message, resend.attempt).await;
        if outcome.is_delivered() {
            return None;
        }
        match scheduled_wait(config, resend.attempt + 1) {
            Some(wait) => Some(at_least_retry_after(wait, outcome)),
            None => {
                // Not dead-lettered again: the message already went its way once; the attempt
                // log keeps the failures.
                tracing::warn!(subscription = %self.name, message_id = %message.id, attempts = resend.attempt, "a resend failed its last scheduled attempt; dropped");
                None
            }
        }
    }

    /// The message at `target`, or `None` when retention removed it (a read from a removed
    /// offset starts at the first one still stored).
    async fn read(&self, target: ResendTarget) -> Result<Option<Message>, BrokerError> {
        let read = self
            .ctx
            .broker
            .read_messages(
                &self.topic,
                target.partition,
                StartPosition::Offset(target.offset),
                1,
            )
            .await;
        match read {
            Ok(mut messages) => Ok(messages.pop().filter(|m| m.offset == target.offset)),
            // A partition the topic does not have: the target can never be read.
            Err(BrokerError::Invalid { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
