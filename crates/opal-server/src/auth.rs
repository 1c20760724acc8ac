//! Who is calling: the one place that checks credentials and names the caller.
//!
//! Two kinds of key exist. App keys (`opal_<key id>_<secret>`) are looked up by id and their
//! SHA-256 compared in constant time; their record says the app, the scopes and whether the key
//! is still valid. The bootstrap admin key (given or generated at first start) is compared by its
//! SHA-256 alone; it acts for the `default` app with the `admin` scope.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use opal_core::tenancy::{ApiKey, KeyStatus, Scope};
use opal_core::{AppName, SubscriptionName, TopicName};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ClientCertificate;
use crate::problem::{Problem, ProblemKind};
use crate::tenancy::{Tenancy, parse_key};

/// The authenticated caller of a request. Cheap to clone (it is, several times per request):
/// the key record is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// The app key used; `None` for the bootstrap admin key.
    key: Option<Arc<ApiKey>>,
}

/// What the bootstrap admin key acts as.
static DEFAULT_APP: LazyLock<AppName> = LazyLock::new(AppName::default_app);
const BOOTSTRAP_SCOPES: &[Scope] = &[Scope::Admin];

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            None => f.write_str("admin"),
            Some(key) => write!(f, "{}:{}", key.app, key.id),
        }
    }
}

impl Principal {
    pub(crate) fn bootstrap_admin() -> Self {
        Principal { key: None }
    }

    pub(crate) fn with_key(key: Arc<ApiKey>) -> Self {
        Principal { key: Some(key) }
    }

    /// The app the caller acts for: short names are this app's.
    pub(crate) fn app(&self) -> &AppName {
        self.key.as_ref().map_or(&DEFAULT_APP, |k| &k.app)
    }

    fn scopes(&self) -> &[Scope] {
        self.key.as_ref().map_or(BOOTSTRAP_SCOPES, |k| &k.scopes)
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.scopes().contains(&Scope::Admin)
    }

    pub(crate) fn may_manage(&self) -> bool {
        self.is_admin() || self.scopes().contains(&Scope::Manage)
    }

    pub(crate) fn may_read(&self) -> bool {
        self.may_manage() || self.scopes().contains(&Scope::Read)
    }

    /// Publishing to a topic named `raw` (as given in the path).
    pub(crate) fn may_publish(&self, raw: &str) -> bool {
        self.is_admin()
            || self
                .scopes()
                .iter()
                .any(|s| matches!(s, Scope::Publish(p) if p.matches(raw)))
    }

    /// Consuming from a subscription named `raw` (as given in the path).
    pub(crate) fn may_consume(&self, raw: &str) -> bool {
        self.is_admin()
            || self
                .scopes()
                .iter()
                .any(|s| matches!(s, Scope::Consume(p) if p.matches(raw)))
    }

    /// The stored name of a topic named `raw` by this caller: a short name is the caller's own
    /// app's; `<app>/<name>` names another app's, which only admins reach this way. For anyone
    /// else it does not exist, whether it does or not.
    pub(crate) fn topic(&self, raw: &str) -> Result<TopicName, Problem> {
        if raw.contains(opal_core::APP_SEPARATOR) {
            let name = TopicName::new(raw).map_err(|e| Problem::invalid_parameter("topic", e))?;
            if self.is_admin() || name.app() == Some(self.app().as_str()) {
                return Ok(name);
            }
            return Err(not_found("topic", raw));
        }
        TopicName::qualified(self.app(), raw).map_err(|e| Problem::invalid_parameter("topic", e))
    }

    /// As [`Principal::topic`], for a subscription.
    pub(crate) fn subscription(&self, raw: &str) -> Result<SubscriptionName, Problem> {
        if raw.contains(opal_core::APP_SEPARATOR) {
            let name = SubscriptionName::new(raw)
                .map_err(|e| Problem::invalid_parameter("subscription", e))?;
            if self.is_admin() || name.app() == Some(self.app().as_str()) {
                return Ok(name);
            }
            return Err(not_found("subscription", raw));
        }
        SubscriptionName::qualified(self.app(), raw)
            .map_err(|e| Problem::invalid_parameter("subscription", e))
    }

    /// How this caller sees a stored topic name: short if it is the caller's app's.
    pub(crate) fn local_topic(&self, name: &TopicName) -> TopicName {
        match name.app() {
            Some(app) if app == self.app().as_str() => {
                TopicName::new(name.short()).unwrap_or_else(|_| name.clone())
            }
            _ => name.clone(),
        }
    }

    /// How this caller sees a stored subscription name: short if it is the caller's app's.
    pub(crate) fn local_subscription(&self, name: &SubscriptionName) -> SubscriptionName {
        match name.app() {
            Some(app) if app == self.app().as_str() => {
                SubscriptionName::new(name.short()).unwrap_or_else(|_| name.clone())
            }
            _ => name.clone(),
        }
    }
}

fn not_found(kind: &str, raw: &str) -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        format!("{kind} `{raw}` does not exist"),
    )
}

