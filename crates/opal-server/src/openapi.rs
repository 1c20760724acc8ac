//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! Everything comes from the code: each handler carries its `#[utoipa::path]` (path, method,
//! `operationId`, parameters, bodies, responses) and each request and response type its schema,
//! beside it in its resource file. This module only assembles them, adds what every `/v1`
//! operation shares (the `bearerAuth` scheme, `401` and `503`), and holds the parameters, problem
//! responses and patterns several resources use. Tests below keep the router and the document in
//! step: every route has an operation and every operation a route.

use std::sync::OnceLock;

use serde_json::Value;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Required};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use crate::openapi_links::Links;
use crate::problem::{PROBLEM_JSON, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Opal HTTP API",
        description = "Opal's HTTP API, version 1: topics, publishing (JSON, CloudEvents, raw \
                       bytes), subscriptions and consuming (pull, SSE, WebSocket). Every `/v1` \
                       operation needs `Authorization: Bearer <key>`; every error is \
                       `application/problem+json` (RFC 9457). Limits shown are the defaults. \
                       See docs/http-api.md for the full guide.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        crate::http::health::live,
        crate::http::health::healthz,
        crate::http::health::ready,
        crate::http::spec::openapi_json,
        crate::http::topics::list_topics,
        crate::http::topics::create_topic,
        crate::http::topics::get_topic,
        crate::http::topics::update_topic,
        crate::http::topics::delete_topic,
        crate::http::publish_formats::publish,
        crate::http::browse::browse,
        crate::http::subscription_settings::list_subscriptions,
        crate::http::subscriptions::create_subscription,
        crate::http::subscriptions::get_subscription,
        crate::http::subscription_settings::update_subscription,
        crate::http::subscription_settings::delete_subscription,
        crate::http::subscriptions::pull,
        crate::http::subscriptions::ack,
        crate::http::subscriptions::nack,
        crate::http::subscriptions::extend,
        crate::http::subscriptions::seek,
        crate::http::subscriptions::redrive,
        crate::http::push::read_secret,
        crate::http::push::rotate_secret,
        crate::http::push::list_attempts,
        crate::http::tasks::read_task,
        crate::http::resend::resend,
        crate::http::events::events,
        crate::http::ws::open,
        crate::http::grants::create_grant,
        crate::http::grants::list_grants,
        crate::http::grants::delete_grant,
        crate::http::apps::create_app,
        crate::http::apps::list_apps,
        crate::http::apps::get_app,
        crate::http::apps::update_app,
        crate::http::apps::delete_app,
        crate::http::keys::create_key,
        crate::http::keys::list_keys,
        crate::http::keys::get_key,
        crate::http::keys::revoke_key,
        crate::http::keys::rotate_key,
        crate::http::audit::read_audit,
    ),
    components(
        schemas(Problem),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PreconditionFailed,
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            Unavailable
        )
    ),
    modifiers(&V1Conventions, &Links),
    tags(
        (name = "health", description = "Probes; unauthenticated."),
        (name = "meta", description = "This document; unauthenticated."),
        (name = "topics", description = "Named, durable, partitioned logs."),
        (name = "messages", description = "Publishing and browsing."),
        (name = "subscriptions", description = "Named cursors over a topic, with ack state."),
        (name = "consuming", description = "Pull, settle, seek, redrive and stream deliveries."),
        (name = "apps", description = "Apps (tenants), their API keys, and the audit trail."),
        (name = "tasks", description = "Messages published with a callback, and their results."),
        (name = "push", description = "Push subscriptions: signing secrets, the attempt log, resend and recover."),
    )
)]
struct ApiDoc;

