//! The push attempt log in `meta.redb`: one row per HTTP attempt, keyed by subscription and
//! attempt id (UUIDv7, so key order is time order), kept for [`RETENTION_MS`].

use jiff::Timestamp;
use opal_core::{AttemptQuery, AttemptStatus, PushAttempt, PushConfig};
use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::EmbeddedError;
use crate::meta::MetaStore;
use crate::sealing::row_aad;

/// (subscription, attempt id) → [`AttemptRow`], sealed with encryption on (answers and URLs can
/// hold anything).
const ATTEMPTS: TableDefinition<'_, (&str, u128), &[u8]> = TableDefinition::new("push_attempts");

/// How long attempts are kept: a week, like the results of tasks.
pub(crate) const RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// Beyond an attempt's timeout, how much later its id may be taken (logging it, clock steps).
const ID_SLACK_MS: i64 = 60_000;

/// A scan for a filtered page stops after this many rows, so a filter that matches nothing
/// cannot walk a week of attempts in one request.
const MAX_SCANNED: usize = 100_000;

pub(crate) fn open_tables(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(ATTEMPTS)?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AttemptRow {
    message_id: u128,
    partition: u32,
    offset: u64,
    attempt: u32,
    at_ms: i64,
    url: String,
    succeeded: bool,
    status_code: Option<u16>,
    latency_ms: u64,
    response: String,
    error: Option<String>,
}

fn aad(name: &str, id: u128) -> Vec<u8> {
    row_aad("push_attempts", &[name.as_bytes(), &id.to_le_bytes()])
}

/// The smallest UUIDv7 of a millisecond: attempts before it are older.
fn first_id_at(ms: i64) -> u128 {
    (u128::from(ms.max(0) as u64) & 0xFFFF_FFFF_FFFF) << 80
}

fn row_of(a: &PushAttempt) -> AttemptRow {
    AttemptRow {
        message_id: a.message_id.as_u128(),
        partition: a.partition,
        offset: a.offset,
        attempt: a.attempt,
        at_ms: a.at.as_millisecond(),
        url: a.url.clone(),
        succeeded: a.status == AttemptStatus::Succeeded,
        status_code: a.status_code,
        latency_ms: a.latency_ms,
        response: a.response.clone(),
        error: a.error.clone(),
    }
}

fn attempt_of(id: u128, row: AttemptRow) -> Result<PushAttempt, EmbeddedError> {
    Ok(PushAttempt {
        id: Uuid::from_u128(id),
        message_id: Uuid::from_u128(row.message_id),
        partition: row.partition,
        offset: row.offset,
        attempt: row.attempt,
        at: Timestamp::from_millisecond(row.at_ms)
            .map_err(|e| EmbeddedError::CorruptMeta(e.to_string()))?,
        url: row.url,
        status: if row.succeeded {
            AttemptStatus::Succeeded
        } else {
            AttemptStatus::Failed
        },
        status_code: row.status_code,
        latency_ms: row.latency_ms,
        response: row.response,
        error: row.error,
    })
}

fn matches(a: &PushAttempt, q: &AttemptQuery) -> bool {
    q.message_id.is_none_or(|m| m == a.message_id)
        && q.status.is_none_or(|s| s == a.status)
        && q.since.is_none_or(|t| a.at >= t)
        && q.until.is_none_or(|t| a.at < t)
}

impl MetaStore {
    /// Appends attempts and drops the subscription's attempts older than the retention. The
    /// commit does not sync: the log is a record for people, and the next durable commit
    /// (any ack) carries it to disk.
    pub(crate) fn record_push_attempts(
        &self,
        name: &str,
        attempts: &[PushAttempt],
        now_ms: i64,
    ) -> Result<(), EmbeddedError> {
        let rows = attempts
            .iter()
            .map(|a| {
                let id = a.id.as_u128();
                Ok((id, self.sealing.encode(&aad(name, id), &row_of(a))?))
            })
            .collect::<Result<Vec<_>, EmbeddedError>>()?;
        self.write_with(false, |txn| {
            let mut table = txn.open_table(ATTEMPTS)?;
            for (id, row) in &rows {
                table.insert((name, *id), row.as_slice())?;
            }
            let cutoff = first_id_at(now_ms - RETENTION_MS);
            table.retain_in((name, 0)..(name, cutoff), |_, _| false)?;
            Ok(())
        })
    }

    /// Attempts of a subscription matching `query`, newest first.
    pub(crate) fn push_attempts(
        &self,
        name: &str,
        query: &AttemptQuery,
    ) -> Result<Vec<PushAttempt>, EmbeddedError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(ATTEMPTS).map_err(EmbeddedError::meta)?;
        // An attempt's id is taken when it ends, at most its timeout after its `at`: attempts
        // before `until` have ids before this, and the scan need not start newer.
        let until = query.until.map(|t| {
            first_id_at(
                t.as_millisecond()
                    .saturating_add(PushConfig::MAX_TIMEOUT_MS as i64 + ID_SLACK_MS),
            )
        });
        let upper = query
            .before_id
            .map(|id| id.as_u128())
            .into_iter()
            .chain(until)
            .min()
            .unwrap_or(u128::MAX);
        let lower = query
            .since
            .map(|t| first_id_at(t.as_millisecond()))
            .unwrap_or(0);
        let mut out = Vec::new();
        let range = table
            .range((name, lower)..(name, upper))
            .map_err(EmbeddedError::meta)?;
        for entry in range.rev().take(MAX_SCANNED) {
            let (key, value) = entry.map_err(EmbeddedError::meta)?;
            let id = key.value().1;
            let row = self
                .sealing
                .decode("push attempt", &aad(name, id), value.value())?;
            let attempt = attempt_of(id, row)?;
            if matches(&attempt, query) {
                out.push(attempt);
                if out.len() >= query.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Drops every attempt of a subscription (it was deleted).
    pub(crate) fn delete_push_attempts(
        txn: &redb::WriteTransaction,
        name: &str,
    ) -> Result<(), EmbeddedError> {
        txn.open_table(ATTEMPTS)?
            .retain_in((name, 0)..=(name, u128::MAX), |_, _| false)?;
        Ok(())
    }
}
