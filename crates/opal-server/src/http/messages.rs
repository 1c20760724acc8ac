//! `/v1/topics/{topic}/messages`: publish a batch; also how a stored message looks in JSON.

use std::collections::BTreeMap;

use axum::Router;
use axum::http::{HeaderMap, HeaderName};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use jiff::Timestamp;
use opal_core::{BrokerError, Callback, DataEncoding, Limits, Message, NewMessage};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::published::{PublishResponse, Published};
use super::trace_context::TraceHeaders;
use super::{AppState, Caller};
use crate::json::read_body;
use crate::problem::{FieldError, Problem};

pub(super) fn router() -> Router<AppState> {
    // The route picks the form by `Content-Type`; the JSON batch is `publish` below.
    Router::new().route(
        "/v1/topics/{topic}/messages",
        post(super::publish_formats::publish),
    )
}

/// `application/json` publish body: a batch of messages, stored all or none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishRequest {
    #[schema(min_items = 1, max_items = 1000)]
    messages: Vec<PublishMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishMessage {
    /// Kept as the exact JSON text the client sent: it is stored and delivered byte for byte.
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, String>>,
    /// A repeat inside the topic's dedup window stores nothing and answers the first result.
    #[serde(default)]
    dedup_id: Option<String>,
    /// Invisible to subscriptions for this long (exclusive with `deliver_at`).
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    delay_ms: Option<u64>,
    /// Invisible to subscriptions until then (exclusive with `delay_ms`).
    #[serde(default)]
    deliver_at: Option<Timestamp>,
    /// Makes the message a task: where its result goes.
    #[serde(default)]
    callback: Option<CallbackBody>,
}

/// `callback`: exactly one of `url` and `topic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallbackBody {
    url: Option<String>,
    topic: Option<String>,
}

/// Written as JSON Schema: the members exclude each other in pairs, which derives cannot say.
impl utoipa::PartialSchema for PublishMessage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::json_schema(serde_json::json!({
            "type": "object",
            "description": "One message: exactly one of `data` and `data_base64`, at most one of \
                            `delay_ms` and `deliver_at`. `null` members count as left out \
                            (except `data`, where `null` is the payload).",
            "additionalProperties": false,
            "properties": {
                "data": {
                    "description": "The payload as any JSON value, stored and delivered byte for byte."
                },
                "data_base64": {
                    "type": ["string", "null"],
                    "contentEncoding": "base64",
                    "pattern": crate::openapi::BASE64_PATTERN,
                    "description": "The payload as bytes, in standard base64 with padding."
                },
                "key": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": 1024,
                    "description": "Ordering key (1 to 1024 bytes of UTF-8): messages with one key \
                                    keep their order on one partition."
                },
                "attributes": crate::openapi::attributes_schema(),
                "dedup_id": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": 256,
                    "description": "A repeat inside the topic's dedup window stores nothing and \
                                    answers the first result."
                },
                "delay_ms": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "maximum": 2_592_000_000_u64,
                    "description": "Invisible to subscriptions for this long."
                },
                "deliver_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "Invisible to subscriptions until then (at most 30 days ahead; \
                                    a past time means now)."
                },
                "callback": {
                    "description": "Makes the message a task: a consumer acks it with a result, \
                                    which goes to this URL (a signed POST) or topic (a message \
                                    with the task's id as `correlation_id`).",
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["url"],
                            "properties": {"url": {"type": "string", "maxLength": 2048, "pattern": crate::openapi::CALLBACK_URL_PATTERN}}
                        },
                        {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["topic"],
                            "properties": {"topic": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$"}}
                        }
                    ]
                }
            },
            "oneOf": [
                {"required": ["data"]},
                {"required": ["data_base64"], "properties": {"data_base64": {"type": "string"}}}
            ],
            "not": {
                "required": ["delay_ms", "deliver_at"],
                "properties": {"delay_ms": {"type": "integer"}, "deliver_at": {"type": "string"}}
            }
        }))
    }
}

impl utoipa::ToSchema for PublishMessage {}

