//! JSON request bodies, with every way a body can be wrong answered as a problem.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::http::AppState;
use crate::problem::{FieldError, Problem, ProblemKind, push_segment};

/// A required JSON body: `application/json` (or `application/*+json`), UTF-8, of type `T`.
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

/// A JSON body that may be left out: an empty body (with any or no `Content-Type`) means
/// `T::default()`, so `curl -X PUT` with no data works for resources whose settings all have
/// defaults.
#[derive(Debug)]
pub(crate) struct OptionalJson<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Problem> {
        // Refuse a wrong media type before reading a body that would be thrown away.
        check_content_type(request.headers())?;
        let body = read_body(request, state).await?;
        parse(&body).map(Json)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Problem> {
        let headers = request.headers().clone();
        let body = read_body(request, state).await?;
        if body.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        check_content_type(&headers)?;
        parse(&body).map(OptionalJson)
    }
}

pub(crate) async fn read_body(request: Request, state: &AppState) -> Result<Bytes, Problem> {
    // The size limit itself is axum's `DefaultBodyLimit`, installed in `router()`.
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    ProblemKind::PayloadTooLarge,
                    format!(
                        "the request body is larger than the limit of {} bytes",
                        state.max_body_bytes
                    ),
                )
            } else {
                Problem::new(
                    ProblemKind::InvalidRequest,
                    format!(
                        "the request body could not be read: {}",
                        rejection.body_text()
                    ),
                )
            }
        })
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if content_type.is_some_and(is_json) {
        return Ok(());
    }
    let given = content_type.map_or_else(|| "none".to_owned(), |v| format!("`{v}`"));
    Err(Problem::new(
        ProblemKind::UnsupportedMediaType,
        format!("the request body must be JSON (`Content-Type: application/json`); got {given}"),
    ))
}

/// `application/json` or a structured `application/<x>+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    // RFC 8259 §8.1: JSON exchanged between systems is UTF-8; say so rather than report a
    // confusing syntax error somewhere inside a string.
    let text = std::str::from_utf8(body).map_err(|e| {
        Problem::new(
            ProblemKind::InvalidRequest,
            format!(
                "the request body is not valid UTF-8 (first bad byte at offset {}); JSON must be UTF-8",
                e.valid_up_to()
            ),
        )
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let pointer = pointer_of(err.path());
        body_problem(err.into_inner(), Some(pointer))
    })?;
    deserializer.end().map_err(|err| body_problem(err, None))?;
    Ok(value)
}

fn body_problem(err: serde_json::Error, pointer: Option<String>) -> Problem {
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => Problem::new(
            ProblemKind::InvalidRequest,
            format!("the request body is not valid JSON: {err}"),
        ),
        // The JSON is well formed but does not fit the expected shape: serde's message names the
        // field and what was expected ("unknown field `foo`, expected one of ...").
        Category::Data => match pointer {
            Some(pointer) => Problem::invalid(vec![FieldError::at(pointer, err.to_string())]),
            None => Problem::new(ProblemKind::InvalidRequest, err.to_string()),
        },
    }
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => push_segment(&mut pointer, &index.to_string()),
            Segment::Map { key } => push_segment(&mut pointer, key),
            Segment::Enum { variant } => push_segment(&mut pointer, variant),
            Segment::Unknown => push_segment(&mut pointer, "?"),
        }
    }
    pointer
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::value::RawValue;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        data: Box<RawValue>,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
    }

    fn problem_json(problem: Problem) -> serde_json::Value {
        use axum::response::IntoResponse;
        let body = problem.into_response().into_body();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(axum::body::to_bytes(body, usize::MAX))
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn raw_values_keep_their_bytes_through_the_path_tracker() {
        let body = br#"{"items":[{"data": {"b" : [1, 2.50]} ,"attributes":{"k":"v"}}]}"#;
        let outer: Outer = parse(body).unwrap();
        assert_eq!(outer.items[0].data.get(), r#"{"b" : [1, 2.50]}"#);
        assert_eq!(outer.items[0].attributes["k"], "v");
    }

    #[test]
    fn unknown_fields_are_named_with_their_pointer() {
        let err = parse::<Outer>(br#"{"items":[{"data":1},{"data":2,"extra":3}]}"#).unwrap_err();
        let body = problem_json(err);
        assert_eq!(body["errors"][0]["pointer"], "/items/1/extra", "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("unknown field `extra`"), "{detail}");
    }

    #[test]
    fn wrong_types_point_at_the_value() {
        let err = parse::<Outer>(br#"{"items":[{"data":1,"attributes":{"a/b":7}}]}"#).unwrap_err();
        let body = problem_json(err);
        assert_eq!(
            body["errors"][0]["pointer"], "/items/0/attributes/a~1b",
            "{body}"
        );
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_invalid_json() {
        for bad in [&br#"{"items": ["#[..], br#"{"items": []} x"#, b""] {
            let body = problem_json(parse::<Outer>(bad).unwrap_err());
            assert_eq!(body["status"], 400);
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.starts_with("the request body is not valid JSON"),
                "{detail}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_reported_as_such() {
        let body = problem_json(parse::<Outer>(b"{\"items\": [\"\xff\"]}").unwrap_err());
        assert!(body["detail"].as_str().unwrap().contains("UTF-8"), "{body}");
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        assert!(is_json("application/cloudevents+json"));
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
