//! One open topic: its partition logs, partition choice, and reads back into messages.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::future::try_join_all;
use opal_core::{Message, NewMessage, PublishResult, Topic, partition_for_key};
use opal_log::{Log, LogConfig};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{EmbeddedError, codec};

/// Upper bound on the bytes read from a log in one go when filling a pull.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub(crate) struct OpenTopic {
    pub(crate) topic: Topic,
    logs: Vec<Log>,
    /// Spreads keyless messages over partitions.
    round_robin: AtomicU32,
    /// Woken after every publish, so long-polling pulls re-check without polling.
    pub(crate) published: Notify,
}

pub(crate) fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("topics").join(name)
}

impl OpenTopic {
    pub(crate) fn open(
        data_dir: &Path,
        topic: Topic,
        log_config: &LogConfig,
    ) -> Result<Self, EmbeddedError> {
        let dir = topic_dir(data_dir, topic.name.as_str());
        let logs = (0..topic.config.partitions)
            .map(|p| Log::open(&dir.join(p.to_string()), log_config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OpenTopic {
            topic,
            logs,
            round_robin: AtomicU32::new(0),
            published: Notify::new(),
        })
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.logs.len() as u32
    }

    pub(crate) fn log(&self, partition: u32) -> &Log {
        &self.logs[partition as usize]
    }

    fn partition_for(&self, key: Option<&str>) -> u32 {
        match key {
            Some(key) => partition_for_key(key, self.partitions()),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partitions(),
        }
    }

    /// Appends the messages (already validated), one batch per partition, all partitions at once.
    pub(crate) async fn publish(
        &self,
        messages: Vec<NewMessage>,
        now_ms: i64,
    ) -> Result<Vec<PublishResult>, EmbeddedError> {
        let mut per_partition: Vec<Vec<(usize, Uuid)>> = vec![Vec::new(); self.logs.len()];
        let mut records = vec![Vec::new(); self.logs.len()];
        for (index, message) in messages.into_iter().enumerate() {
            let partition = self.partition_for(message.key.as_deref()) as usize;
            let id = Uuid::now_v7();
            per_partition[partition].push((index, id));
            records[partition].push(codec::to_record(message, id, now_ms));
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

        let total = per_partition.iter().map(Vec::len).sum();
        let mut results = vec![None; total];
        for (partition, base) in appended {
            for (i, &(index, id)) in per_partition[partition].iter().enumerate() {
                results[index] = Some(PublishResult {
                    id,
                    partition: partition as u32,
                    offset: base + i as u64,
                });
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Messages of one partition from `offset` on (at most about one read chunk).
    pub(crate) fn read(&self, partition: u32, offset: u64) -> Result<Vec<Message>, EmbeddedError> {
        let records = self.log(partition).read(offset, READ_CHUNK_BYTES)?;
        records
            .into_iter()
            .filter(|r| r.offset >= offset)
            .map(|r| codec::to_message(&self.topic.name, partition, r))
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
                .map(|r| codec::to_message(&self.topic.name, partition, r))
                .transpose(),
            Err(opal_log::LogError::OffsetBelowStart { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn close(&self) -> Result<(), EmbeddedError> {
        for log in &self.logs {
            log.close()?;
        }
        Ok(())
    }
}