/// `"data": null` is a JSON payload like any other, so a present member is always `Some`
/// (plain `Option` would read `null` as absent).
fn present<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(de).map(Some)
}

/// The JSON batch form of `POST /v1/topics/{topic}/messages`, called by
/// `publish_formats::publish` with what it extracted already (so that nothing is extracted
/// twice on the busiest route). Answers only once the broker has made every message of the batch
/// durable.
pub(super) async fn publish(
    state: AppState,
    caller: Caller,
    topic: String,
    request: axum::extract::Request,
) -> Result<PublishResponse, Problem> {
    // Read from the headers before the body takes the request, reported after the body's
    // errors (the order of checks a client sees stays: body, topic, headers).
    let idempotency_key = idempotency_key(request.headers());
    let trace = TraceHeaders::from_headers(request.headers(), &state.limits);
    // `publish_formats` chose this form by its JSON `Content-Type`: no second check of it.
    let request: PublishRequest = crate::json::parse(&read_body(request, &state).await?)?;
    let topic = caller.topic(&topic)?;
    let idempotency_key = idempotency_key?;
    let trace = trace?;
    // The broker keeps its own clock for when messages become visible; a delay only needs a
    // starting point, and the wall clock is as good as any.
    let now = Timestamp::now();
    let mut messages = to_new_messages(request, idempotency_key.as_deref(), now, &state, &caller)?;
    check_reply_topics(&state, &messages).await?;
    trace.apply_to_batch(&mut messages, &state.limits, |i| {
        format!("/messages/{i}/attributes")
    })?;
    let deliver_at: Vec<Option<Timestamp>> = messages.iter().map(|m| m.deliver_at).collect();
    admit(&state, &caller, &messages).await?;
    if messages
        .iter()
        .any(|m| matches!(m.callback, Some(Callback::Url(_))))
    {
        let app = topic
            .app()
            .and_then(|a| opal_core::AppName::new(a).ok())
            .unwrap_or_else(opal_core::AppName::default_app);
        opal_core::task::ensure_callback_route(state.broker.as_ref(), &app).await?;
    }
    let results = state.broker.publish(&topic, messages).await?;
    Ok(PublishResponse {
        results: results
            .into_iter()
            .zip(deliver_at)
            .map(|(result, at)| Published::new(result, at))
            .collect(),
    })
}

/// Checks a publish against the caller's app's rates and storage quota.
pub(super) async fn admit(
    state: &AppState,
    caller: &Caller,
    messages: &[NewMessage],
) -> Result<(), Problem> {
    let quotas = state.tenancy.app_quotas(caller.app());
    if quotas.publish_messages_per_s.is_none()
        && quotas.publish_bytes_per_s.is_none()
        && quotas.stored_bytes.is_none()
    {
        return Ok(());
    }
    let bytes = messages.iter().map(|m| m.data.len() as u64).sum();
    state
        .tenancy
        .quotas
        .check_publish(
            state.broker.as_ref(),
            caller.app(),
            &quotas,
            messages.len() as u64,
            bytes,
        )
        .await
}

/// The request header that names a one-message publish, as in the IETF draft
/// "The Idempotency-Key HTTP Header Field".
pub(super) const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// [`IDEMPOTENCY_KEY`] to look up: a constant name is not parsed again on every request.
const IDEMPOTENCY_KEY_NAME: HeaderName = HeaderName::from_static("idempotency-key");

