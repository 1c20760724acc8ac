//! `GET /v1/topics/{topic}/messages`: read a partition's messages without touching any
//! subscription's state.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use jiff::Timestamp;
use opal_core::StartPosition;
use serde::{Deserialize, Serialize};

use super::messages::MessageView;
use super::{AppState, topic_param};
use crate::path::Path;
use crate::problem::{FieldError, Problem};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/topics/{topic}/messages", get(browse))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BrowseQuery {
    partition: Option<u32>,
    from_offset: Option<u64>,
    from_time: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct BrowseView {
    messages: Vec<MessageView>,
    /// Where the next read of this partition continues (`from_offset`).
    next_offset: Option<u64>,
}

fn parameter(name: &str, detail: impl Into<String>) -> Problem {
    Problem::invalid(vec![FieldError::parameter(name, detail)])
}

/// Messages of one partition from `from_offset` or `from_time` (default: the oldest retained).
async fn browse(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    query: Result<Query<BrowseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<JsonResponse<BrowseView>, Problem> {
    let name = topic_param(topic)?;
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
    let next_offset = messages.last().map(|m| m.offset + 1);
    Ok(JsonResponse(BrowseView {
        messages: messages.into_iter().map(Into::into).collect(),
        next_offset,
    }))
}
