//! Tenancy: apps (tenants), their API keys and scopes, grants between apps, quotas and the audit
//! trail, and the [`Directory`] that stores them.
//!
//! The broker itself knows only names: a resource of an app is stored under its qualified name
//! `<app>/<name>`. Deciding who may touch which name is the job of the edges (authentication and
//! authorization); this module gives them the records and the rules that need no network.

mod app;
mod audit;
mod directory;
mod grant;
mod key;
mod scope;

pub use app::{App, AppUpdate, Quotas};
pub use audit::{AuditEntry, AuditRecord};
pub use directory::Directory;
pub use grant::{Grant, Right};
pub use key::{ApiKey, KeyId, KeyStatus};
pub use scope::{NamePattern, Scope};
