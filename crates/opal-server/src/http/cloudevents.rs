//! CloudEvents 1.0 (the JSON event format and the HTTP binding): events published in structured,
//! batched or binary mode become messages, and deliveries can take the shape of structured events.
//!
//! How an event is stored as a message is written down in [`opal_core::cloudevent`], which also
//! renders messages as events: the push dispatcher sends the same events without this crate.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use jiff::Timestamp;
use opal_core::cloudevent::{
    CE_PREFIX, CONTEXT_ATTRIBUTES, MAX_EXTENSION_NAME, NO_DATA_MARKER, PARTITIONKEY,
    REQUIRED_ATTRIBUTES, SPECVERSION, TYPE_MARKER_PREFIX, is_extension_name, is_json_media_type,
};
use opal_core::{BrokerError, CloudEvent, DataEncoding, Delivery, Limits, NewMessage};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::trace_context::{self, TRACEPARENT, TRACESTATE, TraceHeaders};
use crate::problem::{FieldError, Problem, push_segment};

/// The media type of a batch of structured events (a JSON array).
pub(crate) const BATCH_MEDIA_TYPE: &str = "application/cloudevents-batch+json";

// ---------------------------------------------------------------------------------------------
// Publish: events in, messages out.
// ---------------------------------------------------------------------------------------------

/// Where an event came from, so that an error points at what the client sent.
#[derive(Debug, Clone)]
enum Origin {
    /// A structured event: the JSON Pointer of the event object (`""` alone, `/3` in a batch).
    Body(String),
    /// A binary-mode event: attributes in `ce-` headers, datacontenttype in `Content-Type`,
    /// data in the body.
    Headers,
}

impl Origin {
    fn attribute(&self, name: &str, detail: impl Into<String>) -> FieldError {
        match self {
            Origin::Body(event) => {
                let mut pointer = event.clone();
                push_segment(&mut pointer, name);
                FieldError::at(pointer, detail)
            }
            Origin::Headers if name == "datacontenttype" => {
                FieldError::header("Content-Type", detail)
            }
            Origin::Headers if name == "data" => FieldError::at("", detail),
            Origin::Headers => FieldError::header(format!("{CE_PREFIX}{name}"), detail),
        }
    }

    fn missing(&self, name: &str) -> FieldError {
        match self {
            Origin::Body(event) => FieldError::at(
                event.clone(),
                format!("the required attribute `{name}` is missing"),
            ),
            Origin::Headers => FieldError::header(
                format!("{CE_PREFIX}{name}"),
                "is required for a binary-mode event",
            ),
        }
    }

    fn event(&self, detail: impl Into<String>) -> FieldError {
        match self {
            Origin::Body(event) => FieldError::at(event.clone(), detail),
            Origin::Headers => FieldError::at("", detail),
        }
    }
}

/// An event read from a request, already in message terms.
#[derive(Debug, Default)]
struct Event {
    attributes: BTreeMap<String, String>,
    key: Option<String>,
    data: Data,
}

#[derive(Debug, Default)]
enum Data {
    #[default]
    Absent,
    Json(Bytes),
    Binary {
        bytes: Bytes,
        from_base64: bool,
    },
}

impl Event {
    fn context(&self, name: &str) -> Option<&str> {
        self.attributes
            .get(&format!("{CE_PREFIX}{name}"))
            .map(String::as_str)
    }

