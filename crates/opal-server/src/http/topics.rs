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
use super::revision::{IfMatch, etag, update_at_revision};
use super::{AppState, Caller};
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
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTopic {
    /// Accepted only with the current value: partitions cannot change.
    #[schema(minimum = 1, maximum = 256)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    partitions: Option<u32>,
    retention: Option<RetentionBody>,
    #[schema(minimum = 0, maximum = 604_800_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    dedup_window_ms: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TopicList {
    topics: Vec<TopicView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// `PUT` body; every member has a default, so the body itself may be left out.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    /// Default 1.
    #[schema(minimum = 1, maximum = 256)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    partitions: Option<u32>,
    retention: Option<RetentionBody>,
    /// How long a `dedup_id` is remembered; default 120000.
    #[schema(minimum = 0, maximum = 604_800_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    dedup_window_ms: Option<u64>,
}

/// `retention`: each member defaults to "no limit" / `limits`; `null` means the same.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    /// Messages older than this are dropped; `null`: no age limit.
    #[schema(minimum = 1, maximum = 18_446_744_073_709_551_615_u64)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    max_age_ms: Option<u64>,
    /// Oldest messages are dropped to stay under this size per partition; `null`: no limit.
    #[schema(minimum = 1, maximum = 18_446_744_073_709_551_615_u64)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    max_bytes: Option<u64>,
    policy: Option<PolicyName>,
}

/// `limits`: keep messages until the age or size limit; `acked`: drop them once every
/// subscription has acked them (and at the limits).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TopicView {
    name: String,
    /// Counts up with each update; the `ETag` is this number in quotes.
    revision: u64,
    partitions: u32,
    retention: RetentionView,
    dedup_window_ms: u64,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    /// Only on `GET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    stats: Option<TopicStatsView>,
}

