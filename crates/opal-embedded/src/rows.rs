//! Conversions between domain settings and their stored rows.

use jiff::Timestamp;
use opal_core::{
    Backoff, EndpointState, Filter, PushConfig, PushFormat, PushSecret, Retention, RetentionPolicy,
    Subscription, SubscriptionConfig, SubscriptionName, Topic, TopicConfig, TopicName,
};

use crate::EmbeddedError;
use crate::meta::{PushRow, SubscriptionRow, TopicRow};

fn corrupt(e: impl std::fmt::Display) -> EmbeddedError {
    EmbeddedError::CorruptMeta(e.to_string())
}

fn timestamp(ms: i64) -> Result<Timestamp, EmbeddedError> {
    Timestamp::from_millisecond(ms).map_err(corrupt)
}

pub(crate) fn topic_row(topic: &Topic) -> TopicRow {
    let retention = &topic.config.retention;
    TopicRow {
        partitions: topic.config.partitions,
        created_at_ms: topic.created_at.as_millisecond(),
        retention_max_age_ms: retention.max_age_ms,
        retention_max_bytes: retention.max_bytes,
        retention_policy: match retention.policy {
            RetentionPolicy::Limits => "limits",
            RetentionPolicy::Acked => "acked",
        }
        .to_owned(),
        dedup_window_ms: Some(topic.config.dedup_window_ms),
        revision: topic.revision,
    }
}

pub(crate) fn topic_from_row(name: &str, row: TopicRow) -> Result<Topic, EmbeddedError> {
    let policy = match row.retention_policy.as_str() {
        "" | "limits" => RetentionPolicy::Limits,
        "acked" => RetentionPolicy::Acked,
        other => return Err(corrupt(format!("unknown retention policy {other}"))),
    };
    Ok(Topic {
        name: TopicName::new(name).map_err(corrupt)?,
        config: TopicConfig {
            partitions: row.partitions,
            retention: Retention {
                max_age_ms: row.retention_max_age_ms,
                max_bytes: row.retention_max_bytes,
                policy,
            },
            dedup_window_ms: row
                .dedup_window_ms
                .unwrap_or(TopicConfig::DEFAULT_DEDUP_WINDOW_MS),
        },
        created_at: timestamp(row.created_at_ms)?,
        revision: row.revision.max(1),
    })
}

pub(crate) fn subscription_row(s: &Subscription) -> SubscriptionRow {
    let c = &s.config;
    SubscriptionRow {
        topic: c.topic.to_string(),
        ack_deadline_ms: c.ack_deadline_ms,
        created_at_ms: s.created_at.as_millisecond(),
        backoff: Some((c.backoff.initial_ms, c.backoff.max_ms, c.backoff.multiplier)),
        max_deliveries: c.max_deliveries,
        dead_letter_topic: c.dead_letter_topic.as_ref().map(ToString::to_string),
        ordered: c.ordered,
        filter: c.filter.as_ref().map(Filter::to_json),
        revision: s.revision,
        push: c.push.as_ref().map(push_row),
    }
}

fn push_row(p: &PushConfig) -> PushRow {
    PushRow {
        url: p.url.clone(),
        secrets: p
            .secrets
            .iter()
            .map(|s| (s.secret.clone(), s.expires_at.map(|t| t.as_millisecond())))
            .collect(),
        timeout_ms: p.timeout_ms,
        max_in_flight: p.max_in_flight,
        rate_limit_per_s: p.rate_limit_per_s,
        format: p.format.as_str().to_owned(),
        headers: p.headers.clone(),
        retry_schedule_ms: p.retry_schedule_ms.clone(),
        validate: p.validate,
        disabled: match &p.state {
            EndpointState::Enabled => None,
            EndpointState::Disabled { at, reason } => Some((at.as_millisecond(), reason.clone())),
        },
        url_attribute: p.url_attribute.clone(),
    }
}

fn push_from_row(row: PushRow) -> Result<PushConfig, EmbeddedError> {
    let secrets = row
        .secrets
        .into_iter()
        .map(|(secret, expires)| {
            Ok(PushSecret {
                secret,
                expires_at: expires.map(timestamp).transpose()?,
            })
        })
        .collect::<Result<_, EmbeddedError>>()?;
    Ok(PushConfig {
        url: row.url,
        secrets,
        timeout_ms: row.timeout_ms,
        max_in_flight: row.max_in_flight,
        rate_limit_per_s: row.rate_limit_per_s,
        format: PushFormat::parse(&row.format)
            .ok_or_else(|| corrupt(format!("unknown push format {}", row.format)))?,
        headers: row.headers,
        retry_schedule_ms: row.retry_schedule_ms,
        validate: row.validate,
        state: match row.disabled {
            None => EndpointState::Enabled,
            Some((at, reason)) => EndpointState::Disabled {
                at: timestamp(at)?,
                reason,
            },
        },
        url_attribute: row.url_attribute,
    })
}

pub(crate) fn subscription_from_row(
    name: &str,
    row: SubscriptionRow,
) -> Result<Subscription, EmbeddedError> {
    let backoff = row
        .backoff
        .map(|(initial_ms, max_ms, multiplier)| Backoff {
            initial_ms,
            max_ms,
            multiplier,
        })
        .unwrap_or_default();
    Ok(Subscription {
        name: SubscriptionName::new(name).map_err(corrupt)?,
        config: SubscriptionConfig {
            topic: TopicName::new(row.topic).map_err(corrupt)?,
            ack_deadline_ms: row.ack_deadline_ms,
            backoff,
            max_deliveries: row.max_deliveries,
            dead_letter_topic: row
                .dead_letter_topic
                .map(TopicName::new)
                .transpose()
                .map_err(corrupt)?,
            ordered: row.ordered,
            filter: row
                .filter
                .as_ref()
                .map(Filter::parse)
                .transpose()
                .map_err(corrupt)?,
            push: row.push.map(push_from_row).transpose()?,
        },
        created_at: timestamp(row.created_at_ms)?,
        revision: row.revision.max(1),
    })
}
