//! `/v1/topics/{topic}`: create (idempotent PUT) and read topics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json as JsonResponse, Router};
use jiff::Timestamp;
use opal_core::{Created, Topic, TopicConfig};
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
}

#[derive(Debug, Serialize)]
struct TopicView {
    name: String,
    partitions: u32,
    created_at: Timestamp,
}

impl From<Topic> for TopicView {
    fn from(topic: Topic) -> Self {
        TopicView {
            name: topic.name.to_string(),
            partitions: topic.config.partitions,
            created_at: topic.created_at,
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
    let config = TopicConfig {
        partitions: body.partitions.unwrap_or(TopicConfig::default().partitions),
    };
    config.validate(&state.limits)?;
    let (topic, created) = state.broker.create_topic(&name, config).await?;
    let status = match created {
        Created::New => StatusCode::CREATED,
        Created::Existing => StatusCode::OK,
    };
    Ok((status, JsonResponse(topic.into())))
}

async fn get_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<JsonResponse<TopicView>, Problem> {
    let name = topic_param(topic)?;
    let topic = state.broker.get_topic(&name).await?;
    Ok(JsonResponse(topic.into()))
}
