//! Opal's broker core: the vocabulary (topics, messages, subscriptions, deliveries), the rules every
//! backend shares (validation, filters, backoff, partition choice, dead letters), the [`Broker`]
//! trait that storage backends implement, and the conformance suite they must pass.
//!
//! This crate knows no network, no HTTP type and no file format. It does render a message as a
//! CloudEvent ([`cloudevent`]), in plain strings and bytes, because every front door that sends
//! events (the HTTP API, the push dispatcher) must send the same ones.

mod backoff;
mod broker;
mod clock;
pub mod cloudevent;
pub mod dead_letter;
mod error;
mod filter;
mod limits;
mod message;
mod names;
mod partition;
pub mod push;
pub mod resend;
mod subscription;
pub mod task;
pub mod tenancy;
mod topic;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backoff::Backoff;
pub use broker::{Broker, Created};
pub use clock::Clock;
pub use cloudevent::{BinaryEvent, CloudEvent};
pub use error::BrokerError;
pub use filter::Filter;
pub use limits::Limits;
pub use message::{AckId, DataEncoding, Message, NewMessage, PublishResult};
pub use names::{APP_SEPARATOR, AppName, SubscriptionName, TopicName};
pub use partition::partition_for_key;
pub use push::{
    AttemptQuery, AttemptStatus, EndpointState, PushAttempt, PushConfig, PushFormat, PushSecret,
    Resend, ResendTarget,
};
pub use subscription::{
    AckOutcome, AckRejection, Delivery, Settle, StartPosition, Subscription, SubscriptionConfig,
    SubscriptionStats,
};
pub use task::{Callback, Task, TaskResult, TaskState};
pub use topic::{PartitionStats, Retention, RetentionPolicy, Topic, TopicConfig, TopicStats};
