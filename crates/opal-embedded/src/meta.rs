//! The metadata store: topics, subscriptions, ack state and settings in one redb file.
//!
//! Every write transaction commits with `Durability::Immediate`, so a call that returned has
//! reached stable storage. All methods block (a commit syncs the disk): call them off the
//! async executor. With encryption on, rows that can hold message content (delayed messages,
//! retries with their ordering keys, subscriptions with their filters) are sealed and dedup
//! ids are stored as keyed tags (see `sealing`).

use std::collections::BTreeSet;
use std::path::Path;

use std::sync::{RwLock, RwLockReadGuard};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::EmbeddedError;
use crate::cursor::AckPlan;
use crate::sealing::{KEY_CHECK_PREFIX, Sealing, row_aad};

const SETTINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("settings");
const TOPICS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("topics");
const SUBSCRIPTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("subscriptions");
/// (subscription, partition) → ack floor: every offset below it is acked.
const ACK_FLOORS: TableDefinition<'_, (&str, u32), u64> = TableDefinition::new("ack_floors");
/// (subscription, partition, offset) for acked offsets at or above the floor.
const ACKED: TableDefinition<'_, (&str, u32, u64), ()> = TableDefinition::new("acked");
/// (subscription, partition, offset) → failed deliveries: attempt count, earliest retry, key.
const RETRIES: TableDefinition<'_, (&str, u32, u64), &[u8]> = TableDefinition::new("retries");
/// (topic, due time ms, message id) → a delayed message waiting for its time.
const DELAYED: TableDefinition<'_, (&str, i64, u128), &[u8]> = TableDefinition::new("delayed");
/// topic → how many delayed messages wait, kept with every change so nothing counts rows.
const DELAYED_COUNT: TableDefinition<'_, &str, u64> = TableDefinition::new("delayed_count");
/// (topic, dedup id) → the first message's result and when the entry expires.
const DEDUP: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("dedup");
/// (topic, dedup id) of dedup entries reserved before their append and not yet confirmed:
/// after a crash, open resolves each (found in the log, or dropped).
const DEDUP_PENDING: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("dedup_pending");
/// (expiry ms, topic, dedup id): dedup entries in expiry order, for sweeping.
const DEDUP_EXPIRY: TableDefinition<'_, (i64, &str, &str), ()> =
    TableDefinition::new("dedup_expiry");

const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Bumped when the layout of the data directory changes incompatibly.
pub(crate) const FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &str = "format_version";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopicRow {
    pub(crate) partitions: u32,
    pub(crate) created_at_ms: i64,
    #[serde(default)]
    pub(crate) retention_max_age_ms: Option<u64>,
    #[serde(default)]
    pub(crate) retention_max_bytes: Option<u64>,
    /// `limits` or `acked`.
    #[serde(default)]
    pub(crate) retention_policy: String,
    #[serde(default)]
    pub(crate) dedup_window_ms: Option<u64>,
    #[serde(default)]
    pub(crate) revision: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SubscriptionRow {
    pub(crate) topic: String,
    pub(crate) ack_deadline_ms: u64,
    pub(crate) created_at_ms: i64,
    #[serde(default)]
    pub(crate) backoff: Option<(u64, u64, f64)>,
    #[serde(default)]
    pub(crate) max_deliveries: Option<u32>,
    #[serde(default)]
    pub(crate) dead_letter_topic: Option<String>,
    #[serde(default)]
    pub(crate) ordered: bool,
    #[serde(default)]
    pub(crate) filter: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) revision: u64,
    #[serde(default)]
    pub(crate) push: Option<PushRow>,
}

/// A push subscription's endpoint, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PushRow {
    pub(crate) url: String,
    /// `(secret, expires_at_ms)`, the current one first.
    pub(crate) secrets: Vec<(String, Option<i64>)>,
    pub(crate) timeout_ms: u64,
    pub(crate) max_in_flight: u32,
    pub(crate) rate_limit_per_s: Option<u32>,
    /// `cloudevents`, `binary` or `raw`.
    pub(crate) format: String,
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    pub(crate) retry_schedule_ms: Vec<u64>,
    pub(crate) validate: bool,
    /// `(disabled_at_ms, reason)` while disabled.
    pub(crate) disabled: Option<(i64, String)>,
    #[serde(default)]
    pub(crate) url_attribute: Option<String>,
}

/// A failed delivery waiting for its next attempt, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RetryRow {
    pub(crate) attempt: u32,
    pub(crate) not_before_ms: i64,
    pub(crate) key: Option<String>,
}

