//! `/v1/topics`: create (idempotent PUT), read, update (PATCH with `If-Match`), delete and list
//! topics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::{get, put};
use axum::{Json as JsonResponse, Router};
use jiff::Timestamp;
use opal_core::{
    Created, PartitionStats, Retention, RetentionPolicy, Topic, TopicConfig, TopicStats,
};
use serde::{Deserialize, Serialize};

use super::pagination::{PageRequest, link_header, next_cursor};
use super::revision::{IfMatch, etag};
use super::{AppState, topic_param};
use crate::json::{Json, OptionalJson};
use crate::path::Path;
use crate::problem::Problem;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/topics", get(list_topics)).route(
        "/v1/topics/{topic}",
        put(create_topic)
            .get(get_topic)
            .patch(update_topic)
            .delete(delete_topic),
    )
}

/// `PATCH` body: the members to change; the others keep their values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTopic {
    /// Accepted only with the current value: partitions cannot change.
    partitions: Option<u32>,
    retention: Option<RetentionBody>,
    dedup_window_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct TopicList {
    topics: Vec<TopicView>,
    next_cursor: Option<String>,
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
    /// Counts up with each update; the `ETag` is this number in quotes.
    revision: u64,
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
            revision: topic.revision,
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
) -> Result<impl IntoResponse, Problem> {
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
    Ok((
        status,
        etag(topic.revision),
        JsonResponse(TopicView::from(topic)),
    ))
}

/// Changes `retention` and `dedup_window_ms`. With `If-Match`, only if the topic is still at
/// that revision (412 otherwise).
async fn update_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    IfMatch(expected): IfMatch,
    Json(body): Json<UpdateTopic>,
) -> Result<impl IntoResponse, Problem> {
    let name = topic_param(topic)?;
    // Without If-Match, retry a lost race with another update instead of answering 412.
    for _ in 0..3 {
        let (current, _) = state.broker.get_topic(&name).await?;
        if let Some(revision) = expected
            && revision != current.revision
        {
            return Err(opal_core::BrokerError::RevisionMismatch {
                kind: "topic",
                name: name.to_string(),
                expected: revision,
                current: current.revision,
            }
            .into());
        }
        let mut config = current.config.clone();
        if let Some(partitions) = body.partitions {
            config.partitions = partitions;
        }
        if let Some(retention) = &body.retention {
            config.retention = Retention {
                max_age_ms: retention.max_age_ms,
                max_bytes: retention.max_bytes,
                policy: retention.policy.map(Into::into).unwrap_or_default(),
            };
        }
        if let Some(window) = body.dedup_window_ms {
            config.dedup_window_ms = window;
        }
        config.validate(&state.limits)?;
        match state
            .broker
            .update_topic(&name, config, Some(current.revision))
            .await
        {
            Ok(topic) => return Ok((etag(topic.revision), JsonResponse(TopicView::from(topic)))),
            Err(opal_core::BrokerError::RevisionMismatch { .. }) if expected.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Problem::new(
        crate::problem::ProblemKind::Conflict,
        "the topic kept changing while this update was applied; try again",
    ))
}

/// 204 when deleted with its messages; 409 while a subscription uses it.
async fn delete_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode, Problem> {
    let name = topic_param(topic)?;
    state.broker.delete_topic(&name, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Topics in name order, a page at a time.
async fn list_topics(
    State(state): State<AppState>,
    page: PageRequest,
) -> Result<impl IntoResponse, Problem> {
    let after = page.after.map(topic_param_cursor).transpose()?;
    let topics = state.broker.list_topics(after.as_ref(), page.limit).await?;
    let last = topics.last().map(|t| t.name.to_string());
    let next_cursor = next_cursor(topics.len(), page.limit, last.as_deref());
    let link = link_header("/v1/topics", page.limit, next_cursor.as_deref());
    let body = TopicList {
        topics: topics.into_iter().map(Into::into).collect(),
        next_cursor,
    };
    Ok((AppendHeaders(link), JsonResponse(body)))
}

fn topic_param_cursor(after: String) -> Result<opal_core::TopicName, Problem> {
    opal_core::TopicName::new(after).map_err(|_| {
        Problem::invalid(vec![crate::problem::FieldError::parameter(
            "cursor",
            "is not a cursor returned by this list",
        )])
    })
}

/// The topic's settings plus `stats`: what each partition holds and counters since start.
async fn get_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let name = topic_param(topic)?;
    let (topic, stats) = state.broker.get_topic(&name).await?;
    let revision = topic.revision;
    Ok((
        etag(revision),
        JsonResponse(TopicView {
            stats: Some(stats.into()),
            ..topic.into()
        }),
    ))
}
