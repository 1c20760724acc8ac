//! The audit trail: who changed what, when, and from where.

use serde::{Deserialize, Serialize};

/// One change, as recorded. Written by the edges after the change succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// Who: `admin` (the bootstrap key) or `<app>:<key id>`.
    pub actor: String,
    /// The app the actor belongs to.
    pub actor_app: String,
    /// What was done, e.g. `topic.create`, `key.revoke`.
    pub action: String,
    /// What it was done to, e.g. `acme/orders` or `acme` (an app) or `acme:k7f3…` (a key).
    pub resource: String,
    /// The client's address, when known.
    pub client: Option<String>,
    /// The request id the change was answered with.
    pub request_id: Option<String>,
}

/// An entry with its position in the trail (1, 2, …, in the order recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub entry: AuditEntry,
}