    /// Stores one attribute or extension (already known to be a valid name) with its checks.
    fn set(
        &mut self,
        origin: &Origin,
        name: &str,
        value: ExtensionValue,
        limits: &Limits,
    ) -> Result<(), FieldError> {
        if CONTEXT_ATTRIBUTES.contains(&name) {
            let ExtensionValue::String(text) = value else {
                return Err(origin.attribute(name, "must be a string"));
            };
            check_context(name, &text).map_err(|reason| origin.attribute(name, reason))?;
            self.attributes.insert(format!("{CE_PREFIX}{name}"), text);
            return Ok(());
        }
        match name {
            TRACEPARENT | TRACESTATE | PARTITIONKEY => {
                let ExtensionValue::String(text) = value else {
                    return Err(origin.attribute(name, "must be a string"));
                };
                let checked = match name {
                    TRACEPARENT => trace_context::check_traceparent(&text),
                    TRACESTATE => trace_context::check_tracestate(&text, limits),
                    _ if text.is_empty() => Err("must not be empty".to_owned()),
                    _ => Ok(()),
                };
                checked.map_err(|reason| origin.attribute(name, reason))?;
                if name == PARTITIONKEY {
                    self.key = Some(text);
                } else {
                    self.attributes.insert(name.to_owned(), text);
                }
            }
            _ => {
                let (text, marker) = match value {
                    ExtensionValue::String(text) => (text, None),
                    ExtensionValue::Number(text) => (text, Some("number")),
                    ExtensionValue::Boolean(b) => (b.to_string(), Some("boolean")),
                };
                if let Some(marker) = marker {
                    self.attributes
                        .insert(format!("{TYPE_MARKER_PREFIX}{name}"), marker.to_owned());
                }
                self.attributes.insert(format!("{CE_PREFIX}{name}"), text);
            }
        }
        Ok(())
    }

    /// Adds a "missing" error for each required attribute that was not given at all (one given
    /// but invalid has its own error already).
    fn check_required(
        &self,
        given: impl Fn(&str) -> bool,
        origin: &Origin,
        errors: &mut Vec<FieldError>,
    ) {
        for name in REQUIRED_ATTRIBUTES {
            if self.context(name).is_none() && !given(name) {
                errors.push(origin.missing(name));
            }
        }
    }

    /// The message, with its dedup id and the request's trace context, checked against the
    /// limits (`index` only matters to the core's error texts).
    fn into_message(
        mut self,
        origin: &Origin,
        idempotency_key: Option<&str>,
        trace: &TraceHeaders,
        limits: &Limits,
        now: Timestamp,
    ) -> Result<NewMessage, FieldError> {
        let dedup_id = match idempotency_key {
            Some(key) => key.to_owned(),
            None => dedup_id(
                self.context("source").unwrap_or_default(),
                self.context("id").unwrap_or_default(),
            ),
        };
        trace.apply(&mut self.attributes);
        let from_base64 = matches!(
            self.data,
            Data::Binary {
                from_base64: true,
                ..
            }
        );
        let (data, encoding) = match self.data {
            Data::Absent => {
                self.attributes
                    .insert(NO_DATA_MARKER.to_owned(), "true".to_owned());
                (Bytes::new(), DataEncoding::Binary)
            }
            Data::Json(bytes) => (bytes, DataEncoding::Json),
            Data::Binary { bytes, .. } => (bytes, DataEncoding::Binary),
        };
        let message = NewMessage {
            key: self.key,
            attributes: self.attributes,
            data,
            encoding,
            dedup_id: Some(dedup_id),
            deliver_at: None,
            callback: None,
        };
        match message.validate(0, limits, now) {
            Ok(()) => Ok(message),
            Err(BrokerError::Invalid { field, reason }) => {
                let member = field.strip_prefix("messages[0].").unwrap_or(&field);
                Err(match member {
                    "data" => {
                        origin.attribute(if from_base64 { "data_base64" } else { "data" }, reason)
                    }
                    "key" => origin.attribute(PARTITIONKEY, reason),
                    "dedup_id" => FieldError::header(super::messages::IDEMPOTENCY_KEY, reason),
                    "attributes" => origin.event(format!(
                        "{reason} (each context attribute and extension is stored as one)"
                    )),
                    _ => match member.strip_prefix("attributes.") {
                        Some(name) => {
                            let name = name
                                .strip_prefix(CE_PREFIX)
                                .or_else(|| name.strip_prefix(TYPE_MARKER_PREFIX))
                                .unwrap_or(name);
                            origin.attribute(name, reason)
                        }
                        None => origin.event(reason),
                    },
                })
            }
            Err(other) => Err(origin.event(other.to_string())),
        }
    }
}

