//! RFC 9457 problem details: the one place where errors become HTTP error responses.

use std::any::Any;

use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opal_core::BrokerError;
use serde::Serialize;

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying while the server drains or storage is down: long
/// enough for a restart, short enough that a long-poll consumer does not stall.
const RETRY_AFTER_SECS: &str = "5";

/// The error classes clients can branch on. Each has a stable `type` URN: clients may match on it,
/// so a URN is never renamed once published (new classes may be added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProblemKind {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PreconditionFailed,
    RequestTimeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    QuotaExceeded,
    Unavailable,
    Internal,
}

impl ProblemKind {
    /// Every class, for the tests and for the `type` enum of the OpenAPI `Problem` schema.
    pub(crate) const ALL: [ProblemKind; 14] = [
        ProblemKind::InvalidRequest,
        ProblemKind::Unauthorized,
        ProblemKind::Forbidden,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::Conflict,
        ProblemKind::PreconditionFailed,
        ProblemKind::RequestTimeout,
        ProblemKind::PayloadTooLarge,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::RateLimited,
        ProblemKind::QuotaExceeded,
        ProblemKind::Unavailable,
        ProblemKind::Internal,
    ];

    pub(crate) fn status(self) -> StatusCode {
        match self {
            ProblemKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ProblemKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::Conflict => StatusCode::CONFLICT,
            ProblemKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ProblemKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProblemKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn type_uri(self) -> &'static str {
        match self {
            ProblemKind::InvalidRequest => "urn:opal:problem:invalid-request",
            ProblemKind::Unauthorized => "urn:opal:problem:unauthorized",
            ProblemKind::Forbidden => "urn:opal:problem:forbidden",
            ProblemKind::NotFound => "urn:opal:problem:not-found",
            ProblemKind::MethodNotAllowed => "urn:opal:problem:method-not-allowed",
            ProblemKind::Conflict => "urn:opal:problem:conflict",
            ProblemKind::PreconditionFailed => "urn:opal:problem:precondition-failed",
            ProblemKind::RequestTimeout => "urn:opal:problem:request-timeout",
            ProblemKind::PayloadTooLarge => "urn:opal:problem:payload-too-large",
            ProblemKind::UnsupportedMediaType => "urn:opal:problem:unsupported-media-type",
            ProblemKind::RateLimited => "urn:opal:problem:rate-limited",
            ProblemKind::QuotaExceeded => "urn:opal:problem:quota-exceeded",
            ProblemKind::Unavailable => "urn:opal:problem:unavailable",
            ProblemKind::Internal => "urn:opal:problem:internal",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidRequest => "The request is invalid",
            ProblemKind::Unauthorized => "Authentication is required",
            ProblemKind::Forbidden => "Not allowed",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::Conflict => "Conflict with the current state",
            ProblemKind::PreconditionFailed => "The resource changed",
            ProblemKind::RequestTimeout => "Request timeout",
            ProblemKind::PayloadTooLarge => "Request body too large",
            ProblemKind::UnsupportedMediaType => "Unsupported media type",
            ProblemKind::RateLimited => "Too many requests",
            ProblemKind::QuotaExceeded => "Quota exceeded",
            ProblemKind::Unavailable => "Service unavailable",
            ProblemKind::Internal => "Internal server error",
        }
    }

    /// The class for a bare status code, for error responses that were not built as problems.
    fn from_status(status: StatusCode) -> ProblemKind {
        match status {
            StatusCode::UNAUTHORIZED => ProblemKind::Unauthorized,
            StatusCode::FORBIDDEN => ProblemKind::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => ProblemKind::RateLimited,
            StatusCode::NOT_FOUND => ProblemKind::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
            StatusCode::CONFLICT => ProblemKind::Conflict,
            StatusCode::REQUEST_TIMEOUT => ProblemKind::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
            StatusCode::SERVICE_UNAVAILABLE => ProblemKind::Unavailable,
            s if s.is_client_error() => ProblemKind::InvalidRequest,
            _ => ProblemKind::Internal,
        }
    }
}

/// One invalid part of a request: a body member (by JSON Pointer), a path parameter (by name) or
/// a request header (by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct FieldError {
    /// A JSON Pointer (RFC 6901) into the request body; `""` is the whole body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pointer: Option<String>,
    /// A path or query parameter, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parameter: Option<String>,
    /// A request header, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) header: Option<String>,
    /// What is wrong, for humans.
    pub(crate) detail: String,
}

