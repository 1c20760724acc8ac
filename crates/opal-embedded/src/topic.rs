//! One open topic: its partition logs, partition choice, reads back into messages, and the
//! counters its stats report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use futures_util::future::try_join_all;
use opal_core::{
    Message, NewMessage, PartitionStats, RetentionPolicy, Topic, TopicName, TopicStats,
    partition_for_key,
};
use std::sync::{Arc, RwLock};

use opal_log::{Log, LogConfig, RetentionRule};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{EmbeddedError, codec};

/// Upper bound on the bytes read from a log in one go when filling a pull.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// The bytes a bounded read plans per message it wants; larger messages take more reads.
const READ_BYTES_PER_MESSAGE: usize = 1024;

/// No delayed message pending.
pub(crate) const NOTHING_SCHEDULED: i64 = i64::MAX;

#[derive(Debug)]
pub(crate) struct OpenTopic {
    name: TopicName,
    /// The current settings; replaced whole on update.
    settings: RwLock<Arc<Topic>>,
    logs: Vec<Log>,
    /// Spreads keyless messages over partitions.
    round_robin: AtomicU32,
    /// Woken after every append, so long-polling pulls re-check without polling.
    pub(crate) published: Notify,
    /// Serialises publishes that carry dedup ids, so that two racing repeats cannot both store.
    pub(crate) dedup_lock: tokio::sync::Mutex<()>,
    /// Earliest due time of this topic's delayed messages (`NOTHING_SCHEDULED` when none).
    pub(crate) next_due_ms: AtomicI64,
    pub(crate) scheduled: AtomicU64,
    pub(crate) published_messages: AtomicU64,
    pub(crate) published_bytes: AtomicU64,
    pub(crate) duplicates: AtomicU64,
}

/// A topic's directory. A qualified name's `/` becomes `+` (which plain names never contain), so
/// that every topic has its own directory directly under `topics/`, never one inside another's.
pub(crate) fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join("topics")
        .join(name.replace(opal_core::APP_SEPARATOR, "+"))
}

/// Removes a topic's directory (logs closed or never opened), if there is one.
pub(crate) fn remove_topic_dir(data_dir: &Path, name: &str) -> Result<(), EmbeddedError> {
    let dir = topic_dir(data_dir, name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "removed a topic directory");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EmbeddedError::Io { path: dir, source }),
    }
}

/// The retention pass for a topic's current settings; `released_below` is where every
/// subscription is done (used by the `acked` policy).
fn retention_rule(topic: &Topic, released_below: Option<u64>) -> RetentionRule {
    let retention = &topic.config.retention;
    RetentionRule {
        max_age: retention.max_age_ms.map(std::time::Duration::from_millis),
        // Under `acked`, size does not delete: only acks (and age) do.
        max_bytes: match retention.policy {
            RetentionPolicy::Limits => retention.max_bytes,
            RetentionPolicy::Acked => None,
        },
        released_below,
    }
}