/// The dedup id of an event: CloudEvents makes `source` + `id` unique per distinct event, so a
/// repeat of the pair is the same event sent again. Hashed to stay short whatever they hold.
fn dedup_id(source: &str, id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("ce:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// An extension value as received.
#[derive(Debug, Clone, PartialEq)]
enum ExtensionValue {
    String(String),
    /// The number's JSON text, as given.
    Number(String),
    Boolean(bool),
}

/// Checks the value of a context attribute.
fn check_context(name: &str, value: &str) -> Result<(), String> {
    match name {
        "specversion" if value != SPECVERSION => Err(format!(
            "must be \"{SPECVERSION}\", the only CloudEvents version accepted; got {value:?}"
        )),
        "time" => check_time(value),
        "datacontenttype" => check_media_type(value),
        _ if value.is_empty() => Err("must be a non-empty string".into()),
        _ => Ok(()),
    }
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
fn check_time(value: &str) -> Result<(), String> {
    const SHAPE: &str = "must be an RFC 3339 timestamp such as `2025-11-27T13:32:05.123Z` or \
                         `2025-11-27T14:32:05+01:00`";
    let b = value.as_bytes();
    let digits = |from: usize, to: usize| {
        b.get(from..to)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    let date_time = digits(0, 4)
        && at(4, b"-")
        && digits(5, 7)
        && at(7, b"-")
        && digits(8, 10)
        && at(10, b"Tt")
        && digits(11, 13)
        && at(13, b":")
        && digits(14, 16)
        && at(16, b":")
        && digits(17, 19);
    if !date_time {
        return Err(SHAPE.into());
    }
    let mut rest = &value[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(SHAPE.into());
        }
        rest = &fraction[n..];
    }
    let offset_ok = matches!(rest, "Z" | "z")
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[1..3].iter().all(u8::is_ascii_digit)
            && rest.as_bytes()[3] == b':'
            && rest.as_bytes()[4..].iter().all(u8::is_ascii_digit));
    if !offset_ok {
        return Err(SHAPE.into());
    }
    value
        .to_ascii_uppercase()
        .parse::<Timestamp>()
        .map(|_| ())
        .map_err(|e| format!("is not a valid time: {e}"))
}

/// RFC 2046 media type: `type/subtype`, optionally with parameters.
fn check_media_type(value: &str) -> Result<(), String> {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let main = value.split(';').next().unwrap_or("").trim();
    if main
        .split_once('/')
        .is_some_and(|(t, s)| is_token(t) && is_token(s))
    {
        Ok(())
    } else {
        Err("must be a media type such as `application/json` or `text/plain; charset=utf-8`".into())
    }
}

/// The members of one structured event, in the order given; a repeated member is refused.
#[derive(Debug)]
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CloudEvent as a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if members.iter().any(|(seen, _)| *seen == name) {
                        return Err(de::Error::custom(format!(
                            "member `{name}` is given more than once"
                        )));
                    }
                    let value: Box<RawValue> = map.next_value()?;
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Reads one structured event (members already split), collecting every error.
fn event_from_members(
    members: Members,
    origin: &Origin,
    limits: &Limits,
) -> Result<Event, Vec<FieldError>> {
    let mut event = Event::default();
    let mut errors = Vec::new();
    let mut data: Option<Box<RawValue>> = None;
    let mut data_base64: Option<Value> = None;
    let mut given: Vec<String> = Vec::new();
    for (name, raw) in members.0 {
        if name == "data" {
            data = Some(raw);
            continue;
        }
        // Cannot fail: the text was just parsed as JSON.
        let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        if name == "data_base64" {
            data_base64 = Some(value).filter(|v| !v.is_null());
            continue;
        }
        // JSON event format §2.4: a `null` attribute is the same as an absent one.
        if value.is_null() {
            continue;
        }
        given.push(name.clone());
        if !CONTEXT_ATTRIBUTES.contains(&name.as_str()) && !is_extension_name(&name) {
            errors.push(origin.attribute(
                &name,
                format!(
                    "is not a CloudEvents attribute, and not a valid extension name \
                     (1 to {MAX_EXTENSION_NAME} lowercase letters and digits, `[a-z0-9]`)"
                ),
            ));
            continue;
        }
        let value = match value {
            Value::String(text) => ExtensionValue::String(text),
            Value::Number(_) => ExtensionValue::Number(raw.get().trim().to_owned()),
            Value::Bool(b) => ExtensionValue::Boolean(b),
            _ => {
                errors.push(origin.attribute(
                    &name,
                    "an attribute value must be a string, a number or a boolean",
                ));
                continue;
            }
        };
        if let Err(error) = event.set(origin, &name, value, limits) {
            errors.push(error);
        }
    }
    // `"data": null` beside `data_base64` is an SDK writing out an unset member.
    let data = data.filter(|raw| !(raw.get() == "null" && data_base64.is_some()));
    match (data, data_base64) {
        (Some(_), Some(_)) => {
            errors.push(origin.event("give at most one of `data` and `data_base64`, not both"))
        }
        (Some(raw), None) => {
            event.data = Data::Json(Bytes::from(String::from(Box::<str>::from(raw))));
        }
        (None, Some(Value::String(text))) => match BASE64.decode(text.as_bytes()) {
            Ok(bytes) => {
                event.data = Data::Binary {
                    bytes: Bytes::from(bytes),
                    from_base64: true,
                };
            }
            Err(e) => errors.push(
                origin.attribute("data_base64", format!("is not valid standard base64: {e}")),
            ),
        },
        (None, Some(_)) => {
            errors.push(origin.attribute("data_base64", "must be a string of standard base64"))
        }
        (None, None) => {}
    }
    event.check_required(|name| given.iter().any(|g| g == name), origin, &mut errors);
    if errors.is_empty() {
        Ok(event)
    } else {
        Err(errors)
    }
}

/// Structured mode (`application/cloudevents+json`, one event) and batched mode
/// (`application/cloudevents-batch+json`, an array): every event is checked before any is
/// stored, and the problem lists every error (pointers `/<member>`, or `/<index>/<member>`).
pub(super) fn structured_messages(
    body: &[u8],
    batch: bool,
    idempotency_key: Option<&str>,
    trace: &TraceHeaders,
    limits: &Limits,
    now: Timestamp,
) -> Result<Vec<NewMessage>, Problem> {
    let events: Vec<(Origin, Members)> = if batch {
        let events: Vec<Members> = crate::json::parse(body)?;
        events
            .into_iter()
            .enumerate()
            .map(|(i, m)| (Origin::Body(format!("/{i}")), m))
            .collect()
    } else {
        vec![(Origin::Body(String::new()), crate::json::parse(body)?)]
    };
    if events.len() > limits.max_batch_messages {
        return Err(Problem::invalid(vec![FieldError::at(
            "",
            format!(
                "a batch holds at most {} events, this one has {}",
                limits.max_batch_messages,
                events.len()
            ),
        )]));
    }
    if idempotency_key.is_some() && events.len() > 1 {
        return Err(Problem::invalid(vec![FieldError::header(
            super::messages::IDEMPOTENCY_KEY,
            format!(
                "applies to a one-event batch only, this one has {}; each event's `source` and \
                 `id` already make it safe to retry",
                events.len()
            ),
        )]));
    }
    let mut errors = Vec::new();
    let mut messages = Vec::with_capacity(events.len());
    for (origin, members) in events {
        match event_from_members(members, &origin, limits) {
            Ok(event) => match event.into_message(&origin, idempotency_key, trace, limits, now) {
                Ok(message) => messages.push(message),
                Err(error) => errors.push(error),
            },
            Err(mut some) => errors.append(&mut some),
        }
    }
    if errors.is_empty() {
        Ok(messages)
    } else {
        Err(Problem::invalid(errors))
    }
}

/// Binary mode: the attributes are the `ce-` headers (values percent-decoded, as the HTTP binding
/// says), `Content-Type` is `datacontenttype`, the body is the data (none when empty). A body
/// declared JSON by its `Content-Type` must be valid JSON and is stored as JSON.
pub(super) fn binary_message(
    headers: &axum::http::HeaderMap,
    body: Bytes,
    idempotency_key: Option<&str>,
    trace: &TraceHeaders,
    limits: &Limits,
    now: Timestamp,
) -> Result<NewMessage, Problem> {
    let origin = Origin::Headers;
    let mut event = Event::default();
    let mut errors = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix(CE_PREFIX) else {
            continue;
        };
        if seen.contains(&attribute) {
            if !errors
                .iter()
                .any(|e: &FieldError| e.header.as_deref() == Some(name.as_str()))
            {
                errors.push(FieldError::header(
                    name.as_str(),
                    "must be given at most once",
                ));
            }
            continue;
        }
        seen.push(attribute);
        let problem = |detail: &str| FieldError::header(name.as_str(), detail);
        if attribute == "datacontenttype" {
            errors.push(problem(
                "is not used in binary mode: the data's media type is the `Content-Type` header",
            ));
            continue;
        }
        if attribute == "data" || attribute == "data_base64" {
            errors.push(problem(
                "is not an attribute: in binary mode the data is the request body",
            ));
            continue;
        }
        if !CONTEXT_ATTRIBUTES.contains(&attribute) && !is_extension_name(attribute) {
            errors.push(problem(&format!(
                "`{attribute}` is not a CloudEvents attribute, and not a valid extension name \
                 (1 to {MAX_EXTENSION_NAME} lowercase letters and digits, `[a-z0-9]`)"
            )));
            continue;
        }
        let Ok(text) = String::from_utf8(percent_decode(value.as_bytes())) else {
            errors.push(problem("is not UTF-8 once percent-decoded"));
            continue;
        };
        if let Err(error) = event.set(&origin, attribute, ExtensionValue::String(text), limits) {
            errors.push(error);
        }
    }
    let content_type = match headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| v.to_str())
    {
        Some(Ok(text)) => {
            if let Err(error) = event.set(
                &origin,
                "datacontenttype",
                ExtensionValue::String(text.to_owned()),
                limits,
            ) {
                errors.push(error);
            }
            Some(text)
        }
        Some(Err(_)) => {
            errors.push(FieldError::header(
                "Content-Type",
                "must be printable ASCII",
            ));
            None
        }
        None => None,
    };
    if !body.is_empty() {
        if content_type.is_some_and(is_json_media_type) {
            match serde_json::from_slice::<de::IgnoredAny>(&body) {
                Ok(_) => event.data = Data::Json(body),
                Err(e) => errors.push(FieldError::at(
                    "",
                    format!(
                        "the body is declared JSON by its `Content-Type` but is not valid JSON: {e}"
                    ),
                )),
            }
        } else {
            event.data = Data::Binary {
                bytes: body,
                from_base64: false,
            };
        }
    }
    event.check_required(|name| seen.contains(&name), &origin, &mut errors);
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    event
        .into_message(&origin, idempotency_key, trace, limits, now)
        .map_err(|error| Problem::invalid(vec![error]))
}

