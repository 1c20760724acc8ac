//! Pulling: redeliveries, keys released to waiting messages, then new messages; expired leases
//! become retries (with backoff) or dead letters; long-polls wait on the broker's clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opal_core::{BrokerError, Delivery, Message, SubscriptionName};

use crate::ack_id::Receipt;
use crate::broker::blocking;
use crate::cursor::{AckPlan, Key, Lease, Retry};
use crate::meta::RetryRow;
use crate::subscription::{Counters, OpenSubscription, SubscriptionState};
use crate::{EmbeddedBroker, EmbeddedError};

/// Messages parked per partition of an ordered subscription before it stops reading ahead:
/// bounds memory when one key is stuck.
const HOLD_LIMIT: usize = 10_000;

impl EmbeddedBroker {
    pub(crate) async fn pull_deliveries(
        &self,
        name: &SubscriptionName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.check_open()?;
        let limits = &self.inner.config.limits;
        let max = max.clamp(1, limits.max_pull_messages);
        let wait = wait.min(Duration::from_millis(limits.max_wait_ms));
        let clock = self.inner.clock.clone();
        let give_up = clock.now_ms().saturating_add(wait.as_millis() as i64);
        let sub = self.subscription(name)?;
        loop {
            // Register for the wake-up before looking, so a publish in between is not missed.
            let published = sub.topic.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();

            if sub.topic.next_due_ms.load(Ordering::Acquire) <= clock.now_ms() {
                self.release_due(&sub.topic).await?;
            }
            let (deliveries, next_wake) = self.try_pull(&sub, max).await?;
            let now = clock.now_ms();
            if !deliveries.is_empty() || now >= give_up || self.check_open().is_err() {
                if deliveries.iter().any(|d| d.message.callback.is_some()) {
                    self.tasks_delivered(&deliveries).await;
                }
                return Ok(deliveries);
            }
            let due = sub.topic.next_due_ms.load(Ordering::Acquire);
            let wake = next_wake.map_or(give_up, |w| w.min(give_up)).min(due);
            tokio::select! {
                () = &mut published => {}
                () = clock.sleep_until_ms(wake) => {}
            }
        }
    }

    /// Leases what is available now. Returns the deliveries and the earliest time something
    /// may become available by itself (a lease expiring, a retry falling due).
    async fn try_pull(
        &self,
        sub: &OpenSubscription,
        max: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), EmbeddedError> {
        let subscription = sub.subscription();
        let config = &subscription.config;
        let topic = &sub.topic;
        let mut state = sub.state.lock().await;
        if sub.is_deleted() {
            return Err(EmbeddedError::SubscriptionGone(sub.name().to_owned()));
        }
        let now = self.inner.clock.now_ms();
        let deadline = now.saturating_add(config.ack_deadline_ms as i64);

        self.catch_up_with_retention(sub, &mut state).await?;
        self.expire_leases(sub, &mut state, now).await?;

        let mut out = Vec::new();
        // Retries first (they have waited longest), then keys released to parked messages.
        for partition in 0..topic.partitions() {
            let cursor = &state.cursors[partition as usize];
            let mut offsets = cursor.due_retries(now, max - out.len());
            offsets.extend(cursor.ready(max - out.len() - offsets.len()));
            for offset in offsets {
                match topic.read_one(partition, offset)? {
                    Some(message) => {
                        let delivery =
                            lease(&mut state, config.ordered, partition, message, deadline);
                        if delivery.attempt > 1 {
                            Counters::add(&sub.counters.redelivered, 1);
                        }
                        out.push(delivery);
                    }
                    None => {
                        // Retention removed it; account for it as acked-away on the next catch-up.
                        let start = topic.log(partition).start_offset();
                        let lost = state.cursors[partition as usize].skip_to(start);
                        Counters::add(&sub.counters.expired, lost as usize);
                    }
                }
            }
        }

        let mut filtered: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        let partitions = topic.partitions();
        let first = state.first_partition;
        state.first_partition = (first + 1) % partitions;
        for i in 0..partitions {
            let partition = (first + i) % partitions;
            'partition: while out.len() < max
                && state.cursors[partition as usize].held_count() < HOLD_LIMIT
            {
                // A little more than is missing: some may be filtered out or held by a key.
                let want = (max - out.len()).saturating_mul(2).max(16);
                let messages =
                    topic.read_up_to(partition, state.cursors[partition as usize].next(), want)?;
                if messages.is_empty() {
                    break;
                }
                for message in messages {
                    let offset = message.offset;
                    let cursor = &mut state.cursors[partition as usize];
                    cursor.advance_past(offset);
                    if cursor.is_tracked(offset) {
                        continue;
                    }
                    if let Some(filter) = &config.filter
                        && !filter.matches(&message.attributes)
                    {
                        filtered.entry(partition).or_default().insert(offset);
                        continue;
                    }
                    if config.ordered
                        && let Some(key) = &message.key
                    {
                        let key: Key = Arc::from(key.as_str());
                        if cursor.key_blocked(&key, offset) {
                            cursor.hold(key, offset);
                            continue;
                        }
                    }
                    out.push(lease(
                        &mut state,
                        config.ordered,
                        partition,
                        message,
                        deadline,
                    ));
                    if out.len() == max {
                        break 'partition;
                    }
                }
            }
        }

        // Filtered messages are acked for this subscription; losing this write in a crash only
        // means evaluating the filter again.
        if !filtered.is_empty() {
            let plans: Vec<(u32, AckPlan)> = filtered
                .iter()
                .map(|(&p, offsets)| (p, state.cursors[p as usize].plan_acks(offsets)))
                .collect();
            self.store_acks(sub, &plans, false).await?;
            for (p, plan) in &plans {
                state.cursors[*p as usize].apply_acks(plan);
            }
        }

        Counters::add(&sub.counters.delivered, out.len());
        let next_wake = state.cursors.iter().filter_map(|c| c.next_wake_ms()).min();
        Ok((out, next_wake))
    }

