//! `GET /v1/topics/{topic}/messages`: read a partition's messages without touching any
//! subscription's state.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use jiff::Timestamp;
use opal_core::StartPosition;
use serde::{Deserialize, Serialize};

use super::messages::MessageView;
use super::{AppState, Caller};
use crate::path::Path;
use crate::problem::{FieldError, Problem};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/topics/{topic}/messages", get(browse))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct BrowseQuery {
    /// The partition to read (default 0).
    #[param(minimum = 0, maximum = 255)]
    partition: Option<u32>,
    /// The first offset to return (not with `from_time`).
    #[param(minimum = 0, maximum = 18_446_744_073_709_551_615_u64)]
    from_offset: Option<u64>,
    /// Start at the first message published at or after this time (not with `from_offset`).
    #[param(format = DateTime)]
    from_time: Option<String>,
    /// Most messages to return (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct BrowseView {
    messages: Vec<MessageView>,
    /// Where the next read of this partition continues (`from_offset`).
    next_offset: Option<u64>,
}

fn parameter(name: &str, detail: impl Into<String>) -> Problem {
    Problem::invalid(vec![FieldError::parameter(name, detail)])
}

/// Messages of one partition from `from_offset` or `from_time` (default: the oldest retained).
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/messages",
    operation_id = "browseMessages",
    tag = "messages",
    summary = "Read a partition's messages without consuming them",
    params(crate::openapi::TopicPath, BrowseQuery),
    responses(
        (status = 200, description = "Messages in offset order (possibly none).", body = BrowseView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn browse(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    query: Result<Query<BrowseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<JsonResponse<BrowseView>, Problem> {
    let name = caller.topic(&topic)?;
    let Query(query) = query.map_err(|e| parameter("query", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(parameter(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let from = match (query.from_offset, query.from_time) {
        (Some(_), Some(_)) => {
            return Err(parameter(
                "from_time",
                "give `from_offset` or `from_time`, not both",
            ));
        }
        (Some(offset), None) => StartPosition::Offset(offset),
        (None, Some(time)) => StartPosition::Time(
            time.parse::<Timestamp>()
                .map_err(|e| parameter("from_time", format!("is not an RFC 3339 time: {e}")))?,
        ),
        (None, None) => StartPosition::Earliest,
    };
    let partition = query.partition.unwrap_or(0);
    let messages = state
        .broker
        .read_messages(&name, partition, from, limit)
        .await
        .map_err(|e| match e {
            opal_core::BrokerError::Invalid { field, reason } if field == "partition" => {
                parameter("partition", reason)
            }
            other => other.into(),
        })?;
    // On an empty page, the partition's end: where the next message will be.
    let next_offset = match messages.last() {
        Some(m) => Some(m.offset + 1),
        None => {
            let (_, stats) = state.broker.get_topic(&name).await?;
            stats
                .partitions
                .get(partition as usize)
                .map(|p| p.end_offset)
        }
    };
    Ok(JsonResponse(BrowseView {
        messages: messages
            .into_iter()
            .map(|mut m| {
                super::subscriptions::local_message(&caller, &mut m);
                m.into()
            })
            .collect(),
        next_offset,
    }))
}
