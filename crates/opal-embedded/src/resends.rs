//! The resend queue of push subscriptions in `meta.redb`: messages to push again, keyed by
//! subscription, partition and offset (so a message waits once), with an index by due time.
//! Rows hold positions and times only, never message content, so they are not sealed.

use jiff::Timestamp;
use opal_core::{Resend, ResendTarget};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::EmbeddedError;
use crate::meta::MetaStore;

/// (subscription, partition, offset) → (next attempt, not before ms).
const RESENDS: TableDefinition<'_, (&str, u32, u64), (u32, i64)> = TableDefinition::new("resends");
/// (subscription, not before ms, partition, offset): the same rows in due order, so finding
/// what is due reads only that.
const RESENDS_DUE: TableDefinition<'_, (&str, i64, u32, u64), ()> =
    TableDefinition::new("resends_due");

pub(crate) fn open_tables(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(RESENDS)?;
    txn.open_table(RESENDS_DUE)?;
    Ok(())
}

impl MetaStore {
    /// Queues `targets` (due at `now_ms`, attempt 1), starting over any already waiting.
    /// Fails with `SubscriptionGone` when the subscription is no longer stored, checked in the
    /// same transaction so that no row outlives a concurrent delete.
    pub(crate) fn queue_resends(
        &self,
        name: &str,
        targets: &[ResendTarget],
        now_ms: i64,
    ) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            if !MetaStore::subscription_stored(txn, name)? {
                return Err(EmbeddedError::SubscriptionGone(name.to_owned()));
            }
            let mut rows = txn.open_table(RESENDS)?;
            let mut due = txn.open_table(RESENDS_DUE)?;
            for t in targets {
                let previous = rows.insert((name, t.partition, t.offset), (1, now_ms))?;
                if let Some(previous) = previous {
                    let (_, was_due) = previous.value();
                    due.remove((name, was_due, t.partition, t.offset))?;
                }
                due.insert((name, now_ms, t.partition, t.offset), ())?;
            }
            Ok(())
        })
    }

    /// Resends due at `now_ms`, earliest first, at most `limit`.
    pub(crate) fn due_resends(
        &self,
        name: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<Resend>, EmbeddedError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let due = txn.open_table(RESENDS_DUE).map_err(EmbeddedError::meta)?;
        let rows = txn.open_table(RESENDS).map_err(EmbeddedError::meta)?;
        let range = due
            .range((name, i64::MIN, 0, 0)..=(name, now_ms, u32::MAX, u64::MAX))
            .map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (key, _) = entry.map_err(EmbeddedError::meta)?;
            let (_, not_before_ms, partition, offset) = key.value();
            let row = rows
                .get((name, partition, offset))
                .map_err(EmbeddedError::meta)?
                .ok_or_else(|| {
                    EmbeddedError::CorruptMeta(format!(
                        "resend index of {name} names {partition}/{offset}, which is not queued"
                    ))
                })?;
            let (attempt, _) = row.value();
            out.push(Resend {
                partition,
                offset,
                attempt,
                not_before: Timestamp::from_millisecond(not_before_ms)
                    .map_err(|e| EmbeddedError::CorruptMeta(e.to_string()))?,
            });
        }
        Ok(out)
    }

    /// Drops a resend (`next` is `None`) or moves it to its next attempt at `next` (ms).
    pub(crate) fn settle_resend(
        &self,
        name: &str,
        partition: u32,
        offset: u64,
        next: Option<i64>,
    ) -> Result<(), EmbeddedError> {
        self.write(|txn| {
            let mut rows = txn.open_table(RESENDS)?;
            let Some((attempt, was_due)) =
                rows.get((name, partition, offset))?.map(|row| row.value())
            else {
                return Ok(());
            };
            let mut due = txn.open_table(RESENDS_DUE)?;
            due.remove((name, was_due, partition, offset))?;
            match next {
                None => {
                    rows.remove((name, partition, offset))?;
                }
                Some(at) => {
                    rows.insert((name, partition, offset), (attempt.saturating_add(1), at))?;
                    due.insert((name, at, partition, offset), ())?;
                }
            }
            Ok(())
        })
    }

    /// Drops every resend of a subscription (it was deleted, or no longer pushes).
    pub(crate) fn delete_resends(
        txn: &redb::WriteTransaction,
        name: &str,
    ) -> Result<(), EmbeddedError> {
        txn.open_table(RESENDS)?
            .retain_in((name, 0, 0)..=(name, u32::MAX, u64::MAX), |_, _| false)?;
        txn.open_table(RESENDS_DUE)?.retain_in(
            (name, i64::MIN, 0, 0)..=(name, i64::MAX, u32::MAX, u64::MAX),
            |_, _| false,
        )?;
        Ok(())
    }
}
