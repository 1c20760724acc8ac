//! What every publish form answers, written without serde's machinery.
//!
//! Every publish answers with this document, so its encoding is on the hot path: through
//! `serde_json` and `axum::Json` a one-message answer took 2.8k of the 76.4k instructions of a
//! single-message publish (1.1k now; docs/benchmarks.md), most of them in the generic map
//! serializer and in scanning the id's text for characters to escape, which a UUID never has.
//! The derived `Serialize` stays: it describes the document in OpenAPI, encodes the rare answers
//! with a `deliver_at`, and a test checks that both encodings write the same bytes.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Response};
use axum::response::IntoResponse;
use jiff::Timestamp;
use opal_core::PublishResult;
use serde::Serialize;
use uuid::Uuid;

/// What every publish form answers: one result per message, in request order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct PublishResponse {
    pub(super) results: Vec<Published>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Published {
    id: Uuid,
    partition: u32,
    /// `null` while a delayed message waits for its time.
    offset: Option<u64>,
    /// Always present: `true` when the dedup id was seen inside the window and nothing was stored.
    duplicate: bool,
    /// Only for a delayed message (not for a duplicate: the stored message's time is not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime)]
    deliver_at: Option<Timestamp>,
}

impl Published {
    pub(super) fn new(r: PublishResult, deliver_at: Option<Timestamp>) -> Self {
        Published {
            id: r.id,
            partition: r.partition,
            offset: r.offset,
            duplicate: r.duplicate,
            deliver_at: if r.duplicate { None } else { deliver_at },
        }
    }
}

/// Bytes of one result without `deliver_at`, at most: `{"id":"<36>","partition":<10>,
/// "offset":<20>,"duplicate":false}` and a comma.
const MAX_RESULT_LEN: usize = 117;

impl PublishResponse {
    /// The document as `serde_json::to_vec` writes it (members in declaration order, no spaces).
    fn to_json(&self) -> Vec<u8> {
        if self.results.iter().any(|r| r.deliver_at.is_some()) {
            // A timestamp's text is jiff's to write; delayed publishes are not the hot path.
            return serde_json::to_vec(self).expect("a publish answer always serializes");
        }
        let mut out = Vec::with_capacity(14 + self.results.len() * MAX_RESULT_LEN);
        out.extend_from_slice(br#"{"results":["#);
        let mut number = itoa::Buffer::new();
        let mut id = Uuid::encode_buffer();
        for (i, result) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"id":""#);
            // Hex digits and hyphens: nothing to escape.
            out.extend_from_slice(result.id.hyphenated().encode_lower(&mut id).as_bytes());
            out.extend_from_slice(br#"","partition":"#);
            out.extend_from_slice(number.format(result.partition).as_bytes());
            out.extend_from_slice(br#","offset":"#);
            match result.offset {
                Some(offset) => out.extend_from_slice(number.format(offset).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(if result.duplicate {
                br#","duplicate":true}"#
            } else {
                br#","duplicate":false}"#
            });
        }
        out.extend_from_slice(b"]}");
        out
    }
}

impl IntoResponse for PublishResponse {
    fn into_response(self) -> axum::response::Response {
        let mut response = Response::new(Body::from(self.to_json()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: u128, partition: u32, offset: Option<u64>, duplicate: bool) -> Published {
        Published {
            id: Uuid::from_u128(id),
            partition,
            offset,
            duplicate,
            deliver_at: None,
        }
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let cases = vec![
            vec![],
            vec![result(0, 0, Some(0), false)],
            vec![result(u128::MAX, u32::MAX, Some(u64::MAX), true)],
            vec![
                result(
                    0x0192_3f4e_5a6b_7c8d_9eaf_b0c1_d2e3_f405,
                    3,
                    Some(12_345),
                    false,
                ),
                result(0x0192_3f4e_5a6b_7c8d_9eaf_b0c1_d2e3_f406, 0, None, false),
                result(0x0192_3f4e_5a6b_7c8d_9eaf_b0c1_d2e3_f407, 17, Some(9), true),
            ],
        ];
        for results in cases {
            let response = PublishResponse { results };
            let expected = serde_json::to_vec(&response).unwrap();
            assert_eq!(
                String::from_utf8(response.to_json()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn a_delayed_result_is_written_by_serde() {
        let at: Timestamp = "2026-11-28T10:00:00.5Z".parse().unwrap();
        let mut delayed = result(7, 1, None, false);
        delayed.deliver_at = Some(at);
        let response = PublishResponse {
            results: vec![result(6, 1, Some(4), false), delayed],
        };
        let text = String::from_utf8(response.to_json()).unwrap();
        assert_eq!(text, serde_json::to_string(&response).unwrap());
        assert!(
            text.contains(r#""deliver_at":"2026-11-28T10:00:00.5Z""#),
            "{text}"
        );
    }

    #[test]
    fn answers_as_json() {
        let response = PublishResponse {
            results: vec![result(1, 0, Some(1), false)],
        }
        .into_response();
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }
}
