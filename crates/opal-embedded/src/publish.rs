//! Publishing: validation, dedup, and the split between messages appended now and delayed ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use opal_core::{BrokerError, DataEncoding, NewMessage, PublishResult, TopicName};
use uuid::Uuid;

use crate::EmbeddedBroker;
use crate::broker::blocking;
use crate::meta::{DedupRow, DelayedRow};

/// What becomes of one message of a batch.
enum Fate {
    /// Appended now; the index into the append list.
    Append(usize),
    /// Stored until its time.
    Delay { id: Uuid, partition: u32 },
    /// A dedup id already seen inside the window.
    Duplicate(PublishResult),
    /// A repeat of a dedup id earlier in the same batch (the index of that message).
    SameAs(usize),
}

impl EmbeddedBroker {
    pub(crate) async fn publish_messages(
        &self,
        topic_name: &TopicName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<PublishResult>, BrokerError> {
        self.check_open()?;
        let limits = &self.inner.config.limits;
        if messages.is_empty() || messages.len() > limits.max_batch_messages {
            return Err(BrokerError::invalid(
                "messages",
                format!("a batch holds 1 to {} messages", limits.max_batch_messages),
            ));
        }
        let now = self.inner.clock.now();
        for (index, message) in messages.iter().enumerate() {
            message.validate(index, limits, now)?;
        }
        let topic = self.topic(topic_name)?;
        let now_ms = now.as_millisecond();

        // Repeats must not race each other between the lookup and the store.
        let _dedup_guard = if messages.iter().any(|m| m.dedup_id.is_some()) {
            Some(topic.dedup_lock.lock().await)
        } else {
            None
        };

        let mut fates = Vec::with_capacity(messages.len());
        let mut to_append = Vec::new();
        let mut delayed = Vec::new();
        let mut first_in_batch: HashMap<String, usize> = HashMap::new();
        let mut new_dedup_ids: Vec<(usize, String)> = Vec::new();
        // Only batches with tasks pay for keeping their callbacks aside.
        let callbacks: Option<Vec<Option<opal_core::Callback>>> = messages
            .iter()
            .any(|m| m.callback.is_some())
            .then(|| messages.iter().map(|m| m.callback.clone()).collect());
        for (index, mut message) in messages.into_iter().enumerate() {
            if let Some(dedup_id) = message.dedup_id.take() {
                if let Some(&first) = first_in_batch.get(&dedup_id) {
                    fates.push(Fate::SameAs(first));
                    continue;
                }
                let meta = Arc::clone(&self.inner.meta);
                let (name, id) = (topic.name().to_owned(), dedup_id.clone());
                if let Some(row) = blocking(move || meta.dedup(&name, &id)).await?
                    && row.expires_ms > now_ms
                {
                    fates.push(Fate::Duplicate(PublishResult {
                        id: Uuid::from_u128(row.id),
                        partition: row.partition,
                        offset: row.offset,
                        duplicate: true,
                    }));
                    continue;
                }
                first_in_batch.insert(dedup_id.clone(), index);
                new_dedup_ids.push((index, dedup_id));
            }
            let id = Uuid::now_v7();
            let partition = topic.partition_for(message.key.as_deref());
            match message.deliver_at {
                Some(at) if at.as_millisecond() > now_ms => {
                    delayed.push((
                        at.as_millisecond(),
                        id,
                        delayed_row(partition, message, now_ms),
                    ));
                    fates.push(Fate::Delay { id, partition });
                }
                _ => {
                    message.deliver_at = None;
                    fates.push(Fate::Append(to_append.len()));
                    to_append.push((partition, id, message));
                }
            }
        }

        // Reserve the dedup ids of messages appended now before appending them, so a crash
        // between the append and the confirmation below cannot forget them: open finds each
        // unconfirmed reservation in the log (or drops it if the append never happened).
        let expires_ms = now_ms.saturating_add(topic.topic().config.dedup_window_ms as i64);
        let reservations: Vec<(String, DedupRow)> = new_dedup_ids
            .iter()
            .filter_map(|(index, dedup_id)| match fates[*index] {
                Fate::Append(i) => {
                    let (partition, id, _) = &to_append[i];
                    let row = DedupRow {
                        expires_ms,
                        id: id.as_u128(),
                        partition: *partition,
                        offset: None,
                        pending_from: Some(topic.log(*partition).next_offset()),
                    };
                    Some((dedup_id.clone(), row))
                }
                _ => None,
            })
            .collect();
        if !reservations.is_empty() {
            let meta = Arc::clone(&self.inner.meta);
            let name = topic.name().to_owned();
            blocking(move || meta.reserve_dedup(&name, &reservations)).await?;
        }

        let stored = to_append.len() + delayed.len();
        let stored_bytes: u64 = to_append
            .iter()
            .map(|(_, _, m)| m.data.len() as u64)
            .sum::<u64>()
            + delayed
                .iter()
                .map(|(_, _, row)| row.payload_len)
                .sum::<u64>();
        let appended: Vec<(u32, Uuid)> = to_append.iter().map(|(p, id, _)| (*p, *id)).collect();
        let offsets = if to_append.is_empty() {
            Vec::new()
        } else {
            topic.append(to_append, now_ms).await?
        };

        let mut results: Vec<PublishResult> = Vec::with_capacity(fates.len());
        for fate in &fates {
            let result = match fate {
                Fate::Append(i) => PublishResult {
                    id: appended[*i].1,
                    partition: appended[*i].0,
                    offset: Some(offsets[*i]),
                    duplicate: false,
                },
                Fate::Delay { id, partition } => PublishResult {
                    id: *id,
                    partition: *partition,
                    offset: None,
                    duplicate: false,
                },
                Fate::Duplicate(result) => *result,
                Fate::SameAs(first) => PublishResult {
                    duplicate: true,
                    ..results[*first]
                },
            };
            results.push(result);
        }
        let duplicates = fates
            .iter()
            .filter(|f| matches!(f, Fate::Duplicate(_) | Fate::SameAs(_)))
            .count();
        topic
            .duplicates
            .fetch_add(duplicates as u64, Ordering::Relaxed);

        if !delayed.is_empty() || !new_dedup_ids.is_empty() {
            let dedup: Vec<(String, DedupRow)> = new_dedup_ids
                .into_iter()
                .map(|(index, dedup_id)| {
                    let r = results[index];
                    let row = DedupRow {
                        expires_ms,
                        id: r.id.as_u128(),
                        partition: r.partition,
                        offset: r.offset,
                        pending_from: None,
                    };
                    (dedup_id, row)
                })
                .collect();
            let rows: Vec<(i64, u128, DelayedRow)> = delayed
                .iter()
                .map(|(due, id, row)| (*due, id.as_u128(), row.clone()))
                .collect();
            let meta = Arc::clone(&self.inner.meta);
            let name = topic.name().to_owned();
            blocking(move || meta.put_scheduled(&name, &rows, &dedup)).await?;
            if let Some(earliest) = delayed.iter().map(|(due, _, _)| *due).min() {
                // Under the release lock, so a concurrent release cannot overwrite this with a
                // due time it read before our commit.
                let _release = self.inner.release_lock.lock().await;
                topic
                    .scheduled
                    .fetch_add(delayed.len() as u64, Ordering::Relaxed);
                let before = topic.next_due_ms.fetch_min(earliest, Ordering::AcqRel);
                if earliest < before {
                    self.inner.scheduler_wake.notify_one();
                }
            }
        }
        // Tasks exist from their publish on (durable before the answer, like the message).
        if let Some(callbacks) = callbacks {
            let tasks: Vec<opal_core::Task> = fates
                .iter()
                .zip(&results)
                .zip(callbacks)
                .filter(|((fate, _), _)| matches!(fate, Fate::Append(_) | Fate::Delay { .. }))
                .filter_map(|((_, result), callback)| {
                    callback.map(|c| {
                        opal_core::Task::published(result.id, topic_name.clone(), Some(c), now)
                    })
                })
                .collect();
            self.store_tasks(tasks, true).await?;
        }
        topic.count_published(stored, stored_bytes);
        Ok(results)
    }
}

fn delayed_row(partition: u32, message: NewMessage, now_ms: i64) -> DelayedRow {
    DelayedRow {
        partition,
        key: message.key,
        attributes: message.attributes,
        data: STANDARD.encode(&message.data),
        json: message.encoding == DataEncoding::Json,
        publish_ms: now_ms,
        payload_len: message.data.len() as u64,
        callback: message.callback.map(|c| match c {
            opal_core::Callback::Url(url) => ("url".to_owned(), url),
            opal_core::Callback::Topic(topic) => ("topic".to_owned(), topic.to_string()),
        }),
    }
}

/// The message a delayed row becomes when its time has come.
pub(crate) fn due_message(
    row: DelayedRow,
    due_ms: i64,
) -> Result<NewMessage, crate::EmbeddedError> {
    let data = STANDARD
        .decode(row.data.as_bytes())
        .map_err(|e| crate::EmbeddedError::CorruptMeta(format!("delayed message payload: {e}")))?;
    Ok(NewMessage {
        key: row.key,
        attributes: row.attributes,
        data: data.into(),
        encoding: if row.json {
            DataEncoding::Json
        } else {
            DataEncoding::Binary
        },
        dedup_id: None,
        deliver_at: jiff::Timestamp::from_millisecond(due_ms).ok(),
        callback: match row.callback {
            None => None,
            Some((kind, url)) if kind == "url" => Some(opal_core::Callback::Url(url)),
            Some((_, topic)) => Some(opal_core::Callback::Topic(
                opal_core::TopicName::new(topic).map_err(|e| {
                    crate::EmbeddedError::CorruptMeta(format!("delayed callback: {e}"))
                })?,
            )),
        },
    })
}

#[cfg(test)]
mod crash_window_tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use opal_core::{Broker, DataEncoding, NewMessage, TopicConfig, TopicName};
    use uuid::Uuid;

