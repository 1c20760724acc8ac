//! The broker trait: the operations every storage backend provides to the front doors.

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    AckId, AckOutcome, BrokerError, Delivery, NewMessage, PublishResult, Subscription,
    SubscriptionConfig, SubscriptionName, Topic, TopicConfig, TopicName,
};

/// Whether a create call made something new or found it already there with the same settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    Existing,
}

/// A broker backend. Calls that return `Ok` after a write have made that write durable under the
/// configured fsync policy.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Creates a topic, or finds it with the same settings (`Conflict` if the settings differ).
    async fn create_topic(
        &self,
        name: &TopicName,
        config: TopicConfig,
    ) -> Result<(Topic, Created), BrokerError>;

    async fn get_topic(&self, name: &TopicName) -> Result<Topic, BrokerError>;

    /// Stores a batch of messages; answers once all of them are durable.
    /// The batch is validated whole before anything is stored.
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<PublishResult>, BrokerError>;

    /// Creates a subscription starting at the earliest retained message, or finds it unchanged.
    async fn create_subscription(
        &self,
        name: &SubscriptionName,
        config: SubscriptionConfig,
    ) -> Result<(Subscription, Created), BrokerError>;

    async fn get_subscription(&self, name: &SubscriptionName) -> Result<Subscription, BrokerError>;

    /// Leases up to `max` deliveries, waiting up to `wait` for the first one to become available.
    async fn pull(
        &self,
        name: &SubscriptionName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BrokerError>;

    /// Acknowledges deliveries; applied acks are durable when this returns.
    async fn ack(
        &self,
        name: &SubscriptionName,
        ack_ids: &[AckId],
    ) -> Result<AckOutcome, BrokerError>;

    /// The SHA-256 of the bootstrap admin key, if one was stored.
    async fn admin_key_hash(&self) -> Result<Option<[u8; 32]>, BrokerError>;

    /// Stores the SHA-256 of the bootstrap admin key.
    async fn set_admin_key_hash(&self, hash: [u8; 32]) -> Result<(), BrokerError>;

    /// Whether the backend has recovered and serves requests.
    fn is_ready(&self) -> bool;

    /// Flushes everything to stable storage and refuses further writes.
    async fn close(&self) -> Result<(), BrokerError>;
}
