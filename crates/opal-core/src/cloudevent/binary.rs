//! The HTTP binding's binary mode (CloudEvents HTTP protocol binding 1.0.2, §3.1), as plain
//! strings and bytes: this crate knows no HTTP types, the sender turns these into a request.

use std::fmt::Write as _;

use bytes::Bytes;

use super::{AttributeValue, CE_PREFIX, CloudEvent, EventData, is_json_media_type};

/// One event in binary mode: the attributes as headers, the data as the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryEvent {
    /// `(ce-<name>, value)` for every context attribute and extension but `datacontenttype`, in
    /// the event's attribute order; names lower-case, values percent-encoded (§3.1.3.2).
    pub headers: Vec<(String, String)>,
    /// The `Content-Type` header (§3.1.1): the event's `datacontenttype`.
    pub content_type: Option<String>,
    /// The data: JSON as its JSON text, binary data as its raw bytes, empty without data.
    pub body: Bytes,
}

impl CloudEvent {
    /// The event in binary mode.
    ///
    /// Where the JSON event format leaves the data's media type implicit, it is made explicit,
    /// as that format's §3.1.2 asks of a re-serialisation in another binding: JSON data without a
    /// `datacontenttype` goes out as `application/json`, and a JSON string under a non-JSON
    /// `datacontenttype` (`"<a/>"` as `application/xml`) is that text, unquoted.
    pub fn binary_parts(&self) -> BinaryEvent {
        let headers = self
            .attributes
            .iter()
            .filter(|(name, _)| name != "datacontenttype")
            .map(|(name, value)| {
                let text = match value {
                    AttributeValue::String(s) => s.as_str(),
                    AttributeValue::Json(raw) => raw.get(),
                };
                (format!("{CE_PREFIX}{name}"), percent_encode(text))
            })
            .collect();
        let declared = self.string_attribute("datacontenttype");
        let (content_type, body) = match &self.data {
            EventData::None => (declared, Bytes::new()),
            EventData::Binary(bytes) => (declared, bytes.clone()),
            EventData::Json(raw) => match declared {
                None => (Some("application/json"), json_text(raw.get())),
                Some(media_type) if is_json_media_type(media_type) => {
                    (declared, json_text(raw.get()))
                }
                Some(_) => match serde_json::from_str::<String>(raw.get()) {
                    Ok(text) => (declared, Bytes::from(text)),
                    // Not a string: the JSON text is the best rendering of what was published.
                    Err(_) => (declared, json_text(raw.get())),
                },
            },
        };
        BinaryEvent {
            headers,
            content_type: content_type.map(str::to_owned),
            body,
        }
    }
}

fn json_text(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// §3.1.3.2: space, `"`, `%` and every byte outside printable US-ASCII (0x21-0x7E) become
/// `%XX`, non-ASCII characters as their UTF-8 bytes, so any string survives in a header value.
pub(super) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if (0x21..=0x7E).contains(&byte) && byte != b'"' && byte != b'%' {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
