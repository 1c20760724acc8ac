//! `POST /v1/topics/{topic}/messages` by `Content-Type`: the JSON batch (`messages.rs`),
//! CloudEvents in structured, batched and binary mode (`cloudevents.rs`), and a raw body as one
//! message, described by `opal-*` headers. Every form answers `{"results": [...]}`, takes the
//! W3C `traceparent`/`tracestate` headers, and stores nothing unless the whole request is valid.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use jiff::Timestamp;
use opal_core::cloudevent::{self, CE_PREFIX, STRUCTURED_MEDIA_TYPE};
use opal_core::{BrokerError, DataEncoding, Limits, NewMessage, TopicName};

use super::cloudevents::{self, BATCH_MEDIA_TYPE};
use super::messages::{self, IDEMPOTENCY_KEY};
use super::published::{PublishResponse, Published};
use super::trace_context::TraceHeaders;
use super::{AppState, Caller};
use crate::json::read_body;
use crate::path::Path;
use crate::problem::{FieldError, Problem, ProblemKind};

/// The header that makes a request a binary-mode CloudEvent (a constant name is not parsed
/// again on every request).
const CE_SPECVERSION: axum::http::HeaderName =
    axum::http::HeaderName::from_static("ce-specversion");
/// The prefix of the headers that describe a raw message.
const OPAL_PREFIX: &str = "opal-";
/// `opal-attr-<name>: <value>`: one attribute of a raw message.
const ATTR_PREFIX: &str = "opal-attr-";
/// The ordering key of a raw message.
const KEY_HEADER: &str = "opal-key";
/// The dedup id of a raw message.
const DEDUP_ID_HEADER: &str = "opal-dedup-id";
/// How long a raw message stays invisible, in milliseconds.
const DELAY_MS_HEADER: &str = "opal-delay-ms";
/// The attribute that keeps a raw message's `Content-Type`.
pub(crate) const CONTENT_TYPE_ATTRIBUTE: &str = "content-type";

/// How a publish request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `application/json` (or another `application/*+json`): `{"messages": [...]}`.
    JsonBatch,
    /// `application/cloudevents+json`: one structured event.
    Structured,
    /// `application/cloudevents-batch+json`: an array of structured events.
    StructuredBatch,
    /// A `ce-specversion` header: attributes in `ce-` headers, the body is the data.
    Binary,
    /// Anything else: the body is the payload.
    Raw,
}

