//! Opal's default storage backend: the broker on the opal-log engine, with metadata, ack state,
//! retries, delayed messages and dedup ids in an embedded redb database. One process owns a
//! data directory.

mod ack_id;
mod broker;
mod codec;
mod config;
mod cursor;
mod error;
mod manage;
mod meta;
mod publish;
mod pull;
mod push_attempts;
mod resends;
mod rows;
mod scheduler;
mod sealing;
mod settle;
mod stats;
mod subscription;
mod tasks;
mod tenancy_store;
mod topic;

pub use broker::EmbeddedBroker;
pub use config::EmbeddedConfig;
pub use error::EmbeddedError;
