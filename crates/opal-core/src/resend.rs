//! Resend and recover for push subscriptions: which messages the attempt log says to push
//! again. The log is how a message's partition and offset are found, so both reach back as far
//! as it keeps attempts (a week).

use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::{AttemptQuery, AttemptStatus, Broker, BrokerError, ResendTarget, SubscriptionName};

/// Most attempts one recover reads: bounds the time and memory of one request.
pub const MAX_RECOVER_ATTEMPTS: usize = 100_000;
/// Attempts read per page.
const PAGE: usize = 1_000;
/// A message's first attempt is looked for this soon after its id's time first, so that a
/// message of days ago is found without reading every newer attempt.
const FIRST_LOOK: SignedDuration = SignedDuration::from_hours(1);

/// Where the attempt log saw `message_id`, the target of a resend of it; `None` when no attempt
/// of it is logged.
pub async fn logged_target(
    broker: &dyn Broker,
    subscription: &SubscriptionName,
    message_id: Uuid,
) -> Result<Option<ResendTarget>, BrokerError> {
    let of_message = AttemptQuery {
        message_id: Some(message_id),
        limit: 1,
        ..AttemptQuery::default()
    };
    // Message ids are UUIDv7: their time is the publish time, before any attempt.
    let published = message_id
        .get_timestamp()
        .map(|t| t.to_unix())
        .and_then(|(s, ns)| Timestamp::new(s as i64, ns as i32).ok());
    if let Some(published) = published {
        let window = AttemptQuery {
            since: published.checked_sub(SignedDuration::from_mins(1)).ok(),
            until: published.checked_add(FIRST_LOOK).ok(),
            ..of_message.clone()
        };
        if let Some(a) = broker
            .list_push_attempts(subscription, window)
            .await?
            .first()
        {
            return Ok(Some(target_of(a.partition, a.offset)));
        }
    }
    let found = broker.list_push_attempts(subscription, of_message).await?;
    Ok(found.first().map(|a| target_of(a.partition, a.offset)))
}

/// The messages to recover: each with a failed attempt at or after `since` (and before `until`)
/// and no succeeded attempt after it, once. `Invalid` when more than
/// [`MAX_RECOVER_ATTEMPTS`] attempts were made since then.
pub async fn failed_since(
    broker: &dyn Broker,
    subscription: &SubscriptionName,
    since: Timestamp,
    until: Option<Timestamp>,
) -> Result<Vec<ResendTarget>, BrokerError> {
    // Newest first, so a success is seen before the failures it came after. Attempts after
    // `until` are read too: a later success still means the message arrived.
    let mut succeeded = HashSet::new();
    let mut chosen = HashSet::new();
    let mut targets = Vec::new();
    let mut before_id = None;
    let mut read = 0;
    loop {
        let page = broker
            .list_push_attempts(
                subscription,
                AttemptQuery {
                    since: Some(since),
                    before_id,
                    limit: PAGE,
                    ..AttemptQuery::default()
                },
            )
            .await?;
        read += page.len();
        if read > MAX_RECOVER_ATTEMPTS {
            return Err(BrokerError::invalid(
                "since",
                format!(
                    "more than {MAX_RECOVER_ATTEMPTS} attempts were made since then; recover \
                     from a later time"
                ),
            ));
        }
        for a in &page {
            match a.status {
                AttemptStatus::Succeeded => {
                    succeeded.insert(a.message_id);
                }
                AttemptStatus::Failed => {
                    let in_window = until.is_none_or(|u| a.at < u);
                    if in_window
                        && !succeeded.contains(&a.message_id)
                        && chosen.insert(a.message_id)
                    {
                        targets.push(target_of(a.partition, a.offset));
                    }
                }
            }
        }
        if page.len() < PAGE {
            return Ok(targets);
        }
        before_id = page.last().map(|a| a.id);
    }
}

fn target_of(partition: u32, offset: u64) -> ResendTarget {
    ResendTarget { partition, offset }
}
