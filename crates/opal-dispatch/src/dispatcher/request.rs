//! One delivery as an HTTP request: the body in the endpoint's format, the Standard Webhooks
//! headers and signature, and the endpoint's own headers.

use bytes::Bytes;
use jiff::Timestamp;
use opal_core::{CloudEvent, DataEncoding, Message, PushConfig, PushFormat};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::signing::{SigningSecret, signature_header};

/// Attributes carried into a webhook as the W3C trace context headers of the same name.
const TRACE_ATTRIBUTES: [&str; 2] = ["traceparent", "tracestate"];
/// Prefix of the headers that carry a raw delivery's attributes (as on a raw publish).
const RAW_ATTRIBUTE_PREFIX: &str = "opal-attr-";

/// A delivery ready to send.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Builds the request for `message`'s `attempt` at `now`. `webhook-id` is the message id, the
/// same on every retry, so receivers can drop duplicates.
pub(crate) fn prepare(
    config: &PushConfig,
    secrets: &[SigningSecret],
    message: &Message,
    attempt: u32,
    now: Timestamp,
) -> Prepared {
    let mut headers = HeaderMap::new();
    let (body, content_type) = match config.format {
        PushFormat::CloudEvents => (
            Bytes::from(CloudEvent::from_message(message).to_json()),
            Some("application/cloudevents+json".to_owned()),
        ),
        PushFormat::Binary => {
            let event = CloudEvent::from_message(message).binary_parts();
            for (name, value) in &event.headers {
                insert(&mut headers, name, value);
            }
            (event.body, event.content_type)
        }
        PushFormat::Raw => {
            for (name, value) in &message.attributes {
                insert(
                    &mut headers,
                    &format!("{RAW_ATTRIBUTE_PREFIX}{}", name.to_ascii_lowercase()),
                    value,
                );
            }
            if let Some(key) = &message.key {
                insert(&mut headers, "opal-key", key);
            }
            let content_type = match message.encoding {
                DataEncoding::Json => "application/json",
                DataEncoding::Binary => message
                    .attributes
                    .get("content-type")
                    .map_or("application/octet-stream", String::as_str),
            };
            (message.data.clone(), Some(content_type.to_owned()))
        }
    };
    if let Some(ct) = content_type {
        insert(&mut headers, CONTENT_TYPE.as_str(), &ct);
    }
    for name in TRACE_ATTRIBUTES {
        if let Some(value) = message.attributes.get(name) {
            insert(&mut headers, name, value);
        }
    }
    for (name, value) in &config.headers {
        insert(&mut headers, name, value);
    }
    insert(&mut headers, "opal-attempt", &attempt.to_string());
    let id = message.id.to_string();
    let timestamp = now.as_second();
    insert(&mut headers, "webhook-id", &id);
    insert(&mut headers, "webhook-timestamp", &timestamp.to_string());
    insert(
        &mut headers,
        "webhook-signature",
        &signature_header(&id, timestamp, &body, secrets),
    );
    Prepared { headers, body }
}

/// Sets a header, leaving out a name or value HTTP cannot carry (an attribute may hold
/// anything; the endpoint's own headers were checked when it was configured).
fn insert(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use opal_core::{PushSecret, TopicName};
    use uuid::Uuid;

    use super::*;
    use crate::signing::verify;

    fn message(encoding: DataEncoding, data: &'static [u8]) -> Message {
        Message {
            id: Uuid::now_v7(),
            topic: TopicName::new("acme/orders").unwrap(),
            partition: 0,
            offset: 7,
            key: Some("customer-7".into()),
            attributes: BTreeMap::from([
                (
                    "traceparent".to_owned(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
                ),
                ("Region".to_owned(), "eu".to_owned()),
                ("bad".to_owned(), "line\nbreak".to_owned()),
            ]),
            data: Bytes::from_static(data),
            encoding,
            publish_time: "2026-11-27T10:00:00Z".parse().unwrap(),
            deliver_at: None,
            callback: None,
        }
    }

    fn config(format: PushFormat) -> PushConfig {
        let mut c = PushConfig::new(
            "http://127.0.0.1:9/in",
            PushSecret {
                secret: SigningSecret::generate().as_str().to_owned(),
                expires_at: None,
            },
        );
        c.format = format;
        c.headers.insert("x-team".into(), "payments".into());
        c
    }

    fn header<'a>(p: &'a Prepared, name: &str) -> Option<&'a str> {
        p.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn every_secret_signs_and_each_verifies() {
        let c = config(PushFormat::CloudEvents);
        let secrets = [SigningSecret::generate(), SigningSecret::generate()];
        let m = message(DataEncoding::Json, br#"{"n":1}"#);
        let now: Timestamp = "2026-11-27T10:00:05Z".parse().unwrap();
        let p = prepare(&c, &secrets, &m, 3, now);
        let signature = header(&p, "webhook-signature").unwrap();
        assert_eq!(signature.split(' ').count(), 2);
        for secret in &secrets {
            verify(
                secret,
                &m.id.to_string(),
                header(&p, "webhook-timestamp").unwrap(),
                signature,
                &p.body,
                now.as_second(),
                std::time::Duration::from_secs(300),
            )
            .expect("each secret's signature verifies");
        }
        assert_eq!(header(&p, "webhook-id"), Some(m.id.to_string().as_str()));
        assert_eq!(header(&p, "opal-attempt"), Some("3"));
        assert_eq!(header(&p, "x-team"), Some("payments"));
        assert_eq!(
            header(&p, "traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(
            header(&p, "content-type"),
            Some("application/cloudevents+json")
        );
        let event: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(event["data"], serde_json::json!({"n": 1}));
        assert_eq!(event["partitionkey"], "customer-7");
    }

    #[test]
    fn raw_sends_the_payload_and_attributes_as_headers() {
        let c = config(PushFormat::Raw);
        let m = message(DataEncoding::Binary, b"\x00\x01bytes");
        let p = prepare(&c, &[SigningSecret::generate()], &m, 1, Timestamp::now());
        assert_eq!(&p.body[..], b"\x00\x01bytes");
        assert_eq!(header(&p, "content-type"), Some("application/octet-stream"));
        assert_eq!(header(&p, "opal-attr-region"), Some("eu"));
        assert_eq!(header(&p, "opal-key"), Some("customer-7"));
        assert!(
            p.headers.get("opal-attr-bad").is_none(),
            "a value HTTP cannot carry is left out"
        );
    }

    #[test]
    fn binary_mode_puts_the_context_in_ce_headers() {
        let c = config(PushFormat::Binary);
        let m = message(DataEncoding::Json, br#"{"n":1}"#);
        let p = prepare(&c, &[SigningSecret::generate()], &m, 1, Timestamp::now());
        assert_eq!(&p.body[..], br#"{"n":1}"#);
        assert_eq!(header(&p, "ce-specversion"), Some("1.0"));
        assert_eq!(header(&p, "ce-id"), Some(m.id.to_string().as_str()));
        assert_eq!(header(&p, "content-type"), Some("application/json"));
    }
}
