//! The caller of a handler: who (the [`Principal`]), from where, under which request id; and the
//! audit-trail entry for a change it made.

use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use opal_core::tenancy::AuditEntry;

use super::AppState;
use crate::auth::{Principal, client_addr};
use crate::layers::X_REQUEST_ID;
use crate::problem::Problem;

#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    client: Option<SocketAddr>,
    /// Kept as the header value (a reference count), read only if a change is audited.
    request_id: Option<HeaderValue>,
}

impl Deref for Caller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        Ok(Caller {
            principal,
            client: client_addr(&parts.extensions),
            request_id: parts.headers.get(&X_REQUEST_ID).cloned(),
        })
    }
}

impl Caller {
    /// Records a change this caller made: `action` (e.g. `topic.create`) on `resource` (a stored
    /// name, an app, or `<app>:<key id>`).
    pub(crate) async fn audit(&self, state: &AppState, action: &str, resource: impl Display) {
        state
            .tenancy
            .audit(AuditEntry {
                at_ms: state.tenancy.clock.now_ms(),
                actor: self.principal.to_string(),
                actor_app: self.principal.app().to_string(),
                action: action.to_owned(),
                resource: resource.to_string(),
                client: self.client.map(|a| a.to_string()),
                request_id: self
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            })
            .await;
    }
}