/// A callback or push URL as the document describes it: http(s), a host name whose last label
/// starts with a letter (an IP literal would be refused unless the operator allows its network,
/// so the document leaves them out), an optional port and path. The server accepts more (IP
/// literals in allowed networks); what it refuses gets a `400`.
pub(crate) const CALLBACK_URL_PATTERN: &str = "^[hH][tT][tT][pP][sS]?://(?:[A-Za-z0-9-]+\\.)*[A-Za-z][A-Za-z0-9-]*(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}))?(?:[/?#][!-~]*)?$";

/// The document as served: built once, then the same bytes every time.
pub(crate) fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // Through `Value`, whose maps are sorted: the same bytes from every build and process.
        // Serialising a document of strings, numbers and maps cannot fail.
        serde_json::to_value(ApiDoc::openapi())
            .and_then(|mut value| {
                registry_formats(&mut value);
                serde_json::to_string_pretty(&value)
            })
            .unwrap_or_else(|_| "{}".to_owned())
    })
}

/// utoipa spells the unsigned formats `u-int8` ... `u-int64`; the OpenAPI format registry (and
/// every tool that reads them) says `uint8` ... `uint64`.
fn registry_formats(value: &mut Value) {
    match value {
        Value::Object(members) => {
            for (name, member) in members.iter_mut() {
                match member {
                    Value::String(format) if name == "format" && format.starts_with("u-int") => {
                        *format = format.replacen("u-int", "uint", 1);
                    }
                    other => registry_formats(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(registry_formats),
        _ => {}
    }
}

/// What every `/v1` operation shares: the bearer key, `401` without it, and `503` while the
/// server drains or its storage fails (every operation reaches the broker). Also two repairs of
/// what the derives produce, for every operation: path parameters that utoipa's axum support
/// infers from the `Path` extractor are dropped where the operation names them itself (with a
/// pattern), and an optional JSON body is "may be left out", not "may be `null`".
struct V1Conventions;

impl Modify for V1Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                if let Some(parameters) = &mut operation.parameters {
                    let mut seen = Vec::new();
                    parameters.retain(|parameter| match parameter {
                        RefOr::T(p) => {
                            let key = (p.name.clone(), p.parameter_in.clone());
                            let first = !seen.contains(&key);
                            seen.push(key);
                            first
                        }
                        RefOr::Ref(_) => true,
                    });
                }
                if let Some(RefOr::T(body)) = &mut operation.request_body
                    && !matches!(body.required, Some(Required::True))
                {
                    for content in body.content.values_mut() {
                        if let RefOr::T(content) = content
                            && let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema
                            && let [RefOr::Ref(reference), _null] = one_of.items.as_slice()
                        {
                            content.schema = Some(RefOr::Ref(reference.clone()));
                        }
                    }
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `Authorization: Bearer <key>`. A missing, malformed or wrong \
                         key is answered 401 with `WWW-Authenticate: Bearer`.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") && path != "/v1" {
                continue;
            }
            for operation in operations_mut(item) {
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearerAuth",
                    Vec::<String>::new(),
                )]);
                let responses = &mut operation.responses.responses;
                for (status, name) in [
                    ("401", "Unauthorized"),
                    ("403", "Forbidden"),
                    ("429", "TooManyRequests"),
                    ("503", "Unavailable"),
                ] {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| Ref::from_response_name(name).into());
                }
            }
        }
    }
}

