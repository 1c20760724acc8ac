//! `/v1/topics/{topic}`: create (idempotent PUT) and read topics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json as JsonResponse, Router};
use jiff::Timestamp;
use opal_core::{
    Created, PartitionStats, Retention, RetentionPolicy, Topic, TopicConfig, TopicStats,
};
use serde::{Deserialize, Serialize};

use super::{AppState, topic_param};
use crate::json::OptionalJson;
use crate::path::Path;
use crate::problem::Problem;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/topics/{topic}", put(create_topic).get(get_topic))
}

/// `PUT` body; every member has a default, so the body itself may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    partitions: Option<u32>,
    retention: Option<RetentionBody>,
    dedup_window_ms: Option<u64>,
}

/// `retention`: each member defaults to "no limit" / `limits`; `null` means the same.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    max_age_ms: Option<u64>,
    max_bytes: Option<u64>,
    policy: Option<PolicyName>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum PolicyName {
    Limits,
    Acked,
}

impl From<PolicyName> for RetentionPolicy {
    fn from(p: PolicyName) -> Self {
        match p {
            PolicyName::Limits => RetentionPolicy::Limits,
            PolicyName::Acked => RetentionPolicy::Acked,
        }
    }
}

impl From<RetentionPolicy> for PolicyName {
    fn from(p: RetentionPolicy) -> Self {
        match p {
            RetentionPolicy::Limits => PolicyName::Limits,
            RetentionPolicy::Acked => PolicyName::Acked,
        }
    }
}

impl From<RetentionBody> for Retention {
    fn from(r: RetentionBody) -> Self {
        Retention {
            max_age_ms: r.max_age_ms,
            max_bytes: r.max_bytes,
            policy: r.policy.map(Into::into).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize)]
struct TopicView {
    name: String,
    partitions: u32,
    retention: RetentionView,
    dedup_window_ms: u64,
    created_at: Timestamp,
    /// Only on `GET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<TopicStatsView>,
}

/// The stored retention, every member present (`null` = no limit).
#[derive(Debug, Serialize)]
struct RetentionView {
    max_age_ms: Option<u64>,
    max_bytes: Option<u64>,
    policy: PolicyName,
}

#[derive(Debug, Serialize)]
struct TopicStatsView {
    partitions: Vec<PartitionStatsView>,
    published_messages: u64,
    published_bytes: u64,
    duplicates: u64,
    scheduled: u64,
}

#[derive(Debug, Serialize)]
struct PartitionStatsView {
    partition: u32,
    start_offset: u64,
    end_offset: u64,
    messages: u64,
    bytes: u64,
}

impl From<Topic> for TopicView {
    fn from(topic: Topic) -> Self {
        let retention = topic.config.retention;
        TopicView {
            name: topic.name.to_string(),
            partitions: topic.config.partitions,
            retention: RetentionView {
                max_age_ms: retention.max_age_ms,
                max_bytes: retention.max_bytes,
                policy: retention.policy.into(),
            },
            dedup_window_ms: topic.config.dedup_window_ms,
            created_at: topic.created_at,
            stats: None,
        }
    }
}

impl From<TopicStats> for TopicStatsView {
    fn from(s: TopicStats) -> Self {
        TopicStatsView {
            partitions: s.partitions.into_iter().map(Into::into).collect(),
            published_messages: s.published_messages,
            published_bytes: s.published_bytes,
            duplicates: s.duplicates,
            scheduled: s.scheduled,
        }
    }
}

impl From<PartitionStats> for PartitionStatsView {
    fn from(p: PartitionStats) -> Self {
        PartitionStatsView {
            partition: p.partition,
            start_offset: p.start_offset,
            end_offset: p.end_offset,
            messages: p.messages,
            bytes: p.bytes,
        }
    }
}

/// 201 when created, 200 when it already exists with the same settings, 409 when they differ.
async fn create_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    OptionalJson(body): OptionalJson<CreateTopic>,
) -> Result<(StatusCode, JsonResponse<TopicView>), Problem> {
    let name = topic_param(topic)?;
    let defaults = TopicConfig::default();
    // Members left out take their defaults, so `{}` and an empty body find the same topic.
    // The broker's field names (`retention.max_age_ms`, ...) double as JSON Pointers.
    let config = TopicConfig {
        partitions: body.partitions.unwrap_or(defaults.partitions),
        retention: body.retention.map(Into::into).unwrap_or_default(),
        dedup_window_ms: body.dedup_window_ms.unwrap_or(defaults.dedup_window_ms),
    };
    config.validate(&state.limits)?;
    let (topic, created) = state.broker.create_topic(&name, config).await?;
    let status = match created {
        Created::New => StatusCode::CREATED,
        Created::Existing => StatusCode::OK,
    };
    Ok((status, JsonResponse(topic.into())))
}

/// The topic's settings plus `stats`: what each partition holds and counters since start.
async fn get_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<JsonResponse<TopicView>, Problem> {
    let name = topic_param(topic)?;
    let (topic, stats) = state.broker.get_topic(&name).await?;
    Ok(JsonResponse(TopicView {
        stats: Some(stats.into()),
        ..topic.into()
    }))
}