impl FieldError {
    pub(crate) fn at(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: Some(pointer.into()),
            parameter: None,
            header: None,
            detail: detail.into(),
        }
    }

    pub(crate) fn parameter(name: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: None,
            parameter: Some(name.into()),
            header: None,
            detail: detail.into(),
        }
    }

    pub(crate) fn header(name: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: None,
            parameter: None,
            header: Some(name.into()),
            detail: detail.into(),
        }
    }

    /// The error of a `BrokerError::Invalid`, whose field names a member of the request body.
    pub(crate) fn from_field(field: &str, reason: impl Into<String>) -> Self {
        FieldError::at(field_to_pointer(field), reason)
    }

    fn describe(&self) -> String {
        match (&self.pointer, &self.parameter, &self.header) {
            (_, Some(name), _) => format!("path parameter `{name}`: {}", self.detail),
            (_, _, Some(name)) => format!("header `{name}`: {}", self.detail),
            (Some(p), _, _) if !p.is_empty() => format!("{p}: {}", self.detail),
            _ => self.detail.clone(),
        }
    }
}

/// An error response on its way out. Handlers return `Result<_, Problem>`.
#[derive(Debug)]
pub(crate) struct Problem {
    kind: ProblemKind,
    /// The kind's status, except for bare error responses rewritten by [`ensure_problem`].
    status: StatusCode,
    detail: String,
    errors: Vec<FieldError>,
    /// Kept small (not a `HeaderMap`): `Problem` is the error type of many `Result`s.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            status: kind.status(),
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// A 400 listing every invalid field; the detail repeats the first so a human reading only
    /// `detail` still learns what to fix.
    pub(crate) fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [] => "the request is invalid".to_owned(),
            [one] => one.describe(),
            [first, rest @ ..] => {
                format!(
                    "{} (and {} more, see `errors`)",
                    first.describe(),
                    rest.len()
                )
            }
        };
        Problem {
            errors,
            ..Problem::new(ProblemKind::InvalidRequest, detail)
        }
    }

    /// A name in the URL path that is not a valid resource name.
    pub(crate) fn invalid_parameter(parameter: &str, err: BrokerError) -> Self {
        let reason = match err {
            BrokerError::Invalid { reason, .. } => reason,
            other => other.to_string(),
        };
        Problem::invalid(vec![FieldError::parameter(parameter, reason)])
    }

    pub(crate) fn with_error(mut self, error: FieldError) -> Self {
        self.errors.push(error);
        self
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// `Retry-After` in whole seconds (at least 1).
    pub(crate) fn with_retry_after(mut self, secs: u64) -> Self {
        self.headers
            .push((RETRY_AFTER, HeaderValue::from(secs.max(1))));
        self
    }

    pub(crate) fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::Unavailable, detail).with_header(RETRY_AFTER, RETRY_AFTER_SECS)
    }

    pub(crate) fn kind(&self) -> ProblemKind {
        self.kind
    }

    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }
}

