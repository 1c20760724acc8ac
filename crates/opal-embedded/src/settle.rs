//! Ack, nack and extend: checked against the live lease, made durable before the answer.

use std::collections::{BTreeMap, BTreeSet};

use opal_core::{AckId, AckOutcome, AckRejection, BrokerError, Settle, SubscriptionName};

use crate::EmbeddedBroker;
use crate::ack_id::Receipt;
use crate::cursor::{AckPlan, LeaseCheck, Retry};
use crate::subscription::Counters;

impl EmbeddedBroker {
    /// The messages behind live leases, for acks that carry results.
    pub(crate) async fn messages_of_leases(
        &self,
        name: &SubscriptionName,
        ack_ids: &[AckId],
    ) -> Result<Vec<Option<opal_core::Message>>, BrokerError> {
        self.check_open()?;
        let sub = self.subscription(name)?;
        let partitions = sub.topic.partitions();
        let state = sub.state.lock().await;
        let now = self.inner.clock.now_ms();
        let mut out = Vec::with_capacity(ack_ids.len());
        for id in ack_ids {
            let live = Receipt::decode(id)
                .filter(|r| r.partition < partitions && state.is_current(r.token))
                .filter(|r| {
                    matches!(
                        state.cursors[r.partition as usize].check_lease(r.offset, r.token, now),
                        LeaseCheck::Live
                    )
                });
            out.push(match live {
                Some(r) => sub.topic.read_one(r.partition, r.offset)?,
                None => None,
            });
        }
        Ok(out)
    }

    pub(crate) async fn settle_deliveries(
        &self,
        name: &SubscriptionName,
        ack_ids: &[AckId],
        action: Settle,
    ) -> Result<AckOutcome, BrokerError> {
        self.check_open()?;
        let limits = &self.inner.config.limits;
        if ack_ids.is_empty() || ack_ids.len() > limits.max_ack_ids {
            return Err(BrokerError::invalid(
                "ack_ids",
                format!("must hold 1 to {} ack ids", limits.max_ack_ids),
            ));
        }
        match action {
            Settle::Nack { delay: Some(d) } if d.as_millis() > u128::from(limits.max_delay_ms) => {
                return Err(BrokerError::invalid(
                    "delay_ms",
                    format!("must be at most {}", limits.max_delay_ms),
                ));
            }
            Settle::Extend { deadline }
                if deadline.as_millis() > u128::from(limits.max_ack_deadline_ms) =>
            {
                return Err(BrokerError::invalid(
                    "ack_deadline_ms",
                    format!("must be at most {}", limits.max_ack_deadline_ms),
                ));
            }
            _ => {}
        }
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

        let subscription = sub.subscription();
        let config = &subscription.config;
        let mut state = sub.state.lock().await;
        if sub.is_deleted() {
            return Err(BrokerError::SubscriptionNotFound(name.to_string()));
        }
        let now = self.inner.clock.now_ms();
        let mut outcome = AckOutcome::default();
        let mut live: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for (receipt, id) in receipts.iter().zip(ack_ids) {
            if !state.is_current(receipt.token) {
                outcome.rejected.push(AckRejection {
                    ack_id: id.clone(),
                    reason: "issued before the subscription was moved or the server restarted"
                        .to_owned(),
                });
                continue;
            }
            let cursor = &state.cursors[receipt.partition as usize];
            match cursor.check_lease(receipt.offset, receipt.token, now) {
                LeaseCheck::Live => {
                    live.entry(receipt.partition)
                        .or_default()
                        .insert(receipt.offset);
                    outcome.applied += 1;
                }
                LeaseCheck::AlreadyAcked if action == Settle::Ack => outcome.applied += 1,
                LeaseCheck::AlreadyAcked => outcome.rejected.push(AckRejection {
                    ack_id: id.clone(),
                    reason: "already acked".to_owned(),
                }),
                LeaseCheck::Reject(reason) => outcome.rejected.push(AckRejection {
                    ack_id: id.clone(),
                    reason: reason.to_owned(),
                }),
            }
        }
        if live.is_empty() {
            return Ok(outcome);
        }

        match action {
            Settle::Ack => {
                let plans: Vec<(u32, AckPlan)> = live
                    .iter()
                    .map(|(&p, offsets)| (p, state.cursors[p as usize].plan_acks(offsets)))
                    .collect();
                self.store_acks(&sub, &plans, true).await?;
                for (partition, plan) in &plans {
                    state.cursors[*partition as usize].apply_acks(plan);
                }
                let count: usize = live.values().map(BTreeSet::len).sum();
                Counters::add(&sub.counters.acked, count);
                if config.ordered {
                    // The key's next message is free now: a consumer waiting in a long-poll
                    // (the push dispatcher always is) should not wait out its timeout.
                    sub.topic.published.notify_waiters();
                }
            }
            Settle::Extend { deadline } => {
                let until = now.saturating_add(deadline.as_millis() as i64);
                for (&p, offsets) in &live {
                    for &offset in offsets {
                        state.cursors[p as usize].extend(offset, until);
                    }
                }
            }
            Settle::Nack { delay } => {
                let mut retries = Vec::new();
                let mut dead = Vec::new();
                for (&p, offsets) in &live {
                    for &offset in offsets {
                        let Some(lease) = state.cursors[p as usize].take_lease(offset) else {
                            continue;
                        };
                        if config
                            .max_deliveries
                            .is_some_and(|max| lease.attempt >= max)
                        {
                            dead.push((p, offset, lease));
                            continue;
                        }
                        let wait = match delay {
                            Some(d) => d.as_millis() as i64,
                            None => config
                                .backoff
                                .delay_ms(lease.attempt, rand::random::<f64>())
                                as i64,
                        };
                        let retry = Retry {
                            attempt: lease.attempt,
                            not_before_ms: now.saturating_add(wait),
                            key: lease.key,
                        };
                        retries.push((p, offset, retry));
                    }
                }
                let count = retries.len() + dead.len();
                if !retries.is_empty() {
                    // Durable: a nack's delay holds across a restart.
                    self.store_retries(&sub, &retries, true).await?;
                    for (p, offset, retry) in retries {
                        state.cursors[p as usize].schedule_retry(offset, retry);
                    }
                }
                if !dead.is_empty() {
                    self.dead_letter(&sub, &mut state, dead).await?;
                }
                Counters::add(&sub.counters.nacked, count);
                sub.topic.published.notify_waiters();
            }
        }
        Ok(outcome)
    }
}