fn unauthorized(detail: &str, invalid_token: bool) -> Problem {
    // RFC 6750 §3: a challenge always; `error="invalid_token"` only when a token was presented.
    let challenge = if invalid_token {
        r#"Bearer realm="opal", error="invalid_token""#
    } else {
        r#"Bearer realm="opal""#
    };
    Problem::new(ProblemKind::Unauthorized, detail).with_header(WWW_AUTHENTICATE, challenge)
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(unauthorized(
            "this endpoint needs an `Authorization: Bearer <key>` header",
            false,
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "the `Authorization` header must have the form `Bearer <key>`",
                true,
            )
        })
}

/// Checks a presented key, or (without an `Authorization` header) the verified TLS client
/// certificate of the connection. Failures say only what the holder of that exact key may learn.
pub(crate) fn authenticate(
    tenancy: &Tenancy,
    admin_key_hash: &[u8; 32],
    headers: &HeaderMap,
    client: Option<&ClientCertificate>,
) -> Result<Principal, Problem> {
    if let (None, Some(client)) = (headers.get(AUTHORIZATION), client) {
        return by_certificate(tenancy, client);
    }
    let token = bearer(headers)?;
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(id) = parse_key(token)
        && let Some(key) = tenancy.key(&id)
        // Constant time, so response timing reveals nothing about how much of the hash matched.
        && bool::from(hash.as_slice().ct_eq(&key.hash))
    {
        return match key.status(tenancy.clock.now_ms()) {
            KeyStatus::Active => Ok(Principal::with_key(key)),
            KeyStatus::Expired => Err(unauthorized("the API key has expired", true)),
            KeyStatus::Revoked => Err(unauthorized("the API key was revoked", true)),
        };
    }
    if bool::from(hash.as_slice().ct_eq(admin_key_hash)) {
        return Ok(Principal::bootstrap_admin());
    }
    Err(unauthorized("the API key is not valid", true))
}

fn by_certificate(tenancy: &Tenancy, client: &ClientCertificate) -> Result<Principal, Problem> {
    let Some(key) = tenancy.key_by_certificate(&client.sha256) else {
        return Err(unauthorized(
            "no API key stands for this client certificate; send `Authorization: Bearer <key>`",
            false,
        ));
    };
    match key.status(tenancy.clock.now_ms()) {
        KeyStatus::Active => Ok(Principal::with_key(key)),
        KeyStatus::Expired => Err(unauthorized(
            "the API key of this client certificate has expired",
            false,
        )),
        KeyStatus::Revoked => Err(unauthorized(
            "the API key of this client certificate was revoked",
            false,
        )),
    }
}

/// The client's address, when the server was started with connection info (tests driving the
/// router directly have none).
pub(crate) fn client_addr(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Handlers that need to know the caller take a `Principal` argument. It fails closed: a route
/// left outside the `auth_layer` answers 401 instead of running unguarded.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            unauthorized(
                "this endpoint needs an `Authorization: Bearer <key>` header",
                false,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &[&str]) -> Principal {
        Principal::with_key(Arc::new(ApiKey {
            id: opal_core::tenancy::KeyId::new("abcdefghij01").unwrap(),
            app: AppName::new("acme").unwrap(),
            name: "test".into(),
            scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
            hash: [0; 32],
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            rotated_from: None,
            client_certificate_sha256: None,
        }))
    }

    #[test]
    fn short_names_are_the_callers_and_foreign_ones_do_not_exist_for_it() {
        let p = principal(&["manage"]);
        assert_eq!(p.topic("orders").unwrap().as_str(), "acme/orders");
        assert_eq!(p.topic("acme/orders").unwrap().as_str(), "acme/orders");
        let foreign = p.topic("isv1/orders").unwrap_err();
        assert_eq!(foreign.kind(), ProblemKind::NotFound);
        assert_eq!(
            Principal::bootstrap_admin()
                .subscription("isv1/s")
                .unwrap()
                .as_str(),
            "isv1/s"
        );
        assert_eq!(
            p.local_topic(&TopicName::new("acme/orders").unwrap())
                .as_str(),
            "orders"
        );
        assert_eq!(
            p.local_topic(&TopicName::new("isv1/orders").unwrap())
                .as_str(),
            "isv1/orders"
        );
    }

    #[test]
    fn scopes_decide_what_a_key_may_do() {
        let p = principal(&["publish:orders.*", "consume:billing"]);
        assert!(p.may_publish("orders.created") && !p.may_publish("billing"));
        assert!(p.may_consume("billing") && !p.may_consume("orders.created"));
        assert!(!p.may_read() && !p.may_manage() && !p.is_admin());
        let reader = principal(&["read"]);
        assert!(reader.may_read() && !reader.may_manage());
        let manager = principal(&["manage"]);
        assert!(manager.may_read() && !manager.may_publish("x"));
        let admin = Principal::bootstrap_admin();
        assert!(admin.may_publish("x") && admin.may_consume("y") && admin.may_manage());
        assert_eq!(admin.to_string(), "admin");
        assert_eq!(p.to_string(), "acme:abcdefghij01");
    }
}