/// Decodes `%XX` escapes (CloudEvents HTTP binding §3.1.3.2). A `%` that does not start an escape
/// is kept as it is, as the SDKs do.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Delivery: messages out as events.
// ---------------------------------------------------------------------------------------------

/// How deliveries are shaped: Opal's own message JSON, or structured CloudEvents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DeliveryFormat {
    #[default]
    Opal,
    CloudEvents,
}

impl DeliveryFormat {
    /// One delivery in this format; `T` is the `opal` shape (the pull's `DeliveryView`).
    pub(crate) fn render<T: From<Delivery>>(self, delivery: Delivery) -> FormattedDelivery<T> {
        match self {
            DeliveryFormat::Opal => FormattedDelivery::Opal(delivery.into()),
            DeliveryFormat::CloudEvents => FormattedDelivery::CloudEvents(delivery.into()),
        }
    }
}

/// A delivery in the format a consumer asked for.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum FormattedDelivery<T> {
    Opal(T),
    CloudEvents(CloudEventDelivery),
}

/// A delivery in the `cloudevents` format.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct CloudEventDelivery {
    pub(crate) ack_id: String,
    pub(crate) attempt: u32,
    pub(crate) event: CloudEventView,
}

impl From<Delivery> for CloudEventDelivery {
    fn from(d: Delivery) -> Self {
        CloudEventDelivery {
            ack_id: d.ack_id.0,
            attempt: d.attempt,
            event: CloudEventView(CloudEvent::from_message(&d.message)),
        }
    }
}

