//! `EmbeddedBroker`: opening the data directory, and the `Broker` trait on its parts.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use opal_core::{
    AckId, AckOutcome, AppName, AttemptQuery, Broker, BrokerError, Clock, Created, Delivery,
    Message, NewMessage, PublishResult, PushAttempt, Resend, ResendTarget, Settle, StartPosition,
    Subscription, SubscriptionConfig, SubscriptionName, SubscriptionStats, Topic, TopicConfig,
    TopicName, TopicStats,
};
use opal_log::LogConfig;
use tokio::sync::Notify;

use crate::cursor::{PartitionCursor, Retry};
use crate::meta::MetaStore;
use crate::rows;
use crate::subscription::{OpenSubscription, floors_for};
use crate::topic::{OpenTopic, remove_topic_dir};
use crate::{EmbeddedConfig, EmbeddedError, scheduler};

const ADMIN_KEY_SETTING: &str = "admin_key_sha256";

/// The embedded backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: EmbeddedConfig,
    pub(crate) log_config: LogConfig,
    pub(crate) clock: Clock,
    pub(crate) meta: Arc<MetaStore>,
    pub(crate) topics: RwLock<HashMap<String, Arc<OpenTopic>>>,
    pub(crate) subscriptions: RwLock<HashMap<String, Arc<OpenSubscription>>>,
    /// Serialises creates, updates and deletes so that check-then-act cannot race.
    pub(crate) create_lock: tokio::sync::Mutex<()>,
    /// Serialises moving due delayed messages into their logs (the scheduler and pulls both do).
    pub(crate) release_lock: tokio::sync::Mutex<()>,
    /// Wakes the scheduler when an earlier delayed message arrives or on close.
    /// Its own allocation, so the scheduler can wait on it without keeping the broker alive.
    pub(crate) scheduler_wake: Arc<Notify>,
    /// Counts subscription creates, updates and deletes, for [`Broker::watch_subscriptions`].
    pub(crate) subscription_changes: tokio::sync::watch::Sender<u64>,
    /// Counts calls that queued resends, for [`Broker::watch_resends`].
    pub(crate) resend_changes: tokio::sync::watch::Sender<u64>,
    pub(crate) closed: AtomicBool,
}

impl Inner {
    pub(crate) fn subscriptions_changed(&self) {
        self.subscription_changes.send_modify(|n| *n += 1);
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EmbeddedError> + Send + 'static,
) -> Result<T, EmbeddedError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EmbeddedError::Task(e.to_string()))?
}

impl EmbeddedBroker {
    /// Opens the data directory (creating it when absent) and recovers every log and cursor.
    /// Blocks while recovering. Inside a Tokio runtime it also starts the background scheduler
    /// (delayed messages, dedup expiry, retention).
    pub fn open(config: EmbeddedConfig) -> Result<Self, EmbeddedError> {
        opal_log::create_dir_durable(&config.data_dir).map_err(|source| EmbeddedError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let meta = Arc::new(MetaStore::open(
            &config.data_dir.join("meta.redb"),
            config.encryption.clone(),
        )?);
        let log_config = LogConfig {
            fsync: config.fsync,
            segment_max_bytes: config.segment_max_bytes,
            encryption: config.encryption.clone(),
            ..LogConfig::default()
        };

        let mut topics = HashMap::new();
        for (name, row) in meta.topics()? {
            let topic = rows::topic_from_row(&name, row)?;
            let open = OpenTopic::open(&config.data_dir, topic, &log_config)?;
            let (next_due, scheduled) = meta.delayed_summary(&name)?;
            if let Some(due) = next_due {
                open.next_due_ms.store(due, Ordering::Release);
            }
            open.scheduled.store(scheduled, Ordering::Release);
            topics.insert(name, Arc::new(open));
        }

        resolve_pending_dedup(&meta, &topics)?;

        let mut subscriptions = HashMap::new();
        for (name, row) in meta.subscriptions()? {
            let subscription = rows::subscription_from_row(&name, row)?;
            let open = restore_subscription(&meta, &topics, subscription)?;
            subscriptions.insert(name, Arc::new(open));
        }
        tracing::info!(
            data_dir = %config.data_dir.display(),
            topics = topics.len(),
            subscriptions = subscriptions.len(),
            "embedded storage open"
        );

        let broker = EmbeddedBroker {
            inner: Arc::new(Inner {
                clock: config.clock.clone(),
                config,
                log_config,
                meta,
                topics: RwLock::new(topics),
                subscriptions: RwLock::new(subscriptions),
                create_lock: tokio::sync::Mutex::new(()),
                release_lock: tokio::sync::Mutex::new(()),
                scheduler_wake: Arc::new(Notify::new()),
                subscription_changes: tokio::sync::watch::Sender::new(0),
                resend_changes: tokio::sync::watch::Sender::new(0),
                closed: AtomicBool::new(false),
            }),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(scheduler::run(Arc::downgrade(&broker.inner)));
        }
        Ok(broker)
    }

    pub(crate) fn check_open(&self) -> Result<(), BrokerError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        Ok(())
    }

