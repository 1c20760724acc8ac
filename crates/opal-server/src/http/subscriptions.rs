//! `/v1/subscriptions/{subscription}`: create and read subscriptions, pull (long-poll) and ack.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{post, put};
use axum::{Json as JsonResponse, Router};
use jiff::Timestamp;
use opal_core::{
    AckId, AckOutcome, Backoff, BrokerError, Created, Delivery, Filter, Settle, StartPosition,
    Subscription, SubscriptionConfig, SubscriptionStats, TopicName,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cloudevents::{DeliveryFormat, FormattedDelivery};
use super::messages::MessageView;
use super::revision::etag;
use super::{AppState, Caller};
use crate::json::{Json, OptionalJson};
use crate::path::Path;
use crate::problem::{FieldError, Problem, ProblemKind, push_segment};

/// Deliveries one pull returns when the client does not say (capped by the configured limit).
const DEFAULT_MAX_MESSAGES: usize = 100;
/// Dead letters one redrive moves when the client does not say.
const DEFAULT_REDRIVE_MESSAGES: usize = 1000;
/// Most dead letters one redrive moves: bounds the time one request takes.
const MAX_REDRIVE_MESSAGES: usize = 10_000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/subscriptions/{subscription}",
            put(create_subscription)
                .get(get_subscription)
                .patch(super::subscription_settings::update_subscription)
                .delete(super::subscription_settings::delete_subscription),
        )
        .route("/v1/subscriptions/{subscription}/pull", post(pull))
        .route("/v1/subscriptions/{subscription}/ack", post(ack))
        .route("/v1/subscriptions/{subscription}/nack", post(nack))
        .route("/v1/subscriptions/{subscription}/extend", post(extend))
        .route("/v1/subscriptions/{subscription}/seek", post(seek))
        .route("/v1/subscriptions/{subscription}/redrive", post(redrive))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSubscription {
    /// The topic to consume.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")]
    topic: String,
    /// How long a delivery is leased before it is delivered again; default 30000.
    #[schema(minimum = 100, maximum = 43_200_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    ack_deadline_ms: Option<u64>,
    backoff: Option<BackoffBody>,
    /// `null` or absent: unlimited.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    max_deliveries: Option<u32>,
    /// Where a message goes after `max_deliveries` failed deliveries (needs `max_deliveries`;
    /// not the subscription's own topic).
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")]
    dead_letter_topic: Option<String>,
    /// Deliver one key's messages one at a time, in order.
    ordered: Option<bool>,
    /// A filter policy, parsed by [`Filter::parse`]; `null` or absent: every message.
    #[schema(schema_with = filter_policy_schema)]
    filter: Option<Value>,
    /// Where a new subscription starts; ignored when it exists already. Default `"earliest"`.
    #[schema(schema_with = position_schema)]
    start: Option<Position>,
    /// Makes it a push subscription: Opal POSTs each delivery to the endpoint, signed.
    /// `ack_deadline_ms` then defaults to the attempt timeout plus 15 s and `max_deliveries`
    /// to the length of the retry schedule.
    push: Option<super::push::PushBody>,
}

/// `backoff`: members left out take their defaults.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BackoffBody {
    /// The first retry's delay (default 1000); at most `max_ms`.
    #[schema(minimum = 0, maximum = 2_592_000_000_i64)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    pub(super) initial_ms: Option<u64>,
    /// The longest delay (default 600000).
    #[schema(minimum = 0, maximum = 2_592_000_000_i64)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    pub(super) max_ms: Option<u64>,
    /// Growth per attempt (default 2.0).
    #[schema(minimum = 1, maximum = 10)]
    pub(super) multiplier: Option<f64>,
}

