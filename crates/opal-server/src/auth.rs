//! Who is calling: the one place that checks credentials and names the caller.

use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::{Problem, ProblemKind};

/// The authenticated caller of a request. Today only the bootstrap admin exists; apps and their
/// scoped keys will become further variants, and handlers will check scopes against them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The holder of the bootstrap admin key: may do everything.
    Admin,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Admin => f.write_str("admin"),
        }
    }
}

/// Checks credentials. Keys are 256-bit random secrets, so storing their SHA-256 is enough (no
/// slow password hash) and a check costs microseconds.
pub(crate) struct Authenticator {
    admin_key_hash: [u8; 32],
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    pub(crate) fn new(admin_key_hash: [u8; 32]) -> Self {
        Authenticator { admin_key_hash }
    }

    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Problem> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(unauthorized(
                "this endpoint needs an `Authorization: Bearer <key>` header",
                false,
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        let Some(token) = token else {
            return Err(unauthorized(
                "the `Authorization` header must have the form `Bearer <key>`",
                true,
            ));
        };
        let hash = Sha256::digest(token.as_bytes());
        // Constant time, so response timing reveals nothing about how much of the hash matched.
        if bool::from(hash.as_slice().ct_eq(&self.admin_key_hash)) {
            Ok(Principal::Admin)
        } else {
            Err(unauthorized("the API key is not valid", true))
        }
    }
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

/// Middleware guarding every `/v1` route: authenticates, hands the [`Principal`] to the handlers
/// through the request's extensions and to the access log through the response's.
pub(crate) async fn require_principal(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticator.authenticate(request.headers()) {
        Ok(principal) => {
            tracing::Span::current().record("principal", tracing::field::display(&principal));
            request.extensions_mut().insert(principal.clone());
            let mut response = next.run(request).await;
            // For the access log, which sits outside this layer.
            response.extensions_mut().insert(principal);
            response
        }
        Err(problem) => problem.into_response(),
    }
}

/// Handlers that need to know the caller (for scope checks) take a `Principal` argument. It fails
/// closed: a route left outside [`require_principal`] answers 401 instead of running unguarded.
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
    use axum::http::HeaderValue;

    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(Sha256::digest(b"s3cret").into())
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    #[test]
    fn the_right_key_in_any_scheme_case_is_the_admin() {
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "] {
            assert_eq!(
                authenticator().authenticate(&headers(value)).unwrap(),
                Principal::Admin
            );
        }
    }

    #[test]
    fn missing_malformed_and_wrong_credentials_are_refused() {
        let auth = authenticator();
        assert!(auth.authenticate(&HeaderMap::new()).is_err());
        for value in [
            "Bearer",
            "Bearer ",
            "Basic s3cret",
            "s3cret",
            "Bearer s3cret2",
        ] {
            assert!(
                auth.authenticate(&headers(value)).is_err(),
                "{value:?} was accepted"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_key_hash() {
        assert_eq!(format!("{:?}", authenticator()), "Authenticator { .. }");
    }
}
