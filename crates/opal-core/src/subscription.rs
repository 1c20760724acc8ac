//! Subscriptions: durable cursors with their own ack state, and the deliveries they hand out.

use std::time::Duration;

use jiff::Timestamp;

use crate::{
    AckId, Backoff, BrokerError, Filter, Limits, Message, PushConfig, SubscriptionName, TopicName,
};

/// The settings of a subscription that its creator chooses.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionConfig {
    pub topic: TopicName,
    /// How long a consumer holds a delivery before it is handed out again.
    pub ack_deadline_ms: u64,
    /// Wait before a failed delivery (nack without delay, or deadline passed) is handed out again.
    pub backoff: Backoff,
    /// After this many deliveries without an ack, the message is dead-lettered (or dropped
    /// when there is no dead-letter topic). `None`: unlimited.
    pub max_deliveries: Option<u32>,
    pub dead_letter_topic: Option<TopicName>,
    /// Deliver the messages of one key one at a time, in publish order.
    pub ordered: bool,
    /// Only messages whose attributes match are delivered (and count in the backlog).
    pub filter: Option<Filter>,
    /// Delivered by Opal's dispatcher as HTTP POSTs to this endpoint (a push subscription).
    pub push: Option<PushConfig>,
}

impl SubscriptionConfig {
    pub const DEFAULT_ACK_DEADLINE_MS: u64 = 30_000;
    /// Shorter deadlines would redeliver faster than a network round trip.
    pub const MIN_ACK_DEADLINE_MS: u64 = 100;

    /// A subscription with every setting at its default.
    pub fn new(topic: TopicName) -> Self {
        SubscriptionConfig {
            topic,
            ack_deadline_ms: Self::DEFAULT_ACK_DEADLINE_MS,
            backoff: Backoff::default(),
            max_deliveries: None,
            dead_letter_topic: None,
            ordered: false,
            filter: None,
            push: None,
        }
    }

    pub fn validate(&self, limits: &Limits) -> Result<(), BrokerError> {
        // First: the settings derived from the endpoint (`max_deliveries`) are judged after it.
        if let Some(push) = &self.push {
            push.validate()?;
        }
        if !(Self::MIN_ACK_DEADLINE_MS..=limits.max_ack_deadline_ms).contains(&self.ack_deadline_ms)
        {
            return Err(BrokerError::invalid(
                "ack_deadline_ms",
                format!(
                    "must be between {} and {}",
                    Self::MIN_ACK_DEADLINE_MS,
                    limits.max_ack_deadline_ms
                ),
            ));
        }
        self.backoff.validate(limits)?;
        if let Some(max) = self.max_deliveries
            && !(1..=limits.max_deliveries).contains(&max)
        {
            return Err(BrokerError::invalid(
                "max_deliveries",
                format!("must be between 1 and {}", limits.max_deliveries),
            ));
        }
        if self.dead_letter_topic.is_some() && self.max_deliveries.is_none() {
            return Err(BrokerError::invalid(
                "dead_letter_topic",
                "needs max_deliveries: without it no message is ever dead-lettered",
            ));
        }
        if self.dead_letter_topic.as_ref() == Some(&self.topic) {
            return Err(BrokerError::invalid(
                "dead_letter_topic",
                "must differ from the subscription's topic",
            ));
        }
        if let Some(push) = &self.push
            && self.ack_deadline_ms <= push.timeout_ms
        {
            return Err(BrokerError::invalid(
                "ack_deadline_ms",
                "must be longer than push.timeout_ms, so an attempt ends before its lease",
            ));
        }
        Ok(())
    }
}

/// Where a new subscription starts, or where a seek moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The oldest retained message.
    #[default]
    Earliest,
    /// Only messages published from now on.
    Latest,
    /// The first message published at or after this time, in every partition.
    Time(Timestamp),
    /// This offset in every partition (clamped to what the partition holds).
    Offset(u64),
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub name: SubscriptionName,
    pub config: SubscriptionConfig,
    pub created_at: Timestamp,
    /// Starts at 1, counts up with each update: the basis of `ETag`/`If-Match`.
    pub revision: u64,
}

/// A subscription's state and counters (counters since the process started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionStats {
    /// Messages not yet acked (and not filtered out), in flight or waiting.
    pub backlog: u64,
    pub backlog_bytes: u64,
    /// Leased to a consumer right now.
    pub in_flight: u64,
    /// Age of the oldest unacked message, by publish time; 0 when the backlog is empty.
    pub oldest_unacked_age_ms: u64,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    /// Messages removed by retention before this subscription acked them.
    pub expired: u64,
}

/// A message handed to a consumer, leased until its ack deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub ack_id: AckId,
    /// 1 for the first delivery, counting up with each redelivery.
    pub attempt: u32,
    pub message: Message,
}

/// What to do with delivered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done: never deliver again.
    Ack,
    /// Hand back: deliver again after `delay` (the subscription's backoff when `None`).
    Nack { delay: Option<Duration> },
    /// Keep the lease for `deadline` from now.
    Extend { deadline: Duration },
}

/// Why one ack id of a settle call was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRejection {
    pub ack_id: AckId,
    pub reason: String,
}

/// What a settle call did: ids applied (durably) and ids refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Ids applied (for `Ack`, also ids already acked before).
    pub applied: usize,
    pub rejected: Vec<AckRejection>,
}