/// The `Idempotency-Key` header, if given: a structured-field string (`"abc"`) or, leniently, a
/// bare token (`abc`).
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_NAME).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |detail: &str| Problem::invalid(vec![FieldError::header(IDEMPOTENCY_KEY, detail)]);
    if values.next().is_some() {
        return Err(bad("must be given at most once"));
    }
    let text = value
        .to_str()
        .map_err(|_| bad("must be printable ASCII"))?
        .trim();
    parse_idempotency_key(text)
        .map(Some)
        .ok_or_else(|| bad(r#"must be a non-empty quoted string ("abc") or a bare token (abc)"#))
}

/// An RFC 8941 string (`"a\"b"` is `a"b`), or a bare run of visible ASCII without `"`, `\`, `,`
/// and `;` (which would make it a list or carry parameters).
fn parse_idempotency_key(text: &str) -> Option<String> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = quoted.chars();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    c @ ('"' | '\\') => key.push(c),
                    _ => return None,
                },
                c if (' '..='~').contains(&c) => key.push(c),
                _ => return None,
            }
        }
        (chars.as_str().is_empty() && !key.is_empty()).then_some(key)
    } else {
        let ok = |c: char| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ',' | ';');
        (!text.is_empty() && text.chars().all(ok)).then(|| text.to_owned())
    }
}

