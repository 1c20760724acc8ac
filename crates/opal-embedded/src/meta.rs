//! The metadata store: topics, subscriptions, ack state and settings in one redb file.
//!
//! Every write transaction commits with `Durability::Immediate`, so a call that returned has
//! reached stable storage. All methods block (a commit syncs the disk): call them off the
//! async executor.

use std::collections::BTreeSet;
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::EmbeddedError;
use crate::cursor::AckPlan;

const SETTINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("settings");
const TOPICS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("topics");
const SUBSCRIPTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("subscriptions");
/// (subscription, partition) → ack floor: every offset below it is acked.
const ACK_FLOORS: TableDefinition<'_, (&str, u32), u64> = TableDefinition::new("ack_floors");
/// (subscription, partition, offset) for acked offsets at or above the floor.
const ACKED: TableDefinition<'_, (&str, u32, u64), ()> = TableDefinition::new("acked");

/// Bumped when the layout of the data directory changes incompatibly.
pub(crate) const FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &str = "format_version";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopicRow {
    pub(crate) partitions: u32,
    pub(crate) created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubscriptionRow {
    pub(crate) topic: String,
    pub(crate) ack_deadline_ms: u64,
    pub(crate) created_at_ms: i64,
}

#[derive(Debug)]
pub(crate) struct MetaStore {
    db: Database,
}

fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>, EmbeddedError> {
    serde_json::to_vec(row).map_err(|e| EmbeddedError::CorruptMeta(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, EmbeddedError> {
    serde_json::from_slice(bytes).map_err(|e| EmbeddedError::CorruptMeta(format!("{what}: {e}")))
}

impl MetaStore {
    pub(crate) fn open(path: &Path) -> Result<Self, EmbeddedError> {
        let db = Database::create(path).map_err(EmbeddedError::meta)?;
        let store = MetaStore { db };
        store.write(|txn| {
            // Opening every table once makes later read transactions find them.
            txn.open_table(TOPICS)?;
            txn.open_table(SUBSCRIPTIONS)?;
            txn.open_table(ACK_FLOORS)?;
            txn.open_table(ACKED)?;
            let mut settings = txn.open_table(SETTINGS)?;
            let found = settings.get(FORMAT_KEY)?.map(|v| v.value().to_vec());
            match found {
                None => {
                    settings.insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes().as_slice())?;
                }
                Some(v) if v == FORMAT_VERSION.to_be_bytes() => {}
                Some(v) => {
                    return Err(EmbeddedError::CorruptMeta(format!(
                        "data directory has format version {v:?}, this build reads {FORMAT_VERSION}"
                    )));
                }
            }
            Ok(())
        })?;
        Ok(store)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, EmbeddedError>,
    ) -> Result<T, EmbeddedError> {
        let mut txn = self.db.begin_write().map_err(EmbeddedError::meta)?;
        txn.set_durability(Durability::Immediate)
            .map_err(EmbeddedError::meta)?;
        let out = f(&txn)?;
        txn.commit().map_err(EmbeddedError::meta)?;
        Ok(out)
    }

    pub(crate) fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, EmbeddedError> {
        let txn = self.db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(SETTINGS).map_err(EmbeddedError::meta)?;
        let value = table.get(key).map_err(EmbeddedError::meta)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub(crate) fn put_setting(&self, key: &str, value: &[u8]) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            txn.open_table(SETTINGS)?.insert(key, value)?;
            Ok(())
        })
    }

    pub(crate) fn topics(&self) -> Result<Vec<(String, TopicRow)>, EmbeddedError> {
        self.rows(TOPICS, "topic")
    }

    pub(crate) fn subscriptions(&self) -> Result<Vec<(String, SubscriptionRow)>, EmbeddedError> {
        self.rows(SUBSCRIPTIONS, "subscription")
    }

    fn rows<T: for<'de> Deserialize<'de>>(
        &self,
        def: TableDefinition<'_, &str, &[u8]>,
        what: &str,
    ) -> Result<Vec<(String, T)>, EmbeddedError> {
        let txn = self.db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(def).map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(EmbeddedError::meta)? {
            let (k, v) = entry.map_err(EmbeddedError::meta)?;
            out.push((k.value().to_owned(), decode(what, v.value())?));
        }
        Ok(out)
    }

    pub(crate) fn put_topic(&self, name: &str, row: &TopicRow) -> Result<(), EmbeddedError> {
        let bytes = encode(row)?;
        self.write(|txn| {
            txn.open_table(TOPICS)?.insert(name, bytes.as_slice())?;
            Ok(())
        })
    }

    /// Stores a subscription with the ack floor it starts from on each partition.
    pub(crate) fn put_subscription(
        &self,
        name: &str,
        row: &SubscriptionRow,
        floors: &[u64],
    ) -> Result<(), EmbeddedError> {
        let bytes = encode(row)?;
        self.write(|txn| {
            txn.open_table(SUBSCRIPTIONS)?
                .insert(name, bytes.as_slice())?;
            let mut table = txn.open_table(ACK_FLOORS)?;
            for (partition, floor) in (0u32..).zip(floors) {
                table.insert((name, partition), *floor)?;
            }
            Ok(())
        })
    }

    /// The ack floor and the acked offsets above it, per partition.
    pub(crate) fn ack_state(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<Vec<(u64, BTreeSet<u64>)>, EmbeddedError> {
        let txn = self.db.begin_read().map_err(EmbeddedError::meta)?;
        let floors = txn.open_table(ACK_FLOORS).map_err(EmbeddedError::meta)?;
        let acked = txn.open_table(ACKED).map_err(EmbeddedError::meta)?;
        let mut out = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let floor = floors
                .get((name, partition))
                .map_err(EmbeddedError::meta)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut set = BTreeSet::new();
            let range = acked
                .range((name, partition, floor)..=(name, partition, u64::MAX))
                .map_err(EmbeddedError::meta)?;
            for entry in range {
                let (k, _) = entry.map_err(EmbeddedError::meta)?;
                set.insert(k.value().2);
            }
            out.push((floor, set));
        }
        Ok(out)
    }

    /// Makes the acks of one call durable, all partitions in one transaction.
    pub(crate) fn apply_acks(
        &self,
        name: &str,
        plans: &[(u32, AckPlan)],
    ) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            let mut floors = txn.open_table(ACK_FLOORS)?;
            let mut acked = txn.open_table(ACKED)?;
            for (partition, plan) in plans {
                for &offset in &plan.delete {
                    acked.remove((name, *partition, offset))?;
                }
                for &offset in &plan.insert {
                    acked.insert((name, *partition, offset), ())?;
                }
                floors.insert((name, *partition), plan.new_floor)?;
            }
            Ok(())
        })
    }
}

// redb's per-operation error types all convert into `redb::Error`; this lets closures use `?`.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for EmbeddedError {
            fn from(e: $t) -> Self {
                EmbeddedError::Meta(e.into())
            }
        }
    )*};
}
from_redb!(redb::TableError, redb::StorageError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = MetaStore::open(&path).unwrap();
            let row = SubscriptionRow {
                topic: "t".into(),
                ack_deadline_ms: 1000,
                created_at_ms: 0,
            };
            store.put_subscription("s", &row, &[0, 0]).unwrap();
            let plan = AckPlan {
                new_floor: 2,
                insert: vec![5, 9],
                delete: vec![],
            };
            store.apply_acks("s", &[(1, plan)]).unwrap();
        }
        let store = MetaStore::open(&path).unwrap();
        let state = store.ack_state("s", 2).unwrap();
        assert_eq!(state[0], (0, BTreeSet::new()));
        assert_eq!(state[1], (2, BTreeSet::from([5, 9])));
        assert_eq!(store.subscriptions().unwrap().len(), 1);
    }
}
