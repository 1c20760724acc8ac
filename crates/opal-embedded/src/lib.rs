//! Opal's default storage backend: the broker on the opal-log engine, with metadata and ack state
//! in an embedded redb database. One process owns a data directory.

mod ack_id;
mod broker;
mod codec;
mod config;
mod cursor;
mod error;
mod meta;
mod topic;

pub use broker::EmbeddedBroker;
pub use config::EmbeddedConfig;
pub use error::EmbeddedError;
