//! The HTTP resources: one module per resource, each with its types, handlers and `router()`.

use std::sync::Arc;

use axum::Router;
use opal_core::{Broker, Limits, SubscriptionName, TopicName};
use tokio_util::sync::CancellationToken;

use crate::problem::Problem;

// `pub(crate)` where `crate::openapi` lists the handlers in the OpenAPI document.
pub(crate) mod browse;
pub(crate) mod cloudevents;
pub(crate) mod events;
pub(crate) mod health;
mod messages;
pub(crate) mod pagination;
pub(crate) mod publish_formats;
mod revision;
pub(crate) mod spec;
pub(crate) mod subscription_settings;
pub(crate) mod subscriptions;
pub(crate) mod topics;
mod trace_context;
pub(crate) mod ws;

/// What every handler may use. The router clones it for every request, so it is one `Arc`.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl AppState {
    pub(crate) fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) limits: Limits,
    pub(crate) max_body_bytes: usize,
    /// Cancelled when the server starts draining: long-polls end and `/readyz` turns 503.
    pub(crate) shutdown: CancellationToken,
}

/// Every `/v1` route (authentication is layered on by the caller).
pub(crate) fn v1_router() -> Router<AppState> {
    Router::new()
        .merge(topics::router())
        .merge(browse::router())
        .merge(messages::router())
        .merge(subscriptions::router())
        .merge(subscription_settings::router())
        .merge(events::router())
        .merge(ws::router())
}

/// The topic named in a URL path, validated.
fn topic_param(raw: String) -> Result<TopicName, Problem> {
    TopicName::new(raw).map_err(|e| Problem::invalid_parameter("topic", e))
}

/// The subscription named in a URL path, validated.
fn subscription_param(raw: String) -> Result<SubscriptionName, Problem> {
    SubscriptionName::new(raw).map_err(|e| Problem::invalid_parameter("subscription", e))
}
