//! Changing, deleting and listing subscriptions (creating and reading them is in
//! `subscriptions.rs`, beside consuming).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::get;
use axum::{Json as JsonResponse, Router};
use opal_core::Filter;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::pagination::{PageRequest, link_header, next_cursor};
use super::revision::{IfMatch, etag, update_subscription_at_revision};
use super::subscriptions::{BackoffBody, SubscriptionView, filter_problem};
use super::subscriptions::{own_topic, subscribable_topic, view};
use super::{AppState, Caller};
use crate::json::Json;
use crate::path::Path;
use crate::problem::{FieldError, Problem};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/subscriptions", get(list_subscriptions))
}

/// `PATCH` body: the members to change. For the nullable ones, `null` clears the setting and
/// leaving the member out keeps it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateSubscription {
    /// Accepted only with the current value: the topic cannot change.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")]
    topic: Option<String>,
    #[schema(minimum = 100, maximum = 43_200_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    ack_deadline_ms: Option<u64>,
    /// Members left out keep their current values.
    backoff: Option<BackoffBody>,
    /// `null` clears it (unlimited).
    #[serde(default, deserialize_with = "crate::json::whole::nullable")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    max_deliveries: Option<Option<u32>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")]
    dead_letter_topic: Option<Option<String>>,
    ordered: Option<bool>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = super::subscriptions::filter_policy_schema)]
    filter: Option<Option<Value>>,
    /// Changes the push endpoint (members left out keep their values; a pull subscription
    /// needs `url`); `null` turns push off. Secrets rotate through `…/secret/rotate`.
    #[serde(default, deserialize_with = "super::push::present")]
    #[schema(value_type = Option<super::push::PushPatch>)]
    push: Option<Option<super::push::PushPatch>>,
}

/// Tells a member given as `null` (`Some(None)`) from a member left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SubscriptionList {
    subscriptions: Vec<SubscriptionView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Changes settings, keeping the position and ack state. With `If-Match`, only if the
/// subscription is still at that revision (412 otherwise).
#[utoipa::path(
    patch,
    path = "/v1/subscriptions/{subscription}",
    operation_id = "updateSubscription",
    tag = "subscriptions",
    summary = "Change a subscription's settings",
    params(crate::openapi::SubscriptionPath, crate::openapi::IfMatchHeader),
    request_body(content = UpdateSubscription, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated.", body = SubscriptionView, headers(("ETag" = String, description = "The revision as a strong entity tag, e.g. `\"3\"`; send it back in `If-Match`."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
pub(super) async fn update_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    IfMatch(expected): IfMatch,
    Json(body): Json<UpdateSubscription>,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.subscription(&subscription)?;
    let filter = match &body.filter {
        Some(Some(policy)) if !policy.is_null() => Some(Some(
            Filter::parse(policy).map_err(|e| filter_problem(policy, e))?,
        )),
        Some(_) => Some(None),
        None => None,
    };
    let dead_letter_topic = match &body.dead_letter_topic {
        Some(Some(t)) => Some(Some(own_topic(&caller, t, "dead_letter_topic")?)),
        Some(None) => Some(None),
        None => None,
    };
    let topic = body
        .topic
        .as_deref()
        .map(|t| subscribable_topic(&state, &caller, t))
        .transpose()?;
    let now = state.tenancy.clock.now();
    let push_patch = body.push;
    let updated = update_subscription_at_revision(&state, &name, expected, |mut config| {
        if let Some(topic) = &topic {
            config.topic = topic.clone();
        }
        if let Some(ms) = body.ack_deadline_ms {
            config.ack_deadline_ms = ms;
        }
        if let Some(backoff) = &body.backoff {
            config.backoff = opal_core::Backoff {
                initial_ms: backoff.initial_ms.unwrap_or(config.backoff.initial_ms),
                max_ms: backoff.max_ms.unwrap_or(config.backoff.max_ms),
                multiplier: backoff.multiplier.unwrap_or(config.backoff.multiplier),
            };
        }
        if let Some(max) = body.max_deliveries {
            config.max_deliveries = max;
        }
        if let Some(dlt) = &dead_letter_topic {
            config.dead_letter_topic = dlt.clone();
        }
        if let Some(ordered) = body.ordered {
            config.ordered = ordered;
        }
        if let Some(f) = &filter {
            config.filter = f.clone();
        }
        match &push_patch {
            None => {}
            Some(None) => config.push = None,
            Some(Some(patch)) => {
                config.push = Some(patch.clone().apply(
                    config.push.take(),
                    now,
                    &state.push_policy,
                )?);
            }
        }
        config.validate(&state.limits)?;
        Ok(config)
    })
    .await?;
    state
        .tenancy
        .subscription_changed(&name, Some(&updated.config.topic));
    caller.audit(&state, "subscription.update", &name).await;
    Ok((etag(updated.revision), JsonResponse(view(&caller, updated))))
}

/// 204 when deleted with its ack state; receipts it issued are void afterwards.
#[utoipa::path(
    delete,
    path = "/v1/subscriptions/{subscription}",
    operation_id = "deleteSubscription",
    tag = "subscriptions",
    summary = "Delete a subscription with its ack state",
    params(crate::openapi::SubscriptionPath, crate::openapi::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 412, response = crate::openapi::PreconditionFailed),
    )
)]
pub(super) async fn delete_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode, Problem> {
    let name = caller.subscription(&subscription)?;
    state.broker.delete_subscription(&name, expected).await?;
    state.tenancy.subscription_changed(&name, None);
    caller.audit(&state, "subscription.delete", &name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Subscriptions in name order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/subscriptions",
    operation_id = "listSubscriptions",
    tag = "subscriptions",
    summary = "List subscriptions",
    params(crate::http::pagination::PageQuery),
    responses(
        (status = 200, description = "One page of subscriptions (without `stats`).", body = SubscriptionList,
         headers(("Link" = String, description = "`<...>; rel=\"next\"` (RFC 8288) when there is a next page."))),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
async fn list_subscriptions(
    State(state): State<AppState>,
    caller: Caller,
    page: PageRequest,
) -> Result<impl IntoResponse, Problem> {
    let after = page
        .after
        .map(|a| {
            caller.subscription(&a).map_err(|_| {
                Problem::invalid(vec![FieldError::parameter(
                    "cursor",
                    "is not a cursor returned by this list",
                )])
            })
        })
        .transpose()?;
    let subscriptions = state
        .broker
        .list_subscriptions(Some(caller.app()), after.as_ref(), page.limit)
        .await?;
    let last = subscriptions
        .last()
        .map(|s| caller.local_subscription(&s.name).to_string());
    let next_cursor = next_cursor(subscriptions.len(), page.limit, last.as_deref());
    let link = link_header("/v1/subscriptions", page.limit, next_cursor.as_deref());
    let body = SubscriptionList {
        subscriptions: subscriptions
            .into_iter()
            .map(|s| view(&caller, s))
            .collect(),
        next_cursor,
    };
    Ok((AppendHeaders(link), JsonResponse(body)))
}
