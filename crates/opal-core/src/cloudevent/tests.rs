use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};
use uuid::Uuid;

use super::binary::percent_encode;
use super::*;
use crate::TopicName;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn message(
    key: Option<&str>,
    attributes: BTreeMap<String, String>,
    data: &'static [u8],
    encoding: DataEncoding,
) -> Message {
    Message {
        id: Uuid::now_v7(),
        topic: TopicName::new("orders").unwrap(),
        partition: 0,
        offset: 3,
        key: key.map(str::to_owned),
        attributes,
        data: Bytes::from_static(data),
        encoding,
        publish_time: "2025-11-27T13:32:05.123Z".parse().unwrap(),
        deliver_at: None,
        callback: None,
    }
}

/// The minimal attributes of a message published as an event, plus `extra`.
fn event_attrs(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut attributes = attrs(&[
        ("ce-specversion", "1.0"),
        ("ce-id", "e-1"),
        ("ce-source", "/shop"),
        ("ce-type", "t"),
    ]);
    attributes.extend(attrs(extra));
    attributes
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What the server stores for `{"specversion":"1.0","id":"e-1","source":"/shop",
/// "type":"com.example.order.created","time":"2025-11-27T14:32:05.5+01:00","subject":"order/42",
/// "dataschema":"https://example.com/s","datacontenttype":"application/json","count":42,
/// "big":1.50,"flag":true,"label":"x","partitionkey":"customer-7","data":{"order" : 42}}`
/// sent with a `traceparent` header.
fn published_event() -> Message {
    message(
        Some("customer-7"),
        attrs(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "/shop"),
            ("ce-type", "com.example.order.created"),
            ("ce-time", "2025-11-27T14:32:05.5+01:00"),
            ("ce-subject", "order/42"),
            ("ce-dataschema", "https://example.com/s"),
            ("ce-datacontenttype", "application/json"),
            ("ce-count", "42"),
            ("ce.type.count", "number"),
            ("ce-big", "1.50"),
            ("ce.type.big", "number"),
            ("ce-flag", "true"),
            ("ce.type.flag", "boolean"),
            ("ce-label", "x"),
            ("traceparent", TRACEPARENT),
        ]),
        br#"{"order" : 42}"#,
        DataEncoding::Json,
    )
}

#[test]
fn a_published_event_renders_back_in_structured_mode() {
    let event = CloudEvent::from_message(&published_event());
    assert_eq!(event.id(), "e-1");
    assert_eq!(
        event.to_json(),
        concat!(
            r#"{"specversion":"1.0","id":"e-1","source":"/shop","type":"com.example.order.created","#,
            r#""datacontenttype":"application/json","dataschema":"https://example.com/s","#,
            r#""subject":"order/42","time":"2025-11-27T14:32:05.5+01:00","#,
            r#""big":1.50,"count":42,"flag":true,"label":"x","partitionkey":"customer-7","#,
            r#""traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","#,
            r#""data":{"order" : 42}}"#,
        )
    );
}