    pub(crate) fn topic(&self, name: &TopicName) -> Result<Arc<OpenTopic>, BrokerError> {
        let topics = self.inner.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .get(name.as_str())
            .cloned()
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_string()))
    }

    pub(crate) fn subscription(
        &self,
        name: &SubscriptionName,
    ) -> Result<Arc<OpenSubscription>, BrokerError> {
        let subscriptions = self
            .inner
            .subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        subscriptions
            .get(name.as_str())
            .cloned()
            .ok_or_else(|| BrokerError::SubscriptionNotFound(name.to_string()))
    }

    pub(crate) fn dead_letter_topic(
        &self,
        config: &SubscriptionConfig,
    ) -> Result<Option<Arc<OpenTopic>>, BrokerError> {
        config
            .dead_letter_topic
            .as_ref()
            .map(|name| self.topic(name))
            .transpose()
    }
}

/// Settles dedup reservations a crash left unconfirmed: each message is looked for in its
/// partition from where it could start; found, the entry is confirmed with its offset; not
/// found, the append never happened and the entry is dropped so that a retry stores it.
fn resolve_pending_dedup(
    meta: &MetaStore,
    topics: &HashMap<String, Arc<OpenTopic>>,
) -> Result<(), EmbeddedError> {
    for (topic_name, dedup_id, row) in meta.pending_dedup()? {
        let Some(topic) = topics.get(&topic_name) else {
            meta.resolve_dedup(&topic_name, &dedup_id, None)?;
            continue;
        };
        let mut offset = row.pending_from.unwrap_or(0);
        let mut found = None;
        while found.is_none() && row.partition < topic.partitions() {
            let messages = topic.read(row.partition, offset)?;
            let Some(last) = messages.last().map(|m| m.offset) else {
                break;
            };
            found = messages
                .iter()
                .find(|m| m.id.as_u128() == row.id)
                .map(|m| m.offset);
            offset = last + 1;
        }
        let confirmed = found.map(|offset| crate::meta::DedupRow {
            offset: Some(offset),
            pending_from: None,
            ..row.clone()
        });
        // The stored form: a keyed tag, not the publisher's id, when encryption is on.
        tracing::info!(topic = topic_name, dedup_id = dedup_id.0, found = ?found, "resolved a dedup reservation left by a crash");
        meta.resolve_dedup(&topic_name, &dedup_id, confirmed.as_ref())?;
    }
    Ok(())
}