/// The JSON Schema of a filter policy (`docs/filters.md`); `null` means no filter. What it cannot
/// say: a range's lower bound is below its upper bound, and a policy has at most 100 conditions.
pub(super) fn filter_policy_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use serde_json::json;
    let text = json!({"type": "string", "maxLength": 1024});
    let nonempty = json!({"type": "string", "minLength": 1, "maxLength": 1024});
    let lower = json!({"enum": [">", ">="]});
    let upper = json!({"enum": ["<", "<="]});
    let one_key = |name: &str, value: serde_json::Value| {
        json!({
            "type": "object",
            "required": [name],
            "properties": {name: value},
            "additionalProperties": false
        })
    };
    let condition = json!({"oneOf": [
        text,
        {"type": "number"},
        one_key("prefix", nonempty.clone()),
        one_key("suffix", nonempty.clone()),
        one_key("equals-ignore-case", text.clone()),
        one_key("exists", json!({"type": "boolean"})),
        one_key("anything-but", json!({"oneOf": [
            text,
            {"type": "number"},
            {"type": "array", "minItems": 1, "items": {"oneOf": [text, {"type": "number"}]}},
            one_key("prefix", nonempty)
        ]})),
        one_key("numeric", json!({"oneOf": [
            {"type": "array", "prefixItems": [{"enum": ["=", ">", ">=", "<", "<="]}, {"type": "number"}],
             "items": false, "minItems": 2},
            {"type": "array", "prefixItems": [lower, {"type": "number"}, upper, {"type": "number"}],
             "items": false, "minItems": 4},
            {"type": "array", "prefixItems": [upper, {"type": "number"}, lower, {"type": "number"}],
             "items": false, "minItems": 4}
        ]}))
    ]});
    crate::openapi::json_schema(json!({
        "type": ["object", "null"],
        "description": "A filter policy (see docs/filters.md): attribute name -> conditions, all \
                        attributes must match, any condition of one attribute may. `null`: every \
                        message. Comes back in canonical form.",
        "minProperties": 1,
        "maxProperties": 16,
        "propertyNames": {"pattern": "^[A-Za-z0-9._-]{1,256}$"},
        "additionalProperties": {"oneOf": [
            {"type": "string", "maxLength": 1024},
            {"type": "number"},
            {"type": "array", "minItems": 1, "items": condition}
        ]}
    }))
}

/// The JSON forms of a [`Position`].
pub(super) fn position_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::json_schema(serde_json::json!({
        "description": "A position in the topic: `\"earliest\"` (the oldest retained message), \
                        `\"latest\"` (only new messages), `{\"time\": \"<RFC 3339>\"}` (the first \
                        message published at or after it) or `{\"offset\": n}` (in every partition).",
        "oneOf": [
            {"type": "string", "enum": ["earliest", "latest"]},
            {
                "type": "object",
                "required": ["time"],
                "additionalProperties": false,
                "properties": {"time": {"type": "string", "format": "date-time"}}
            },
            {
                "type": "object",
                "required": ["offset"],
                "additionalProperties": false,
                "properties": {"offset": {"type": "integer", "minimum": 0, "maximum": u64::MAX}}
            }
        ]
    }))
}

impl From<BackoffBody> for Backoff {
    fn from(b: BackoffBody) -> Self {
        let defaults = Backoff::default();
        Backoff {
            initial_ms: b.initial_ms.unwrap_or(defaults.initial_ms),
            max_ms: b.max_ms.unwrap_or(defaults.max_ms),
            multiplier: b.multiplier.unwrap_or(defaults.multiplier),
        }
    }
}

/// A position in the topic, as JSON: `"earliest"`, `"latest"`, `{"time": "<RFC 3339>"}` or
/// `{"offset": n}` (serde's external tagging gives exactly these forms).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Position {
    Earliest,
    Latest,
    Time(Timestamp),
    Offset(#[serde(deserialize_with = "crate::json::whole::required")] u64),
}

