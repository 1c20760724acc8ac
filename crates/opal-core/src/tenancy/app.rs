//! An app: a tenant, with its quotas.

use serde::{Deserialize, Serialize};

use crate::AppName;

/// A tenant: a platform service or a third-party developer. Owns keys, topics and subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub name: AppName,
    pub created_at_ms: i64,
    /// Bumped by every update; the HTTP `ETag`.
    pub revision: u64,
    pub quotas: Quotas,
}

/// What an app may use. `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Messages published per second (a sustained rate; a burst of one second is allowed).
    pub publish_messages_per_s: Option<u64>,
    /// Payload bytes published per second (same rule).
    pub publish_bytes_per_s: Option<u64>,
    /// Bytes stored in the app's topics' logs.
    pub stored_bytes: Option<u64>,
    /// Topics the app may own.
    pub topics: Option<u64>,
    /// Subscriptions the app may own.
    pub subscriptions: Option<u64>,
    /// SSE and WebSocket streams open at once.
    pub open_streams: Option<u64>,
}

/// A change to an app: the quotas given replace the app's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppUpdate {
    pub quotas: Quotas,
}

impl App {
    pub fn new(name: AppName, now_ms: i64) -> Self {
        App {
            name,
            created_at_ms: now_ms,
            revision: 1,
            quotas: Quotas::default(),
        }
    }
}