    use crate::meta::DedupRow;
    use crate::{EmbeddedBroker, EmbeddedConfig};

    fn message(dedup_id: &str) -> NewMessage {
        NewMessage {
            key: None,
            attributes: BTreeMap::new(),
            data: Bytes::from_static(b"x"),
            encoding: DataEncoding::Binary,
            dedup_id: Some(dedup_id.to_owned()),
            deliver_at: None,
            callback: None,
        }
    }

    /// The state a crash leaves between the append and the confirmation: a reservation, and
    /// (when `appended`) the message in the log. Returns the message's offset if appended.
    async fn crash_state(
        broker: &EmbeddedBroker,
        topic: &TopicName,
        appended: bool,
    ) -> Option<u64> {
        let open = broker.topic(topic).unwrap();
        let id = Uuid::now_v7();
        let row = DedupRow {
            expires_ms: i64::MAX,
            id: id.as_u128(),
            partition: 0,
            offset: None,
            pending_from: Some(open.log(0).next_offset()),
        };
        broker
            .inner
            .meta
            .reserve_dedup(topic.as_str(), &[("d".to_owned(), row)])
            .unwrap();
        if !appended {
            return None;
        }
        let mut new = message("d");
        new.dedup_id = None;
        let offsets = open.append(vec![(0, id, new)], 0).await.unwrap();
        Some(offsets[0])
    }

    #[tokio::test]
    async fn a_reservation_whose_append_happened_is_confirmed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let topic = TopicName::new("t").unwrap();
        let offset = {
            let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
            broker
                .create_topic(&topic, TopicConfig::default())
                .await
                .unwrap();
            broker
                .publish(&topic, vec![message("other")])
                .await
                .unwrap();
            let offset = crash_state(&broker, &topic, true).await;
            broker.close().await.unwrap();
            offset
        };
        let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
        let retry = broker.publish(&topic, vec![message("d")]).await.unwrap();
        assert!(retry[0].duplicate, "{retry:?}");
        assert_eq!(retry[0].offset, offset);
    }

    #[tokio::test]
    async fn a_reservation_whose_append_never_happened_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let topic = TopicName::new("t").unwrap();
        {
            let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
            broker
                .create_topic(&topic, TopicConfig::default())
                .await
                .unwrap();
            crash_state(&broker, &topic, false).await;
            broker.close().await.unwrap();
        }
        let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
        let retry = broker.publish(&topic, vec![message("d")]).await.unwrap();
        assert!(!retry[0].duplicate, "the retry is stored: {retry:?}");
        assert_eq!(retry[0].offset, Some(0));
    }
}
