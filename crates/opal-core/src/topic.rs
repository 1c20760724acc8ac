//! Topics: named, partitioned, durable logs.

use jiff::Timestamp;

use crate::{BrokerError, Limits, TopicName};

/// The settings of a topic that its creator chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub partitions: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig { partitions: 1 }
    }
}

impl TopicConfig {
    pub fn validate(&self, limits: &Limits) -> Result<(), BrokerError> {
        if self.partitions == 0 || self.partitions > limits.max_partitions {
            return Err(BrokerError::invalid(
                "partitions",
                format!("must be between 1 and {}", limits.max_partitions),
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
}