/// A delayed message, as stored until its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DelayedRow {
    pub(crate) partition: u32,
    pub(crate) key: Option<String>,
    pub(crate) attributes: std::collections::BTreeMap<String, String>,
    /// Standard base64 of the payload.
    pub(crate) data: String,
    pub(crate) json: bool,
    pub(crate) publish_ms: i64,
    #[serde(default)]
    pub(crate) payload_len: u64,
    /// A task's callback: `("url", url)` or `("topic", name)`.
    #[serde(default)]
    pub(crate) callback: Option<(String, String)>,
}

/// A remembered dedup id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DedupRow {
    pub(crate) expires_ms: i64,
    pub(crate) id: u128,
    pub(crate) partition: u32,
    pub(crate) offset: Option<u64>,
    /// While reserved but not confirmed: the partition's end offset before the append (the
    /// message is at or after it, if the append happened at all).
    #[serde(default)]
    pub(crate) pending_from: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct MetaStore {
    /// `None` once closed, so that the file lock is released even while handles remain.
    db: RwLock<Option<Database>>,
    pub(crate) sealing: Sealing,
}

/// A dedup id as stored (a tag when encryption is on), as opposed to one given by a publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredDedupId(pub(crate) String);

/// A read lock on the open database.
pub(crate) struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Db<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.0
            .as_ref()
            .expect("MetaStore::db checks the database is open")
    }
}

pub(crate) fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>, EmbeddedError> {
    serde_json::to_vec(row).map_err(|e| EmbeddedError::CorruptMeta(e.to_string()))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    what: &str,
    bytes: &[u8],
) -> Result<T, EmbeddedError> {
    serde_json::from_slice(bytes).map_err(|e| EmbeddedError::CorruptMeta(format!("{what}: {e}")))
}

/// Where sealed rows live, as associated data.
fn delayed_aad(topic: &str, due: i64, id: u128) -> Vec<u8> {
    row_aad(
        "delayed",
        &[topic.as_bytes(), &due.to_le_bytes(), &id.to_le_bytes()],
    )
}

fn retry_aad(name: &str, partition: u32, offset: u64) -> Vec<u8> {
    row_aad(
        "retries",
        &[
            name.as_bytes(),
            &partition.to_le_bytes(),
            &offset.to_le_bytes(),
        ],
    )
}

fn subscription_aad(name: &str) -> Vec<u8> {
    row_aad("subscriptions", &[name.as_bytes()])
}

