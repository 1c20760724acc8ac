//! `/v1/subscriptions/{subscription}`: create and read subscriptions, pull (long-poll) and ack.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json as JsonResponse, Router};
use jiff::Timestamp;
use opal_core::{
    AckId, AckOutcome, Created, Delivery, Subscription, SubscriptionConfig, TopicName,
};
use serde::{Deserialize, Serialize};

use super::messages::MessageView;
use super::{AppState, subscription_param};
use crate::json::{Json, OptionalJson};
use crate::path::Path;
use crate::problem::{FieldError, Problem};

/// Most ack ids in one ack call: bounds the work (and the durable write) of one request.
const MAX_ACK_IDS: usize = 1000;
/// Deliveries one pull returns when the client does not say (capped by the configured limit).
const DEFAULT_MAX_MESSAGES: usize = 100;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/subscriptions/{subscription}",
            put(create_subscription).get(get_subscription),
        )
        .route("/v1/subscriptions/{subscription}/pull", post(pull))
        .route("/v1/subscriptions/{subscription}/ack", post(ack))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubscription {
    topic: String,
    ack_deadline_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct SubscriptionView {
    name: String,
    topic: String,
    ack_deadline_ms: u64,
    created_at: Timestamp,
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> Self {
        SubscriptionView {
            name: s.name.to_string(),
            topic: s.config.topic.to_string(),
            ack_deadline_ms: s.config.ack_deadline_ms,
            created_at: s.created_at,
        }
    }
}

/// 201 when created, 200 when it exists with the same settings, 409 when they differ, 404 when
/// the topic does not exist.
async fn create_subscription(
    State(state): State<AppState>,
    Path(subscription): Path<String>,
    Json(body): Json<CreateSubscription>,
) -> Result<(StatusCode, JsonResponse<SubscriptionView>), Problem> {
    let name = subscription_param(subscription)?;
    // `topic` is a body member here, so the broker's field name doubles as its JSON Pointer.
    let config = SubscriptionConfig {
        topic: TopicName::new(body.topic)?,
        ack_deadline_ms: body
            .ack_deadline_ms
            .unwrap_or(SubscriptionConfig::DEFAULT_ACK_DEADLINE_MS),
    };
    config.validate(&state.limits)?;
    let (subscription, created) = state.broker.create_subscription(&name, config).await?;
    let status = match created {
        Created::New => StatusCode::CREATED,
        Created::Existing => StatusCode::OK,
    };
    Ok((status, JsonResponse(subscription.into())))
}

async fn get_subscription(
    State(state): State<AppState>,
    Path(subscription): Path<String>,
) -> Result<JsonResponse<SubscriptionView>, Problem> {
    let name = subscription_param(subscription)?;
    let subscription = state.broker.get_subscription(&name).await?;
    Ok(JsonResponse(subscription.into()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    max_messages: Option<usize>,
    wait_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct PullResponse {
    deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Serialize)]
struct DeliveryView {
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
async fn pull(
    State(state): State<AppState>,
    Path(subscription): Path<String>,
    OptionalJson(body): OptionalJson<PullRequest>,
) -> Result<JsonResponse<PullResponse>, Problem> {
    let name = subscription_param(subscription)?;
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
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    ack_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
struct AckResponse {
    acked: usize,
    rejected: Vec<RejectedAck>,
}

#[derive(Debug, Serialize)]
struct RejectedAck {
    ack_id: String,
    reason: String,
}

impl From<AckOutcome> for AckResponse {
    fn from(outcome: AckOutcome) -> Self {
        let rejected = outcome
            .rejected
            .into_iter()
            .map(|r| RejectedAck {
                ack_id: r.ack_id.0,
                reason: r.reason,
            })
            .collect();
        AckResponse {
            acked: outcome.acked,
            rejected,
        }
    }
}

/// Applies the acks it can (durably) and lists the ack ids it refused, with why.
async fn ack(
    State(state): State<AppState>,
    Path(subscription): Path<String>,
    Json(body): Json<AckRequest>,
) -> Result<JsonResponse<AckResponse>, Problem> {
    let name = subscription_param(subscription)?;
    let count = body.ack_ids.len();
    if !(1..=MAX_ACK_IDS).contains(&count) {
        return Err(Problem::invalid(vec![FieldError::at(
            "/ack_ids",
            format!("must hold 1 to {MAX_ACK_IDS} ack ids, got {count}"),
        )]));
    }
    let ack_ids: Vec<AckId> = body.ack_ids.into_iter().map(AckId).collect();
    let outcome = state.broker.ack(&name, &ack_ids).await?;
    Ok(JsonResponse(outcome.into()))
}