/// Rebuilds a subscription's cursors from its stored ack state and retries.
fn restore_subscription(
    meta: &MetaStore,
    topics: &HashMap<String, Arc<OpenTopic>>,
    subscription: Subscription,
) -> Result<OpenSubscription, EmbeddedError> {
    let name = subscription.name.as_str();
    let find = |topic: &TopicName| {
        topics.get(topic.as_str()).cloned().ok_or_else(|| {
            EmbeddedError::CorruptMeta(format!("subscription {name} names missing topic {topic}"))
        })
    };
    let topic = find(&subscription.config.topic)?;
    let dead_letter = subscription
        .config
        .dead_letter_topic
        .as_ref()
        .map(find)
        .transpose()?;
    let ordered = subscription.config.ordered;
    let mut cursors: Vec<PartitionCursor> = meta
        .ack_state(name, topic.partitions())?
        .into_iter()
        .map(|(floor, acked)| PartitionCursor::new(floor, acked))
        .collect();
    for (partition, offset, row) in meta.retries(name)? {
        if let Some(cursor) = cursors.get_mut(partition as usize)
            && !cursor.is_acked(offset)
        {
            let retry = Retry {
                attempt: row.attempt,
                not_before_ms: row.not_before_ms,
                key: row.key.map(Into::into),
            };
            cursor.restore_retry(offset, retry, ordered);
        }
    }
    Ok(OpenSubscription::new(
        subscription,
        topic,
        dead_letter,
        cursors,
    ))
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn create_topic(
        &self,
        name: &TopicName,
        config: TopicConfig,
    ) -> Result<(Topic, Created), BrokerError> {
        self.check_open()?;
        config.validate(&self.inner.config.limits)?;
        let _guard = self.inner.create_lock.lock().await;
        if let Ok(existing) = self.topic(name) {
            let existing = existing.topic();
            return if existing.config == config {
                Ok(((*existing).clone(), Created::Existing))
            } else {
                Err(BrokerError::Conflict {
                    kind: "topic",
                    name: name.to_string(),
                })
            };
        }
        let topic = Topic {
            name: name.clone(),
            config,
            created_at: self.inner.clock.now(),
            revision: 1,
        };
        let row = rows::topic_row(&topic);
        let inner = Arc::clone(&self.inner);
        let opened = topic.clone();
        let open = blocking(move || {
            // Whatever lies in the directory of a topic without metadata is left over from a
            // delete or a create that crashed: it must not become this topic's messages.
            remove_topic_dir(&inner.config.data_dir, opened.name.as_str())?;
            // Logs first: a crash before the metadata commit leaves only a directory, which the
            // next create of the same name clears.
            let open = OpenTopic::open(&inner.config.data_dir, opened, &inner.log_config)?;
            inner.meta.put_topic(open.name(), &row)?;
            Ok(open)
        })
        .await?;
        self.inner
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::new(open));
        tracing::info!(topic = %name, partitions = topic.config.partitions, "topic created");
        Ok((topic, Created::New))
    }

    async fn get_topic(&self, name: &TopicName) -> Result<(Topic, TopicStats), BrokerError> {
        let topic = self.topic(name)?;
        Ok(((*topic.topic()).clone(), topic.stats()))
    }

    async fn update_topic(
        &self,
        name: &TopicName,
        config: TopicConfig,
        expected_revision: Option<u64>,
    ) -> Result<Topic, BrokerError> {
        self.update_topic_settings(name, config, expected_revision)
            .await
    }

    async fn delete_topic(
        &self,
        name: &TopicName,
        expected_revision: Option<u64>,
    ) -> Result<(), BrokerError> {
        self.delete_topic_and_messages(name, expected_revision)
            .await
    }

    async fn list_topics(
        &self,
        app: Option<&AppName>,
        after: Option<&TopicName>,
        limit: usize,
    ) -> Result<Vec<Topic>, BrokerError> {
        Ok(self.topics_after(app, after, limit))
    }

    async fn read_messages(
        &self,
        topic: &TopicName,
        partition: u32,
        from: StartPosition,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError> {
        self.browse(topic, partition, from, limit)
    }

    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<PublishResult>, BrokerError> {
        self.publish_messages(topic, messages).await
    }

    async fn create_subscription(
        &self,
        name: &SubscriptionName,
        config: SubscriptionConfig,
        start: StartPosition,
    ) -> Result<(Subscription, Created), BrokerError> {
        self.check_open()?;
        config.validate(&self.inner.config.limits)?;
        let _guard = self.inner.create_lock.lock().await;
        if let Ok(existing) = self.subscription(name) {
            let existing = existing.subscription();
            return if existing.config == config {
                Ok(((*existing).clone(), Created::Existing))
            } else {
                Err(BrokerError::Conflict {
                    kind: "subscription",
                    name: name.to_string(),
                })
            };
        }
        let topic = self.topic(&config.topic)?;
        let dead_letter = self.dead_letter_topic(&config)?;
        let floors = floors_for(&topic, start)?;
        let subscription = Subscription {
            name: name.clone(),
            config,
            created_at: self.inner.clock.now(),
            revision: 1,
        };
        let row = rows::subscription_row(&subscription);
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        let stored_floors = floors.clone();
        blocking(move || meta.put_subscription(&key, &row, &stored_floors)).await?;

        let cursors = floors
            .into_iter()
            .map(|floor| PartitionCursor::new(floor, BTreeSet::new()))
            .collect();
        let open = OpenSubscription::new(subscription.clone(), topic, dead_letter, cursors);
        self.inner
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::new(open));
        tracing::info!(subscription = %name, topic = %subscription.config.topic, "subscription created");
        self.inner.subscriptions_changed();
        Ok((subscription, Created::New))
    }

    async fn get_subscription(
        &self,
        name: &SubscriptionName,
    ) -> Result<(Subscription, SubscriptionStats), BrokerError> {
        let sub = self.subscription(name)?;
        let stats = self.subscription_stats(&sub).await?;
        Ok(((*sub.subscription()).clone(), stats))
    }

    async fn update_subscription(
        &self,
        name: &SubscriptionName,
        config: SubscriptionConfig,
        expected_revision: Option<u64>,
    ) -> Result<Subscription, BrokerError> {
        self.update_subscription_settings(name, config, expected_revision)
            .await
    }

    async fn delete_subscription(
        &self,
        name: &SubscriptionName,
        expected_revision: Option<u64>,
    ) -> Result<(), BrokerError> {
        self.delete_subscription_state(name, expected_revision)
            .await
    }

    async fn list_subscriptions(
        &self,
        app: Option<&AppName>,
        after: Option<&SubscriptionName>,
        limit: usize,
    ) -> Result<Vec<Subscription>, BrokerError> {
        Ok(self.subscriptions_after(app, after, limit))
    }

    fn watch_subscriptions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscription_changes.subscribe()
    }

    async fn leased_messages(
        &self,
        name: &SubscriptionName,
        ack_ids: &[AckId],
    ) -> Result<Vec<Option<Message>>, BrokerError> {
        self.messages_of_leases(name, ack_ids).await
    }

    async fn put_task(&self, task: opal_core::Task) -> Result<(), BrokerError> {
        self.check_open()?;
        Ok(self.store_tasks(vec![task], true).await?)
    }

    async fn get_task(&self, id: uuid::Uuid) -> Result<Option<opal_core::Task>, BrokerError> {
        self.check_open()?;
        Ok(self.load_task(id).await?)
    }

    async fn tasks_owing_callbacks(
        &self,
        limit: usize,
    ) -> Result<Vec<opal_core::Task>, BrokerError> {
        self.check_open()?;
        Ok(self.load_tasks_owing(limit).await?)
    }

    async fn record_push_attempts(
        &self,
        name: &SubscriptionName,
        attempts: Vec<PushAttempt>,
    ) -> Result<(), BrokerError> {
        self.subscription(name)?;
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        let now = self.inner.clock.now_ms();
        blocking(move || meta.record_push_attempts(&key, &attempts, now)).await?;
        Ok(())
    }

    async fn list_push_attempts(
        &self,
        name: &SubscriptionName,
        query: AttemptQuery,
    ) -> Result<Vec<PushAttempt>, BrokerError> {
        self.subscription(name)?;
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        Ok(blocking(move || meta.push_attempts(&key, &query)).await?)
    }

    async fn queue_resends(
        &self,
        name: &SubscriptionName,
        mut targets: Vec<ResendTarget>,
    ) -> Result<usize, BrokerError> {
        self.check_open()?;
        self.subscription(name)?;
        targets.sort_unstable();
        targets.dedup();
        if targets.is_empty() {
            return Ok(0);
        }
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        let now = self.inner.clock.now_ms();
        let queued = targets.len();
        blocking(move || meta.queue_resends(&key, &targets, now)).await?;
        if queued > 0 {
            self.inner.resend_changes.send_modify(|n| *n += 1);
        }
        Ok(queued)
    }

    async fn due_resends(
        &self,
        name: &SubscriptionName,
        limit: usize,
    ) -> Result<Vec<Resend>, BrokerError> {
        self.subscription(name)?;
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        let now = self.inner.clock.now_ms();
        Ok(blocking(move || meta.due_resends(&key, now, limit)).await?)
    }

    async fn settle_resend(
        &self,
        name: &SubscriptionName,
        partition: u32,
        offset: u64,
        next: Option<jiff::Timestamp>,
    ) -> Result<(), BrokerError> {
        self.check_open()?;
        self.subscription(name)?;
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        let next = next.map(|at| at.as_millisecond());
        blocking(move || meta.settle_resend(&key, partition, offset, next)).await?;
        Ok(())
    }

    fn watch_resends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.resend_changes.subscribe()
    }

    async fn pull(
        &self,
        name: &SubscriptionName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.pull_deliveries(name, max, wait).await
    }

    async fn settle(
        &self,
        name: &SubscriptionName,
        ack_ids: &[AckId],
        action: Settle,
    ) -> Result<AckOutcome, BrokerError> {
        self.settle_deliveries(name, ack_ids, action).await
    }

    async fn seek(
        &self,
        name: &SubscriptionName,
        position: StartPosition,
    ) -> Result<(), BrokerError> {
        self.check_open()?;
        let sub = self.subscription(name)?;
        let mut state = sub.state.lock().await;
        // Dead letters already due are sent first: a seek moves the position, it does not
        // cancel what max_deliveries decided.
        let now = self.inner.clock.now_ms();
        self.expire_leases(&sub, &mut state, now).await?;
        let floors = floors_for(&sub.topic, position)?;
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        let stored = floors.clone();
        blocking(move || meta.reset_subscription(&key, &stored)).await?;
        state.cursors = floors
            .into_iter()
            .map(|f| PartitionCursor::new(f, BTreeSet::new()))
            .collect();
        state.new_epoch();
        sub.topic.published.notify_waiters();
        tracing::info!(subscription = %name, ?position, "subscription moved");
        Ok(())
    }

    async fn admin_key_hash(&self) -> Result<Option<[u8; 32]>, BrokerError> {
        let meta = Arc::clone(&self.inner.meta);
        let stored = blocking(move || meta.setting(ADMIN_KEY_SETTING)).await?;
        match stored {
            None => Ok(None),
            Some(bytes) => bytes
                .try_into()
                .map(Some)
                .map_err(|_| BrokerError::Storage("stored admin key hash is not 32 bytes".into())),
        }
    }

    async fn set_admin_key_hash(&self, hash: [u8; 32]) -> Result<(), BrokerError> {
        let meta = Arc::clone(&self.inner.meta);
        Ok(blocking(move || meta.put_setting(ADMIN_KEY_SETTING, &hash)).await?)
    }

    fn is_ready(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire)
    }

    async fn close(&self) -> Result<(), BrokerError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.scheduler_wake.notify_one();
        // Wake long-polls so they return now instead of at their deadline.
        let topics: Vec<_> = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for topic in &topics {
            topic.published.notify_waiters();
        }
        let meta = Arc::clone(&self.inner.meta);
        blocking(move || {
            for topic in topics {
                topic.close()?;
            }
            meta.close();
            Ok(())
        })
        .await?;
        tracing::info!("embedded storage closed");
        Ok(())
    }
}