/// The operations of a path, whichever methods it has.
pub(crate) fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// A schema written as JSON Schema 2020-12, for what the derives cannot say (`oneOf` between
/// members, `not`, `const`, `prefixItems`). Every member is emitted as given.
pub(crate) fn json_schema(value: Value) -> RefOr<Schema> {
    let Value::Object(members) = value else {
        return ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .into();
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .extensions(Some(Extensions::from_iter(members)))
        .into()
}

// ---------------------------------------------------------------------------------------------
// Patterns shared by several schemas: each is exactly what the server accepts.
// ---------------------------------------------------------------------------------------------

/// Topic and subscription names (`opal_core::TopicName`).
pub(crate) const NAME_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$";

/// Standard base64 with padding, in the canonical form the decoder requires (unused bits zero).
pub(crate) const BASE64_PATTERN: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

/// W3C `tracestate`: comma-separated `key=value` members (empty members allowed), printable
/// ASCII. (At most 32 members, which a pattern cannot count.)
pub(crate) const TRACESTATE_PATTERN: &str = "^[ \\t]*(?:[!-+\\--<>-~][\\t -+\\--<>-~]*=[\\t -+\\--~]*)?(?:,[ \\t]*(?:[!-+\\--<>-~][\\t -+\\--<>-~]*=[\\t -+\\--~]*)?)*$";

/// `If-Match`: `*` or one entity tag as sent in `ETag` (weak tags accepted); empty counts as
/// absent.
const IF_MATCH_PATTERN: &str = "^(?:|\\*|(?:W/)?\"\\+?[0-9]{1,19}\")$";

/// `Idempotency-Key`: a structured-field string of 1 to 256 characters, or a bare token.
const IDEMPOTENCY_KEY_PATTERN: &str =
    "^(?:\"(?:[ !#-\\[\\]-~]|\\\\[\"\\\\]){1,256}\"|[!#-+\\--:<-\\[\\]-~]{1,256})$";

/// W3C `traceparent` (version 00 exactly; later versions may append `-<anything>`), with ids
/// that are not all zeros.
pub(crate) fn traceparent_pattern() -> String {
    /// `n` lowercase hex digits, not all zero.
    fn nonzero_hex(n: usize) -> String {
        let alternatives: Vec<String> = (0..n)
            .map(|zeros| format!("0{{{zeros}}}[1-9a-f][0-9a-f]{{{}}}", n - 1 - zeros))
            .collect();
        format!("(?:{})", alternatives.join("|"))
    }
    let ids = format!("{}-{}-[0-9a-f]{{2}}", nonzero_hex(32), nonzero_hex(16));
    format!("^(?:00-{ids}|(?:0[1-9a-f]|[1-9a-e][0-9a-f]|f[0-9a-e])-{ids}(?:-[\\s\\S]*)?)$")
}

/// The `attributes` of a published message: plain names, string values.
pub(crate) fn attributes_schema() -> Value {
    serde_json::json!({
        "type": ["object", "null"],
        "description": "String attributes (at most 64), for filters and consumers.",
        "maxProperties": 64,
        "propertyNames": {"pattern": "^[A-Za-z0-9._-]{1,256}$"},
        "additionalProperties": {"type": "string", "maxLength": 4096}
    })
}

// ---------------------------------------------------------------------------------------------
// Shared parameters.
// ---------------------------------------------------------------------------------------------

fn string_schema(pattern: impl Into<String>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern.into()))
}

fn path_name(name: &str, what: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(format!(
            "The {what}'s name: 1 to 200 of `A-Z a-z 0-9 . _ -`, not starting with `.`; \
             the server puts the caller's app and a `/` in front of a short name (`default/` \
             for an admin key), and the whole must be at most 200 characters."
        )))
        .schema(Some(string_schema(NAME_PATTERN)))
        .build()
}

fn header(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// `{app}` in a path.
#[derive(Debug)]
pub(crate) struct AppPath;

impl IntoParams for AppPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("app")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(
                    "The app's name: 1 to 63 of `A-Z a-z 0-9 . _ -`, not starting with `.`.",
                ))
                .schema(Some(string_schema("^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")))
                .build(),
        ]
    }
}

/// `{id}` in a key's path: the key id.
#[derive(Debug)]
pub(crate) struct KeyPath;

impl IntoParams for KeyPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The key's id: 12 of `a-z 0-9`."))
                .schema(Some(string_schema("^[a-z0-9]{12}$")))
                .build(),
        ]
    }
}

/// `{topic}` in a path.
#[derive(Debug)]
pub(crate) struct TopicPath;

impl IntoParams for TopicPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_name("topic", "topic")]
    }
}