/// The core's event, with the schema this document gives it (utoipa's traits cannot be
/// implemented on a foreign type).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub(crate) struct CloudEventView(pub(crate) CloudEvent);

/// A delivered event: the context attributes, extensions (strings, numbers, booleans) and data.
impl utoipa::PartialSchema for CloudEventView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let string = serde_json::json!({"type": "string"});
        crate::openapi::json_schema(serde_json::json!({
            "type": "object",
            "description": "A structured-mode CloudEvent (JSON event format), as delivered.",
            "required": ["specversion", "id", "source", "type"],
            "properties": {
                "specversion": {"const": SPECVERSION},
                "id": string, "source": string, "type": string, "subject": string,
                "dataschema": string, "datacontenttype": string,
                "time": {"type": "string", "format": "date-time"},
                "data": {"description": "JSON data, as published."},
                "data_base64": {"type": "string", "contentEncoding": "base64"}
            },
            "additionalProperties": {"type": ["string", "number", "boolean"]}
        }))
    }
}

impl utoipa::ToSchema for CloudEventView {
    // The component's name in the published document predates the wrapper.
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("CloudEvent")
    }
}

/// The publish body `application/cloudevents+json` (and an element of
/// `application/cloudevents-batch+json`): only described, the handlers read [`Members`].
#[derive(Debug)]
pub(crate) struct StructuredEvent;

