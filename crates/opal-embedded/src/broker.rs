//! `EmbeddedBroker`: the `Broker` trait on partition logs and the metadata store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use opal_core::{
    AckId, AckOutcome, AckRejection, Broker, BrokerError, Created, Delivery, NewMessage,
    PublishResult, Subscription, SubscriptionConfig, SubscriptionName, Topic, TopicConfig,
    TopicName,
};
use opal_log::LogConfig;
use tokio::time::Instant;

use crate::ack_id::Receipt;
use crate::cursor::{AckCheck, PartitionCursor};
use crate::meta::{MetaStore, SubscriptionRow, TopicRow};
use crate::topic::OpenTopic;
use crate::{EmbeddedConfig, EmbeddedError};

const ADMIN_KEY_SETTING: &str = "admin_key_sha256";

/// The embedded backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: EmbeddedConfig,
    log_config: LogConfig,
    meta: Arc<MetaStore>,
    topics: RwLock<HashMap<String, Arc<OpenTopic>>>,
    subscriptions: RwLock<HashMap<String, Arc<OpenSubscription>>>,
    /// Serialises creates so that check-then-insert cannot race.
    create_lock: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct OpenSubscription {
    subscription: Subscription,
    topic: Arc<OpenTopic>,
    state: tokio::sync::Mutex<SubscriptionState>,
}

#[derive(Debug)]
struct SubscriptionState {
    cursors: Vec<PartitionCursor>,
    next_token: u64,
    /// Partition to read first on the next pull, so no partition starves the others.
    first_partition: u32,
}

impl SubscriptionState {
    fn new(cursors: Vec<PartitionCursor>) -> Self {
        // A random start keeps receipts from before a restart from matching new leases.
        let next_token = uuid::Uuid::now_v7().as_u64_pair().1;
        SubscriptionState {
            cursors,
            next_token,
            first_partition: 0,
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EmbeddedError> + Send + 'static,
) -> Result<T, EmbeddedError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EmbeddedError::Task(e.to_string()))?
}

fn timestamp(ms: i64) -> Result<Timestamp, EmbeddedError> {
    Timestamp::from_millisecond(ms)
        .map_err(|e| EmbeddedError::CorruptMeta(format!("timestamp {ms}: {e}")))
}