/// `{subscription}` in a path.
#[derive(Debug)]
pub(crate) struct SubscriptionPath;

impl IntoParams for SubscriptionPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_name("subscription", "subscription")]
    }
}

/// `If-Match` on `PATCH` and `DELETE` of topics and subscriptions.
#[derive(Debug)]
pub(crate) struct IfMatchHeader;

impl IntoParams for IfMatchHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header(
            "If-Match",
            "Apply only if the resource is still at this revision (its `ETag`, e.g. `\"3\"`; \
             `*`: any); otherwise 412. Without it, a concurrent update is retried.",
            string_schema(IF_MATCH_PATTERN),
        )]
    }
}

/// The headers every publish form reads.
#[derive(Debug)]
pub(crate) struct PublishHeaders;

impl IntoParams for PublishHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            header(
                "Idempotency-Key",
                "The dedup id of a one-message (or one-event) request, as a structured-field \
                 string (`\"abc\"`) or a bare token: a retry inside the topic's dedup window \
                 stores nothing and answers the first result. Must equal `dedup_id` when both \
                 are given.",
                string_schema(IDEMPOTENCY_KEY_PATTERN),
            ),
            header(
                "traceparent",
                "W3C Trace Context: stored with each message as the `traceparent` attribute \
                 (unless the message carries its own) and passed on with every delivery.",
                string_schema(traceparent_pattern()),
            ),
            header(
                "tracestate",
                "W3C Trace Context vendor data (needs `traceparent`): stored as the `tracestate` \
                 attribute.",
                // As a header value it cannot start with whitespace (HTTP strips it).
                string_schema(TRACESTATE_PATTERN.replacen("^[ \\t]*", "^", 1))
                    .max_length(Some(4096)),
            ),
        ]
    }
}

/// The request headers of a WebSocket upgrade (RFC 6455 §4.1).
#[derive(Debug)]
pub(crate) struct WebSocketHeaders;

impl IntoParams for WebSocketHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let required = |name: &str, description: &str, schema: ObjectBuilder| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(schema))
                .build()
        };
        let enumerated = |value: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([value]))
        };
        vec![
            required("Connection", "`Upgrade`.", enumerated("Upgrade")),
            required("Upgrade", "`websocket`.", enumerated("websocket")),
            required("Sec-WebSocket-Version", "`13`.", enumerated("13")),
            required(
                "Sec-WebSocket-Key",
                "16 random bytes in base64.",
                string_schema("^[A-Za-z0-9+/]{22}==$"),
            ),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Shared body schemas.
// ---------------------------------------------------------------------------------------------

/// `application/cloudevents-batch+json`: up to 1000 structured events (an empty batch stores
/// nothing).
#[derive(Debug)]
pub(crate) struct StructuredEventBatch;

impl PartialSchema for StructuredEventBatch {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Ref::from_schema_name("StructuredEvent"))
            .max_items(Some(1000))
            .description(Some("CloudEvents in the JSON batch format."))
            .into()
    }
}

impl ToSchema for StructuredEventBatch {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            "StructuredEvent".to_owned(),
            crate::http::cloudevents::StructuredEvent::schema(),
        ));
    }
}

/// A raw publish body: one message's payload, up to 1 MiB.
#[derive(Debug)]
pub(crate) struct RawPayload;

impl PartialSchema for RawPayload {
    fn schema() -> RefOr<Schema> {
        json_schema(serde_json::json!({
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
            "description": "The payload bytes (at most 1 MiB)."
        }))
    }
}

impl ToSchema for RawPayload {}

// ---------------------------------------------------------------------------------------------
// Problem responses: every error is `application/problem+json`.
// ---------------------------------------------------------------------------------------------

fn problem_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

fn retry_after() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        ))
        .description(Some("Seconds to wait before retrying."))
        .build()
}

macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident => $build:expr;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub(crate) struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), $build.build().into())
                }
            }
        )*
    };
}