impl utoipa::PartialSchema for StructuredEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use crate::openapi::{BASE64_PATTERN, TRACESTATE_PATTERN, traceparent_pattern};
        let context = serde_json::json!({"type": "string", "minLength": 1, "maxLength": 4096});
        let optional =
            serde_json::json!({"type": ["string", "null"], "minLength": 1, "maxLength": 4096});
        crate::openapi::json_schema(serde_json::json!({
            "type": "object",
            "description": "One CloudEvent in the JSON event format. Context attributes are \
                            stored as message attributes `ce-<name>`, extensions too (`partitionkey` \
                            becomes the message key; `traceparent`/`tracestate` the trace \
                            attributes); `(source, id)` is the dedup id unless the request has an \
                            `Idempotency-Key`. A `null` attribute counts as left out.",
            "required": ["specversion", "id", "source", "type"],
            "properties": {
                "specversion": {"const": SPECVERSION},
                "id": context,
                "source": context,
                "type": context,
                "subject": optional,
                "dataschema": optional,
                "datacontenttype": {
                    "type": ["string", "null"],
                    "maxLength": 4096,
                    "pattern": MEDIA_TYPE_PATTERN
                },
                "time": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "pattern": TIME_PATTERN
                },
                "data": {"description": "JSON data: any JSON value, stored byte for byte."},
                "data_base64": {
                    "type": ["string", "null"],
                    "contentEncoding": "base64",
                    "pattern": BASE64_PATTERN
                },
                "partitionkey": {"type": ["string", "null"], "minLength": 1, "maxLength": 1024},
                "traceparent": {"type": ["string", "null"], "pattern": traceparent_pattern()},
                "tracestate": {
                    "type": ["string", "null"],
                    "maxLength": 4096,
                    "pattern": TRACESTATE_PATTERN
                }
            },
            "propertyNames": {"pattern": "^(?:[a-z0-9]{1,20}|data_base64)$"},
            "additionalProperties": {
                "type": ["string", "number", "boolean", "null"],
                "maxLength": 4096
            },
            "not": {
                "required": ["data", "data_base64"],
                "properties": {"data": {"not": {"type": "null"}}, "data_base64": {"type": "string"}}
            }
        }))
    }
}

