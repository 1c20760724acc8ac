//! A stored message as a CloudEvent 1.0: one rendering for every front door that sends events
//! (the HTTP API's pulls and streams, the push dispatcher's webhooks), in the JSON event format
//! ([`CloudEvent::to_json`]) or the HTTP binding's binary mode ([`CloudEvent::binary_parts`]).
//!
//! How an event is stored (a `Message` has no CloudEvents fields, so everything is an attribute).
//! The server's publish side writes this; [`CloudEvent::from_message`] reads it back:
//!
//! | event | message |
//! | --- | --- |
//! | context attribute `<name>` (`specversion`, `id`, `source`, `type`, `time`, `subject`, `datacontenttype`, `dataschema`) | attribute `ce-<name>`, the string as given |
//! | extension `<ext>` | attribute `ce-<ext>`, as a string; for a number or boolean also the marker `ce.type.<ext>` = `number` / `boolean`, so it comes back with its JSON type |
//! | extension `partitionkey` | the message key |
//! | extensions `traceparent`, `tracestate` | attributes `traceparent`, `tracestate` (the same ones the W3C headers fill) |
//! | `data` | the payload, its JSON text byte for byte (encoding JSON) |
//! | `data_base64`, or the body in binary mode | the payload bytes (encoding binary); a JSON body (by `Content-Type`) is stored as JSON |
//! | no data at all | an empty binary payload plus the marker `ce.nodata` = `true` |
//! | `(source, id)` | the dedup id, unless the request has an `Idempotency-Key` |
//!
//! A message whose attributes say it was published as an event (`ce-specversion` is `1.0` and
//! `ce-id`, `ce-source`, `ce-type` are there) renders back as that event; any other message is
//! rendered with Opal's own `id`, `source`, `type` and `time` (see [`CloudEvent::from_message`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::{DataEncoding, Message};

mod binary;
#[cfg(test)]
mod tests;

pub use binary::BinaryEvent;

/// The media type of one structured-mode event.
pub const STRUCTURED_MEDIA_TYPE: &str = "application/cloudevents+json";
/// The prefix of binary-mode headers, and of the message attributes that hold an event.
pub const CE_PREFIX: &str = "ce-";
/// The one CloudEvents version Opal reads and writes.
pub const SPECVERSION: &str = "1.0";
/// Marker attribute: the event had no data (not even an empty `data_base64`).
pub const NO_DATA_MARKER: &str = "ce.nodata";
/// Marker attribute prefix: `ce.type.<ext>` is the JSON type of a non-string extension.
pub const TYPE_MARKER_PREFIX: &str = "ce.type.";
/// The extension that becomes the message key (CloudEvents "Partitioning" extension).
pub const PARTITIONKEY: &str = "partitionkey";
/// The context attributes of the spec, in the order events are rendered.
pub const CONTEXT_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];
/// The context attributes every event has: a message holding all of them was published as one.
pub const REQUIRED_ATTRIBUTES: [&str; 4] = ["specversion", "id", "source", "type"];
/// Longest extension name (CloudEvents 1.0 §"Attribute Naming Convention").
pub const MAX_EXTENSION_NAME: usize = 20;
/// What a message published without CloudEvents attributes gets as its `type`.
const OPAL_MESSAGE_TYPE: &str = "opal.message";

/// An extension attribute name: 1 to 20 lowercase ASCII letters and digits, and not the name
/// of a context attribute or of `data`.
pub fn is_extension_name(name: &str) -> bool {
    (1..=MAX_EXTENSION_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name != "data"
        && !CONTEXT_ATTRIBUTES.contains(&name)
}

/// `application/json`, `text/json` or any `<type>/<subtype>+json`, with any parameters: the media
/// types whose data the JSON event format carries as JSON (in `data`).
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == "application/json"
        || essence == "text/json"
        || (essence.ends_with("+json") && essence.contains('/'))
}

/// The media type without parameters, lowercased (borrowed when it already is: a media type is
/// looked at on every publish, and nearly always arrives in lowercase).
pub fn essence(content_type: &str) -> Cow<'_, str> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(media_type.to_ascii_lowercase())
    } else {
        Cow::Borrowed(media_type)
    }
}

/// A message as a CloudEvent: serialise it with serde (or [`CloudEvent::to_json`]) for the
/// structured mode, or take [`CloudEvent::binary_parts`] for the binary mode.
#[derive(Debug, Clone)]
pub struct CloudEvent {
    /// Context attributes then extensions, in output order; `specversion` and `id` come first.
    attributes: Vec<(String, AttributeValue)>,
    data: EventData,
}

#[derive(Debug, Clone)]
enum AttributeValue {
    String(String),
    /// A number or boolean extension, as JSON text.
    Json(Box<RawValue>),
}

#[derive(Debug, Clone)]
enum EventData {
    None,
    Json(Box<RawValue>),
    /// Raw bytes: base64 only in the JSON format, as they are in the binary mode's body.
    Binary(Bytes),
}