#[test]
fn a_published_event_renders_in_binary_mode() {
    let binary = CloudEvent::from_message(&published_event()).binary_parts();
    assert_eq!(
        binary.headers,
        headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "/shop"),
            ("ce-type", "com.example.order.created"),
            ("ce-dataschema", "https://example.com/s"),
            ("ce-subject", "order/42"),
            ("ce-time", "2025-11-27T14:32:05.5+01:00"),
            ("ce-big", "1.50"),
            ("ce-count", "42"),
            ("ce-flag", "true"),
            ("ce-label", "x"),
            ("ce-partitionkey", "customer-7"),
            ("ce-traceparent", TRACEPARENT),
        ])
    );
    assert_eq!(binary.content_type.as_deref(), Some("application/json"));
    assert_eq!(binary.body, Bytes::from_static(br#"{"order" : 42}"#));
}

#[test]
fn a_marker_that_does_not_fit_leaves_a_string() {
    let stored = message(
        None,
        event_attrs(&[
            ("ce-n", "forty"),
            ("ce.type.n", "number"),
            ("ce-b", "yes"),
            ("ce.type.b", "boolean"),
        ]),
        b"null",
        DataEncoding::Json,
    );
    let event: Value = serde_json::from_str(&CloudEvent::from_message(&stored).to_json()).unwrap();
    assert_eq!(event["n"], "forty");
    assert_eq!(event["b"], "yes");
}

fn plain_message() -> Message {
    message(
        Some("k"),
        attrs(&[
            ("kind", "created"),
            ("Upper", "dropped"),
            ("dead_letter.reason", "dropped"),
            ("content-type", "image/png"),
            ("id", "not the id"),
        ]),
        &[0, 1, 2],
        DataEncoding::Binary,
    )
}

#[test]
fn plain_messages_render_with_opal_attributes() {
    let message = plain_message();
    let id = message.id.to_string();
    let event = CloudEvent::from_message(&message);
    assert_eq!(event.id(), id);
    let json: Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(
        json,
        json!({"specversion": "1.0", "id": id, "source": "/topics/orders", "type": "opal.message",
               "datacontenttype": "image/png", "time": "2025-11-27T13:32:05.123Z",
               "kind": "created", "partitionkey": "k", "data_base64": "AAEC"})
    );

    let binary = event.binary_parts();
    assert_eq!(
        binary.headers,
        headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", &id),
            ("ce-source", "/topics/orders"),
            ("ce-type", "opal.message"),
            ("ce-time", "2025-11-27T13:32:05.123Z"),
            ("ce-kind", "created"),
            ("ce-partitionkey", "k"),
        ])
    );
    assert_eq!(binary.content_type.as_deref(), Some("image/png"));
    assert_eq!(binary.body, Bytes::from_static(&[0, 1, 2]));
}

