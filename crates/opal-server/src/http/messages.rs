//! `/v1/topics/{topic}/messages`: publish a batch; also how a stored message looks in JSON.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::{Json as JsonResponse, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use jiff::Timestamp;
use opal_core::{BrokerError, DataEncoding, Message, NewMessage, PublishResult};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{AppState, topic_param};
use crate::json::Json;
use crate::path::Path;
use crate::problem::{FieldError, Problem};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/topics/{topic}/messages", post(publish))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    messages: Vec<PublishMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishMessage {
    /// Kept as the exact JSON text the client sent: it is stored and delivered byte for byte.
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, String>>,
}

/// `"data": null` is a JSON payload like any other, so a present member is always `Some`
/// (plain `Option` would read `null` as absent).
fn present<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(de).map(Some)
}

#[derive(Debug, Serialize)]
struct PublishResponse {
    results: Vec<Published>,
}

#[derive(Debug, Serialize)]
struct Published {
    id: Uuid,
    partition: u32,
    offset: u64,
}

impl From<PublishResult> for Published {
    fn from(r: PublishResult) -> Self {
        Published {
            id: r.id,
            partition: r.partition,
            offset: r.offset,
        }
    }
}

/// Answers only once the broker has made every message of the batch durable.
async fn publish(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Json(request): Json<PublishRequest>,
) -> Result<JsonResponse<PublishResponse>, Problem> {
    let topic = topic_param(topic)?;
    let messages = to_new_messages(request, &state)?;
    let results = state.broker.publish(&topic, messages).await?;
    Ok(JsonResponse(PublishResponse {
        results: results.into_iter().map(Into::into).collect(),
    }))
}

/// Converts and validates the whole batch, collecting one error per bad message, so that a client
/// fixes everything in one round trip. Nothing reaches the broker unless all are valid.
fn to_new_messages(request: PublishRequest, state: &AppState) -> Result<Vec<NewMessage>, Problem> {
    let limits = &state.limits;
    let count = request.messages.len();
    if count == 0 || count > limits.max_batch_messages {
        return Err(Problem::invalid(vec![FieldError::at(
            "/messages",
            format!(
                "must hold 1 to {} messages, got {count}",
                limits.max_batch_messages
            ),
        )]));
    }
    let mut errors = Vec::new();
    let mut messages = Vec::with_capacity(count);
    for (index, message) in request.messages.into_iter().enumerate() {
        match to_new_message(index, message).and_then(|m| validate(index, m, state)) {
            Ok(message) => messages.push(message),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(messages)
    } else {
        Err(Problem::invalid(errors))
    }
}

fn to_new_message(index: usize, message: PublishMessage) -> Result<NewMessage, FieldError> {
    let (data, encoding) = match (message.data, message.data_base64) {
        (Some(json), None) => (
            Bytes::from(String::from(Box::<str>::from(json))),
            DataEncoding::Json,
        ),
        (None, Some(text)) => {
            let bytes = BASE64.decode(text.as_bytes()).map_err(|e| {
                FieldError::at(
                    format!("/messages/{index}/data_base64"),
                    format!("is not valid standard base64: {e}"),
                )
            })?;
            (Bytes::from(bytes), DataEncoding::Binary)
        }
        (Some(_), Some(_)) => {
            return Err(FieldError::at(
                format!("/messages/{index}"),
                "give exactly one of `data` and `data_base64`, not both",
            ));
        }
        (None, None) => {
            return Err(FieldError::at(
                format!("/messages/{index}"),
                "needs a payload: `data` (any JSON value) or `data_base64` (bytes in base64)",
            ));
        }
    };
    Ok(NewMessage {
        key: message.key,
        attributes: message.attributes.unwrap_or_default(),
        data,
        encoding,
    })
}

fn validate(index: usize, message: NewMessage, state: &AppState) -> Result<NewMessage, FieldError> {
    match message.validate(index, &state.limits) {
        Ok(()) => Ok(message),
        Err(BrokerError::Invalid { field, reason }) => {
            // The core calls the payload `data`; point at the member the client actually sent.
            let data_field = format!("messages[{index}].data");
            let field = if field == data_field && message.encoding == DataEncoding::Binary {
                format!("{data_field}_base64")
            } else {
                field
            };
            Err(FieldError::from_field(&field, reason))
        }
        Err(other) => Err(FieldError::at(
            format!("/messages/{index}"),
            other.to_string(),
        )),
    }
}

/// A stored message as JSON: the payload comes back the way it was published, as `data` for
/// JSON payloads and as `data_base64` for bytes.
#[derive(Debug, Serialize)]
pub(crate) struct MessageView {
    id: Uuid,
    topic: String,
    partition: u32,
    offset: u64,
    key: Option<String>,
    attributes: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    publish_time: Timestamp,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        let (data, data_base64) = match m.encoding {
            DataEncoding::Json => match json_payload(&m.data) {
                Some(raw) => (Some(raw), None),
                None => {
                    // Only a backend bug or a damaged store gets here; the bytes still go out.
                    tracing::warn!(id = %m.id, "stored JSON payload is not valid JSON; sending it as base64");
                    (None, Some(BASE64.encode(&m.data)))
                }
            },
            DataEncoding::Binary => (None, Some(BASE64.encode(&m.data))),
        };
        MessageView {
            id: m.id,
            topic: m.topic.to_string(),
            partition: m.partition,
            offset: m.offset,
            key: m.key,
            attributes: m.attributes,
            data,
            data_base64,
            publish_time: m.publish_time,
        }
    }
}

/// The payload as raw JSON, checked so that a bad store can never make the response invalid JSON.
fn json_payload(data: &Bytes) -> Option<Box<RawValue>> {
    let text = String::from_utf8(data.to_vec()).ok()?;
    RawValue::from_string(text).ok()
}
