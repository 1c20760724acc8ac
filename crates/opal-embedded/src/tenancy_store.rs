//! The [`Directory`] of the embedded backend: apps, keys, grants and the audit trail in
//! `meta.redb`, next to the broker's metadata, each write committed durably.

use std::sync::Arc;

use async_trait::async_trait;
use opal_core::tenancy::{ApiKey, App, AuditEntry, AuditRecord, Directory, Grant};
use opal_core::{AppName, BrokerError, TopicName};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::EmbeddedError;
use crate::broker::{EmbeddedBroker, blocking};
use crate::meta::{MetaStore, decode, encode};

/// app name → [`App`] as JSON.
const APPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("apps");
/// key id → [`ApiKey`] as JSON (the secret's hash, never the secret).
const KEYS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("api_keys");
/// (topic, grantee app) → [`Grant`] as JSON.
const GRANTS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("grants");
/// position → [`AuditEntry`] as JSON.
const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit");

/// Creates the tables, so that read transactions find them.
pub(crate) fn open_tables(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(APPS)?;
    txn.open_table(KEYS)?;
    txn.open_table(GRANTS)?;
    txn.open_table(AUDIT)?;
    Ok(())
}

impl MetaStore {
    fn create_app(&self, app: &App) -> Result<Result<(), BrokerError>, EmbeddedError> {
        let row = encode(app)?;
        self.write(|txn| {
            let mut apps = txn.open_table(APPS)?;
            if apps.get(app.name.as_str())?.is_some() {
                return Ok(Err(BrokerError::Conflict {
                    kind: "app",
                    name: app.name.to_string(),
                }));
            }
            apps.insert(app.name.as_str(), row.as_slice())?;
            Ok(Ok(()))
        })
    }

    fn replace_app(&self, app: &App) -> Result<Result<(), BrokerError>, EmbeddedError> {
        let row = encode(app)?;
        self.write(|txn| {
            let mut apps = txn.open_table(APPS)?;
            if apps.get(app.name.as_str())?.is_none() {
                return Ok(Err(BrokerError::AppNotFound(app.name.to_string())));
            }
            apps.insert(app.name.as_str(), row.as_slice())?;
            Ok(Ok(()))
        })
    }

    fn delete_app(&self, name: &AppName) -> Result<Result<(), BrokerError>, EmbeddedError> {
        self.write(|txn| {
            let mut apps = txn.open_table(APPS)?;
            if apps.remove(name.as_str())?.is_none() {
                return Ok(Err(BrokerError::AppNotFound(name.to_string())));
            }
            let mut keys = txn.open_table(KEYS)?;
            let mut doomed = Vec::new();
            for entry in keys.iter()? {
                let (id, row) = entry?;
                let key: ApiKey = decode("api key", row.value())?;
                if key.app == *name {
                    doomed.push(id.value().to_owned());
                }
            }
            for id in doomed {
                keys.remove(id.as_str())?;
            }
            let mut grants = txn.open_table(GRANTS)?;
            let mut doomed = Vec::new();
            for entry in grants.iter()? {
                let (pk, _) = entry?;
                let (topic, app) = pk.value();
                // Grants to the app, and grants on the app's own topics.
                let owner = topic.split_once(opal_core::APP_SEPARATOR).map(|(a, _)| a);
                if app == name.as_str() || owner == Some(name.as_str()) {
                    doomed.push((topic.to_owned(), app.to_owned()));
                }
            }
            for (topic, app) in doomed {
                grants.remove((topic.as_str(), app.as_str()))?;
            }
            Ok(Ok(()))
        })
    }

