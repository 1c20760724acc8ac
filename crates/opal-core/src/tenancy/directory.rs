//! Where apps, keys, grants and the audit trail are kept.

use async_trait::async_trait;

use super::{ApiKey, App, AuditEntry, AuditRecord, Grant};
use crate::{AppName, BrokerError, TopicName};

/// The store of tenancy records. Small and read at start-up in full: the edges keep what they
/// check on every request (keys, grants, quotas) in memory and write changes through. Every
/// write is durable when it returns, like the broker's.
#[async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Stores a new app; `Conflict` if the name is taken.
    async fn create_app(&self, app: &App) -> Result<(), BrokerError>;
    /// Replaces an existing app's record (`NotFound` if there is none).
    async fn replace_app(&self, app: &App) -> Result<(), BrokerError>;
    /// Removes an app with its keys and the grants made to it.
    async fn delete_app(&self, name: &AppName) -> Result<(), BrokerError>;
    /// Every app, by name.
    async fn list_apps(&self) -> Result<Vec<App>, BrokerError>;

    /// Stores a key, replacing one with the same id.
    async fn put_key(&self, key: &ApiKey) -> Result<(), BrokerError>;
    /// Every key of every app (revoked and expired ones too), by id.
    async fn list_keys(&self) -> Result<Vec<ApiKey>, BrokerError>;

    /// Stores a grant, replacing the one for the same topic and app.
    async fn put_grant(&self, grant: &Grant) -> Result<(), BrokerError>;
    /// Removes a grant; `false` if there was none.
    async fn delete_grant(&self, topic: &TopicName, app: &AppName) -> Result<bool, BrokerError>;
    /// Every grant, by topic then app.
    async fn list_grants(&self) -> Result<Vec<Grant>, BrokerError>;

    /// Appends to the audit trail; returns the entry's position.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, BrokerError>;
    /// Up to `limit` entries after position `after` (0: from the start), oldest first.
    async fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, BrokerError>;
}