impl EmbeddedBroker {
    /// Opens the data directory (creating it when absent) and recovers every log and cursor.
    /// Blocks while recovering.
    pub fn open(config: EmbeddedConfig) -> Result<Self, EmbeddedError> {
        opal_log::create_dir_durable(&config.data_dir).map_err(|source| EmbeddedError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let meta = Arc::new(MetaStore::open(&config.data_dir.join("meta.redb"))?);
        let log_config = LogConfig {
            fsync: config.fsync,
            segment_max_bytes: config.segment_max_bytes,
            ..LogConfig::default()
        };

        let mut topics = HashMap::new();
        for (name, row) in meta.topics()? {
            let topic = Topic {
                name: TopicName::new(name.clone())
                    .map_err(|e| EmbeddedError::CorruptMeta(e.to_string()))?,
                config: TopicConfig {
                    partitions: row.partitions,
                },
                created_at: timestamp(row.created_at_ms)?,
            };
            topics.insert(
                name,
                Arc::new(OpenTopic::open(&config.data_dir, topic, &log_config)?),
            );
        }

        let mut subscriptions = HashMap::new();
        for (name, row) in meta.subscriptions()? {
            let topic = topics.get(&row.topic).cloned().ok_or_else(|| {
                EmbeddedError::CorruptMeta(format!(
                    "subscription {name} names missing topic {}",
                    row.topic
                ))
            })?;
            let cursors = meta
                .ack_state(&name, topic.partitions())?
                .into_iter()
                .map(|(floor, acked)| PartitionCursor::new(floor, acked))
                .collect();
            let subscription = Subscription {
                name: SubscriptionName::new(name.clone())
                    .map_err(|e| EmbeddedError::CorruptMeta(e.to_string()))?,
                config: SubscriptionConfig {
                    topic: topic.topic.name.clone(),
                    ack_deadline_ms: row.ack_deadline_ms,
                },
                created_at: timestamp(row.created_at_ms)?,
            };
            let open = OpenSubscription {
                subscription,
                topic,
                state: tokio::sync::Mutex::new(SubscriptionState::new(cursors)),
            };
            subscriptions.insert(name, Arc::new(open));
        }
        tracing::info!(
            data_dir = %config.data_dir.display(),
            topics = topics.len(),
            subscriptions = subscriptions.len(),
            "embedded storage open"
        );

        Ok(EmbeddedBroker {
            inner: Arc::new(Inner {
                config,
                log_config,
                meta,
                topics: RwLock::new(topics),
                subscriptions: RwLock::new(subscriptions),
                create_lock: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn check_open(&self) -> Result<(), BrokerError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        Ok(())
    }

    fn topic(&self, name: &TopicName) -> Result<Arc<OpenTopic>, BrokerError> {
        let topics = self.inner.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .get(name.as_str())
            .cloned()
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_string()))
    }

    fn subscription(&self, name: &SubscriptionName) -> Result<Arc<OpenSubscription>, BrokerError> {
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

    /// Leases what is available now. Returns the deliveries and, when there are none, the
    /// earliest lease deadline (a redelivery may become due then).
    async fn try_pull(
        &self,
        sub: &OpenSubscription,
        max: usize,
    ) -> Result<(Vec<Delivery>, Option<Instant>), EmbeddedError> {
        let topic = &sub.topic;
        let lease_for = Duration::from_millis(sub.subscription.config.ack_deadline_ms);
        let mut state = sub.state.lock().await;
        let now = Instant::now();
        let deadline = now + lease_for;
        let mut out = Vec::new();

        // Redeliveries first: they have waited longest.
        for partition in 0..topic.partitions() {
            let due = state.cursors[partition as usize].expired(now, max - out.len());
            for offset in due {
                let token = state.token();
                let cursor = &mut state.cursors[partition as usize];
                match topic.read_one(partition, offset)? {
                    Some(message) => {
                        let attempt = cursor.lease(offset, token, deadline);
                        let ack_id = Receipt {
                            partition,
                            offset,
                            token,
                        }
                        .encode();
                        out.push(Delivery {
                            ack_id,
                            attempt,
                            message,
                        });
                    }
                    // Retention removed it; nothing left to deliver.
                    None => cursor.drop_lease(offset),
                }
            }
        }

        let partitions = topic.partitions();
        let first = state.first_partition;
        state.first_partition = (first + 1) % partitions;
        for i in 0..partitions {
            let partition = (first + i) % partitions;
            let log_start = topic.log(partition).start_offset();
            let cursor = &mut state.cursors[partition as usize];
            if cursor.next() < log_start {
                cursor.advance_past(log_start - 1);
            }
            'partition: while out.len() < max {
                let messages = topic.read(partition, state.cursors[partition as usize].next())?;
                if messages.is_empty() {
                    break;
                }
                for message in messages {
                    let offset = message.offset;
                    let token = state.token();
                    let cursor = &mut state.cursors[partition as usize];
                    cursor.advance_past(offset);
                    if cursor.is_acked(offset) {
                        continue;
                    }
                    let attempt = cursor.lease(offset, token, deadline);
                    let ack_id = Receipt {
                        partition,
                        offset,
                        token,
                    }
                    .encode();
                    out.push(Delivery {
                        ack_id,
                        attempt,
                        message,
                    });
                    if out.len() == max {
                        break 'partition;
                    }
                }
            }
        }

        let next_deadline = state
            .cursors
            .iter()
            .filter_map(PartitionCursor::next_deadline)
            .min();
        Ok((out, next_deadline))
    }
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
            return if existing.topic.config == config {
                Ok((existing.topic.clone(), Created::Existing))
            } else {
                Err(BrokerError::Conflict {
                    kind: "topic",
                    name: name.to_string(),
                })
            };
        }
        let now = Timestamp::now();
        let topic = Topic {
            name: name.clone(),
            config,
            created_at: now,
        };
        let row = TopicRow {
            partitions: topic.config.partitions,
            created_at_ms: now.as_millisecond(),
        };
        let inner = Arc::clone(&self.inner);
        let opened = topic.clone();
        let open = blocking(move || {
            // Logs first: a crash before the metadata commit leaves only empty directories,
            // which the next create of the same name reuses.
            let open = OpenTopic::open(&inner.config.data_dir, opened, &inner.log_config)?;
            inner.meta.put_topic(open.topic.name.as_str(), &row)?;
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

    async fn get_topic(&self, name: &TopicName) -> Result<Topic, BrokerError> {
        Ok(self.topic(name)?.topic.clone())
    }

    async fn publish(
        &self,
        topic: &TopicName,
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
        for (index, message) in messages.iter().enumerate() {
            message.validate(index, limits)?;
        }
        let open = self.topic(topic)?;
        let now_ms = Timestamp::now().as_millisecond();
        Ok(open.publish(messages, now_ms).await?)
    }

    async fn create_subscription(
        &self,
        name: &SubscriptionName,
        config: SubscriptionConfig,
    ) -> Result<(Subscription, Created), BrokerError> {
        self.check_open()?;
        config.validate(&self.inner.config.limits)?;
        let _guard = self.inner.create_lock.lock().await;
        if let Ok(existing) = self.subscription(name) {
            return if existing.subscription.config == config {
                Ok((existing.subscription.clone(), Created::Existing))
            } else {
                Err(BrokerError::Conflict {
                    kind: "subscription",
                    name: name.to_string(),
                })
            };
        }
        let topic = self.topic(&config.topic)?;
        let floors: Vec<u64> = (0..topic.partitions())
            .map(|p| topic.log(p).start_offset())
            .collect();
        let now = Timestamp::now();
        let row = SubscriptionRow {
            topic: config.topic.to_string(),
            ack_deadline_ms: config.ack_deadline_ms,
            created_at_ms: now.as_millisecond(),
        };
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        let stored_floors = floors.clone();
        blocking(move || meta.put_subscription(&key, &row, &stored_floors)).await?;

        let subscription = Subscription {
            name: name.clone(),
            config,
            created_at: now,
        };
        let cursors = floors
            .into_iter()
            .map(|floor| PartitionCursor::new(floor, BTreeSet::new()))
            .collect();
        let open = OpenSubscription {
            subscription: subscription.clone(),
            topic,
            state: tokio::sync::Mutex::new(SubscriptionState::new(cursors)),
        };
        self.inner
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::new(open));
        tracing::info!(subscription = %name, topic = %subscription.config.topic, "subscription created");
        Ok((subscription, Created::New))
    }

    async fn get_subscription(&self, name: &SubscriptionName) -> Result<Subscription, BrokerError> {
        Ok(self.subscription(name)?.subscription.clone())
    }

    async fn pull(
        &self,
        name: &SubscriptionName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.check_open()?;
        let limits = &self.inner.config.limits;
        let max = max.clamp(1, limits.max_pull_messages);
        let give_up = Instant::now() + wait.min(Duration::from_millis(limits.max_wait_ms));
        let sub = self.subscription(name)?;
        loop {
            // Register for the wake-up before looking, so a publish in between is not missed.
            let published = sub.topic.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();

            let (deliveries, next_deadline) = self.try_pull(&sub, max).await?;
            let now = Instant::now();
            if !deliveries.is_empty() || now >= give_up || self.check_open().is_err() {
                return Ok(deliveries);
            }
            let wake = next_deadline.map_or(give_up, |d| d.min(give_up));
            tokio::select! {
                () = &mut published => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(
        &self,
        name: &SubscriptionName,
        ack_ids: &[AckId],
    ) -> Result<AckOutcome, BrokerError> {
        self.check_open()?;
        let sub = self.subscription(name)?;
        let partitions = sub.topic.partitions();
        let mut receipts = Vec::with_capacity(ack_ids.len());
        for (i, id) in ack_ids.iter().enumerate() {
            match Receipt::decode(id).filter(|r| r.partition < partitions) {
                Some(receipt) => receipts.push(receipt),
                None => {
                    return Err(BrokerError::invalid(
                        format!("ack_ids[{i}]"),
                        "is not an ack id issued by this subscription",
                    ));
                }
            }
        }

        let mut state = sub.state.lock().await;
        let now = Instant::now();
        let mut outcome = AckOutcome::default();
        let mut accepted: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for (receipt, id) in receipts.iter().zip(ack_ids) {
            let cursor = &state.cursors[receipt.partition as usize];
            match cursor.check_ack(receipt.offset, receipt.token, now) {
                AckCheck::Accept => {
                    accepted
                        .entry(receipt.partition)
                        .or_default()
                        .insert(receipt.offset);
                    outcome.acked += 1;
                }
                AckCheck::AlreadyAcked => outcome.acked += 1,
                AckCheck::Reject(reason) => outcome.rejected.push(AckRejection {
                    ack_id: id.clone(),
                    reason: reason.to_owned(),
                }),
            }
        }
        if accepted.is_empty() {
            return Ok(outcome);
        }
        let plans: Vec<_> = accepted
            .iter()
            .map(|(&p, offsets)| (p, state.cursors[p as usize].plan_acks(offsets)))
            .collect();
        let meta = Arc::clone(&self.inner.meta);
        let key = name.to_string();
        let stored = plans.clone();
        blocking(move || meta.apply_acks(&key, &stored)).await?;
        for (partition, plan) in &plans {
            state.cursors[*partition as usize].apply_acks(&accepted[partition], plan);
        }
        Ok(outcome)
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
        let topics: Vec<_> = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        blocking(move || {
            for topic in topics {
                topic.close()?;
            }
            Ok(())
        })
        .await?;
        tracing::info!("embedded storage closed");
        Ok(())
    }
}
