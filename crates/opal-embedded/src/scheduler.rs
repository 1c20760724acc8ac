//! The background scheduler: moves delayed messages into their logs when due, forgets expired
//! dedup ids, and applies retention. One task per broker, one timer (the earliest thing due),
//! however many messages wait: delayed messages live in the metadata store, ordered by time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use opal_core::RetentionPolicy;

use crate::broker::{Inner, blocking};
use crate::publish::due_message;
use crate::topic::{NOTHING_SCHEDULED, OpenTopic};
use crate::{EmbeddedBroker, EmbeddedError};

/// How often expired dedup ids are swept.
const DEDUP_SWEEP_MS: i64 = 10_000;
/// How often retention runs.
const RETENTION_MS: i64 = 30_000;
/// Delayed messages moved per metadata transaction.
const RELEASE_CHUNK: usize = 1000;

pub(crate) async fn run(inner: Weak<Inner>) {
    let Some(clock) = inner.upgrade().map(|i| i.clock.clone()) else {
        return;
    };
    let start = clock.now_ms();
    let mut next_sweep = start + DEDUP_SWEEP_MS;
    let mut next_retention = start + RETENTION_MS;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.closed.load(Ordering::Acquire) {
            return;
        }
        let broker = EmbeddedBroker { inner: strong };
        let topics = broker.open_topics();
        let next_due = topics
            .iter()
            .map(|t| t.next_due_ms.load(Ordering::Acquire))
            .min()
            .unwrap_or(NOTHING_SCHEDULED);
        let wake = next_due.min(next_sweep).min(next_retention);
        {
            let wake_up = Arc::clone(&broker.inner.scheduler_wake);
            let woken = wake_up.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // Hold no strong reference while sleeping, so dropping the broker ends the task
            // (at its next wake-up).
            drop(broker);
            tokio::select! {
                () = clock.sleep_until_ms(wake) => {}
                () = &mut woken => {}
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let broker = EmbeddedBroker { inner: strong };
        let now = clock.now_ms();
        for topic in broker.open_topics() {
            if topic.next_due_ms.load(Ordering::Acquire) <= now
                && let Err(e) = broker.release_due(&topic).await
            {
                tracing::error!(topic = topic.name(), error = %e, "moving due delayed messages failed");
            }
        }
        if now >= next_sweep {
            next_sweep = now + DEDUP_SWEEP_MS;
            let meta = Arc::clone(&broker.inner.meta);
            match blocking(move || meta.sweep_dedup(now)).await {
                Ok(n) if n > 0 => tracing::debug!(expired = n, "dedup ids forgotten"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "dedup sweep failed"),
            }
        }
        if now >= next_retention {
            next_retention = now + RETENTION_MS;
            for topic in broker.open_topics() {
                let retention = topic.topic().config.retention;
                let released = match retention.policy {
                    RetentionPolicy::Acked => broker.released_below(&topic).await,
                    RetentionPolicy::Limits => None,
                };
                if retention.max_age_ms.is_none()
                    && retention.max_bytes.is_none()
                    && released.is_none()
                {
                    continue;
                }
                let t = Arc::clone(&topic);
                match blocking(move || t.enforce_retention(now, released.as_deref())).await {
                    Ok(n) if n > 0 => tracing::info!(
                        topic = topic.name(),
                        segments = n,
                        "retention deleted segments"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(topic = topic.name(), error = %e, "retention failed"),
                }
            }
        }
    }
}

impl EmbeddedBroker {
    /// Per partition, the lowest ack floor of the topic's subscriptions: below it every
    /// subscription is done. `None` when the topic has no subscription (nothing is released
    /// then, so messages published before the first subscription are kept for it).
    async fn released_below(&self, topic: &Arc<OpenTopic>) -> Option<Vec<u64>> {
        let subscriptions: Vec<_> = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| Arc::ptr_eq(&s.topic, topic))
            .cloned()
            .collect();
        let mut released: Option<Vec<u64>> = None;
        for sub in subscriptions {
            let state = sub.state.lock().await;
            let floors = state.cursors.iter().map(|c| c.floor());
            released = Some(match released {
                None => floors.collect(),
                Some(mins) => mins
                    .into_iter()
                    .zip(floors)
                    .map(|(a, b)| a.min(b))
                    .collect(),
            });
        }
        released
    }

    pub(crate) fn open_topics(&self) -> Vec<Arc<OpenTopic>> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Appends every delayed message of `topic` that is due, then forgets it. A crash between
    /// the append and the delete appends it again on the next start (at-least-once).
    pub(crate) async fn release_due(&self, topic: &Arc<OpenTopic>) -> Result<(), EmbeddedError> {
        let _guard = self.inner.release_lock.lock().await;
        loop {
            let now = self.inner.clock.now_ms();
            let meta = Arc::clone(&self.inner.meta);
            let name = topic.name().to_owned();
            let due = blocking(move || meta.due_delayed(&name, now, RELEASE_CHUNK)).await?;
            let count = due.len();
            if count > 0 {
                let keys: Vec<(i64, u128)> = due.iter().map(|(at, id, _)| (*at, *id)).collect();
                let messages = due
                    .into_iter()
                    .map(|(at, id, row)| {
                        let partition = row.partition;
                        Ok((partition, uuid::Uuid::from_u128(id), due_message(row, at)?))
                    })
                    .collect::<Result<Vec<_>, EmbeddedError>>()?;
                topic.append(messages, now).await?;
                let meta = Arc::clone(&self.inner.meta);
                let name = topic.name().to_owned();
                blocking(move || meta.delete_delayed(&name, &keys)).await?;
                topic.scheduled.fetch_sub(count as u64, Ordering::AcqRel);
            }
            if count < RELEASE_CHUNK {
                let meta = Arc::clone(&self.inner.meta);
                let name = topic.name().to_owned();
                let (next, _) = blocking(move || meta.delayed_summary(&name)).await?;
                topic
                    .next_due_ms
                    .store(next.unwrap_or(NOTHING_SCHEDULED), Ordering::Release);
                return Ok(());
            }
        }
    }
}