impl OpenTopic {
    pub(crate) fn open(
        data_dir: &Path,
        topic: Topic,
        base: &LogConfig,
    ) -> Result<Self, EmbeddedError> {
        let dir = topic_dir(data_dir, topic.name.as_str());
        let logs = (0..topic.config.partitions)
            .map(|p| Log::open(&dir.join(p.to_string()), base.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OpenTopic {
            name: topic.name.clone(),
            settings: RwLock::new(Arc::new(topic)),
            logs,
            round_robin: AtomicU32::new(0),
            published: Notify::new(),
            dedup_lock: tokio::sync::Mutex::new(()),
            next_due_ms: AtomicI64::new(NOTHING_SCHEDULED),
            scheduled: AtomicU64::new(0),
            published_messages: AtomicU64::new(0),
            published_bytes: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        })
    }

    pub(crate) fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The current settings.
    pub(crate) fn topic(&self) -> Arc<Topic> {
        Arc::clone(&self.settings.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn set_topic(&self, topic: Topic) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(topic);
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.logs.len() as u32
    }

    pub(crate) fn log(&self, partition: u32) -> &Log {
        &self.logs[partition as usize]
    }

    pub(crate) fn partition_for(&self, key: Option<&str>) -> u32 {
        match key {
            Some(key) => partition_for_key(key, self.partitions()),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions(),
        }
    }

    /// Appends messages with their chosen partitions and ids, one batch per partition, all
    /// partitions at once; returns each message's offset in input order.
    pub(crate) async fn append(
        &self,
        messages: Vec<(u32, Uuid, NewMessage)>,
        now_ms: i64,
    ) -> Result<Vec<u64>, EmbeddedError> {
        // Every message in one partition (a single message, or a keyed batch): one append, and
        // the offsets follow in input order, with none of the per-partition bookkeeping.
        if let Some(&(partition, _, _)) = messages.first()
            && messages.iter().all(|(p, _, _)| *p == partition)
        {
            let count = messages.len() as u64;
            let batch = messages
                .into_iter()
                .map(|(_, id, message)| codec::to_record(message, id, now_ms))
                .collect();
            let appended = self.logs[partition as usize].append(batch).await?;
            self.published.notify_waiters();
            return Ok((appended.base_offset..appended.base_offset + count).collect());
        }
        let count = messages.len();
        let mut slots: Vec<Vec<usize>> = vec![Vec::new(); self.logs.len()];
        let mut records = vec![Vec::new(); self.logs.len()];
        for (index, (partition, id, message)) in messages.into_iter().enumerate() {
            slots[partition as usize].push(index);
            records[partition as usize].push(codec::to_record(message, id, now_ms));
        }
        let appends = records
            .into_iter()
            .enumerate()
            .filter(|(_, batch)| !batch.is_empty())
            .map(|(partition, batch)| async move {
                let appended = self.logs[partition].append(batch).await?;
                Ok::<_, EmbeddedError>((partition, appended.base_offset))
            });
        let appended = try_join_all(appends).await?;
        self.published.notify_waiters();

        let mut offsets = vec![0; count];
        for (partition, base) in appended {
            for (i, &index) in slots[partition].iter().enumerate() {
                offsets[index] = base + i as u64;
            }
        }
        Ok(offsets)
    }

    /// Messages of one partition from `offset` on (at most about one read chunk).
    pub(crate) fn read(&self, partition: u32, offset: u64) -> Result<Vec<Message>, EmbeddedError> {
        self.read_up_to(partition, offset, usize::MAX)
    }

    /// At most `limit` messages of one partition from `offset` on. The log is read in whole
    /// batches, but only as many bytes as `limit` small messages need (at least one batch),
    /// and only `limit` records become messages: a pull of ten should not decode a megabyte.
    pub(crate) fn read_up_to(
        &self,
        partition: u32,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<Message>, EmbeddedError> {
        let budget = limit
            .saturating_mul(READ_BYTES_PER_MESSAGE)
            .clamp(1, READ_CHUNK_BYTES);
        let records = self.log(partition).read_at_most(offset, budget, limit)?;
        records
            .into_iter()
            .filter(|r| r.offset >= offset)
            .take(limit)
            .map(|r| codec::to_message(&self.name, partition, r))
            .collect()
    }

    /// The message at exactly `offset`, if the log still holds it.
    pub(crate) fn read_one(
        &self,
        partition: u32,
        offset: u64,
    ) -> Result<Option<Message>, EmbeddedError> {
        match self.log(partition).read(offset, 1) {
            Ok(records) => records
                .into_iter()
                .find(|r| r.offset == offset)
                .map(|r| codec::to_message(&self.name, partition, r))
                .transpose(),
            Err(opal_log::LogError::OffsetBelowStart { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Counts stored publishes (delayed ones when accepted, not again when they fall due).
    pub(crate) fn count_published(&self, messages: usize, bytes: u64) {
        self.published_messages
            .fetch_add(messages as u64, Ordering::Relaxed);
        self.published_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> TopicStats {
        let partitions = (0..self.partitions())
            .map(|p| {
                let s = self.log(p).stats();
                PartitionStats {
                    partition: p,
                    start_offset: s.start_offset,
                    end_offset: s.next_offset,
                    messages: s.next_offset - s.start_offset,
                    bytes: s.size_bytes,
                }
            })
            .collect();
        TopicStats {
            partitions,
            published_messages: self.published_messages.load(Ordering::Relaxed),
            published_bytes: self.published_bytes.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            scheduled: self.scheduled.load(Ordering::Relaxed),
        }
    }

    /// Applies the topic's current retention to every partition; `released` gives, per
    /// partition, the offset below which every subscription has acked (for the `acked`
    /// policy). Returns the number of deleted segments.
    pub(crate) fn enforce_retention(
        &self,
        now_ms: i64,
        released: Option<&[u64]>,
    ) -> Result<usize, EmbeddedError> {
        let topic = self.topic();
        let mut deleted = 0;
        for (p, log) in self.logs.iter().enumerate() {
            let below = released.and_then(|r| r.get(p)).copied();
            deleted += log.enforce_retention_with(now_ms, retention_rule(&topic, below))?;
        }
        Ok(deleted)
    }

    pub(crate) fn close(&self) -> Result<(), EmbeddedError> {
        for log in &self.logs {
            log.close()?;
        }
        Ok(())
    }
}