    /// Turns leases whose deadline passed into retries after backoff, or dead letters once
    /// `max_deliveries` is reached.
    pub(crate) async fn expire_leases(
        &self,
        sub: &OpenSubscription,
        state: &mut SubscriptionState,
        now: i64,
    ) -> Result<(), EmbeddedError> {
        let subscription = sub.subscription();
        let config = &subscription.config;
        let mut retries = Vec::new();
        let mut dead = Vec::new();
        for partition in 0..sub.topic.partitions() {
            for (offset, lease) in state.cursors[partition as usize].take_expired(now) {
                if config
                    .max_deliveries
                    .is_some_and(|max| lease.attempt >= max)
                {
                    dead.push((partition, offset, lease));
                    continue;
                }
                let wait = config
                    .backoff
                    .delay_ms(lease.attempt, rand::random::<f64>());
                let retry = Retry {
                    attempt: lease.attempt,
                    not_before_ms: lease.deadline_ms.saturating_add(wait as i64),
                    key: lease.key,
                };
                retries.push((partition, offset, retry));
            }
        }
        if !retries.is_empty() {
            // Not synced: losing it in a crash only forgets an attempt count or a backoff wait.
            self.store_retries(sub, &retries, false).await?;
            for (partition, offset, retry) in retries {
                state.cursors[partition as usize].schedule_retry(offset, retry);
            }
        }
        if !dead.is_empty() {
            self.dead_letter(sub, state, dead).await?;
        }
        Ok(())
    }

    /// Publishes messages to the dead-letter topic (if any), then acks them on `sub`.
    pub(crate) async fn dead_letter(
        &self,
        sub: &OpenSubscription,
        state: &mut SubscriptionState,
        dead: Vec<(u32, u64, Lease)>,
    ) -> Result<(), EmbeddedError> {
        let now = self.inner.clock.now_ms();
        let mut tasks = (Vec::new(), Vec::new());
        let mut messages = Vec::new();
        for (partition, offset, lease) in &dead {
            if let Some(message) = sub.topic.read_one(*partition, *offset)? {
                if message.callback.is_some() {
                    tasks.0.push(message.clone());
                    tasks.1.push(lease.attempt);
                }
                messages.push((message, lease.attempt));
            }
        }
        if let Some(dlt) = &sub.settings().dead_letter {
            let letters: Vec<_> = messages
                .into_iter()
                .map(|(message, attempt)| dead_letter_message(sub, message, attempt))
                .collect();
            if !letters.is_empty() {
                let letters: Vec<_> = letters
                    .into_iter()
                    .map(|m| (dlt.partition_for(m.key.as_deref()), uuid::Uuid::now_v7(), m))
                    .collect();
                let count = letters.len();
                let bytes = letters
                    .iter()
                    .map(|(_, _, m): &(u32, uuid::Uuid, opal_core::NewMessage)| m.data.len() as u64)
                    .sum();
                dlt.append(letters, now).await?;
                dlt.count_published(count, bytes);
            }
        }
        let mut by_partition: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for (partition, offset, lease) in dead {
            // Park it as a retry that never comes due, so the ack below frees its key.
            let parked = Retry {
                attempt: lease.attempt,
                not_before_ms: i64::MAX,
                key: lease.key,
            };
            state.cursors[partition as usize].schedule_retry(offset, parked);
            by_partition.entry(partition).or_default().insert(offset);
        }
        let plans: Vec<(u32, AckPlan)> = by_partition
            .iter()
            .map(|(&p, offsets)| (p, state.cursors[p as usize].plan_acks(offsets)))
            .collect();
        self.store_acks(sub, &plans, true).await?;
        let count: usize = by_partition.values().map(BTreeSet::len).sum();
        for (p, plan) in &plans {
            state.cursors[*p as usize].apply_acks(plan);
        }
        Counters::add(&sub.counters.dead_lettered, count);
        tracing::info!(subscription = sub.name(), count, "dead-lettered");
        if !tasks.0.is_empty() {
            self.tasks_dead_lettered(tasks.0, tasks.1).await?;
        }
        Ok(())
    }

