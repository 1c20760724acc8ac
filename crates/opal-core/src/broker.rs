//! The broker trait: the operations every storage backend provides to the front doors.

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    AckId, AckOutcome, AppName, AttemptQuery, BrokerError, Delivery, Message, NewMessage,
    PublishResult, PushAttempt, Resend, ResendTarget, Settle, StartPosition, Subscription,
    SubscriptionConfig, SubscriptionName, SubscriptionStats, Task, Topic, TopicConfig, TopicName,
    TopicStats,
};
use uuid::Uuid;

/// Whether a create call made something new or found it already there with the same settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    Existing,
}

/// A broker backend. Calls that return `Ok` after a write have made that write durable under the
/// configured fsync policy. The behaviour every backend must show is written down once, as the
/// conformance suite in [`crate::conformance`].
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Creates a topic, or finds it with the same settings (`Conflict` if the settings differ).
    async fn create_topic(
        &self,
        name: &TopicName,
        config: TopicConfig,
    ) -> Result<(Topic, Created), BrokerError>;

    async fn get_topic(&self, name: &TopicName) -> Result<(Topic, TopicStats), BrokerError>;

    /// Replaces a topic's settings. `partitions` cannot change. With `expected_revision`, fails
    /// with `RevisionMismatch` unless the topic is at that revision (optimistic concurrency).
    async fn update_topic(
        &self,
        name: &TopicName,
        config: TopicConfig,
        expected_revision: Option<u64>,
    ) -> Result<Topic, BrokerError>;

    /// Deletes a topic and its messages. Refused (`InUse`) while a subscription reads it or
    /// dead-letters into it.
    async fn delete_topic(
        &self,
        name: &TopicName,
        expected_revision: Option<u64>,
    ) -> Result<(), BrokerError>;

    /// Topics in name order, starting after `after`, at most `limit`; with `app`, only the
    /// topics qualified by that app (`<app>/…`).
    async fn list_topics(
        &self,
        app: Option<&AppName>,
        after: Option<&TopicName>,
        limit: usize,
    ) -> Result<Vec<Topic>, BrokerError>;

    /// Messages of one partition from `from` on, at most `limit`, without touching any
    /// subscription.
    async fn read_messages(
        &self,
        topic: &TopicName,
        partition: u32,
        from: StartPosition,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError>;

    /// Stores a batch of messages; answers once all of them are durable. The batch is validated
    /// whole before anything is stored. Delayed messages are stored now and become visible at
    /// their time; repeated dedup ids inside the window store nothing.
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<PublishResult>, BrokerError>;

    /// Creates a subscription at `start`, or finds it with the same settings (`start` is only
    /// used when creating).
    async fn create_subscription(
        &self,
        name: &SubscriptionName,
        config: SubscriptionConfig,
        start: StartPosition,
    ) -> Result<(Subscription, Created), BrokerError>;

    async fn get_subscription(
        &self,
        name: &SubscriptionName,
    ) -> Result<(Subscription, SubscriptionStats), BrokerError>;

    /// Replaces a subscription's settings (its `topic` cannot change); its position and ack
    /// state are kept. `expected_revision` as for topics.
    async fn update_subscription(
        &self,
        name: &SubscriptionName,
        config: SubscriptionConfig,
        expected_revision: Option<u64>,
    ) -> Result<Subscription, BrokerError>;

    /// Deletes a subscription and its ack state. Outstanding receipts become void.
    async fn delete_subscription(
        &self,
        name: &SubscriptionName,
        expected_revision: Option<u64>,
    ) -> Result<(), BrokerError>;

    /// Subscriptions in name order, starting after `after`, at most `limit`; with `app`, only the
    /// subscriptions qualified by that app (`<app>/…`).
    async fn list_subscriptions(
        &self,
        app: Option<&AppName>,
        after: Option<&SubscriptionName>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BrokerError>;

    /// Leases up to `max` deliveries, waiting up to `wait` for the first one to become available.
    /// Dropping the future before it resolves is safe: leases it took expire and are redelivered.
    async fn pull(
        &self,
        name: &SubscriptionName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BrokerError>;

    /// Acks, nacks or extends deliveries. Malformed ids fail the whole call with nothing applied;
    /// ids whose lease expired or was superseded are refused one by one. Applied changes are
    /// durable when this returns.
    async fn settle(
        &self,
        name: &SubscriptionName,
        ack_ids: &[AckId],
        action: Settle,
    ) -> Result<AckOutcome, BrokerError>;

    /// Moves the subscription to `position` and forgets its ack state and leases.
    async fn seek(
        &self,
        name: &SubscriptionName,
        position: StartPosition,
    ) -> Result<(), BrokerError>;

    /// A counter that moves whenever a subscription is created, updated or deleted (by any
    /// caller), so the push dispatcher learns of endpoints without polling.
    fn watch_subscriptions(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Appends to a push subscription's attempt log, which keeps a week of attempts. The log is
    /// a record for people, not a guarantee: a crash may lose its last entries.
    async fn record_push_attempts(
        &self,
        name: &SubscriptionName,
        attempts: Vec<PushAttempt>,
    ) -> Result<(), BrokerError>;

    /// Logged attempts matching `query`, newest first.
    async fn list_push_attempts(
        &self,
        name: &SubscriptionName,
        query: AttemptQuery,
    ) -> Result<Vec<PushAttempt>, BrokerError>;

    /// The messages behind live leases of `ack_ids`, in order; `None` for an id that is
    /// malformed, expired or superseded. Changes nothing.
    async fn leased_messages(
        &self,
        name: &SubscriptionName,
        ack_ids: &[AckId],
    ) -> Result<Vec<Option<Message>>, BrokerError>;

    /// Stores a task, replacing the one with its id (durable on return), kept for the
    /// backend's task retention after its `updated_at` (which sets `expires_at`). Backends create the
    /// task of a message published with a callback, and move it to `in_progress` when it is
    /// delivered and to `dead_lettered` (telling its callback) when it is dead-lettered.
    async fn put_task(&self, task: Task) -> Result<(), BrokerError>;

    /// The task of a message, unless it expired or never existed.
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>, BrokerError>;

    /// Ended tasks whose callback has not been told yet, at most `limit`.
    async fn tasks_owing_callbacks(&self, limit: usize) -> Result<Vec<Task>, BrokerError>;
    /// Queues messages of a push subscription to be pushed again, due now. The queue is durable
    /// when this returns, and kept apart from the ack state: a resend neither waits for nor
    /// changes it. A target already waiting starts over (due now, attempt 1), so a message
    /// waits at most once. Answers how many distinct targets are waiting for this call.
    async fn queue_resends(
        &self,
        name: &SubscriptionName,
        targets: Vec<ResendTarget>,
    ) -> Result<usize, BrokerError>;

    /// Resends due at the broker's clock, earliest first, at most `limit`.
    async fn due_resends(
        &self,
        name: &SubscriptionName,
        limit: usize,
    ) -> Result<Vec<Resend>, BrokerError>;

    /// Ends a resend's attempt: `None` drops it (delivered, or given up); `Some(at)` keeps it for
    /// its next attempt, not before `at`. A resend no longer queued is left alone.
    async fn settle_resend(
        &self,
        name: &SubscriptionName,
        partition: u32,
        offset: u64,
        next: Option<jiff::Timestamp>,
    ) -> Result<(), BrokerError>;

    /// A counter that moves whenever resends are queued (for any subscription), so the push
    /// dispatcher sends them without polling.
    fn watch_resends(&self) -> tokio::sync::watch::Receiver<u64>;

    /// The SHA-256 of the bootstrap admin key, if one was stored.
    async fn admin_key_hash(&self) -> Result<Option<[u8; 32]>, BrokerError>;

    /// Stores the SHA-256 of the bootstrap admin key.
    async fn set_admin_key_hash(&self, hash: [u8; 32]) -> Result<(), BrokerError>;

    /// Whether the backend has recovered and serves requests.
    fn is_ready(&self) -> bool;

    /// Flushes everything to stable storage and refuses further writes.
    async fn close(&self) -> Result<(), BrokerError>;
}
