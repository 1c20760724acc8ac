//! The HTTP resources: one module per resource, each with its types, handlers and `router()`.

use std::sync::Arc;

use axum::Router;
use opal_core::{Broker, Limits};
use tokio_util::sync::CancellationToken;

pub(crate) use caller::Caller;

// `pub(crate)` where `crate::openapi` lists the handlers in the OpenAPI document.
pub(crate) mod apps;
pub(crate) mod audit;
pub(crate) mod browse;
mod caller;
pub(crate) mod cloudevents;
pub(crate) mod events;
pub(crate) mod grants;
pub(crate) mod health;
pub(crate) mod keys;
mod messages;
pub(crate) mod pagination;
pub(crate) mod publish_formats;
mod published;
pub(crate) mod push;
pub(crate) mod resend;
mod revision;
pub(crate) mod spec;
pub(crate) mod subscription_settings;
pub(crate) mod subscriptions;
pub(crate) mod tasks;
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
pub(crate) struct Shared {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) tenancy: Arc<crate::tenancy::Tenancy>,
    /// SHA-256 of the bootstrap admin key.
    pub(crate) admin_key_hash: [u8; 32],
    pub(crate) limits: Limits,
    pub(crate) max_body_bytes: usize,
    /// Which addresses a push endpoint's URL may name.
    pub(crate) push_policy: opal_dispatch::AddressPolicy,
    /// Cancelled when the server starts draining: long-polls end and `/readyz` turns 503.
    pub(crate) shutdown: CancellationToken,
}

// By hand: the admin key's hash stays out of logs.
impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
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
        .merge(grants::router())
        .merge(apps::router())
        .merge(keys::router())
        .merge(audit::router())
        .merge(push::router())
        .merge(tasks::router())
        .merge(resend::router())
}
