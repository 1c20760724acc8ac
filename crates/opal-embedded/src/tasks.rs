//! Tasks in `meta.redb`: one row per task by message id (sealed with encryption on: results
//! can hold anything), an index of ended tasks whose callback is still owed, and an expiry
//! index that puts forgets old tasks.

use std::sync::Arc;

use bytes::Bytes;
use jiff::Timestamp;
use opal_core::{Callback, Task, TaskResult, TaskState, TopicName};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::EmbeddedError;
use crate::broker::{EmbeddedBroker, blocking};
use crate::meta::MetaStore;
use crate::sealing::row_aad;

/// message id → [`TaskRow`].
const TASKS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("tasks");
/// message ids of ended tasks whose callback has not been told.
const OWING: TableDefinition<'_, u128, ()> = TableDefinition::new("tasks_owing");
/// (expires ms, message id): tasks in expiry order.
const EXPIRY: TableDefinition<'_, (i64, u128), ()> = TableDefinition::new("tasks_expiry");

/// Expired tasks one put removes at most, so that no write waits on a long sweep.
const SWEEP: usize = 100;

pub(crate) fn open_tables(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(TASKS)?;
    txn.open_table(OWING)?;
    txn.open_table(EXPIRY)?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TaskRow {
    topic: String,
    /// `("url", url)` or `("topic", name)`.
    callback: Option<(String, String)>,
    state: String,
    attempts: u32,
    /// `(true, JSON text)` for data, `(false, text)` for an error.
    result: Option<(bool, String)>,
    created_ms: i64,
    updated_ms: i64,
    expires_ms: i64,
    callback_message: Option<u128>,
}

fn aad(id: u128) -> Vec<u8> {
    row_aad("tasks", &[&id.to_le_bytes()])
}

fn corrupt(e: impl std::fmt::Display) -> EmbeddedError {
    EmbeddedError::CorruptMeta(format!("task: {e}"))
}

fn row_of(t: &Task) -> TaskRow {
    TaskRow {
        topic: t.topic.to_string(),
        callback: t.callback.as_ref().map(|c| match c {
            Callback::Url(url) => ("url".to_owned(), url.clone()),
            Callback::Topic(topic) => ("topic".to_owned(), topic.to_string()),
        }),
        state: t.state.as_str().to_owned(),
        attempts: t.attempts,
        result: t.result.as_ref().map(|r| match r {
            TaskResult::Data(json) => (true, String::from_utf8_lossy(json).into_owned()),
            TaskResult::Error(e) => (false, e.clone()),
        }),
        created_ms: t.created_at.as_millisecond(),
        updated_ms: t.updated_at.as_millisecond(),
        expires_ms: t.expires_at.as_millisecond(),
        callback_message: t.callback_message.map(|u| u.as_u128()),
    }
}

fn task_of(id: u128, row: TaskRow) -> Result<Task, EmbeddedError> {
    let time = |ms| Timestamp::from_millisecond(ms).map_err(corrupt);
    Ok(Task {
        id: Uuid::from_u128(id),
        topic: TopicName::new(row.topic).map_err(corrupt)?,
        callback: match row.callback {
            None => None,
            Some((kind, value)) if kind == "url" => Some(Callback::Url(value)),
            Some((_, value)) => Some(Callback::Topic(TopicName::new(value).map_err(corrupt)?)),
        },
        state: TaskState::parse(&row.state).ok_or_else(|| corrupt("unknown state"))?,
        attempts: row.attempts,
        result: row.result.map(|(data, text)| {
            if data {
                TaskResult::Data(Bytes::from(text))
            } else {
                TaskResult::Error(text)
            }
        }),
        created_at: time(row.created_ms)?,
        updated_at: time(row.updated_ms)?,
        expires_at: time(row.expires_ms)?,
        callback_message: row.callback_message.map(Uuid::from_u128),
    })
}

impl MetaStore {
    /// Stores tasks (replacing those with their ids), each kept `ttl_ms` after its last
    /// change, and forgets a few expired ones.
    pub(crate) fn put_tasks(
        &self,
        tasks: &[Task],
        now_ms: i64,
        ttl_ms: u64,
        durable: bool,
    ) -> Result<(), EmbeddedError> {
        let rows = tasks
            .iter()
            .map(|t| {
                let id = t.id.as_u128();
                let mut row = row_of(t);
                row.expires_ms = row
                    .updated_ms
                    .saturating_add(ttl_ms.min(i64::MAX as u64) as i64);
                Ok((
                    id,
                    row.expires_ms,
                    self.sealing.encode(&aad(id), &row)?,
                    t.callback_due(),
                ))
            })
            .collect::<Result<Vec<_>, EmbeddedError>>()?;
        self.write_with(durable, |txn| {
            let mut table = txn.open_table(TASKS)?;
            let mut owing = txn.open_table(OWING)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            for (id, expires_ms, row, callback_due) in &rows {
                let old = table
                    .insert(*id, row.as_slice())?
                    .map(|v| v.value().to_vec());
                if let Some(old) = old {
                    let old: TaskRow = self.sealing.decode("task", &aad(*id), &old)?;
                    expiry.remove((old.expires_ms, *id))?;
                }
                expiry.insert((*expires_ms, *id), ())?;
                if *callback_due {
                    owing.insert(*id, ())?;
                } else {
                    owing.remove(*id)?;
                }
            }
            let expired: Vec<(i64, u128)> = expiry
                .range(..(now_ms, 0))?
                .take(SWEEP)
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for (at, id) in expired {
                expiry.remove((at, id))?;
                table.remove(id)?;
                owing.remove(id)?;
            }
            Ok(())
        })
    }

    pub(crate) fn task(&self, id: u128, now_ms: i64) -> Result<Option<Task>, EmbeddedError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(TASKS).map_err(EmbeddedError::meta)?;
        let Some(value) = table.get(id).map_err(EmbeddedError::meta)? else {
            return Ok(None);
        };
        let row: TaskRow = self.sealing.decode("task", &aad(id), value.value())?;
        if row.expires_ms <= now_ms {
            return Ok(None);
        }
        task_of(id, row).map(Some)
    }

    pub(crate) fn tasks_owing(&self, limit: usize) -> Result<Vec<Task>, EmbeddedError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let owing = txn.open_table(OWING).map_err(EmbeddedError::meta)?;
        let table = txn.open_table(TASKS).map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        for entry in owing.iter().map_err(EmbeddedError::meta)?.take(limit) {
            let id = entry.map_err(EmbeddedError::meta)?.0.value();
            if let Some(value) = table.get(id).map_err(EmbeddedError::meta)? {
                let row: TaskRow = self.sealing.decode("task", &aad(id), value.value())?;
                out.push(task_of(id, row)?);
            }
        }
        Ok(out)
    }
}