impl MetaStore {
    /// Opens (creating) the store; `keys` seal new rows and must include every key that wrote
    /// to it before (checked here: a missing or different key fails the open).
    pub(crate) fn open(
        path: &Path,
        keys: Option<opal_log::Keyring>,
    ) -> Result<Self, EmbeddedError> {
        // A bounded page cache: metadata reads are few and hot, and redb's default (1 GiB)
        // would let a large table (a million delayed messages) fill memory.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(EmbeddedError::meta)?;
        let store = MetaStore {
            db: RwLock::new(Some(db)),
            sealing: Sealing::new(keys),
        };
        store.write(|txn| {
            // Opening every table once makes later read transactions find them.
            txn.open_table(TOPICS)?;
            txn.open_table(SUBSCRIPTIONS)?;
            txn.open_table(ACK_FLOORS)?;
            txn.open_table(ACKED)?;
            txn.open_table(RETRIES)?;
            txn.open_table(DELAYED)?;
            txn.open_table(DELAYED_COUNT)?;
            txn.open_table(DEDUP)?;
            txn.open_table(DEDUP_PENDING)?;
            txn.open_table(DEDUP_EXPIRY)?;
            crate::tenancy_store::open_tables(txn)?;
            crate::push_attempts::open_tables(txn)?;
            crate::tasks::open_tables(txn)?;
            crate::resends::open_tables(txn)?;
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
            let mut recorded = Vec::new();
            for entry in settings.range(KEY_CHECK_PREFIX..)? {
                let (name, check) = entry?;
                let Some(id) = name.value().strip_prefix(KEY_CHECK_PREFIX) else {
                    break;
                };
                let id = id.parse::<u16>().map_err(|_| {
                    EmbeddedError::CorruptMeta(format!("bad key record {}", name.value()))
                })?;
                recorded.push((id, check.value().to_vec()));
            }
            if let Some((name, check)) = store.sealing.check_recorded_keys(&recorded)? {
                settings.insert(name.as_str(), check.as_slice())?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    pub(crate) fn db(&self) -> Result<Db<'_>, EmbeddedError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            return Err(EmbeddedError::Closed);
        }
        Ok(Db(guard))
    }

    /// Closes the database (waiting for transactions in flight); later calls fail with `Closed`.
    pub(crate) fn close(&self) {
        self.db.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, EmbeddedError>,
    ) -> Result<T, EmbeddedError> {
        self.write_with(true, f)
    }

    /// `durable: false` commits without syncing: the change becomes durable with the next
    /// durable commit, and a crash before that loses it. Used only for state that is safe to
    /// lose (it only makes a message come back sooner or be filtered again).
    pub(crate) fn write_with<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, EmbeddedError>,
    ) -> Result<T, EmbeddedError> {
        // The read lock is held until the commit ends, so `close` waits for it.
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(EmbeddedError::meta)?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(EmbeddedError::meta)?;
        let out = f(&txn)?;
        txn.commit().map_err(EmbeddedError::meta)?;
        Ok(out)
    }

    pub(crate) fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, EmbeddedError> {
        // The read lock is held until the transaction ends, so `close` waits for it.
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
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
        self.rows(TOPICS, "topic", |_| Vec::new())
    }

    pub(crate) fn subscriptions(&self) -> Result<Vec<(String, SubscriptionRow)>, EmbeddedError> {
        self.rows(SUBSCRIPTIONS, "subscription", subscription_aad)
    }

    fn rows<T: for<'de> Deserialize<'de>>(
        &self,
        def: TableDefinition<'_, &str, &[u8]>,
        what: &str,
        aad: impl Fn(&str) -> Vec<u8>,
    ) -> Result<Vec<(String, T)>, EmbeddedError> {
        // The read lock is held until the transaction ends, so `close` waits for it.
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(def).map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(EmbeddedError::meta)? {
            let (k, v) = entry.map_err(EmbeddedError::meta)?;
            let name = k.value();
            let row = self.sealing.decode(what, &aad(name), v.value())?;
            out.push((name.to_owned(), row));
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
        let bytes = self.sealing.encode(&subscription_aad(name), row)?;
        self.write(|txn| {
            txn.open_table(SUBSCRIPTIONS)?
                .insert(name, bytes.as_slice())?;
            // A new subscription starts clean, whatever an earlier one of that name left.
            txn.open_table(ACKED)?
                .retain_in((name, 0, 0)..=(name, u32::MAX, u64::MAX), |_, _| false)?;
            txn.open_table(RETRIES)?
                .retain_in((name, 0, 0)..=(name, u32::MAX, u64::MAX), |_, _| false)?;
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
        // The read lock is held until the transaction ends, so `close` waits for it.
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
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

    /// Stores the acks of one call, all partitions in one transaction.
    pub(crate) fn apply_acks(
        &self,
        name: &str,
        plans: &[(u32, AckPlan)],
        durable: bool,
    ) -> Result<(), EmbeddedError> {
        self.write_with(durable, |txn| {
            let mut floors = txn.open_table(ACK_FLOORS)?;
            let mut acked = txn.open_table(ACKED)?;
            let mut retries = txn.open_table(RETRIES)?;
            for (partition, plan) in plans {
                for &offset in &plan.acked {
                    retries.remove((name, *partition, offset))?;
                }
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

impl MetaStore {
    pub(crate) fn put_retries(
        &self,
        name: &str,
        retries: &[(u32, u64, RetryRow)],
        durable: bool,
    ) -> Result<(), EmbeddedError> {
        let rows = retries
            .iter()
            .map(|(p, o, row)| Ok((*p, *o, self.sealing.encode(&retry_aad(name, *p, *o), row)?)))
            .collect::<Result<Vec<_>, EmbeddedError>>()?;
        self.write_with(durable, |txn| {
            let mut table = txn.open_table(RETRIES)?;
            for (partition, offset, bytes) in &rows {
                table.insert((name, *partition, *offset), bytes.as_slice())?;
            }
            Ok(())
        })
    }

    pub(crate) fn retries(&self, name: &str) -> Result<Vec<(u32, u64, RetryRow)>, EmbeddedError> {
        // The read lock is held until the transaction ends, so `close` waits for it.
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(RETRIES).map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        for entry in table
            .range((name, 0, 0)..=(name, u32::MAX, u64::MAX))
            .map_err(EmbeddedError::meta)?
        {
            let (k, v) = entry.map_err(EmbeddedError::meta)?;
            let (_, partition, offset) = k.value();
            let aad = retry_aad(name, partition, offset);
            let row = self.sealing.decode("retry", &aad, v.value())?;
            out.push((partition, offset, row));
        }
        Ok(out)
    }

    /// Seek: forgets a subscription's acks and retries and sets new floors.
    pub(crate) fn reset_subscription(
        &self,
        name: &str,
        floors: &[u64],
    ) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            let mut acked = txn.open_table(ACKED)?;
            acked.retain_in((name, 0, 0)..=(name, u32::MAX, u64::MAX), |_, _| false)?;
            let mut retries = txn.open_table(RETRIES)?;
            retries.retain_in((name, 0, 0)..=(name, u32::MAX, u64::MAX), |_, _| false)?;
            let mut table = txn.open_table(ACK_FLOORS)?;
            for (partition, floor) in (0u32..).zip(floors) {
                table.insert((name, partition), *floor)?;
            }
            Ok(())
        })
    }

    /// Stores delayed messages and dedup entries of one publish in one durable transaction.
    pub(crate) fn put_scheduled(
        &self,
        topic: &str,
        delayed: &[(i64, u128, DelayedRow)],
        dedup: &[(String, DedupRow)],
    ) -> Result<(), EmbeddedError> {
        let delayed = delayed
            .iter()
            .map(|(due, id, row)| {
                let bytes = self.sealing.encode(&delayed_aad(topic, *due, *id), row)?;
                Ok((*due, *id, bytes))
            })
            .collect::<Result<Vec<_>, EmbeddedError>>()?;
        let dedup = self.dedup_rows(dedup)?;
        self.write(|txn| {
            let mut table = txn.open_table(DELAYED)?;
            for (due, id, bytes) in &delayed {
                table.insert((topic, *due, *id), bytes.as_slice())?;
            }
            if !delayed.is_empty() {
                let mut counts = txn.open_table(DELAYED_COUNT)?;
                let count = counts.get(topic)?.map(|v| v.value()).unwrap_or(0);
                counts.insert(topic, count + delayed.len() as u64)?;
            }
            let mut table = txn.open_table(DEDUP)?;
            let mut expiry = txn.open_table(DEDUP_EXPIRY)?;
            let mut pending = txn.open_table(DEDUP_PENDING)?;
            for (id, expires, bytes) in &dedup {
                table.insert((topic, id.as_str()), bytes.as_slice())?;
                expiry.insert((*expires, topic, id.as_str()), ())?;
                pending.remove((topic, id.as_str()))?;
            }
            Ok(())
        })
    }

    /// Delayed messages of a topic due by `now_ms`, earliest first, at most `max`.
    pub(crate) fn due_delayed(
        &self,
        topic: &str,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<(i64, u128, DelayedRow)>, EmbeddedError> {
        // The read lock is held until the transaction ends, so `close` waits for it.
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(DELAYED).map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        for entry in table
            .range((topic, i64::MIN, 0)..=(topic, now_ms, u128::MAX))
            .map_err(EmbeddedError::meta)?
            .take(max)
        {
            let (k, v) = entry.map_err(EmbeddedError::meta)?;
            let (_, due, id) = k.value();
            let row = self
                .sealing
                .decode("delayed", &delayed_aad(topic, due, id), v.value())?;
            out.push((due, id, row));
        }
        Ok(out)
    }

    /// The earliest due time and the number of delayed messages of a topic.
    pub(crate) fn delayed_summary(&self, topic: &str) -> Result<(Option<i64>, u64), EmbeddedError> {
        // The read lock is held until the transaction ends, so `close` waits for it.
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(DELAYED).map_err(EmbeddedError::meta)?;
        let mut range = table
            .range((topic, i64::MIN, 0)..=(topic, i64::MAX, u128::MAX))
            .map_err(EmbeddedError::meta)?;
        let first = match range.next() {
            Some(entry) => Some(entry.map_err(EmbeddedError::meta)?.0.value().1),
            None => None,
        };
        let counts = txn.open_table(DELAYED_COUNT).map_err(EmbeddedError::meta)?;
        let count = counts
            .get(topic)
            .map_err(EmbeddedError::meta)?
            .map(|v| v.value())
            .unwrap_or(0);
        Ok((first, count))
    }

    /// Removes delayed messages once they were appended to their partition log.
    pub(crate) fn delete_delayed(
        &self,
        topic: &str,
        keys: &[(i64, u128)],
    ) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            let mut table = txn.open_table(DELAYED)?;
            let mut removed = 0u64;
            for (due, id) in keys {
                if table.remove((topic, *due, *id))?.is_some() {
                    removed += 1;
                }
            }
            let mut counts = txn.open_table(DELAYED_COUNT)?;
            let count = counts.get(topic)?.map(|v| v.value()).unwrap_or(0);
            counts.insert(topic, count.saturating_sub(removed))?;
            Ok(())
        })
    }
}

impl MetaStore {
    /// Replaces a subscription's settings, keeping its ack state.
    pub(crate) fn put_subscription_row(
        &self,
        name: &str,
        row: &SubscriptionRow,
    ) -> Result<(), EmbeddedError> {
        let bytes = self.sealing.encode(&subscription_aad(name), row)?;
        self.write(|txn| {
            txn.open_table(SUBSCRIPTIONS)?
                .insert(name, bytes.as_slice())?;
            // Only the dispatcher sends resends: without an endpoint they would wait for one
            // that may come back months later.
            if row.push.is_none() {
                MetaStore::delete_resends(txn, name)?;
            }
            Ok(())
        })
    }

    /// Whether a subscription is stored, inside a write.
    pub(crate) fn subscription_stored(
        txn: &redb::WriteTransaction,
        name: &str,
    ) -> Result<bool, EmbeddedError> {
        Ok(txn.open_table(SUBSCRIPTIONS)?.get(name)?.is_some())
    }

    /// Removes a subscription with its ack state, retries, attempt log and resends.
    pub(crate) fn delete_subscription(&self, name: &str) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            txn.open_table(SUBSCRIPTIONS)?.remove(name)?;
            txn.open_table(ACK_FLOORS)?
                .retain_in((name, 0)..=(name, u32::MAX), |_, _| false)?;
            txn.open_table(ACKED)?
                .retain_in((name, 0, 0)..=(name, u32::MAX, u64::MAX), |_, _| false)?;
            txn.open_table(RETRIES)?
                .retain_in((name, 0, 0)..=(name, u32::MAX, u64::MAX), |_, _| false)?;
            MetaStore::delete_push_attempts(txn, name)?;
            MetaStore::delete_resends(txn, name)?;
            Ok(())
        })
    }

    /// Removes a topic with its delayed messages and dedup ids.
    pub(crate) fn delete_topic(&self, name: &str) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            txn.open_table(TOPICS)?.remove(name)?;
            txn.open_table(DELAYED)?
                .retain_in((name, i64::MIN, 0)..=(name, i64::MAX, u128::MAX), |_, _| {
                    false
                })?;
            txn.open_table(DELAYED_COUNT)?.remove(name)?;
            let mut dedup = txn.open_table(DEDUP)?;
            let mut ids = Vec::new();
            for entry in dedup.range((name, "")..)? {
                let (key, _) = entry?;
                let (topic, id) = key.value();
                if topic != name {
                    break;
                }
                ids.push(id.to_owned());
            }
            for id in &ids {
                dedup.remove((name, id.as_str()))?;
            }
            // Expiry entries of the topic's ids are swept when they expire: the sweep finds
            // no dedup row for them any more and just drops them.
            Ok(())
        })
    }
}

