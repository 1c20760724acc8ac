//! Opal's broker core: the vocabulary (topics, messages, subscriptions, deliveries), the rules every
//! backend shares, and the [`Broker`] trait that storage backends implement.
//!
//! This crate knows no network, no HTTP and no file format.

mod broker;
mod error;
mod limits;
mod message;
mod names;
mod partition;
mod subscription;
mod topic;

pub use broker::{Broker, Created};
pub use error::BrokerError;
pub use limits::Limits;
pub use message::{AckId, DataEncoding, Message, NewMessage, PublishResult};
pub use names::{SubscriptionName, TopicName};
pub use partition::partition_for_key;
pub use subscription::{AckOutcome, AckRejection, Delivery, Subscription, SubscriptionConfig};
pub use topic::{Topic, TopicConfig};