impl EmbeddedBroker {
    pub(crate) async fn store_tasks(
        &self,
        tasks: Vec<Task>,
        durable: bool,
    ) -> Result<(), EmbeddedError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let meta = Arc::clone(&self.inner.meta);
        let now = self.inner.clock.now_ms();
        let ttl = self.inner.config.task_ttl_ms;
        blocking(move || meta.put_tasks(&tasks, now, ttl, durable)).await
    }

    pub(crate) async fn load_task(&self, id: Uuid) -> Result<Option<Task>, EmbeddedError> {
        let meta = Arc::clone(&self.inner.meta);
        let now = self.inner.clock.now_ms();
        blocking(move || meta.task(id.as_u128(), now)).await
    }

    pub(crate) async fn load_tasks_owing(&self, limit: usize) -> Result<Vec<Task>, EmbeddedError> {
        let meta = Arc::clone(&self.inner.meta);
        blocking(move || meta.tasks_owing(limit)).await
    }

    /// Tasks of messages handed out now: `in_progress`, with their delivery count. Not
    /// synced: a crash only makes a task look less far along than it was.
    pub(crate) async fn tasks_delivered(&self, deliveries: &[opal_core::Delivery]) {
        let mut tasks = Vec::new();
        for d in deliveries.iter().filter(|d| d.message.callback.is_some()) {
            let now = self.inner.clock.now();
            let mut task = match self.load_task(d.message.id).await {
                Ok(Some(task)) if task.state.is_final() => continue,
                Ok(Some(task)) => task,
                Ok(None) => Task::published(
                    d.message.id,
                    d.message.topic.clone(),
                    d.message.callback.clone(),
                    now,
                ),
                Err(_) => continue,
            };
            task.state = TaskState::InProgress;
            task.attempts = task.attempts.max(d.attempt);
            task.updated_at = now;
            tasks.push(task);
        }
        if let Err(e) = self.store_tasks(tasks, false).await {
            tracing::warn!(error = %e, "could not record task deliveries");
        }
    }

    /// Tasks of dead-lettered messages: stored as `dead_lettered` (durably, so the callback is
    /// owed across a crash), then their callbacks are told in the background.
    pub(crate) async fn tasks_dead_lettered(
        &self,
        messages: Vec<opal_core::Message>,
        attempts: Vec<u32>,
    ) -> Result<(), EmbeddedError> {
        let now = self.inner.clock.now();
        let mut tasks = Vec::new();
        for (m, attempt) in messages.into_iter().zip(attempts) {
            let mut task = match self.load_task(m.id).await? {
                Some(task) if task.state.is_final() => continue,
                Some(task) => task,
                None => Task::published(m.id, m.topic.clone(), m.callback.clone(), now),
            };
            task.state = TaskState::DeadLettered;
            task.attempts = task.attempts.max(attempt);
            task.updated_at = now;
            tasks.push(task);
        }
        if tasks.is_empty() {
            return Ok(());
        }
        self.store_tasks(tasks.clone(), true).await?;
        let broker = self.clone();
        tokio::spawn(async move {
            for task in tasks {
                if let Err(e) = opal_core::task::tell_callback(&broker, task).await {
                    tracing::warn!(error = %e, "could not tell a dead-lettered task's callback; told again at the next start");
                }
            }
        });
        Ok(())
    }
}