    fn put<K: redb::Key + 'static>(
        &self,
        table: TableDefinition<'_, K, &[u8]>,
        key: K::SelfType<'_>,
        row: &[u8],
    ) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            txn.open_table(table)?.insert(key, row)?;
            Ok(())
        })
    }

    fn all<K: redb::Key + 'static, T: for<'de> serde::Deserialize<'de>>(
        &self,
        table: TableDefinition<'_, K, &[u8]>,
        what: &str,
    ) -> Result<Vec<T>, EmbeddedError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(table).map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(EmbeddedError::meta)? {
            let (_, row) = entry.map_err(EmbeddedError::meta)?;
            out.push(decode(what, row.value())?);
        }
        Ok(out)
    }

    fn delete_grant(&self, topic: &str, app: &str) -> Result<bool, EmbeddedError> {
        self.write(|txn| Ok(txn.open_table(GRANTS)?.remove((topic, app))?.is_some()))
    }

    fn append_audit(&self, row: &[u8]) -> Result<u64, EmbeddedError> {
        self.write(|txn| {
            let mut audit = txn.open_table(AUDIT)?;
            let seq = audit.last()?.map_or(0, |(k, _)| k.value()) + 1;
            audit.insert(seq, row)?;
            Ok(seq)
        })
    }

    fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, EmbeddedError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(AUDIT).map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        let start = after.saturating_add(1);
        for entry in table
            .range(start..)
            .map_err(EmbeddedError::meta)?
            .take(limit)
        {
            let (seq, row) = entry.map_err(EmbeddedError::meta)?;
            out.push(AuditRecord {
                seq: seq.value(),
                entry: decode("audit entry", row.value())?,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl Directory for EmbeddedBroker {
    async fn create_app(&self, app: &App) -> Result<(), BrokerError> {
        let (meta, app) = (Arc::clone(&self.inner.meta), app.clone());
        blocking(move || meta.create_app(&app)).await?
    }

    async fn replace_app(&self, app: &App) -> Result<(), BrokerError> {
        let (meta, app) = (Arc::clone(&self.inner.meta), app.clone());
        blocking(move || meta.replace_app(&app)).await?
    }

    async fn delete_app(&self, name: &AppName) -> Result<(), BrokerError> {
        let (meta, name) = (Arc::clone(&self.inner.meta), name.clone());
        blocking(move || meta.delete_app(&name)).await?
    }

    async fn list_apps(&self) -> Result<Vec<App>, BrokerError> {
        let meta = Arc::clone(&self.inner.meta);
        Ok(blocking(move || meta.all(APPS, "app")).await?)
    }

    async fn put_key(&self, key: &ApiKey) -> Result<(), BrokerError> {
        let (meta, id, row) = (
            Arc::clone(&self.inner.meta),
            key.id.to_string(),
            encode(key)?,
        );
        Ok(blocking(move || meta.put(KEYS, id.as_str(), &row)).await?)
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, BrokerError> {
        let meta = Arc::clone(&self.inner.meta);
        Ok(blocking(move || meta.all(KEYS, "api key")).await?)
    }

    async fn put_grant(&self, grant: &Grant) -> Result<(), BrokerError> {
        let meta = Arc::clone(&self.inner.meta);
        let (topic, app, row) = (
            grant.topic.to_string(),
            grant.app.to_string(),
            encode(grant)?,
        );
        Ok(blocking(move || meta.put(GRANTS, (topic.as_str(), app.as_str()), &row)).await?)
    }

    async fn delete_grant(&self, topic: &TopicName, app: &AppName) -> Result<bool, BrokerError> {
        let (meta, topic, app) = (
            Arc::clone(&self.inner.meta),
            topic.to_string(),
            app.to_string(),
        );
        Ok(blocking(move || meta.delete_grant(&topic, &app)).await?)
    }

    async fn list_grants(&self) -> Result<Vec<Grant>, BrokerError> {
        let meta = Arc::clone(&self.inner.meta);
        Ok(blocking(move || meta.all(GRANTS, "grant")).await?)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, BrokerError> {
        let (meta, row) = (Arc::clone(&self.inner.meta), encode(entry)?);
        Ok(blocking(move || meta.append_audit(&row)).await?)
    }

    async fn read_audit(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, BrokerError> {
        let meta = Arc::clone(&self.inner.meta);
        Ok(blocking(move || meta.read_audit(after, limit)).await?)
    }
}