/// The publish route: picks the form from the headers, then reads the body.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/messages",
    operation_id = "publishMessages",
    tag = "messages",
    summary = "Publish messages",
    description = "Stores every message of the request, or none, and answers once they are \
                   durable. The form is chosen by `Content-Type`:\n\n\
                   - `application/json` (or another `application/*+json`): a batch of messages.\n\
                   - `application/cloudevents+json`: one CloudEvent in structured mode.\n\
                   - `application/cloudevents-batch+json`: an array of structured CloudEvents.\n\
                   - a `ce-specversion: 1.0` header with any other media type: one CloudEvent in \
                   binary mode; its attributes are `ce-<name>` headers (percent-encoded), the body \
                   is its data and `Content-Type` its `datacontenttype`.\n\
                   - any other media type (e.g. `application/octet-stream`): the body is one \
                   message's payload, described by `opal-key`, `opal-dedup-id`, `opal-delay-ms` \
                   and `opal-attr-<name>` headers; `Content-Type` is kept as the attribute \
                   `content-type`.\n\n\
                   `ce-` and `opal-` headers belong to one form each and are refused with the \
                   others, so they are described here rather than listed as parameters.",
    params(crate::openapi::TopicPath, crate::openapi::PublishHeaders),
    request_body(
        content(
            (super::messages::PublishRequest = "application/json"),
            (super::cloudevents::StructuredEvent = "application/cloudevents+json"),
            (crate::openapi::StructuredEventBatch = "application/cloudevents-batch+json"),
            (crate::openapi::RawPayload = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 200, description = "One result per message, in request order.", body = super::published::PublishResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
pub(super) async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    request: Request,
) -> Response {
    let form = match form_of(request.headers()) {
        Ok(form) => form,
        Err(problem) => return problem.into_response(),
    };
    if form == Form::JsonBatch {
        return messages::publish(state, caller, topic, request)
            .await
            .into_response();
    }
    publish_other(form, state, caller, topic, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn publish_other(
    form: Form,
    state: AppState,
    caller: Caller,
    topic: String,
    request: Request,
) -> Result<Response, Problem> {
    let topic = caller.topic(&topic)?;
    let headers = request.headers().clone();
    let limits = &state.limits;
    let trace = TraceHeaders::from_headers(&headers, limits)?;
    let idempotency_key = messages::idempotency_key(&headers)?;
    let now = Timestamp::now();
    let messages = match form {
        Form::Structured | Form::StructuredBatch => {
            let body = read_body(request, &state).await?;
            cloudevents::structured_messages(
                &body,
                form == Form::StructuredBatch,
                idempotency_key.as_deref(),
                &trace,
                limits,
                now,
            )?
        }
        Form::Binary => {
            let body = read_body(request, &state).await?;
            check_payload_size(&body, limits)?;
            vec![cloudevents::binary_message(
                &headers,
                body,
                idempotency_key.as_deref(),
                &trace,
                limits,
                now,
            )?]
        }
        Form::Raw => {
            // The headers are checked before the body is read: a bad request costs no upload.
            let (mut message, mut origins) =
                raw_message(&headers, idempotency_key.as_deref(), now, limits)?;
            let body = read_body(request, &state).await?;
            check_payload_size(&body, limits)?;
            message.data = body;
            origins.trace_added = trace.apply(&mut message.attributes);
            vec![validate_raw(message, &origins, limits, now)?]
        }
        Form::JsonBatch => unreachable!("handled by `messages::publish`"),
    };
    store(&state, &caller, &topic, messages).await
}

/// Stores the messages and answers as the JSON batch does.
async fn store(
    state: &AppState,
    caller: &Caller,
    topic: &TopicName,
    messages: Vec<NewMessage>,
) -> Result<Response, Problem> {
    if messages.is_empty() {
        // An empty CloudEvents batch is valid: store nothing, but the topic must exist.
        state.broker.get_topic(topic).await?;
        return Ok(PublishResponse {
            results: Vec::new(),
        }
        .into_response());
    }
    let deliver_at: Vec<Option<Timestamp>> = messages.iter().map(|m| m.deliver_at).collect();
    messages::admit(state, caller, &messages).await?;
    let results = state.broker.publish(topic, messages).await?;
    let results = results
        .into_iter()
        .zip(deliver_at)
        .map(|(result, at)| Published::new(result, at))
        .collect();
    Ok(PublishResponse { results }.into_response())
}

/// Which form a request is in. The CloudEvents media types win over `ce-` headers (which are
/// then refused); a `ce-specversion` header makes any other request a binary-mode event; JSON
/// media types are the JSON batch; anything else is a raw body.
fn form_of(headers: &HeaderMap) -> Result<Form, Problem> {
    let content_type = match headers.get(CONTENT_TYPE).map(|v| v.to_str()) {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => {
            return Err(Problem::invalid(vec![FieldError::header(
                "Content-Type",
                "must be printable ASCII",
            )]));
        }
    };
    let essence = content_type.map(cloudevent::essence);
    // One pass over the header names for both prefixes: this runs for every publish.
    let (mut first_ce_header, mut first_opal_header) = (None, None);
    for name in headers.keys() {
        let text = name.as_str();
        if first_ce_header.is_none() && text.starts_with(CE_PREFIX) {
            first_ce_header = Some(name);
        } else if first_opal_header.is_none() && text.starts_with(OPAL_PREFIX) {
            first_opal_header = Some(name);
        }
    }
    let form = match essence.as_deref() {
        Some(STRUCTURED_MEDIA_TYPE) | Some(BATCH_MEDIA_TYPE) => {
            if let Some(name) = first_ce_header {
                return Err(Problem::invalid(vec![FieldError::header(
                    name.as_str(),
                    "`ce-` headers make a binary-mode event; a structured event \
                     (`application/cloudevents+json`) carries its attributes in the body",
                )]));
            }
            if essence.as_deref() == Some(STRUCTURED_MEDIA_TYPE) {
                Form::Structured
            } else {
                Form::StructuredBatch
            }
        }
        Some(other) if other.starts_with("application/cloudevents") => {
            return Err(Problem::new(
                ProblemKind::UnsupportedMediaType,
                format!(
                    "`{other}` is not supported: CloudEvents are accepted in the JSON event format \
                     only (`{STRUCTURED_MEDIA_TYPE}`, `{BATCH_MEDIA_TYPE}`) or in binary mode \
                     (`ce-` headers)"
                ),
            ));
        }
        _ if first_ce_header.is_some() && headers.contains_key(CE_SPECVERSION) => Form::Binary,
        _ if first_ce_header.is_some() => {
            return Err(Problem::invalid(vec![FieldError::header(
                "ce-specversion",
                "is required: `ce-` headers make a binary-mode CloudEvent, which needs \
                 `ce-specversion: 1.0`",
            )]));
        }
        Some(essence) if crate::json::is_json_essence(essence) => Form::JsonBatch,
        None => {
            return Err(Problem::new(
                ProblemKind::UnsupportedMediaType,
                "a publish needs a `Content-Type`: `application/json` for a batch of messages, \
                 `application/cloudevents+json` or `application/cloudevents-batch+json` for \
                 CloudEvents, or the media type of a raw payload (such as \
                 `application/octet-stream`)",
            ));
        }
        Some(form @ ("application/x-www-form-urlencoded" | "multipart/form-data")) => {
            return Err(Problem::new(
                ProblemKind::UnsupportedMediaType,
                format!(
                    "`{form}` is not accepted as a raw payload (it is what `curl -d` sends when no \
                     `Content-Type` is given); send `Content-Type: application/json` for a batch \
                     of messages, or the payload's real media type (such as \
                     `application/octet-stream`)"
                ),
            ));
        }
        Some(_) => Form::Raw,
    };
    if form != Form::Raw
        && let Some(name) = first_opal_header
    {
        return Err(Problem::invalid(vec![FieldError::header(
            name.as_str(),
            "`opal-` headers describe a raw-body publish only; a JSON batch or a CloudEvent \
             carries these settings in its body",
        )]));
    }
    Ok(form)
}

/// A raw or binary-mode body is one payload: over the payload limit is a 413, like a body over
/// the request limit.
fn check_payload_size(body: &Bytes, limits: &Limits) -> Result<(), Problem> {
    if body.len() > limits.max_message_bytes {
        return Err(Problem::new(
            ProblemKind::PayloadTooLarge,
            format!(
                "the payload is {} bytes, larger than the limit of {} bytes for one message",
                body.len(),
                limits.max_message_bytes
            ),
        ));
    }
    Ok(())
}

/// Which header each part of a raw message came from, so that errors name it.
#[derive(Debug, Default)]
struct RawOrigins {
    /// Attribute name → the header it came from.
    attributes: BTreeMap<String, String>,
    dedup_from_idempotency_key: bool,
    trace_added: bool,
}

/// A raw message's settings from its headers (the data is filled in later).
fn raw_message(
    headers: &HeaderMap,
    idempotency_key: Option<&str>,
    now: Timestamp,
    limits: &Limits,
) -> Result<(NewMessage, RawOrigins), Problem> {
    let mut errors = Vec::new();
    let mut origins = RawOrigins::default();
    let mut attributes = BTreeMap::new();
    let mut key = None;
    let mut dedup_id = None;
    let mut delay_ms = None;
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        if !name.starts_with(OPAL_PREFIX) {
            continue;
        }
        if seen.contains(&name) {
            if !errors
                .iter()
                .any(|e: &FieldError| e.header.as_deref() == Some(name))
            {
                errors.push(FieldError::header(name, "must be given at most once"));
            }
            continue;
        }
        seen.push(name);
        // Header values are taken as sent (no percent-decoding), as UTF-8.
        let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
            errors.push(FieldError::header(name, "must be UTF-8"));
            continue;
        };
        let text = text.to_owned();
        if let Some(attribute) = name.strip_prefix(ATTR_PREFIX) {
            if attribute == CONTENT_TYPE_ATTRIBUTE {
                errors.push(FieldError::header(
                    name,
                    "the `content-type` attribute is the request's `Content-Type`",
                ));
                continue;
            }
            origins
                .attributes
                .insert(attribute.to_owned(), name.to_owned());
            attributes.insert(attribute.to_owned(), text);
            continue;
        }
        match name {
            KEY_HEADER => key = Some(text),
            DEDUP_ID_HEADER => dedup_id = Some(text),
            DELAY_MS_HEADER => match text.trim().parse::<u64>() {
                Ok(ms) if ms <= limits.max_delay_ms => delay_ms = Some(ms),
                _ => errors.push(FieldError::header(
                    name,
                    format!(
                        "must be a whole number of milliseconds from 0 to {}",
                        limits.max_delay_ms
                    ),
                )),
            },
            _ => errors.push(FieldError::header(
                name,
                format!(
                    "is not a header Opal knows; a raw publish reads `{KEY_HEADER}`, \
                     `{DEDUP_ID_HEADER}`, `{DELAY_MS_HEADER}` and `{ATTR_PREFIX}<name>`"
                ),
            )),
        }
    }
    if let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        origins
            .attributes
            .insert(CONTENT_TYPE_ATTRIBUTE.to_owned(), "Content-Type".to_owned());
        attributes.insert(CONTENT_TYPE_ATTRIBUTE.to_owned(), content_type.to_owned());
    }
    let dedup_id = match (dedup_id, idempotency_key) {
        (Some(own), Some(key)) if own != key => {
            errors.push(FieldError::header(
                DEDUP_ID_HEADER,
                format!(
                    "differs from the `{IDEMPOTENCY_KEY}` header; give one of them, or the same \
                     value in both"
                ),
            ));
            None
        }
        (Some(own), _) => Some(own),
        (None, Some(key)) => {
            origins.dedup_from_idempotency_key = true;
            Some(key.to_owned())
        }
        (None, None) => None,
    };
    let deliver_at = delay_ms
        .filter(|ms| *ms > 0)
        .and_then(|ms| i64::try_from(ms).ok())
        .and_then(|ms| now.as_millisecond().checked_add(ms))
        .and_then(|ms| Timestamp::from_millisecond(ms).ok());
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let message = NewMessage {
        key,
        attributes,
        data: Bytes::new(),
        encoding: DataEncoding::Binary,
        dedup_id,
        deliver_at,
        callback: None,
    };
    Ok((message, origins))
}

/// The core's checks (lengths, names, counts), reported against the headers they came from.
fn validate_raw(
    message: NewMessage,
    origins: &RawOrigins,
    limits: &Limits,
    now: Timestamp,
) -> Result<NewMessage, Problem> {
    let Err(err) = message.validate(0, limits, now) else {
        return Ok(message);
    };
    let error = match err {
        BrokerError::Invalid { field, reason } => {
            let member = field.strip_prefix("messages[0].").unwrap_or(&field);
            match member {
                "key" => FieldError::header(KEY_HEADER, reason),
                "dedup_id" if origins.dedup_from_idempotency_key => {
                    FieldError::header(IDEMPOTENCY_KEY, reason)
                }
                "dedup_id" => FieldError::header(DEDUP_ID_HEADER, reason),
                "deliver_at" => FieldError::header(DELAY_MS_HEADER, reason),
                "attributes" => {
                    let added = if origins.trace_added {
                        " (`traceparent`/`tracestate` included)"
                    } else {
                        ""
                    };
                    FieldError::header(format!("{ATTR_PREFIX}*"), format!("{reason}{added}"))
                }
                _ => match member.strip_prefix("attributes.") {
                    Some(name) => match origins.attributes.get(name) {
                        Some(header) => FieldError::header(header.as_str(), reason),
                        None => FieldError::header(name, reason),
                    },
                    None => FieldError::at("", reason),
                },
            }
        }
        other => FieldError::at("", other.to_string()),
    };
    Err(Problem::invalid(vec![error]))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn forms_follow_the_content_type_and_ce_headers() {
        type Headers = &'static [(&'static str, &'static str)];
        let cases: [(Headers, Result<Form, u16>); 12] = [
            (&[("content-type", "application/json")], Ok(Form::JsonBatch)),
            (
                &[(
                    "content-type",
                    "application/merge-patch+json; charset=utf-8",
                )],
                Ok(Form::JsonBatch),
            ),
            (
                &[(
                    "content-type",
                    "Application/CloudEvents+JSON; charset=utf-8",
                )],
                Ok(Form::Structured),
            ),
            (
                &[("content-type", "application/cloudevents-batch+json")],
                Ok(Form::StructuredBatch),
            ),
            (
                &[
                    ("content-type", "application/json"),
                    ("ce-specversion", "1.0"),
                ],
                Ok(Form::Binary),
            ),
            (&[("ce-specversion", "1.0")], Ok(Form::Binary)),
            (&[("content-type", "text/plain")], Ok(Form::Raw)),
            (
                &[
                    ("content-type", "application/octet-stream"),
                    ("opal-key", "k"),
                ],
                Ok(Form::Raw),
            ),
            (&[], Err(415)),
            (
                &[("content-type", "application/x-www-form-urlencoded")],
                Err(415),
            ),
            (
                &[
                    ("content-type", "application/cloudevents+json"),
                    ("ce-id", "1"),
                ],
                Err(400),
            ),
            (
                &[("content-type", "application/json"), ("opal-key", "k")],
                Err(400),
            ),
        ];
        for (pairs, expected) in cases {
            let got = form_of(&headers(pairs)).map_err(|p| {
                use axum::response::IntoResponse as _;
                p.into_response().status().as_u16()
            });
            assert_eq!(got, expected, "{pairs:?}");
        }
        let protobuf = headers(&[("content-type", "application/cloudevents+protobuf")]);
        assert!(form_of(&protobuf).is_err());
        let no_version = headers(&[("content-type", "text/plain"), ("ce-id", "1")]);
        assert!(form_of(&no_version).is_err());
    }

    #[test]
    fn raw_headers_become_the_message() {
        let limits = Limits::default();
        let now = Timestamp::now();
        let map = headers(&[
            ("content-type", "text/plain; charset=utf-8"),
            ("opal-attr-kind", "created"),
            ("opal-key", "k1"),
            ("opal-dedup-id", "d1"),
            ("opal-delay-ms", "60000"),
        ]);
        let (message, _) = raw_message(&map, None, now, &limits).unwrap();
        assert_eq!(message.key.as_deref(), Some("k1"));
        assert_eq!(message.dedup_id.as_deref(), Some("d1"));
        assert_eq!(message.attributes["kind"], "created");
        assert_eq!(
            message.attributes["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            message.deliver_at.unwrap().as_millisecond(),
            now.as_millisecond() + 60_000
        );

        for bad in [
            &[("opal-colour", "red")][..],
            &[("opal-delay-ms", "soon")],
            &[("opal-key", "a"), ("opal-key", "b")],
            &[("opal-attr-content-type", "x")],
        ] {
            assert!(
                raw_message(&headers(bad), None, now, &limits).is_err(),
                "{bad:?}"
            );
        }
        let clash = headers(&[("opal-dedup-id", "a")]);
        assert!(raw_message(&clash, Some("b"), now, &limits).is_err());
    }
}
