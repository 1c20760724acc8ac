//! JSON request bodies, with every way a body can be wrong answered as a problem.

use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use http_body_util::BodyExt as _;
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
    // The limit counts the bytes the handler reads, after any decompression (the body guard
    // counts those on the wire). `Limited` over the body as it is, rather than axum's `Bytes`
    // extractor: that one boxes the body once more for the same limit, on every publish.
    let body = http_body_util::Limited::new(request.into_body(), state.max_body_bytes);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(Problem::new(
            ProblemKind::PayloadTooLarge,
            format!(
                "the request body is larger than the limit of {} bytes",
                state.max_body_bytes
            ),
        )),
        Err(err) => Err(Problem::new(
            ProblemKind::InvalidRequest,
            format!("the request body could not be read: {err}"),
        )),
    }
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
    is_json_essence(&opal_core::cloudevent::essence(content_type))
}

/// [`is_json`] for a media type already without parameters and lowercased.
pub(crate) fn is_json_essence(essence: &str) -> bool {
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
    // First without tracking the path, which costs an allocation per member on every request;
    // a body that fails is parsed again with it, to point at the offending member.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    if let Ok(value) = T::deserialize(objects_only::Strict(&mut deserializer))
        && deserializer.end().is_ok()
    {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let strict = objects_only::Strict(&mut deserializer);
    let value = serde_path_to_error::deserialize(strict).map_err(|err| {
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

/// A deserializer that reads structs from JSON objects only. serde's derive also reads a struct
/// from an array of its members in order (`[1, null]` for `{"partitions": 1, "retention":
/// null}`), which no client means and the OpenAPI document does not allow; this wrapper asks the
/// inner deserializer for a map wherever a struct is wanted, at every depth, and forwards
/// everything else unchanged (so `RawValue` payloads keep their bytes).
mod objects_only {
    use std::fmt;

    use serde::de::{
        DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
    };

    /// The wrapped deserializer.
    pub(super) struct Strict<D>(pub(super) D);

    /// A visitor whose nested deserializers are wrapped too.
    struct Wrap<V>(V);

    struct Seed<S>(S);

    macro_rules! forward {
        ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
            $(
                fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                    self.0.$method($($arg,)* Wrap(visitor))
                }
            )*
        };
    }

    impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
        type Error = D::Error;

        forward!(
            deserialize_any(),
            deserialize_bool(),
            deserialize_i8(),
            deserialize_i16(),
            deserialize_i32(),
            deserialize_i64(),
            deserialize_i128(),
            deserialize_u8(),
            deserialize_u16(),
            deserialize_u32(),
            deserialize_u64(),
            deserialize_u128(),
            deserialize_f32(),
            deserialize_f64(),
            deserialize_char(),
            deserialize_str(),
            deserialize_string(),
            deserialize_bytes(),
            deserialize_byte_buf(),
            deserialize_option(),
            deserialize_unit(),
            deserialize_unit_struct(name: &'static str),
            deserialize_newtype_struct(name: &'static str),
            deserialize_seq(),
            deserialize_tuple(len: usize),
            deserialize_tuple_struct(name: &'static str, len: usize),
            deserialize_map(),
            deserialize_enum(name: &'static str, variants: &'static [&'static str]),
            deserialize_identifier(),
            deserialize_ignored_any(),
        );

        /// The one change: a struct is read as a map, never from an array.
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_map(Wrap(visitor))
        }

        fn is_human_readable(&self) -> bool {
            self.0.is_human_readable()
        }
    }

    impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
        type Value = V::Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<V::Value, E> {
            self.0.visit_bool(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<V::Value, E> {
            self.0.visit_i64(v)
        }
        fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<V::Value, E> {
            self.0.visit_i128(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<V::Value, E> {
            self.0.visit_u64(v)
        }
        fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<V::Value, E> {
            self.0.visit_u128(v)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<V::Value, E> {
            self.0.visit_f64(v)
        }
        fn visit_char<E: serde::de::Error>(self, v: char) -> Result<V::Value, E> {
            self.0.visit_char(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<V::Value, E> {
            self.0.visit_str(v)
        }
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<V::Value, E> {
            self.0.visit_borrowed_str(v)
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<V::Value, E> {
            self.0.visit_string(v)
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
            self.0.visit_bytes(v)
        }
        fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
            self.0.visit_borrowed_bytes(v)
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<V::Value, E> {
            self.0.visit_byte_buf(v)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
            self.0.visit_none()
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
            self.0.visit_some(Strict(d))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
            self.0.visit_unit()
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
            self.0.visit_newtype_struct(Strict(d))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
            self.0.visit_seq(Wrap(seq))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
            self.0.visit_map(Wrap(map))
        }
        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
            self.0.visit_enum(Wrap(data))
        }
    }

    impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<A> {
        type Error = A::Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, A::Error> {
            self.0.next_element_seed(Seed(seed))
        }
        fn size_hint(&self) -> Option<usize> {
            self.0.size_hint()
        }
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<A> {
        type Error = A::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, A::Error> {
            self.0.next_key_seed(Seed(seed))
        }
        fn next_value_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            self.0.next_value_seed(Seed(seed))
        }
        fn size_hint(&self) -> Option<usize> {
            self.0.size_hint()
        }
    }

    impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<A> {
        type Error = A::Error;
        type Variant = Wrap<A::Variant>;

        fn variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<(T::Value, Self::Variant), A::Error> {
            self.0
                .variant_seed(Seed(seed))
                .map(|(value, variant)| (value, Wrap(variant)))
        }
    }

    impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<A> {
        type Error = A::Error;

        fn unit_variant(self) -> Result<(), A::Error> {
            self.0.unit_variant()
        }
        fn newtype_variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<T::Value, A::Error> {
            self.0.newtype_variant_seed(Seed(seed))
        }
        fn tuple_variant<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, A::Error> {
            self.0.tuple_variant(len, Wrap(visitor))
        }
        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, A::Error> {
            self.0.struct_variant(fields, Wrap(visitor))
        }
    }

    impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
        type Value = S::Value;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
            self.0.deserialize(Strict(d))
        }
    }
}

/// Whole numbers as JSON (and the JSON Schema `integer` of the OpenAPI document) means them:
/// `5`, `5.0` and `5e0` are the same number, but serde's integer types accept only the first.
/// Request members that are counts, sizes or milliseconds deserialise through these
/// (`#[serde(default, deserialize_with = "crate::json::whole::optional")]`).
pub(crate) mod whole {
    use std::fmt::Display;

    use serde::de::{Error, Unexpected};
    use serde::{Deserialize, Deserializer};
    use serde_json::Number;

    /// The largest `f64` below 2^64: every whole `f64` up to it is a `u64`.
    const MAX_WHOLE_F64: f64 = 18_446_744_073_709_549_568.0;

    fn convert<T, E>(number: &Number) -> Result<T, E>
    where
        T: TryFrom<u64>,
        T::Error: Display,
        E: Error,
    {
        const EXPECTED: &str = "a whole number that is not negative";
        let value = if let Some(value) = number.as_u64() {
            value
        } else if let Some(value) = number.as_i64() {
            return Err(E::invalid_value(Unexpected::Signed(value), &EXPECTED));
        } else {
            let value = number.as_f64().unwrap_or(f64::NAN);
            if !(value.fract() == 0.0 && (0.0..=MAX_WHOLE_F64).contains(&value)) {
                return Err(E::invalid_value(Unexpected::Float(value), &EXPECTED));
            }
            // Exact: the value is whole and in range.
            value as u64
        };
        T::try_from(value)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &"a smaller number"))
    }

    /// A required whole number.
    pub(crate) fn required<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
        T::Error: Display,
    {
        convert(&Number::deserialize(deserializer)?)
    }

    /// An optional whole number: `null` is `None` (use with `#[serde(default)]`).
    pub(crate) fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
        T::Error: Display,
    {
        Option::<Number>::deserialize(deserializer)?
            .map(|number| convert(&number))
            .transpose()
    }

    /// A member whose `null` means "clear it" (`Some(None)`), left out `None` (use with
    /// `#[serde(default)]`).
    pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
        T::Error: Display,
    {
        optional(deserializer).map(Some)
    }
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
    fn structs_are_read_from_objects_only() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Nested {
            #[serde(default)]
            inner: Option<Inner>,
        }
        for bad in [
            "[null]",
            "[]",
            r#"{"inner": [{"data": 1}]}"#,
            r#"{"inner": [1]}"#,
        ] {
            let body = problem_json(parse::<Nested>(bad.as_bytes()).unwrap_err());
            assert_eq!(body["status"], 400, "{bad}");
        }
        let nested: Nested = parse(br#"{"inner": {"data": 1}}"#).unwrap();
        assert_eq!(
            nested.inner.map(|i| i.data.get().to_owned()).as_deref(),
            Some("1")
        );
        let outer: Outer = parse(br#"{"items": [{"data": [1, {"x": []}]}]}"#).unwrap();
        assert_eq!(outer.items[0].data.get(), r#"[1, {"x": []}]"#);
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        #[derive(Debug, Deserialize)]
        struct Counts {
            #[serde(deserialize_with = "whole::required")]
            n: u32,
            #[serde(default, deserialize_with = "whole::optional")]
            m: Option<u64>,
        }
        for (text, n, m) in [
            (r#"{"n": 5}"#, 5, None),
            (r#"{"n": 5.0, "m": 1e3}"#, 5, Some(1000)),
            (r#"{"n": 0, "m": null}"#, 0, None),
            (
                r#"{"n": 4294967295, "m": 18446744073709551615}"#,
                u32::MAX,
                Some(u64::MAX),
            ),
        ] {
            let counts: Counts = parse(text.as_bytes()).unwrap();
            assert_eq!((counts.n, counts.m), (n, m), "{text}");
        }
        for bad in [
            r#"{"n": 5.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": "5"}"#,
            r#"{"n": 1, "m": 1e20}"#,
        ] {
            let body = problem_json(parse::<Counts>(bad.as_bytes()).unwrap_err());
            assert_eq!(body["status"], 400, "{bad}");
            assert!(body["errors"][0]["pointer"].is_string(), "{bad}: {body}");
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
