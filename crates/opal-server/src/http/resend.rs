//! Resend and recover of a push subscription: one message pushed again, or every message whose
//! attempts since a time failed. The resends are queued in the broker (durable) and sent by
//! the dispatcher; the attempt log is how a message's position is found.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json as JsonResponse, response::IntoResponse};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::push::not_push;
use super::{AppState, Caller};
use crate::json::Json;
use crate::path::Path;
use crate::problem::{FieldError, Problem, ProblemKind};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/subscriptions/{subscription}/resend", post(resend))
}

/// Exactly one of `message_id` (resend) and `since` (recover).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResendRequest {
    /// Push this message again, whether it was delivered, is still being retried, or was
    /// dead-lettered (it must have an attempt in the log).
    message_id: Option<Uuid>,
    /// Push again every message with a failed attempt at or after this time (RFC 3339) and no
    /// succeeded attempt after it.
    #[schema(value_type = Option<String>, format = DateTime)]
    since: Option<Timestamp>,
    /// With `since`: only failed attempts before this time.
    #[schema(value_type = Option<String>, format = DateTime)]
    until: Option<Timestamp>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ResendResponse {
    /// Messages queued to be pushed again.
    queued: usize,
}

/// What a valid request asks for.
enum Ask {
    Message(Uuid),
    Recover {
        since: Timestamp,
        until: Option<Timestamp>,
    },
}

impl ResendRequest {
    fn ask(self) -> Result<Ask, Problem> {
        match (self.message_id, self.since, self.until) {
            (Some(id), None, None) => Ok(Ask::Message(id)),
            (Some(_), None, Some(_)) => Err(field("/until", "goes only with `since`")),
            (None, Some(since), until) => {
                if until.is_some_and(|u| u <= since) {
                    return Err(field("/until", "must be later than `since`"));
                }
                Ok(Ask::Recover { since, until })
            }
            (Some(_), Some(_), _) => Err(field(
                "",
                "give either `message_id` (resend one message) or `since` (recover), not both",
            )),
            (None, None, _) => Err(field(
                "",
                "give `message_id` (resend one message) or `since` (recover)",
            )),
        }
    }
}

fn field(pointer: &str, detail: &str) -> Problem {
    Problem::invalid(vec![FieldError::at(pointer, detail)])
}

/// Queues one message (`message_id`) or every message whose attempts since a time failed
/// (`since`, optionally `until`) to be pushed again. Resends go out like deliveries (signed,
/// logged, within the endpoint's limits), are retried by its schedule, and leave the
/// subscription's ack state alone. They reach back as far as the attempt log (7 days).
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{subscription}/resend",
    operation_id = "resendPush",
    tag = "push",
    summary = "Resend a message, or recover failed messages, to a push endpoint",
    params(crate::openapi::SubscriptionPath),
    request_body(content = ResendRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued; the dispatcher sends them.", body = ResendResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<ResendRequest>,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.subscription(&subscription)?;
    let ask = body.ask()?;
    let (s, _) = state.broker.get_subscription(&name).await?;
    if s.config.push.is_none() {
        return Err(not_push(&subscription));
    }
    let broker = state.broker.as_ref();
    let targets = match ask {
        Ask::Message(id) => {
            let target = opal_core::resend::logged_target(broker, &name, id)
                .await?
                .ok_or_else(|| {
                    Problem::new(
                        ProblemKind::NotFound,
                        format!(
                            "no attempt of message {id} is in the attempt log of {subscription} \
                             (it keeps 7 days)"
                        ),
                    )
                })?;
            vec![target]
        }
        Ask::Recover { since, until } => {
            opal_core::resend::failed_since(broker, &name, since, until).await?
        }
    };
    let queued = state.broker.queue_resends(&name, targets).await?;
    caller.audit(&state, "subscription.resend", &name).await;
    Ok((
        StatusCode::ACCEPTED,
        JsonResponse(ResendResponse { queued }),
    ))
}