#[test]
fn plain_json_messages_are_json_events() {
    let stored = message(None, BTreeMap::new(), br#"[1, 2]"#, DataEncoding::Json);
    let event = CloudEvent::from_message(&stored);
    let json: Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(json["datacontenttype"], "application/json");
    assert_eq!(json["data"], json!([1, 2]));
    let binary = event.binary_parts();
    assert_eq!(binary.content_type.as_deref(), Some("application/json"));
    assert_eq!(binary.body, Bytes::from_static(b"[1, 2]"));
}

#[test]
fn non_ascii_values_are_percent_encoded_in_headers_only() {
    let value = "Grüße, 100% \"sûr\"";
    let stored = message(
        None,
        event_attrs(&[("ce-greeting", value), ("ce-subject", "naïve")]),
        b"",
        DataEncoding::Binary,
    );
    let event = CloudEvent::from_message(&stored);
    let json: Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(json["greeting"], value);
    let binary = event.binary_parts();
    let header = |name: &str| {
        binary
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("ce-greeting"),
        Some("Gr%C3%BC%C3%9Fe,%20100%25%20%22s%C3%BBr%22")
    );
    assert_eq!(header("ce-subject"), Some("na%C3%AFve"));
    for (_, value) in &binary.headers {
        assert!(value.bytes().all(|b| (0x21..=0x7E).contains(&b)), "{value}");
    }
}

#[test]
fn percent_encoding_keeps_printable_ascii_but_space_quote_and_percent() {
    assert_eq!(percent_encode("/a-b_c.d~e?f=g&h"), "/a-b_c.d~e?f=g&h");
    assert_eq!(percent_encode("a b\"c%d"), "a%20b%22c%25d");
    assert_eq!(percent_encode("\t\u{7f}"), "%09%7F");
    assert_eq!(percent_encode("€"), "%E2%82%AC");
    assert_eq!(percent_encode(""), "");
}

#[test]
fn base64_data_goes_out_as_raw_bytes() {
    let with_type = message(
        None,
        event_attrs(&[("ce-datacontenttype", "application/octet-stream")]),
        &[0xff, 0x00, b'x'],
        DataEncoding::Binary,
    );
    let event = CloudEvent::from_message(&with_type);
    let json: Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(json["data_base64"], "/wB4");
    let binary = event.binary_parts();
    assert_eq!(
        binary.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(binary.body, Bytes::from_static(&[0xff, 0x00, b'x']));

    // JSON format §3.1.2: no media type is inferred for data_base64, even if it looks like JSON.
    let untyped = message(None, event_attrs(&[]), b"{}", DataEncoding::Binary);
    let binary = CloudEvent::from_message(&untyped).binary_parts();
    assert_eq!(binary.content_type, None);
    assert_eq!(binary.body, Bytes::from_static(b"{}"));
}

/// The stored `datacontenttype` and JSON payload, then the `Content-Type` and body they give.
type JsonCase = (
    Option<&'static str>,
    &'static [u8],
    Option<&'static str>,
    &'static [u8],
);

#[test]
fn json_data_in_binary_mode_follows_the_json_format() {
    let cases: [JsonCase; 5] = [
        (
            None,
            br#""just a string""#,
            Some("application/json"),
            br#""just a string""#,
        ),
        (None, b"1.5", Some("application/json"), b"1.5"),
        (
            Some("application/vnd.x+json; v=1"),
            br#""s""#,
            Some("application/vnd.x+json; v=1"),
            br#""s""#,
        ),
        (
            Some("application/xml"),
            br#""<much wow=\"xml\"/>""#,
            Some("application/xml"),
            br#"<much wow="xml"/>"#,
        ),
        (Some("text/plain"), b"42", Some("text/plain"), b"42"),
    ];
    for (declared, payload, content_type, body) in cases {
        let extra: Vec<(&str, &str)> = declared
            .map(|d| ("ce-datacontenttype", d))
            .into_iter()
            .collect();
        let stored = message(None, event_attrs(&extra), payload, DataEncoding::Json);
        let binary = CloudEvent::from_message(&stored).binary_parts();
        assert_eq!(binary.content_type.as_deref(), content_type, "{declared:?}");
        assert_eq!(binary.body, Bytes::from_static(body), "{declared:?}");
        assert!(
            binary
                .headers
                .iter()
                .all(|(n, _)| n != "ce-datacontenttype"),
            "{:?}",
            binary.headers
        );
    }
}

#[test]
fn an_event_without_data_has_no_data_in_either_mode() {
    let stored = message(
        None,
        event_attrs(&[(NO_DATA_MARKER, "true")]),
        b"",
        DataEncoding::Binary,
    );
    let event = CloudEvent::from_message(&stored);
    let json: Value = serde_json::from_str(&event.to_json()).unwrap();
    assert!(
        json.get("data").is_none() && json.get("data_base64").is_none(),
        "{json}"
    );
    let binary = event.binary_parts();
    assert_eq!(binary.content_type, None);
    assert!(binary.body.is_empty());
    assert_eq!(binary.headers.len(), 4, "{:?}", binary.headers);

    // Without the marker, an empty payload is empty data (`"data_base64": ""`).
    let empty = message(None, event_attrs(&[]), b"", DataEncoding::Binary);
    let json: Value = serde_json::from_str(&CloudEvent::from_message(&empty).to_json()).unwrap();
    assert_eq!(json["data_base64"], "");
}

#[test]
fn a_declared_media_type_without_data_is_kept() {
    // The binding maps datacontenttype to Content-Type only: dropping it would lose it.
    let stored = message(
        None,
        event_attrs(&[
            (NO_DATA_MARKER, "true"),
            ("ce-datacontenttype", "text/plain"),
        ]),
        b"",
        DataEncoding::Binary,
    );
    let binary = CloudEvent::from_message(&stored).binary_parts();
    assert_eq!(binary.content_type.as_deref(), Some("text/plain"));
    assert!(binary.body.is_empty());
}

#[test]
fn a_damaged_json_payload_still_goes_out_as_bytes() {
    let stored = message(None, BTreeMap::new(), b"{not json", DataEncoding::Json);
    let event = CloudEvent::from_message(&stored);
    let json: Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(json["data_base64"], "e25vdCBqc29u");
    assert_eq!(event.binary_parts().body, Bytes::from_static(b"{not json"));
}

#[test]
fn names_and_media_types() {
    for good in ["a", "traceparent", "x1", "abcdefghij0123456789"] {
        assert!(is_extension_name(good), "{good}");
    }
    for bad in ["", "A", "a-b", "a_b", "data", "id", "abcdefghij0123456789x"] {
        assert!(!is_extension_name(bad), "{bad}");
    }
    assert!(is_json_media_type("application/vnd.x+json; v=1"));
    assert!(is_json_media_type("Text/JSON"));
    assert!(!is_json_media_type("application/octet-stream"));
    assert!(!is_json_media_type("+json"));
    assert_eq!(essence(" Text/Plain ; charset=utf-8"), "text/plain");
    // Borrowed when nothing needs lowercasing.
    assert!(matches!(
        essence("application/json; charset=utf-8"),
        std::borrow::Cow::Borrowed("application/json")
    ));
    assert_eq!(essence("APPLICATION/JSON"), "application/json");
}