impl From<BrokerError> for Problem {
    fn from(err: BrokerError) -> Self {
        match err {
            BrokerError::Invalid {
                ref field,
                ref reason,
            } => Problem::new(ProblemKind::InvalidRequest, err.to_string())
                .with_error(FieldError::from_field(field, reason.clone())),
            BrokerError::TopicNotFound(_)
            | BrokerError::SubscriptionNotFound(_)
            | BrokerError::AppNotFound(_) => Problem::new(ProblemKind::NotFound, err.to_string()),
            BrokerError::Conflict { .. } | BrokerError::InUse { .. } => {
                Problem::new(ProblemKind::Conflict, err.to_string())
            }
            BrokerError::RevisionMismatch { .. } => {
                Problem::new(ProblemKind::PreconditionFailed, err.to_string())
            }
            BrokerError::ShuttingDown => Problem::unavailable(err.to_string()),
            BrokerError::Storage(ref cause) => {
                // The cause is for operators, not clients: it may name files and paths.
                tracing::error!(error = %cause, "storage failure");
                Problem::new(
                    ProblemKind::Unavailable,
                    "the broker's storage failed; the request may not have been applied",
                )
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_uri: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let body = Body {
            type_uri: self.kind.type_uri(),
            title: self.kind.title(),
            status: status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        };
        // Serialising strings and numbers cannot fail; the fallback only keeps this panic-free.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, [(CONTENT_TYPE, PROBLEM_JSON)], bytes).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Renders a JSON Pointer (RFC 6901) from a broker field path such as `messages[3].data`.
///
/// The broker writes attribute errors as `attributes.<name>`, and attribute names may themselves
/// contain `.`: everything after a map-valued field is therefore taken as one key.
pub(crate) fn field_to_pointer(field: &str) -> String {
    const MAP_FIELDS: [&str; 1] = ["attributes"];
    let mut pointer = String::new();
    let mut rest = field;
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let (name, tail) = rest.split_at(end);
        if !name.is_empty() {
            push_segment(&mut pointer, name);
        }
        rest = tail;
        if MAP_FIELDS.contains(&name)
            && let Some(key) = rest.strip_prefix('.')
        {
            push_segment(&mut pointer, key);
            break;
        }
        if let Some(index) = rest.strip_prefix('[') {
            let close = index.find(']').unwrap_or(index.len());
            push_segment(&mut pointer, &index[..close]);
            rest = index.get(close + 1..).unwrap_or("");
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    pointer
}

/// Appends one reference token, escaped as RFC 6901 requires (`~` then `/`).
pub(crate) fn push_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
}

/// The 404 for a path no route matches.
pub(crate) async fn no_route(request: Request) -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        format!(
            "no resource at {} {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Turns any error response that was not built as a problem (axum's 405, for one) into one, so
/// that clients can rely on problem+json for every error. Headers such as `Allow` are kept.
pub(crate) fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_TYPE);
    parts.headers.remove(CONTENT_LENGTH);
    let kind = ProblemKind::from_status(status);
    let detail = status.canonical_reason().unwrap_or("error").to_owned();
    let mut problem = Problem {
        status,
        ..Problem::new(kind, detail)
    }
    .into_response();
    problem.headers_mut().extend(parts.headers);
    problem
}

/// The 500 for a handler that panicked (tower-http's `CatchPanicLayer`).
pub(crate) fn from_panic(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "request handler panicked");
    Problem::new(
        ProblemKind::Internal,
        "the server failed to handle the request",
    )
    .into_response()
}

/// The OpenAPI schema of every error body (RFC 9457 problem details), as [`Problem`] serialises
/// it: written by hand so that `type` lists the stable URNs and `status` the error range.
impl utoipa::PartialSchema for Problem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaFormat, Type};
        let types: Vec<&str> = ProblemKind::ALL.iter().map(|k| k.type_uri()).collect();
        ObjectBuilder::new()
            .description(Some(
                "RFC 9457 problem details, sent as `application/problem+json` for every error. \
                 Branch on `type`; `title` and `detail` are for humans and may change.",
            ))
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::Custom("uri".to_owned())))
                    .enum_values(Some(types))
                    .description(Some("The error class: a stable URN, never renamed.")),
            )
            .required("type")
            .property(
                "title",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("A short summary of the error class.")),
            )
            .required("title")
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(400))
                    .maximum(Some(599))
                    .description(Some("The HTTP status code of the response.")),
            )
            .required("status")
            .property(
                "detail",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("What went wrong with this request.")),
            )
            .required("detail")
            .property(
                "errors",
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("FieldError"))
                    .min_items(Some(1))
                    .description(Some(
                        "Validation problems only: every invalid part of the request.",
                    )),
            )
            .into()
    }
}