/// Converts and validates the whole batch, collecting one error per bad message, so that a client
/// fixes everything in one round trip. Nothing reaches the broker unless all are valid.
fn to_new_messages(
    request: PublishRequest,
    idempotency_key: Option<&str>,
    now: Timestamp,
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<NewMessage>, Problem> {
    let resolve = |index: usize, body: CallbackBody| callback(index, body, state, caller);
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
    if idempotency_key.is_some() && count > 1 {
        return Err(Problem::invalid(vec![FieldError::header(
            IDEMPOTENCY_KEY,
            format!(
                "applies to a one-message batch only, this one has {count}; \
                 give each message its own `dedup_id` instead"
            ),
        )]));
    }
    let mut errors = Vec::new();
    let mut messages = Vec::with_capacity(count);
    for (index, message) in request.messages.into_iter().enumerate() {
        match to_new_message(index, message, idempotency_key, now, limits, &resolve)
            .and_then(|(m, origin)| validate(index, m, origin, now, limits))
        {
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

/// A task's callback as stored: a URL the SSRF guard does not refuse outright, or one of the
/// caller's topics (checked to exist by [`check_reply_topics`]).
fn callback(
    index: usize,
    body: CallbackBody,
    state: &AppState,
    caller: &Caller,
) -> Result<Callback, FieldError> {
    let at = |member: &str| format!("/messages/{index}/callback{member}");
    match (body.url, body.topic) {
        (Some(url), None) => {
            opal_dispatch::check_callback_url(&state.push_policy, &url)
                .map_err(|e| FieldError::at(at("/url"), e.to_string()))?;
            Ok(Callback::Url(url))
        }
        (None, Some(topic)) => caller
            .topic(&topic)
            .map(Callback::Topic)
            .map_err(|_| FieldError::at(at("/topic"), "is not a topic name of yours")),
        _ => Err(FieldError::at(
            at(""),
            "give exactly one of `url` and `topic`",
        )),
    }
}

/// Reply topics must exist when the task is published, not only when its result comes.
async fn check_reply_topics(state: &AppState, messages: &[NewMessage]) -> Result<(), Problem> {
    let mut errors = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if let Some(Callback::Topic(topic)) = &message.callback
            && state.broker.get_topic(topic).await.is_err()
        {
            errors.push(FieldError::at(
                format!("/messages/{index}/callback/topic"),
                "no such topic",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Problem::invalid(errors))
    }
}

/// Which request members the dedup id and the delivery time came from, so that an error points
/// at what the client actually sent.
#[derive(Debug, Clone, Copy, Default)]
struct Origin {
    dedup_id_from_header: bool,
    deliver_at_from_delay: bool,
}

fn to_new_message(
    index: usize,
    message: PublishMessage,
    idempotency_key: Option<&str>,
    now: Timestamp,
    limits: &Limits,
    resolve_callback: &dyn Fn(usize, CallbackBody) -> Result<Callback, FieldError>,
) -> Result<(NewMessage, Origin), FieldError> {
    let mut origin = Origin::default();
    let callback = message
        .callback
        .map(|body| resolve_callback(index, body))
        .transpose()?;
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
    let dedup_id = match (message.dedup_id, idempotency_key) {
        (Some(own), Some(key)) if own != key => {
            return Err(FieldError::at(
                format!("/messages/{index}/dedup_id"),
                format!(
                    "differs from the `{IDEMPOTENCY_KEY}` header; give one of them, or the same value in both"
                ),
            ));
        }
        (Some(own), _) => Some(own),
        (None, Some(key)) => {
            origin.dedup_id_from_header = true;
            Some(key.to_owned())
        }
        (None, None) => None,
    };
    let deliver_at = match (message.delay_ms, message.deliver_at) {
        (Some(_), Some(_)) => {
            return Err(FieldError::at(
                format!("/messages/{index}"),
                "give at most one of `delay_ms` and `deliver_at`, not both",
            ));
        }
        (Some(delay_ms), None) => {
            origin.deliver_at_from_delay = true;
            let too_long = || {
                FieldError::at(
                    format!("/messages/{index}/delay_ms"),
                    format!("must be at most {}", limits.max_delay_ms),
                )
            };
            if delay_ms > limits.max_delay_ms {
                return Err(too_long());
            }
            let at = i64::try_from(delay_ms)
                .ok()
                .and_then(|ms| now.as_millisecond().checked_add(ms))
                .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                .ok_or_else(too_long)?;
            Some(at)
        }
        (None, at) => at,
    };
    // A time that is not in the future means "now": the message is stored as an ordinary one.
    let deliver_at = deliver_at.filter(|at| *at > now);
    let message = NewMessage {
        key: message.key,
        attributes: message.attributes.unwrap_or_default(),
        data,
        encoding,
        dedup_id,
        deliver_at,
        callback,
    };
    Ok((message, origin))
}

fn validate(
    index: usize,
    message: NewMessage,
    origin: Origin,
    now: Timestamp,
    limits: &Limits,
) -> Result<NewMessage, FieldError> {
    match message.validate(index, limits, now) {
        Ok(()) => Ok(message),
        Err(BrokerError::Invalid { field, reason }) => {
            // The core names the members of `NewMessage`; point at the member the client sent.
            let member = |name: &str| format!("messages[{index}].{name}");
            if field == member("dedup_id") && origin.dedup_id_from_header {
                return Err(FieldError::header(IDEMPOTENCY_KEY, reason));
            }
            let field = if field == member("data") && message.encoding == DataEncoding::Binary {
                member("data_base64")
            } else if field == member("deliver_at") && origin.deliver_at_from_delay {
                member("delay_ms")
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MessageView {
    id: Uuid,
    topic: String,
    partition: u32,
    offset: u64,
    key: Option<String>,
    attributes: BTreeMap<String, String>,
    /// A JSON payload, as published.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = serde_json::Value)]
    data: Option<Box<RawValue>>,
    /// A bytes payload, in standard base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, content_encoding = "base64")]
    data_base64: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    publish_time: Timestamp,
    /// Only for a message published with a delay: when it became visible.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime)]
    deliver_at: Option<Timestamp>,
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
            deliver_at: m.deliver_at,
        }
    }
}

/// The payload as raw JSON, checked so that a bad store can never make the response invalid JSON.
fn json_payload(data: &Bytes) -> Option<Box<RawValue>> {
    let text = String::from_utf8(data.to_vec()).ok()?;
    RawValue::from_string(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_sf_strings_or_bare_tokens() {
        let cases = [
            (r#""abc""#, Some("abc")),
            (r#""a b \"c\" \\ d""#, Some(r#"a b "c" \ d"#)),
            ("abc-1:2/3", Some("abc-1:2/3")),
            ("01J9Z", Some("01J9Z")),
            (r#""""#, None),
            ("", None),
            (r#""open"#, None),
            (r#""a"b""#, None),
            (r#""a\nb""#, None),
            (r#""abc";p=1"#, None),
            ("a,b", None),
            ("a;p=1", None),
            ("a b", None),
            (r#"a"b"#, None),
            ("\"caf\u{e9}\"", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_idempotency_key(text).as_deref(),
                expected,
                "for {text:?}"
            );
        }
    }
}