/// The stored retention, every member present (`null` = no limit).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RetentionView {
    max_age_ms: Option<u64>,
    max_bytes: Option<u64>,
    policy: PolicyName,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TopicStatsView {
    partitions: Vec<PartitionStatsView>,
    published_messages: u64,
    published_bytes: u64,
    duplicates: u64,
    scheduled: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[utoipa::path(
    put,
    path = "/v1/topics/{topic}",
    operation_id = "createTopic",
    tag = "topics",
    summary = "Create a topic (idempotent)",
    params(crate::openapi::TopicPath),
    request_body(
        content = Option<CreateTopic>,
        content_type = "application/json",
        description = "Optional: every member has a default, so the body may be left out."
    ),
    responses(
        (status = 201, description = "Created.", body = TopicView, headers(("ETag" = String, description = "The revision as a strong entity tag, e.g. `\"3\"`; send it back in `If-Match`."))),
        (status = 200, description = "It exists already with these settings.", body = TopicView, headers(("ETag" = String, description = "The revision as a strong entity tag, e.g. `\"3\"`; send it back in `If-Match`."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn create_topic(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    OptionalJson(body): OptionalJson<CreateTopic>,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.topic(&topic)?;
    let defaults = TopicConfig::default();
    // Members left out take their defaults, so `{}` and an empty body find the same topic.
    // The broker's field names (`retention.max_age_ms`, ...) double as JSON Pointers.
    let config = TopicConfig {
        partitions: body.partitions.unwrap_or(defaults.partitions),
        retention: body.retention.map(Into::into).unwrap_or_default(),
        dedup_window_ms: body.dedup_window_ms.unwrap_or(defaults.dedup_window_ms),
    };
    config.validate(&state.limits)?;
    check_topic_quota(&state, &name).await?;
    let (topic, created) = state.broker.create_topic(&name, config).await?;
    let status = match created {
        Created::New => {
            caller.audit(&state, "topic.create", &name).await;
            StatusCode::CREATED
        }
        Created::Existing => StatusCode::OK,
    };
    Ok((
        status,
        etag(topic.revision),
        JsonResponse(view(&caller, topic)),
    ))
}

/// Changes `retention` and `dedup_window_ms`. With `If-Match`, only if the topic is still at
/// that revision (412 otherwise).
#[utoipa::path(
    patch,
    path = "/v1/topics/{topic}",
    operation_id = "updateTopic",
    tag = "topics",
    summary = "Change a topic's settings",
    params(crate::openapi::TopicPath, crate::openapi::IfMatchHeader),
    request_body(content = UpdateTopic, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated.", body = TopicView, headers(("ETag" = String, description = "The revision as a strong entity tag, e.g. `\"3\"`; send it back in `If-Match`."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn update_topic(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    IfMatch(expected): IfMatch,
    Json(body): Json<UpdateTopic>,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.topic(&topic)?;
    let topic = update_at_revision(
        "topic",
        name.as_str(),
        expected,
        || {
            let (broker, name) = (state.broker.clone(), name.clone());
            async move {
                let (topic, _) = broker.get_topic(&name).await?;
                Ok((topic.revision, topic.config))
            }
        },
        |mut config| {
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
            Ok(config)
        },
        |config, revision| {
            let (broker, name) = (state.broker.clone(), name.clone());
            async move { broker.update_topic(&name, config, Some(revision)).await }
        },
    )
    .await?;
    caller.audit(&state, "topic.update", &name).await;
    Ok((etag(topic.revision), JsonResponse(view(&caller, topic))))
}

/// 204 when deleted with its messages; 409 while a subscription uses it.
#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}",
    operation_id = "deleteTopic",
    tag = "topics",
    summary = "Delete a topic with its messages",
    params(crate::openapi::TopicPath, crate::openapi::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
    )
)]
async fn delete_topic(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode, Problem> {
    let name = caller.topic(&topic)?;
    state.broker.delete_topic(&name, expected).await?;
    state.tenancy.topic_deleted(&name).await?;
    caller.audit(&state, "topic.delete", &name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Topics in name order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/topics",
    operation_id = "listTopics",
    tag = "topics",
    summary = "List topics",
    params(crate::http::pagination::PageQuery),
    responses(
        (status = 200, description = "One page of topics (without `stats`).", body = TopicList, headers(("Link" = String, description = "`<...>; rel=\"next\"` (RFC 8288) when there is a next page."))),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
async fn list_topics(
    State(state): State<AppState>,
    caller: Caller,
    page: PageRequest,
) -> Result<impl IntoResponse, Problem> {
    let after = page
        .after
        .map(|cursor| topic_param_cursor(&caller, cursor))
        .transpose()?;
    let topics = state
        .broker
        .list_topics(Some(caller.app()), after.as_ref(), page.limit)
        .await?;
    let last = topics
        .last()
        .map(|t| caller.local_topic(&t.name).to_string());
    let next_cursor = next_cursor(topics.len(), page.limit, last.as_deref());
    let link = link_header("/v1/topics", page.limit, next_cursor.as_deref());
    let body = TopicList {
        topics: topics.into_iter().map(|t| view(&caller, t)).collect(),
        next_cursor,
    };
    Ok((AppendHeaders(link), JsonResponse(body)))
}

fn topic_param_cursor(caller: &Caller, after: String) -> Result<opal_core::TopicName, Problem> {
    caller.topic(&after).map_err(|_| {
        Problem::invalid(vec![crate::problem::FieldError::parameter(
            "cursor",
            "is not a cursor returned by this list",
        )])
    })
}

/// The topic's settings plus `stats`: what each partition holds and counters since start.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}",
    operation_id = "getTopic",
    tag = "topics",
    summary = "Read a topic with its stats",
    params(crate::openapi::TopicPath),
    responses(
        (status = 200, description = "The topic, with `stats`.", body = TopicView, headers(("ETag" = String, description = "The revision as a strong entity tag, e.g. `\"3\"`; send it back in `If-Match`."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn get_topic(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.topic(&topic)?;
    let (topic, stats) = state.broker.get_topic(&name).await?;
    let revision = topic.revision;
    Ok((
        etag(revision),
        JsonResponse(TopicView {
            stats: Some(stats.into()),
            ..view(&caller, topic)
        }),
    ))
}

/// A topic as its caller names it.
fn view(caller: &Caller, mut topic: opal_core::Topic) -> TopicView {
    topic.name = caller.local_topic(&topic.name);
    topic.into()
}

/// A new topic must fit the owner's `topics` quota (an existing one is found as before).
async fn check_topic_quota(state: &AppState, name: &opal_core::TopicName) -> Result<(), Problem> {
    let Some(owner) = name.app().and_then(|a| opal_core::AppName::new(a).ok()) else {
        return Ok(());
    };
    let Some(limit) = state.tenancy.app_quotas(&owner).topics else {
        return Ok(());
    };
    if state.broker.get_topic(name).await.is_ok() {
        return Ok(());
    }
    let owned = state
        .broker
        .list_topics(Some(&owner), None, usize::MAX)
        .await?
        .len() as u64;
    if owned >= limit {
        return Err(Problem::new(
            crate::problem::ProblemKind::QuotaExceeded,
            format!("app `{owner}` owns {owned} topics and may own {limit}"),
        ));
    }
    Ok(())
}
