//! Topics: named, partitioned, durable logs, with retention and a dedup window.

use jiff::Timestamp;

use crate::{BrokerError, Limits, TopicName};

/// What retention may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetentionPolicy {
    /// Delete old segments by age and size whatever the subscriptions say; what a subscription
    /// had not acked counts as `expired` in its stats.
    #[default]
    Limits,
    /// Keep a segment until every subscription has acked past it (`max_age_ms` still caps it).
    Acked,
}

/// How long a topic keeps messages. Whole segments are deleted, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub max_age_ms: Option<u64>,
    pub max_bytes: Option<u64>,
    pub policy: RetentionPolicy,
}

/// The settings of a topic that its creator chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub partitions: u32,
    pub retention: Retention,
    /// How long a dedup id is remembered.
    pub dedup_window_ms: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention: Retention::default(),
            dedup_window_ms: Self::DEFAULT_DEDUP_WINDOW_MS,
        }
    }
}

impl TopicConfig {
    pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 120_000;

    pub fn validate(&self, limits: &Limits) -> Result<(), BrokerError> {
        if self.partitions == 0 || self.partitions > limits.max_partitions {
            return Err(BrokerError::invalid(
                "partitions",
                format!("must be between 1 and {}", limits.max_partitions),
            ));
        }
        if self.dedup_window_ms > limits.max_dedup_window_ms {
            return Err(BrokerError::invalid(
                "dedup_window_ms",
                format!("must be at most {}", limits.max_dedup_window_ms),
            ));
        }
        if self.retention.max_age_ms == Some(0) {
            return Err(BrokerError::invalid(
                "retention.max_age_ms",
                "must be positive",
            ));
        }
        if self.retention.max_bytes == Some(0) {
            return Err(BrokerError::invalid(
                "retention.max_bytes",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// A topic as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub name: TopicName,
    pub config: TopicConfig,
    pub created_at: Timestamp,
    /// Starts at 1, counts up with each update: the basis of `ETag`/`If-Match`.
    pub revision: u64,
}

/// What one partition holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionStats {
    pub partition: u32,
    /// First retained offset.
    pub start_offset: u64,
    /// One past the last offset.
    pub end_offset: u64,
    pub messages: u64,
    pub bytes: u64,
}

/// A topic's contents and counters (counters since the process started).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicStats {
    pub partitions: Vec<PartitionStats>,
    pub published_messages: u64,
    pub published_bytes: u64,
    /// Publishes answered from the dedup window without storing anything.
    pub duplicates: u64,
    /// Delayed messages waiting for their time.
    pub scheduled: u64,
}
