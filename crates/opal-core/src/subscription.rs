//! Subscriptions: durable cursors with their own ack state, and the deliveries they hand out.

use jiff::Timestamp;

use crate::{AckId, BrokerError, Limits, Message, SubscriptionName, TopicName};

/// The settings of a subscription that its creator chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    pub topic: TopicName,
    /// How long a consumer holds a delivery before it is handed out again.
    pub ack_deadline_ms: u64,
}

impl SubscriptionConfig {
    pub const DEFAULT_ACK_DEADLINE_MS: u64 = 30_000;
    /// Shorter deadlines would redeliver faster than a network round trip.
    pub const MIN_ACK_DEADLINE_MS: u64 = 100;

    pub fn validate(&self, limits: &Limits) -> Result<(), BrokerError> {
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
        Ok(())
    }
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub name: SubscriptionName,
    pub config: SubscriptionConfig,
    pub created_at: Timestamp,
}

/// A message handed to a consumer, leased until its ack deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub ack_id: AckId,
    /// 1 for the first delivery, counting up with each redelivery.
    pub attempt: u32,
    pub message: Message,
}

/// Why one ack id of an ack call was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRejection {
    pub ack_id: AckId,
    pub reason: String,
}

/// What an ack call did: acks applied (durably) and ack ids refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckOutcome {
    pub acked: usize,
    pub rejected: Vec<AckRejection>,
}