#[path = "meta_dedup.rs"]
mod dedup;

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
            let store = MetaStore::open(&path, None).unwrap();
            let row = SubscriptionRow {
                topic: "t".into(),
                ack_deadline_ms: 1000,
                created_at_ms: 0,
                backoff: None,
                max_deliveries: None,
                dead_letter_topic: None,
                ordered: false,
                filter: None,
                revision: 1,
                push: None,
            };
            store.put_subscription("s", &row, &[0, 0]).unwrap();
            let plan = AckPlan {
                new_floor: 2,
                insert: vec![5, 9],
                delete: vec![],
                acked: vec![0, 1, 5, 9],
            };
            store.apply_acks("s", &[(1, plan)], true).unwrap();
            let retry = RetryRow {
                attempt: 3,
                not_before_ms: 77,
                key: Some("k".into()),
            };
            store.put_retries("s", &[(0, 4, retry)], true).unwrap();
        }
        let store = MetaStore::open(&path, None).unwrap();
        let state = store.ack_state("s", 2).unwrap();
        assert_eq!(state[0], (0, BTreeSet::new()));
        assert_eq!(state[1], (2, BTreeSet::from([5, 9])));
        assert_eq!(store.subscriptions().unwrap().len(), 1);
        let retries = store.retries("s").unwrap();
        assert_eq!(retries.len(), 1);
        assert_eq!(
            (retries[0].0, retries[0].1, retries[0].2.attempt),
            (0, 4, 3)
        );
    }
}
