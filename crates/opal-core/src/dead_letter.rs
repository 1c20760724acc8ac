//! Dead letters: the attributes a dead-lettered message carries, and redrive back to its source.

use std::time::Duration;

use crate::{AckId, Broker, BrokerError, NewMessage, Settle, SubscriptionName, TopicName};

/// Attribute naming the topic the message was dead-lettered from.
pub const SOURCE_TOPIC: &str = "dead_letter.source_topic";
/// Attribute naming the subscription that gave up on the message.
pub const SOURCE_SUBSCRIPTION: &str = "dead_letter.source_subscription";
/// Attribute with the number of deliveries made.
pub const ATTEMPTS: &str = "dead_letter.attempts";
/// Attribute saying why (`max_deliveries`).
pub const REASON: &str = "dead_letter.reason";
/// Attribute with the original message id (also the dedup id of a redrive, so a repeated
/// redrive does not publish twice inside the source topic's dedup window).
pub const ORIGINAL_ID: &str = "dead_letter.message_id";

const DEAD_LETTER_ATTRIBUTES: [&str; 5] = [
    SOURCE_TOPIC,
    SOURCE_SUBSCRIPTION,
    ATTEMPTS,
    REASON,
    ORIGINAL_ID,
];

/// What a redrive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedriveOutcome {
    /// Messages published back to their source topic and acked on the dead-letter subscription.
    pub moved: usize,
    /// Messages handed back untouched: not dead letters, or from a topic `may_publish` refused.
    pub skipped: usize,
}

/// Moves up to `max` messages from `subscription` (a subscription on a dead-letter topic) back
/// to the topics they came from: each is published again (same data, key and attributes, without
/// the dead-letter attributes), then acked. A crash between the two publishes again at most,
/// and the original id as dedup id absorbs that inside the source topic's window.
///
/// `may_publish` says which source topics the caller may publish to: the attributes of a message
/// on a dead-letter topic are whatever was published there, so they must not open a way into a
/// topic the caller could not publish to directly. Messages it refuses, and messages that are not
/// dead letters, are handed back untouched; redrive stops at the first pull that moves nothing.
pub async fn redrive(
    broker: &dyn Broker,
    subscription: &SubscriptionName,
    max: usize,
    may_publish: &(dyn Fn(&TopicName) -> bool + Sync),
) -> Result<RedriveOutcome, BrokerError> {
    let mut outcome = RedriveOutcome::default();
    while outcome.moved < max {
        let deliveries = broker
            .pull(subscription, (max - outcome.moved).min(100), Duration::ZERO)
            .await?;
        if deliveries.is_empty() {
            break;
        }
        let mut done: Vec<AckId> = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let message = delivery.message;
            let source = message
                .attributes
                .get(SOURCE_TOPIC)
                .and_then(|s| TopicName::new(s.clone()).ok())
                .filter(|topic| may_publish(topic));
            let Some(topic) = source else {
                // Not a dead letter (or not one this caller may move): hand it back untouched.
                outcome.skipped += 1;
                broker
                    .settle(
                        subscription,
                        &[delivery.ack_id],
                        Settle::Nack {
                            delay: Some(Duration::ZERO),
                        },
                    )
                    .await?;
                continue;
            };
            let dedup_id = message
                .attributes
                .get(ORIGINAL_ID)
                .cloned()
                .unwrap_or_else(|| message.id.to_string());
            let mut attributes = message.attributes.clone();
            for name in DEAD_LETTER_ATTRIBUTES {
                attributes.remove(name);
            }
            let again = NewMessage {
                key: message.key.clone(),
                attributes,
                data: message.data.clone(),
                encoding: message.encoding,
                dedup_id: Some(dedup_id),
                deliver_at: None,
                callback: None,
            };
            broker.publish(&topic, vec![again]).await?;
            done.push(delivery.ack_id);
            outcome.moved += 1;
        }
        if done.is_empty() {
            // Only skipped ones: pulling again would hand the same ones back, forever.
            break;
        }
        broker.settle(subscription, &done, Settle::Ack).await?;
    }
    Ok(outcome)
}