impl CloudEvent {
    /// The event of a message.
    ///
    /// - A message published as an event comes back as that event: the same context
    ///   attributes, extensions (with their JSON types) and data.
    /// - Any other message: `id` = message id, `source` = `/topics/{topic}`,
    ///   `type` = `opal.message`, `time` = publish time; `datacontenttype` `application/json`
    ///   with `data` for a JSON payload, else the `content-type` attribute (or
    ///   `application/octet-stream`) with `data_base64`.
    /// - Both: the key becomes the `partitionkey` extension, and every attribute whose name is a
    ///   valid extension name (`traceparent`, `tracestate` included) becomes an extension with a
    ///   string value. Attributes with other names (upper case, `.`, `-`, `_`, longer than 20) and
    ///   Opal's delivery details (topic, partition, offset) are left out.
    pub fn from_message(message: &Message) -> CloudEvent {
        let attrs = &message.attributes;
        let ce = |name: &str| {
            attrs
                .get(&format!("{CE_PREFIX}{name}"))
                .filter(|v| !v.is_empty())
        };
        let published_as_event = ce("specversion").is_some_and(|v| v == SPECVERSION)
            && REQUIRED_ATTRIBUTES.iter().all(|n| ce(n).is_some());

        let mut context: Vec<(String, AttributeValue)> = Vec::new();
        let mut extensions: BTreeMap<String, AttributeValue> = BTreeMap::new();
        let string = |s: &str| AttributeValue::String(s.to_owned());
        if published_as_event {
            for name in CONTEXT_ATTRIBUTES {
                if let Some(value) = ce(name) {
                    context.push((name.to_owned(), string(value)));
                }
            }
            for (name, value) in attrs {
                if let Some(ext) = name.strip_prefix(CE_PREFIX)
                    && is_extension_name(ext)
                {
                    let typed = attrs.get(&format!("{TYPE_MARKER_PREFIX}{ext}"));
                    extensions.insert(
                        ext.to_owned(),
                        typed_value(value, typed.map(String::as_str)),
                    );
                }
            }
        } else {
            let content_type = match message.encoding {
                DataEncoding::Json => "application/json",
                DataEncoding::Binary => attrs
                    .get("content-type")
                    .map_or("application/octet-stream", String::as_str),
            };
            context.push(("specversion".into(), string(SPECVERSION)));
            context.push(("id".into(), AttributeValue::String(message.id.to_string())));
            context.push((
                "source".into(),
                AttributeValue::String(format!("/topics/{}", message.topic)),
            ));
            context.push(("type".into(), string(OPAL_MESSAGE_TYPE)));
            context.push(("datacontenttype".into(), string(content_type)));
            context.push((
                "time".into(),
                AttributeValue::String(message.publish_time.to_string()),
            ));
        }
        for (name, value) in attrs {
            if is_extension_name(name) {
                extensions
                    .entry(name.clone())
                    .or_insert_with(|| string(value));
            }
        }
        if let Some(key) = &message.key {
            extensions.insert(PARTITIONKEY.to_owned(), string(key));
        }
        let data = match message.encoding {
            DataEncoding::Json => match json_payload(&message.data) {
                Some(raw) => EventData::Json(raw),
                None => {
                    // Only a backend bug or a damaged store gets here; the bytes still go out.
                    tracing::warn!(id = %message.id, "stored JSON payload is not valid JSON; sending it as base64");
                    EventData::Binary(message.data.clone())
                }
            },
            DataEncoding::Binary
                if published_as_event
                    && message.data.is_empty()
                    && attrs.contains_key(NO_DATA_MARKER) =>
            {
                EventData::None
            }
            DataEncoding::Binary => EventData::Binary(message.data.clone()),
        };
        context.extend(extensions);
        CloudEvent {
            attributes: context,
            data,
        }
    }

    /// The event's `id` (for a webhook's `webhook-id`, say).
    pub fn id(&self) -> &str {
        self.string_attribute("id").unwrap_or_default()
    }

    /// The event as JSON text (`application/cloudevents+json`).
    pub fn to_json(&self) -> String {
        // Strings and raw JSON always serialise.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    fn string_attribute(&self, wanted: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find_map(|(name, value)| match value {
                AttributeValue::String(s) if name == wanted => Some(s.as_str()),
                _ => None,
            })
    }
}

/// An extension value with the JSON type its marker records (strings otherwise, and whenever the
/// stored text does not fit the marker).
fn typed_value(text: &str, marker: Option<&str>) -> AttributeValue {
    let fits = match marker {
        Some("number") => serde_json::from_str::<serde_json::Number>(text).is_ok(),
        Some("boolean") => text == "true" || text == "false",
        _ => false,
    };
    match fits.then(|| RawValue::from_string(text.to_owned())) {
        Some(Ok(raw)) => AttributeValue::Json(raw),
        _ => AttributeValue::String(text.to_owned()),
    }
}

/// The payload as raw JSON, checked so that a bad store can never make the output invalid JSON.
fn json_payload(data: &Bytes) -> Option<Box<RawValue>> {
    let text = String::from_utf8(data.to_vec()).ok()?;
    RawValue::from_string(text).ok()
}

impl Serialize for CloudEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in &self.attributes {
            match value {
                AttributeValue::String(s) => map.serialize_entry(name, s)?,
                AttributeValue::Json(raw) => map.serialize_entry(name, raw)?,
            }
        }
        match &self.data {
            EventData::None => {}
            EventData::Json(raw) => map.serialize_entry("data", raw)?,
            EventData::Binary(bytes) => {
                map.serialize_entry("data_base64", &BASE64.encode(bytes))?
            }
        }
        map.end()
    }
}