impl utoipa::ToSchema for Problem {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "FieldError".to_owned(),
            <FieldError as utoipa::PartialSchema>::schema(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_follow_rfc_6901() {
        let cases = [
            ("messages[3].data", "/messages/3/data"),
            ("messages[0].key", "/messages/0/key"),
            ("messages[12].attributes.a.b", "/messages/12/attributes/a.b"),
            (
                "messages[1].attributes.x/y~z",
                "/messages/1/attributes/x~1y~0z",
            ),
            ("messages[2].attributes.a[0]", "/messages/2/attributes/a[0]"),
            ("partitions", "/partitions"),
            ("ack_deadline_ms", "/ack_deadline_ms"),
            ("a.b.c", "/a/b/c"),
            ("list[4]", "/list/4"),
            ("", ""),
            ("broken[", "/broken/"),
        ];
        for (field, pointer) in cases {
            assert_eq!(field_to_pointer(field), pointer, "for {field:?}");
        }
    }

    async fn render(problem: Problem) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = problem.into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn an_invalid_field_renders_as_a_400_problem_with_a_pointer() {
        let err = BrokerError::invalid("messages[3].data", "payload is too big");
        let (status, headers, body) = render(Problem::from(err)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:opal:problem:invalid-request",
                "title": "The request is invalid",
                "status": 400,
                "detail": "invalid messages[3].data: payload is too big",
                "errors": [{"pointer": "/messages/3/data", "detail": "payload is too big"}],
            })
        );
    }

    #[tokio::test]
    async fn shutting_down_is_a_503_with_retry_after_and_no_errors_member() {
        let (status, headers, body) = render(Problem::from(BrokerError::ShuttingDown)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[RETRY_AFTER], RETRY_AFTER_SECS);
        assert_eq!(body["type"], "urn:opal:problem:unavailable");
        assert_eq!(body["status"], 503);
        assert!(body.get("errors").is_none(), "{body}");
    }

    #[tokio::test]
    async fn storage_failures_do_not_leak_their_cause() {
        let err = BrokerError::Storage("/var/lib/opal/segment-7: EIO".into());
        let (status, _, body) = render(Problem::from(err)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !body["detail"].as_str().unwrap().contains("/var/lib"),
            "{body}"
        );
    }

    #[test]
    fn broker_errors_map_to_their_classes() {
        let cases = [
            (
                BrokerError::TopicNotFound("t".into()),
                ProblemKind::NotFound,
            ),
            (
                BrokerError::SubscriptionNotFound("s".into()),
                ProblemKind::NotFound,
            ),
            (
                BrokerError::Conflict {
                    kind: "topic",
                    name: "t".into(),
                },
                ProblemKind::Conflict,
            ),
            (
                BrokerError::invalid("partitions", "x"),
                ProblemKind::InvalidRequest,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(Problem::from(err).kind(), kind);
        }
    }

    #[tokio::test]
    async fn several_field_errors_are_all_listed_and_the_first_is_in_the_detail() {
        let problem = Problem::invalid(vec![
            FieldError::at("/messages/0/key", "too long"),
            FieldError::at("/messages/2", "no data"),
        ]);
        let (_, _, body) = render(problem).await;
        assert_eq!(body["errors"].as_array().unwrap().len(), 2);
        assert_eq!(
            body["detail"],
            "/messages/0/key: too long (and 1 more, see `errors`)"
        );
    }

    #[test]
    fn every_problem_type_is_documented_with_its_status() {
        let docs = include_str!("../../../docs/http-api.md");
        for kind in ProblemKind::ALL {
            let row = format!("| `{}` | {} |", kind.type_uri(), kind.status().as_u16());
            assert!(
                docs.contains(&row),
                "docs/http-api.md lacks the row starting {row:?}"
            );
        }
    }
}