impl From<Position> for StartPosition {
    fn from(p: Position) -> Self {
        match p {
            Position::Earliest => StartPosition::Earliest,
            Position::Latest => StartPosition::Latest,
            Position::Time(at) => StartPosition::Time(at),
            Position::Offset(offset) => StartPosition::Offset(offset),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct SubscriptionView {
    name: String,
    /// Counts up with each update; the `ETag` is this number in quotes.
    revision: u64,
    topic: String,
    ack_deadline_ms: u64,
    backoff: BackoffView,
    max_deliveries: Option<u32>,
    dead_letter_topic: Option<String>,
    ordered: bool,
    /// The filter in its canonical form, or `null`.
    #[schema(schema_with = filter_policy_schema)]
    filter: Option<Value>,
    /// The push endpoint; `null` for a pull subscription.
    push: Option<super::push::PushView>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    /// Only on `GET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    stats: Option<SubscriptionStatsView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct BackoffView {
    initial_ms: u64,
    max_ms: u64,
    multiplier: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SubscriptionStatsView {
    backlog: u64,
    backlog_bytes: u64,
    in_flight: u64,
    oldest_unacked_age_ms: u64,
    delivered: u64,
    acked: u64,
    nacked: u64,
    redelivered: u64,
    dead_lettered: u64,
    expired: u64,
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> Self {
        let config = s.config;
        SubscriptionView {
            name: s.name.to_string(),
            revision: s.revision,
            topic: config.topic.to_string(),
            ack_deadline_ms: config.ack_deadline_ms,
            backoff: BackoffView {
                initial_ms: config.backoff.initial_ms,
                max_ms: config.backoff.max_ms,
                multiplier: config.backoff.multiplier,
            },
            max_deliveries: config.max_deliveries,
            dead_letter_topic: config.dead_letter_topic.map(|t| t.to_string()),
            ordered: config.ordered,
            filter: config.filter.as_ref().map(Filter::to_json),
            push: config.push.map(Into::into),
            created_at: s.created_at,
            stats: None,
        }
    }
}

impl From<SubscriptionStats> for SubscriptionStatsView {
    fn from(s: SubscriptionStats) -> Self {
        SubscriptionStatsView {
            backlog: s.backlog,
            backlog_bytes: s.backlog_bytes,
            in_flight: s.in_flight,
            oldest_unacked_age_ms: s.oldest_unacked_age_ms,
            delivered: s.delivered,
            acked: s.acked,
            nacked: s.nacked,
            redelivered: s.redelivered,
            dead_lettered: s.dead_lettered,
            expired: s.expired,
        }
    }
}

/// 201 when created, 200 when it exists with the same settings (`start` aside), 409 when they
/// differ, 404 when the topic (or the dead-letter topic) does not exist.
#[utoipa::path(
    put,
    path = "/v1/subscriptions/{subscription}",
    operation_id = "createSubscription",
    tag = "subscriptions",
    summary = "Create a subscription (idempotent)",
    params(crate::openapi::SubscriptionPath),
    request_body(content = CreateSubscription, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = SubscriptionView, headers(("ETag" = String, description = "The revision as a strong entity tag, e.g. `\"3\"`; send it back in `If-Match`."))),
        (status = 200, description = "It exists already with these settings.", body = SubscriptionView, headers(("ETag" = String, description = "The revision as a strong entity tag, e.g. `\"3\"`; send it back in `If-Match`."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn create_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<CreateSubscription>,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.subscription(&subscription)?;
    let topic = subscribable_topic(&state, &caller, &body.topic)?;
    let dead_letter_topic = body
        .dead_letter_topic
        .map(|t| own_topic(&caller, &t, "dead_letter_topic"))
        .transpose()?;
    let filter = body
        .filter
        .filter(|policy| !policy.is_null())
        .map(|policy| Filter::parse(&policy).map_err(|e| filter_problem(&policy, e)))
        .transpose()?;
    let push = body
        .push
        .map(|p| p.into_config(&state.push_policy))
        .transpose()?;
    let default_deadline = push
        .as_ref()
        .map_or(SubscriptionConfig::DEFAULT_ACK_DEADLINE_MS, |p| {
            p.lease_ms()
        });
    let config = SubscriptionConfig {
        ack_deadline_ms: body.ack_deadline_ms.unwrap_or(default_deadline),
        backoff: body.backoff.map(Into::into).unwrap_or_default(),
        max_deliveries: body.max_deliveries.or_else(|| {
            push.as_ref()
                .map(|p| p.retry_schedule_ms.len().min(u32::MAX as usize) as u32)
        }),
        dead_letter_topic,
        ordered: body.ordered.unwrap_or(false),
        filter,
        push,
        ..SubscriptionConfig::new(topic)
    };
    config.validate(&state.limits)?;
    check_subscription_quota(&state, &name).await?;
    let start = body.start.map(Into::into).unwrap_or_default();
    let (subscription, created) = state
        .broker
        .create_subscription(&name, config, start)
        .await?;
    let status = match created {
        Created::New => {
            state
                .tenancy
                .subscription_changed(&name, Some(&subscription.config.topic));
            caller.audit(&state, "subscription.create", &name).await;
            StatusCode::CREATED
        }
        Created::Existing => StatusCode::OK,
    };
    let tag = etag(subscription.revision);
    Ok((status, tag, JsonResponse(view(&caller, subscription))))
}

/// A subscription as its caller names it (and its topics).
pub(super) fn view(caller: &Caller, mut s: Subscription) -> SubscriptionView {
    s.name = caller.local_subscription(&s.name);
    s.config.topic = caller.local_topic(&s.config.topic);
    s.config.dead_letter_topic = s.config.dead_letter_topic.map(|t| caller.local_topic(&t));
    s.into()
}

/// A delivery as its caller names its topic.
pub(super) fn local_delivery(caller: &Caller, mut d: Delivery) -> Delivery {
    local_message(caller, &mut d.message);
    d
}

/// A message as its caller names its topic, and the names in its dead-letter attributes.
pub(super) fn local_message(caller: &Caller, m: &mut opal_core::Message) {
    m.topic = caller.local_topic(&m.topic);
    if let Some(source) = m.attributes.get_mut(opal_core::dead_letter::SOURCE_TOPIC)
        && let Ok(name) = TopicName::new(source.as_str())
    {
        *source = caller.local_topic(&name).to_string();
    }
    if let Some(source) = m
        .attributes
        .get_mut(opal_core::dead_letter::SOURCE_SUBSCRIPTION)
        && let Ok(name) = opal_core::SubscriptionName::new(source.as_str())
    {
        *source = caller.local_subscription(&name).to_string();
    }
}

/// The topic a subscription reads: the caller's own, or another app's (`<app>/<topic>`) that it
/// was granted `subscribe` on. An ungranted one does not exist, as far as the caller can tell.
/// (`topic` is a body member, so the broker's field name doubles as its JSON Pointer.)
pub(super) fn subscribable_topic(
    state: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<TopicName, Problem> {
    if raw.contains(opal_core::APP_SEPARATOR) {
        let topic = TopicName::new(raw)?;
        if caller.is_admin() || state.tenancy.may_subscribe(caller.app(), &topic) {
            return Ok(topic);
        }
        return Err(BrokerError::TopicNotFound(raw.to_owned()).into());
    }
    Ok(TopicName::qualified(caller.app(), raw)?)
}

/// A topic of the caller's own app (any app's, for admins) named in body member `field`.
pub(super) fn own_topic(caller: &Caller, raw: &str, field: &str) -> Result<TopicName, Problem> {
    let topic = if raw.contains(opal_core::APP_SEPARATOR) {
        TopicName::new(raw)
    } else {
        TopicName::qualified(caller.app(), raw)
    }
    .map_err(|e| renamed(e, field))?;
    if caller.is_admin() || topic.app() == Some(caller.app().as_str()) {
        Ok(topic)
    } else {
        Err(BrokerError::TopicNotFound(raw.to_owned()).into())
    }
}

/// A new subscription must fit its app's `subscriptions` quota.
async fn check_subscription_quota(
    state: &AppState,
    name: &opal_core::SubscriptionName,
) -> Result<(), Problem> {
    let Some(owner) = name.app().and_then(|a| opal_core::AppName::new(a).ok()) else {
        return Ok(());
    };
    let Some(limit) = state.tenancy.app_quotas(&owner).subscriptions else {
        return Ok(());
    };
    if state.broker.get_subscription(name).await.is_ok() {
        return Ok(());
    }
    let owned = state
        .broker
        .list_subscriptions(Some(&owner), None, usize::MAX)
        .await?
        .len() as u64;
    if owned >= limit {
        return Err(Problem::new(
            ProblemKind::QuotaExceeded,
            format!("app `{owner}` owns {owned} subscriptions and may own {limit}"),
        ));
    }
    Ok(())
}

/// The same error about another member (a name check reports itself as `topic`).
pub(super) fn renamed(err: BrokerError, field: &str) -> BrokerError {
    match err {
        BrokerError::Invalid { reason, .. } => BrokerError::invalid(field, reason),
        other => other,
    }
}

/// A filter parse error, pointing into `/filter`.
pub(super) fn filter_problem(policy: &Value, err: BrokerError) -> Problem {
    match err {
        BrokerError::Invalid { field, reason } => {
            Problem::invalid(vec![FieldError::at(filter_pointer(policy, &field), reason)])
        }
        other => Problem::invalid(vec![FieldError::at("/filter", other.to_string())]),
    }
}

/// The JSON Pointer of a filter error field such as `filter.store[1].prefix`. Attribute names
/// may contain `.`, so each name is matched against the keys the policy actually has (the
/// longest one that fits wins); the pointer is always under `/filter`.
fn filter_pointer(policy: &Value, field: &str) -> String {
    let mut pointer = String::from("/filter");
    let mut rest = match field.strip_prefix("filter") {
        Some(tail) if tail.is_empty() || tail.starts_with(['.', '[']) => tail,
        _ => field,
    };
    let mut node = Some(policy);
    loop {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if rest.is_empty() {
            break;
        }
        if let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']').unwrap_or(inner.len());
            let index = &inner[..close];
            push_segment(&mut pointer, index);
            node = node.and_then(|n| index.parse::<usize>().ok().and_then(|i| n.get(i)));
            rest = inner.get(close + 1..).unwrap_or("");
            continue;
        }
        let fits = |key: &&String| {
            rest.strip_prefix(key.as_str())
                .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
        };
        let known = node
            .and_then(Value::as_object)
            .and_then(|object| object.keys().filter(fits).max_by_key(|k| k.len()));
        let key = match known {
            Some(key) => key.as_str(),
            None => &rest[..rest.find(['.', '[']).unwrap_or(rest.len())],
        };
        push_segment(&mut pointer, key);
        node = node.and_then(|n| n.get(key));
        rest = &rest[key.len()..];
    }
    pointer
}

/// The subscription's settings plus `stats`: its backlog and counters since start.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{subscription}",
    operation_id = "getSubscription",
    tag = "subscriptions",
    summary = "Read a subscription with its stats",
    params(crate::openapi::SubscriptionPath),
    responses(
        (status = 200, description = "The subscription, with `stats`.", body = SubscriptionView, headers(("ETag" = String, description = "The revision as a strong entity tag, e.g. `\"3\"`; send it back in `If-Match`."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn get_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.subscription(&subscription)?;
    let (subscription, stats) = state.broker.get_subscription(&name).await?;
    let tag = etag(subscription.revision);
    Ok((
        tag,
        JsonResponse(SubscriptionView {
            stats: Some(stats.into()),
            ..view(&caller, subscription)
        }),
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    /// Most deliveries to return (default 100).
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    max_messages: Option<usize>,
    /// How long to wait for the first delivery (default 0: answer at once).
    #[schema(minimum = 0, maximum = 30_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    wait_ms: Option<u64>,
    /// `"opal"` (default) or `"cloudevents"`.
    #[serde(default)]
    format: DeliveryFormat,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PullResponse {
    /// In the requested `format`: [`DeliveryView`] or [`CloudEventDelivery`] objects.
    #[schema(value_type = Vec<FormattedDelivery<DeliveryView>>)]
    deliveries: Vec<FormattedDelivery<DeliveryView>>,
}

/// One delivery as JSON: an element of a pull's `deliveries`, and of the SSE and WebSocket streams.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct DeliveryView {
    ack_id: String,
    attempt: u32,
    message: MessageView,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            ack_id: d.ack_id.0,
            attempt: d.attempt,
            message: d.message.into(),
        }
    }
}

/// Leases up to `max_messages` deliveries, waiting up to `wait_ms` for the first. When the
/// server starts draining, a waiting pull ends at once with an empty list, so that shutdown is
/// not held up by consumers' long-polls.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{subscription}/pull",
    operation_id = "pull",
    tag = "consuming",
    summary = "Receive deliveries (long-poll)",
    params(crate::openapi::SubscriptionPath),
    request_body(
        content = Option<PullRequest>,
        content_type = "application/json",
        description = "Optional: an empty body takes every default."
    ),
    responses(
        (status = 200, description = "Leased deliveries (possibly none).", body = PullResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    OptionalJson(body): OptionalJson<PullRequest>,
) -> Result<JsonResponse<PullResponse>, Problem> {
    let name = caller.subscription(&subscription)?;
    state.tenancy.check_delivery(&caller, &name)?;
    let limits = &state.limits;
    let max = body
        .max_messages
        .unwrap_or(DEFAULT_MAX_MESSAGES.min(limits.max_pull_messages));
    let wait_ms = body.wait_ms.unwrap_or(0);
    let mut errors = Vec::new();
    if !(1..=limits.max_pull_messages).contains(&max) {
        let detail = format!("must be between 1 and {}", limits.max_pull_messages);
        errors.push(FieldError::at("/max_messages", detail));
    }
    if wait_ms > limits.max_wait_ms {
        errors.push(FieldError::at(
            "/wait_ms",
            format!("must be at most {}", limits.max_wait_ms),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    // Dropping the broker's pull when shutdown wins is safe for delivery guarantees: anything it
    // had already leased but not handed back is redelivered after the ack deadline.
    let wait = Duration::from_millis(wait_ms);
    let deliveries = tokio::select! {
        biased;
        result = state.broker.pull(&name, max, wait) => result?,
        () = state.shutdown.cancelled() => Vec::new(),
    };
    Ok(JsonResponse(PullResponse {
        deliveries: deliveries
            .into_iter()
            .map(|d| body.format.render(local_delivery(&caller, d)))
            .collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    /// `ack_id`s of deliveries (1 to 1000).
    #[schema(min_items = 1, max_items = 1000)]
    ack_ids: Vec<String>,
    /// Results of tasks, by ack id (each one of `ack_ids`): stored, and delivered to the
    /// task's callback, before the ack is answered.
    #[schema(value_type = Option<BTreeMap<String, super::tasks::ResultBody>>)]
    results: Option<BTreeMap<String, super::tasks::ResultBody>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NackRequest {
    /// `ack_id`s of deliveries (1 to 1000).
    #[schema(min_items = 1, max_items = 1000)]
    ack_ids: Vec<String>,
    /// Absent: the subscription's backoff decides.
    #[schema(minimum = 0, maximum = 2_592_000_000_i64)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ExtendRequest {
    /// `ack_id`s of deliveries (1 to 1000).
    #[schema(min_items = 1, max_items = 1000)]
    ack_ids: Vec<String>,
    /// The new lease, counted from now.
    #[schema(minimum = 100, maximum = 43_200_000)]
    #[serde(deserialize_with = "crate::json::whole::required")]
    ack_deadline_ms: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AckResponse {
    acked: usize,
    rejected: Vec<RejectedAck>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NackResponse {
    nacked: usize,
    rejected: Vec<RejectedAck>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ExtendResponse {
    extended: usize,
    rejected: Vec<RejectedAck>,
}

/// An ack id that was not applied, and why (unknown, expired, already settled, ...).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RejectedAck {
    ack_id: String,
    reason: String,
}

/// The outcome of a settle call: how many ids applied, and the refused ones with why.
pub(super) fn outcome_parts(outcome: AckOutcome) -> (usize, Vec<RejectedAck>) {
    let rejected = outcome
        .rejected
        .into_iter()
        .map(|r| RejectedAck {
            ack_id: r.ack_id.0,
            reason: r.reason,
        })
        .collect();
    (outcome.applied, rejected)
}

/// Checks the number of ack ids (1 to `limits.max_ack_ids`) into `errors`.
pub(super) fn check_ack_ids(ack_ids: &[String], state: &AppState, errors: &mut Vec<FieldError>) {
    let max = state.limits.max_ack_ids;
    let count = ack_ids.len();
    if !(1..=max).contains(&count) {
        errors.push(FieldError::at(
            "/ack_ids",
            format!("must hold 1 to {max} ack ids, got {count}"),
        ));
    }
}

pub(super) fn into_ack_ids(ack_ids: Vec<String>) -> Vec<AckId> {
    ack_ids.into_iter().map(AckId).collect()
}

fn check(errors: Vec<FieldError>) -> Result<(), Problem> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Problem::invalid(errors))
    }
}

/// Applies the acks it can (durably) and lists the ack ids it refused, with why.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{subscription}/ack",
    operation_id = "ack",
    tag = "consuming",
    summary = "Acknowledge deliveries",
    params(crate::openapi::SubscriptionPath),
    request_body(content = AckRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How many were acked, and the ack ids refused.", body = AckResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<AckRequest>,
) -> Result<JsonResponse<AckResponse>, Problem> {
    let name = caller.subscription(&subscription)?;
    let mut errors = Vec::new();
    check_ack_ids(&body.ack_ids, &state, &mut errors);
    check(errors)?;
    let results = super::tasks::results(&body.ack_ids, body.results)?;
    let ack_ids = into_ack_ids(body.ack_ids);
    let outcome = if results.is_empty() {
        state.broker.settle(&name, &ack_ids, Settle::Ack).await?
    } else {
        opal_core::task::ack_with_results(
            state.broker.as_ref(),
            &name,
            &ack_ids,
            results,
            state.tenancy.clock.now(),
        )
        .await?
    };
    let (acked, rejected) = outcome_parts(outcome);
    Ok(JsonResponse(AckResponse { acked, rejected }))
}

/// Hands deliveries back: each is delivered again after `delay_ms`, or after the subscription's
/// backoff when `delay_ms` is left out. A nack counts as a failed delivery for `max_deliveries`.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{subscription}/nack",
    operation_id = "nack",
    tag = "consuming",
    summary = "Hand deliveries back for redelivery",
    params(crate::openapi::SubscriptionPath),
    request_body(content = NackRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How many were handed back, and the ack ids refused.", body = NackResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn nack(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<NackRequest>,
) -> Result<JsonResponse<NackResponse>, Problem> {
    let name = caller.subscription(&subscription)?;
    let mut errors = Vec::new();
    check_ack_ids(&body.ack_ids, &state, &mut errors);
    let max_delay_ms = state.limits.max_delay_ms;
    if body.delay_ms.is_some_and(|ms| ms > max_delay_ms) {
        errors.push(FieldError::at(
            "/delay_ms",
            format!("must be at most {max_delay_ms}"),
        ));
    }
    check(errors)?;
    let ack_ids = into_ack_ids(body.ack_ids);
    let action = Settle::Nack {
        delay: body.delay_ms.map(Duration::from_millis),
    };
    let outcome = state.broker.settle(&name, &ack_ids, action).await?;
    let (nacked, rejected) = outcome_parts(outcome);
    Ok(JsonResponse(NackResponse { nacked, rejected }))
}

/// Keeps the leases of deliveries for `ack_deadline_ms` from now.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{subscription}/extend",
    operation_id = "extend",
    tag = "consuming",
    summary = "Extend the leases of deliveries",
    params(crate::openapi::SubscriptionPath),
    request_body(content = ExtendRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How many were extended, and the ack ids refused.", body = ExtendResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<ExtendRequest>,
) -> Result<JsonResponse<ExtendResponse>, Problem> {
    let name = caller.subscription(&subscription)?;
    let mut errors = Vec::new();
    check_ack_ids(&body.ack_ids, &state, &mut errors);
    let (min, max) = (
        SubscriptionConfig::MIN_ACK_DEADLINE_MS,
        state.limits.max_ack_deadline_ms,
    );
    if !(min..=max).contains(&body.ack_deadline_ms) {
        errors.push(FieldError::at(
            "/ack_deadline_ms",
            format!("must be between {min} and {max}"),
        ));
    }
    check(errors)?;
    let ack_ids = into_ack_ids(body.ack_ids);
    let action = Settle::Extend {
        deadline: Duration::from_millis(body.ack_deadline_ms),
    };
    let outcome = state.broker.settle(&name, &ack_ids, action).await?;
    let (extended, rejected) = outcome_parts(outcome);
    Ok(JsonResponse(ExtendResponse { extended, rejected }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SeekRequest {
    #[schema(schema_with = position_schema)]
    to: Position,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SeekResponse {
    subscription: String,
    #[schema(schema_with = position_schema)]
    to: Position,
}

/// Moves the subscription to a position: everything from there on is delivered (again), and
/// its ack state and leases are forgotten.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{subscription}/seek",
    operation_id = "seek",
    tag = "consuming",
    summary = "Move the subscription to a position",
    params(crate::openapi::SubscriptionPath),
    request_body(content = SeekRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The subscription now starts at `to`.", body = SeekResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn seek(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<SeekRequest>,
) -> Result<JsonResponse<SeekResponse>, Problem> {
    let name = caller.subscription(&subscription)?;
    state.broker.seek(&name, body.to.into()).await?;
    caller.audit(&state, "subscription.seek", &name).await;
    Ok(JsonResponse(SeekResponse {
        subscription: caller.local_subscription(&name).to_string(),
        to: body.to,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    /// Most dead letters to move (default 1000).
    #[schema(minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    max_messages: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RedriveResponse {
    /// How many dead letters were published back and acked.
    moved: usize,
    /// How many messages were left where they were: not dead letters, or from a topic of
    /// another app.
    skipped: usize,
}

/// Publishes up to `max_messages` dead letters of this subscription (one on a dead-letter topic)
/// back to the topics they came from, and acks them here.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{subscription}/redrive",
    operation_id = "redrive",
    tag = "consuming",
    summary = "Replay dead letters to their topics",
    params(crate::openapi::SubscriptionPath),
    request_body(
        content = Option<RedriveRequest>,
        content_type = "application/json",
        description = "Optional: an empty body takes every default."
    ),
    responses(
        (status = 200, description = "How many dead letters moved.", body = RedriveResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    OptionalJson(body): OptionalJson<RedriveRequest>,
) -> Result<JsonResponse<RedriveResponse>, Problem> {
    let name = caller.subscription(&subscription)?;
    let max = body.max_messages.unwrap_or(DEFAULT_REDRIVE_MESSAGES);
    if !(1..=MAX_REDRIVE_MESSAGES).contains(&max) {
        return Err(Problem::invalid(vec![FieldError::at(
            "/max_messages",
            format!("must be between 1 and {MAX_REDRIVE_MESSAGES}"),
        )]));
    }
    // Dead letters go back only into the caller's own topics (any topic, for admins).
    let admin = caller.is_admin();
    let app = caller.app().clone();
    let may_publish = move |topic: &TopicName| admin || topic.app() == Some(app.as_str());
    let outcome =
        opal_core::dead_letter::redrive(state.broker.as_ref(), &name, max, &may_publish).await?;
    caller.audit(&state, "subscription.redrive", &name).await;
    Ok(JsonResponse(RedriveResponse {
        moved: outcome.moved,
        skipped: outcome.skipped,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filter_pointers_follow_the_policy_keys() {
        let policy = json!({"a.b": ["x", {"prefix": 1}], "c": {"d": [1]}, "a": ["y"]});
        let cases = [
            ("filter", "/filter"),
            ("filter.a.b", "/filter/a.b"),
            ("filter.a.b[1].prefix", "/filter/a.b/1/prefix"),
            ("filter.a[0]", "/filter/a/0"),
            ("filter.c.d[0]", "/filter/c/d/0"),
            ("filter.x/y", "/filter/x~1y"),
            ("filter.unknown.deeper", "/filter/unknown/deeper"),
            ("c.d", "/filter/c/d"),
            ("", "/filter"),
        ];
        for (field, pointer) in cases {
            assert_eq!(filter_pointer(&policy, field), pointer, "for {field:?}");
        }
    }

    #[test]
    fn positions_have_the_documented_json_forms() {
        let forms = [
            json!("earliest"),
            json!("latest"),
            json!({"time": "2025-11-27T13:32:05.123Z"}),
            json!({"offset": 5}),
        ];
        for form in forms {
            let position: Position = serde_json::from_value(form.clone()).unwrap();
            assert_eq!(serde_json::to_value(position).unwrap(), form);
        }
        for bad in [
            json!("middle"),
            json!({"offset": -1}),
            json!({"time": "yesterday"}),
        ] {
            assert!(
                serde_json::from_value::<Position>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