problem_responses! {
    /// 400.
    BadRequest => problem_response(
        "The request is invalid (`urn:opal:problem:invalid-request`): malformed JSON, an unknown \
         member, a wrong type, a value out of range, an invalid name or header. `errors` lists \
         every invalid part.",
    );
    /// 401.
    Unauthorized => problem_response(
        "The API key is missing, malformed or wrong (`urn:opal:problem:unauthorized`).",
    )
    .header(
        "WWW-Authenticate",
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some("`Bearer realm=\"opal\"`, with `error=\"invalid_token\"` when a key was given."))
            .build(),
    );
    /// 403.
    Forbidden => problem_response(
        "The key is valid but its scopes do not allow this (`urn:opal:problem:forbidden`), or a \
         subscription on another app's topic lost its grant.",
    );
    /// 404.
    NotFound => problem_response(
        "No such resource, or one of another app this key may not see \
         (`urn:opal:problem:not-found`).",
    );
    /// 409.
    Conflict => problem_response(
        "The resource exists with other settings, is still in use, or kept changing \
         (`urn:opal:problem:conflict`).",
    );
    /// 412.
    PreconditionFailed => problem_response(
        "`If-Match` names a revision the resource is no longer at \
         (`urn:opal:problem:precondition-failed`).",
    );
    /// 413.
    PayloadTooLarge => problem_response(
        "The body is over the request limit (8 MiB), or a raw payload over the message limit \
         (1 MiB) (`urn:opal:problem:payload-too-large`).",
    );
    /// 415.
    UnsupportedMediaType => problem_response(
        "The body's `Content-Type` is not one this operation reads \
         (`urn:opal:problem:unsupported-media-type`).",
    );
    /// 429.
    TooManyRequests => problem_response(
        "Over a rate limit of the app (`urn:opal:problem:rate-limited`): publish rate, open \
         streams, or failed authentications from this address; or over a quota \
         (`urn:opal:problem:quota-exceeded`): stored bytes, topics or subscriptions.",
    )
    .header("Retry-After", retry_after());
    /// 503.
    Unavailable => problem_response(
        "Not ready yet, shutting down, or storage failed (`urn:opal:problem:unavailable`); the \
         request may not have been applied. Retry later.",
    )
    .header("Retry-After", retry_after());
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use super::*;

    fn spec() -> Value {
        serde_json::from_str(document()).expect("the document is JSON")
    }

    const METHODS: [&str; 7] = ["get", "put", "post", "patch", "delete", "head", "options"];

    /// (METHOD, path) of every operation in the document.
    fn documented() -> BTreeSet<(String, String)> {
        let spec = spec();
        let mut operations = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(method).is_some() {
                    operations.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        operations
    }

    /// (METHOD, path) of every `.route(...)` in the crate's sources: the literal path and each
    /// method router (`get(...)`, `.post(...)`, ...) inside the call.
    fn routed() -> BTreeSet<(String, String)> {
        let mut files = Vec::new();
        collect_sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut routes = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            // Test modules build routers of their own.
            let production = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let mut rest = production;
            while let Some(at) = rest.find(".route(") {
                rest = &rest[at + ".route(".len()..];
                let call = &rest[..closing_paren(rest)];
                let path = call.split('"').nth(1).unwrap_or_else(|| {
                    panic!("{}: a route without a literal path", file.display())
                });
                let methods = method_routers(call);
                assert!(
                    !methods.is_empty(),
                    "{}: route {path} has no method router this test knows",
                    file.display()
                );
                for method in methods {
                    routes.insert((method, path.to_owned()));
                }
            }
        }
        routes
    }

    fn collect_sources(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                collect_sources(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("openapi.rs")
                // Test-only modules (`tls_tests.rs`) build routers of their own.
                && !path.to_string_lossy().ends_with("_tests.rs")
            {
                files.push(path);
            }
        }
    }

    /// The byte index of the `)` that closes a call whose `(` was just consumed.
    fn closing_paren(text: &str) -> usize {
        let mut depth = 1;
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return i;
                    }
                }
                _ => {}
            }
        }
        text.len()
    }

    fn method_routers(call: &str) -> Vec<String> {
        let bytes = call.as_bytes();
        let mut found = Vec::new();
        for method in [
            "get", "put", "post", "patch", "delete", "head", "options", "any",
        ] {
            let needle = format!("{method}(");
            let mut from = 0;
            while let Some(at) = call[from..].find(&needle) {
                let start = from + at;
                let before = start.checked_sub(1).map(|i| bytes[i]);
                let is_word_start =
                    before.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'));
                if is_word_start {
                    assert_ne!(
                        method, "any",
                        "`any(...)` routes cannot be documented per method"
                    );
                    found.push(method.to_uppercase());
                }
                from = start + needle.len();
            }
        }
        found
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let spec = spec();
        let version = spec["openapi"].as_str().expect("openapi member");
        assert!(version.starts_with("3.1"), "openapi is {version}");
        assert_eq!(
            spec["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn operation_ids_are_present_and_unique() {
        let spec = spec();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let id = operation["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                    panic!("operationId {id} is used by {other} and {method} {path}");
                }
            }
        }
    }

    #[test]
    fn the_router_and_the_document_have_the_same_operations() {
        let routed = routed();
        let documented = documented();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes without an operation: {undocumented:?}; operations without a route: {unrouted:?}"
        );
        assert!(routed.len() >= 24, "only {} routes found", routed.len());
    }

    #[test]
    fn every_v1_operation_needs_the_key_and_documents_its_errors_as_problems() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let v1 = path.starts_with("/v1/");
                let security = &operation["security"];
                if v1 {
                    assert_eq!(
                        security[0]["bearerAuth"],
                        serde_json::json!([]),
                        "{method} {path}"
                    );
                    assert!(operation["responses"]["401"].is_object(), "{method} {path}");
                } else {
                    assert_eq!(security, &serde_json::json!([{}]), "{method} {path}");
                }
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    if status.starts_with('4') || status.starts_with('5') {
                        let name = response["$ref"].as_str().unwrap_or_else(|| {
                            panic!("{method} {path} {status} is not a problem response")
                        });
                        let name = name.trim_start_matches("#/components/responses/");
                        let content = &spec["components"]["responses"][name]["content"];
                        assert!(
                            content[PROBLEM_JSON].is_object(),
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(value: &Value, spec: &Value, at: &str, dangling: &mut Vec<String>) {
            match value {
                Value::Object(members) => {
                    if let Some(Value::String(target)) = members.get("$ref") {
                        let resolved = target
                            .strip_prefix('#')
                            .and_then(|pointer| spec.pointer(pointer));
                        if resolved.is_none() {
                            dangling.push(format!("{at}: {target}"));
                        }
                    }
                    for (name, member) in members {
                        walk(member, spec, &format!("{at}/{name}"), dangling);
                    }
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, spec, &format!("{at}/{i}"), dangling);
                    }
                }
                _ => {}
            }
        }
        let spec = spec();
        let mut dangling = Vec::new();
        walk(&spec, &spec, "", &mut dangling);
        assert!(dangling.is_empty(), "references to nothing: {dangling:#?}");
    }

    #[test]
    fn deny_unknown_fields_becomes_additional_properties_false() {
        let spec = spec();
        for name in [
            "CreateTopic",
            "UpdateTopic",
            "PublishRequest",
            "PublishMessage",
            "CreateSubscription",
            "UpdateSubscription",
            "PullRequest",
            "AckRequest",
            "NackRequest",
            "ExtendRequest",
            "SeekRequest",
            "RedriveRequest",
        ] {
            let schema = &spec["components"]["schemas"][name];
            assert_eq!(schema["additionalProperties"], false, "{name}: {schema}");
        }
    }

    #[test]
    fn documented_limits_are_the_servers_defaults() {
        let spec = spec();
        let limits = opal_core::Limits::default();
        let schema = |name: &str| spec["components"]["schemas"][name].clone();
        let property = |name: &str, member: &str| schema(name)["properties"][member].clone();
        let checks: [(Value, u64); 14] = [
            (
                property("PublishRequest", "messages")["maxItems"].clone(),
                limits.max_batch_messages as u64,
            ),
            (
                schema("StructuredEventBatch")["maxItems"].clone(),
                limits.max_batch_messages as u64,
            ),
            (
                property("CreateTopic", "partitions")["maximum"].clone(),
                u64::from(limits.max_partitions),
            ),
            (
                property("CreateTopic", "dedup_window_ms")["maximum"].clone(),
                limits.max_dedup_window_ms,
            ),
            (
                property("PullRequest", "max_messages")["maximum"].clone(),
                limits.max_pull_messages as u64,
            ),
            (
                property("PullRequest", "wait_ms")["maximum"].clone(),
                limits.max_wait_ms,
            ),
            (
                property("AckRequest", "ack_ids")["maxItems"].clone(),
                limits.max_ack_ids as u64,
            ),
            (
                property("ExtendRequest", "ack_deadline_ms")["maximum"].clone(),
                limits.max_ack_deadline_ms,
            ),
            (
                property("NackRequest", "delay_ms")["maximum"].clone(),
                limits.max_delay_ms,
            ),
            (
                property("BackoffBody", "max_ms")["maximum"].clone(),
                limits.max_delay_ms,
            ),
            (
                property("CreateSubscription", "max_deliveries")["maximum"].clone(),
                u64::from(limits.max_deliveries),
            ),
            (
                property("PublishMessage", "delay_ms")["maximum"].clone(),
                limits.max_delay_ms,
            ),
            (
                property("PublishMessage", "key")["maxLength"].clone(),
                limits.max_key_bytes as u64,
            ),
            (
                property("PublishMessage", "dedup_id")["maxLength"].clone(),
                limits.max_dedup_id_bytes as u64,
            ),
        ];
        for (index, (documented, limit)) in checks.iter().enumerate() {
            assert_eq!(
                documented.as_u64(),
                Some(*limit),
                "check {index}: {documented}"
            );
        }
        let attributes = property("PublishMessage", "attributes");
        assert_eq!(
            attributes["maxProperties"].as_u64(),
            Some(limits.max_attributes as u64)
        );
        assert_eq!(
            attributes["additionalProperties"]["maxLength"].as_u64(),
            Some(limits.max_attribute_value_bytes as u64)
        );
        assert_eq!(
            property("CreateSubscription", "ack_deadline_ms")["minimum"].as_u64(),
            Some(opal_core::SubscriptionConfig::MIN_ACK_DEADLINE_MS)
        );
    }

    #[test]
    fn unsigned_integers_use_the_registry_formats() {
        let text = document();
        assert!(!text.contains("u-int"));
        let spec = spec();
        let offset = &spec["components"]["schemas"]["MessageView"]["properties"]["offset"];
        assert_eq!(offset["format"], "uint64", "{offset}");
    }

    #[test]
    fn header_patterns_do_not_start_with_whitespace() {
        // HTTP strips it, and clients refuse to send it: a pattern allowing it would make
        // generators (schemathesis) produce headers that cannot be sent.
        let spec = spec();
        let publish = &spec["paths"]["/v1/topics/{topic}/messages"]["post"];
        for parameter in publish["parameters"].as_array().expect("parameters") {
            if parameter["in"] == "header" {
                let pattern = parameter["schema"]["pattern"].as_str().unwrap_or("");
                assert!(
                    !pattern.starts_with("^[ "),
                    "{}: {pattern}",
                    parameter["name"]
                );
            }
        }
    }
}