impl utoipa::ToSchema for StructuredEvent {}

/// [`check_media_type`] as a regular expression.
const MEDIA_TYPE_PATTERN: &str =
    "^\\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+/[A-Za-z0-9!#$%&'*+.^_`|~-]+\\s*(?:;[\\s\\S]*)?$";
/// The shape [`check_time`] accepts (`format: date-time` adds the calendar checks).
const TIME_PATTERN: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$";

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};
    use opal_core::{Message, TopicName};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn stored(message: NewMessage) -> Message {
        Message {
            id: Uuid::now_v7(),
            topic: TopicName::new("orders").unwrap(),
            partition: 0,
            offset: 3,
            key: message.key,
            attributes: message.attributes,
            data: message.data,
            encoding: message.encoding,
            publish_time: "2025-11-27T13:32:05.123Z".parse().unwrap(),
            deliver_at: None,
            callback: None,
        }
    }

    fn structured(body: &str) -> Result<Vec<NewMessage>, Problem> {
        structured_messages(
            body.as_bytes(),
            false,
            None,
            &TraceHeaders::default(),
            &Limits::default(),
            Timestamp::now(),
        )
    }

    #[test]
    fn a_structured_event_round_trips_exactly() {
        let body = r#"{"specversion":"1.0","id":"e-1","source":"/shop","type":"com.example.order.created",
            "time":"2025-11-27T14:32:05.5+01:00","subject":"order/42","dataschema":"https://example.com/s",
            "datacontenttype":"application/json","count":42,"big":1.50,"flag":true,"label":"x",
            "partitionkey":"customer-7","data":{"order" : 42}}"#;
        let mut messages = structured(body).unwrap();
        let message = messages.pop().unwrap();
        assert_eq!(message.key.as_deref(), Some("customer-7"));
        assert_eq!(message.attributes["ce-id"], "e-1");
        assert_eq!(message.attributes["ce-count"], "42");
        assert_eq!(message.attributes["ce.type.count"], "number");
        assert_eq!(message.data, Bytes::from_static(br#"{"order" : 42}"#));
        assert_eq!(message.encoding, DataEncoding::Json);
        assert!(message.dedup_id.as_deref().unwrap().starts_with("ce:"));

        let event = CloudEvent::from_message(&stored(message));
        assert_eq!(event.id(), "e-1");
        let rendered = event.to_json();
        assert!(
            rendered.starts_with(r#"{"specversion":"1.0","id":"e-1","source":"/shop""#),
            "{rendered}"
        );
        assert!(rendered.contains(r#""big":1.50"#), "{rendered}");
        assert!(
            rendered.ends_with(r#""data":{"order" : 42}}"#),
            "{rendered}"
        );
        let expected: Value = serde_json::from_str(body).unwrap();
        let got: Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn events_without_data_and_with_empty_base64_differ() {
        let base = r#""specversion":"1.0","id":"1","source":"s","type":"t""#;
        for (body, expected) in [
            (format!("{{{base}}}"), json!(null)),
            (format!(r#"{{{base},"data_base64":""}}"#), json!("")),
            (format!(r#"{{{base},"data":null}}"#), json!("json-null")),
        ] {
            let message = structured(&body).unwrap().pop().unwrap();
            let event: Value =
                serde_json::from_str(&CloudEvent::from_message(&stored(message)).to_json())
                    .unwrap();
            match expected.as_str() {
                None => {
                    assert!(
                        event.get("data").is_none() && event.get("data_base64").is_none(),
                        "{event}"
                    );
                }
                Some("json-null") => assert_eq!(event["data"], Value::Null, "{event}"),
                Some(b64) => assert_eq!(event["data_base64"], b64, "{event}"),
            }
        }
    }

    #[test]
    fn structured_errors_point_at_members() {
        let problem = structured(
            r#"{"specversion":"0.3","source":"","type":7,"time":"yesterday","Bad":"x","ext":{"a":1},
               "data":1,"data_base64":"AA==","datacontenttype":"json"}"#,
        )
        .unwrap_err();
        let body = format!("{problem:?}");
        for pointer in [
            "\"/specversion\"",
            "\"/source\"",
            "\"/type\"",
            "\"/time\"",
            "\"/Bad\"",
            "\"/ext\"",
            "\"/datacontenttype\"",
        ] {
            assert!(body.contains(pointer), "{pointer} missing in {body}");
        }
        assert!(
            body.contains("the required attribute `id` is missing"),
            "{body}"
        );
        assert!(body.contains("not both"), "{body}");
    }

    #[test]
    fn binary_mode_reads_headers_and_body() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "/with%20space"),
            ("ce-type", "t"),
            ("ce-count", "7"),
            ("content-type", "text/plain"),
        ] {
            headers.insert(
                axum::http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let message = binary_message(
            &headers,
            Bytes::from_static(b"hello"),
            None,
            &TraceHeaders::default(),
            &Limits::default(),
            Timestamp::now(),
        )
        .unwrap();
        assert_eq!(message.attributes["ce-source"], "/with space");
        assert_eq!(message.attributes["ce-datacontenttype"], "text/plain");
        assert_eq!(message.encoding, DataEncoding::Binary);
        let event: Value =
            serde_json::from_str(&CloudEvent::from_message(&stored(message)).to_json()).unwrap();
        assert_eq!(
            event["count"], "7",
            "binary-mode extensions are strings: {event}"
        );
        assert_eq!(event["data_base64"], BASE64.encode("hello"));
    }

    #[test]
    fn the_binary_mode_the_core_renders_reads_back_as_the_same_event() {
        let body = r#"{"specversion":"1.0","id":"e 1","source":"/ünï","type":"t","count":7,
            "greeting":"Grüße, 100% \"sûr\"","datacontenttype":"text/plain","data":"<a/>"}"#;
        let published = structured(body).unwrap().pop().unwrap();
        let parts = CloudEvent::from_message(&stored(published.clone())).binary_parts();
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            headers.insert(
                axum::http::HeaderName::try_from(name.as_str()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let content_type = parts.content_type.as_deref().unwrap();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        let read = binary_message(
            &headers,
            parts.body,
            None,
            &TraceHeaders::default(),
            &Limits::default(),
            Timestamp::now(),
        )
        .unwrap();
        let mut expected = published.attributes;
        // Binary mode has no JSON types, and the text data is no longer a JSON string.
        expected.remove("ce.type.count");
        assert_eq!(read.attributes, expected);
        assert_eq!(read.data, Bytes::from_static(b"<a/>"));
        assert_eq!(read.dedup_id, published.dedup_id);
    }

    #[test]
    fn times_media_types_and_percent_decoding() {
        for good in [
            "2025-11-27T13:32:05Z",
            "2025-11-27t13:32:05.123456z",
            "2025-11-27T13:32:05-08:00",
        ] {
            assert_eq!(check_time(good), Ok(()), "{good}");
        }
        for bad in [
            "2025-11-27",
            "2025-11-27T13:32Z",
            "2025-11-27T13:32:05",
            "2025-13-27T13:32:05Z",
            "2025-11-27T13:32:05.Z",
            "2025-11-27 13:32:05Z",
        ] {
            assert!(check_time(bad).is_err(), "{bad}");
        }
        assert!(check_media_type("text/plain; charset=utf-8").is_ok());
        assert!(check_media_type("json").is_err());
        assert_eq!(percent_decode(b"a%20b%zz%4"), b"a b%zz%4");
    }
}