    /// Moves floors that retention overtook up to the log start, counting what was lost.
    async fn catch_up_with_retention(
        &self,
        sub: &OpenSubscription,
        state: &mut SubscriptionState,
    ) -> Result<(), EmbeddedError> {
        let mut plans = Vec::new();
        for partition in 0..sub.topic.partitions() {
            let start = sub.topic.log(partition).start_offset();
            let cursor = &state.cursors[partition as usize];
            if cursor.floor() < start {
                plans.push((partition, start));
            }
        }
        if plans.is_empty() {
            return Ok(());
        }
        let stored: Vec<(u32, AckPlan)> = plans
            .iter()
            .map(|&(p, start)| {
                (
                    p,
                    AckPlan {
                        new_floor: start,
                        ..AckPlan::default()
                    },
                )
            })
            .collect();
        self.store_acks(sub, &stored, false).await?;
        for (partition, start) in plans {
            let lost = state.cursors[partition as usize].skip_to(start);
            Counters::add(&sub.counters.expired, lost as usize);
        }
        Ok(())
    }

    pub(crate) async fn store_acks(
        &self,
        sub: &OpenSubscription,
        plans: &[(u32, AckPlan)],
        durable: bool,
    ) -> Result<(), EmbeddedError> {
        let meta = Arc::clone(&self.inner.meta);
        let name = sub.name().to_owned();
        let plans = plans.to_vec();
        blocking(move || meta.apply_acks(&name, &plans, durable)).await
    }

    pub(crate) async fn store_retries(
        &self,
        sub: &OpenSubscription,
        retries: &[(u32, u64, Retry)],
        durable: bool,
    ) -> Result<(), EmbeddedError> {
        let rows: Vec<(u32, u64, RetryRow)> = retries
            .iter()
            .map(|(p, o, r)| {
                let row = RetryRow {
                    attempt: r.attempt,
                    not_before_ms: r.not_before_ms,
                    key: r.key.as_deref().map(str::to_owned),
                };
                (*p, *o, row)
            })
            .collect();
        let meta = Arc::clone(&self.inner.meta);
        let name = sub.name().to_owned();
        blocking(move || meta.put_retries(&name, &rows, durable)).await
    }
}

fn lease(
    state: &mut SubscriptionState,
    ordered: bool,
    partition: u32,
    message: Message,
    deadline: i64,
) -> Delivery {
    let token = state.token();
    let key = message.key.as_deref().map(Arc::<str>::from);
    let cursor = &mut state.cursors[partition as usize];
    let attempt = cursor.lease(message.offset, token, deadline, key, ordered);
    let ack_id = Receipt {
        partition,
        offset: message.offset,
        token,
    }
    .encode();
    Delivery {
        ack_id,
        attempt,
        message,
    }
}

fn dead_letter_message(
    sub: &OpenSubscription,
    message: Message,
    attempts: u32,
) -> opal_core::NewMessage {
    use opal_core::dead_letter::{
        ATTEMPTS, ORIGINAL_ID, REASON, SOURCE_SUBSCRIPTION, SOURCE_TOPIC,
    };
    let mut attributes = message.attributes;
    attributes.insert(SOURCE_TOPIC.into(), sub.topic.name().to_owned());
    attributes.insert(SOURCE_SUBSCRIPTION.into(), sub.name().to_owned());
    attributes.insert(ATTEMPTS.into(), attempts.to_string());
    attributes.insert(REASON.into(), "max_deliveries".into());
    attributes.insert(ORIGINAL_ID.into(), message.id.to_string());
    opal_core::NewMessage {
        key: message.key,
        attributes,
        data: message.data,
        encoding: message.encoding,
        dedup_id: None,
        deliver_at: None,
        callback: None,
    }
}
