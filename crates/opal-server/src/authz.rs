//! Authorization: one rule per route, in one table, checked before any handler runs.
//!
//! A route missing from [`rule`] is refused for everyone but admins (fail closed), and the
//! authorization matrix test walks every route of the OpenAPI document, so a new route without a
//! rule fails that test.
//!
//! Names in the path are checked as given: scope patterns match the caller's own short names, and
//! a qualified name of another app (`<app>/<name>`) is refused for every key but an admin's.
//! Whether the named resource exists is not looked at here, so a refusal tells nothing about
//! other apps.

use axum::extract::{FromRequestParts as _, MatchedPath, RawPathParams};
use axum::http::Method;
use axum::http::request::Parts;
use futures_util::FutureExt as _;

use crate::auth::Principal;
use crate::problem::{Problem, ProblemKind};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The `admin` scope.
    Admin,
    /// `manage` (or `admin`): changes to the caller's own resources.
    Manage,
    /// `read`, `manage` or `admin`: looking at the caller's own resources.
    Read,
    /// A `publish:` pattern matching the topic in the path (or `admin`).
    Publish,
    /// A `consume:` pattern matching the subscription in the path (or `admin`).
    Consume,
    /// `admin`, or `read`/`manage` on the caller's own app named in the path.
    OwnApp,
}

/// The rule of a route, by method and route template (as in the OpenAPI document).
pub(crate) fn rule(method: &Method, route: &str) -> Option<Rule> {
    use Rule::*;
    let m = method.as_str();
    Some(match (m, route) {
        ("GET", "/v1/topics") => Read,
        ("GET", "/v1/topics/{topic}") => Read,
        ("PUT" | "PATCH" | "DELETE", "/v1/topics/{topic}") => Manage,
        ("POST", "/v1/topics/{topic}/messages") => Publish,
        ("GET", "/v1/topics/{topic}/messages") => Read,
        ("GET", "/v1/topics/{topic}/grants") => Read,
        ("POST", "/v1/topics/{topic}/grants") => Manage,
        ("DELETE", "/v1/topics/{topic}/grants/{app}") => Manage,
        ("GET", "/v1/subscriptions") => Read,
        ("GET", "/v1/subscriptions/{subscription}") => Read,
        ("PUT" | "PATCH" | "DELETE", "/v1/subscriptions/{subscription}") => Manage,
        ("POST", "/v1/subscriptions/{subscription}/seek") => Manage,
        ("POST", "/v1/subscriptions/{subscription}/redrive") => Manage,
        ("GET", "/v1/subscriptions/{subscription}/secret") => Manage,
        ("POST", "/v1/subscriptions/{subscription}/secret/rotate") => Manage,
        ("GET", "/v1/subscriptions/{subscription}/attempts") => Read,
        // The handler answers another app's task like a missing one.
        ("GET", "/v1/tasks/{message_id}") => Read,
        ("POST", "/v1/subscriptions/{subscription}/resend") => Manage,
        (
            "POST",
            "/v1/subscriptions/{subscription}/pull"
            | "/v1/subscriptions/{subscription}/ack"
            | "/v1/subscriptions/{subscription}/nack"
            | "/v1/subscriptions/{subscription}/extend",
        ) => Consume,
        (
            "GET",
            "/v1/subscriptions/{subscription}/events" | "/v1/subscriptions/{subscription}/ws",
        ) => Consume,
        ("GET", "/v1/apps/{app}") => OwnApp,
        ("GET" | "POST", "/v1/apps") => Admin,
        ("PATCH" | "DELETE", "/v1/apps/{app}") => Admin,
        ("GET" | "POST", "/v1/apps/{app}/keys") => Admin,
        ("GET" | "DELETE", "/v1/apps/{app}/keys/{id}") => Admin,
        ("POST", "/v1/apps/{app}/keys/{id}/rotate") => Admin,
        ("GET", "/v1/audit") => Admin,
        _ => return None,
    })
}

/// A name as scope patterns see it: the caller's own qualified names (`<own app>/<name>`) by
/// their short name, like the short names they stand for.
fn own_short<'a>(principal: &Principal, name: &'a str) -> &'a str {
    name.strip_prefix(principal.app().as_str())
        .and_then(|rest| rest.strip_prefix(opal_core::APP_SEPARATOR))
        .unwrap_or(name)
}

fn forbidden(detail: String) -> Problem {
    Problem::new(ProblemKind::Forbidden, detail)
}

/// Checks the route's rule against the scopes of `principal`, the authenticated caller of the
/// request whose head is `parts`: `Err` holds the answer when the caller may not (or the path's
/// parameters are not UTF-8). Called by `auth_layer` inside the route layer, so that the
/// matched route is known.
pub(crate) fn check(parts: &mut Parts, principal: &Principal) -> Result<(), Problem> {
    // The extractor only reads what routing left in the request: it is ready at once.
    let params = match RawPathParams::from_request_parts(parts, &()).now_or_never() {
        Some(Ok(params)) => params,
        Some(Err(rejection)) => {
            return Err(Problem::new(
                ProblemKind::InvalidRequest,
                rejection.body_text(),
            ));
        }
        None => {
            return Err(Problem::new(
                ProblemKind::Internal,
                "the path parameters of this route could not be read",
            ));
        }
    };
    verdict(parts, principal, &params)
}

/// Whether `principal` may take the route of the request whose head is `parts`, with the path's
/// `params`. Borrows everything: this runs on every `/v1` request.
fn verdict(parts: &Parts, principal: &Principal, params: &RawPathParams) -> Result<(), Problem> {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let method = &parts.method;
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v)
    };
    // A qualified name of another app in the path: refused whether it exists or not, so that the
    // answer tells nothing about other apps. (Admins may name any app's resources.)
    if !principal.is_admin() {
        for name in ["topic", "subscription"] {
            let value = param(name);
            if let Some((app, _)) = value.split_once(opal_core::APP_SEPARATOR)
                && app != principal.app().as_str()
            {
                return Err(forbidden(format!(
                    "this key may not reach `{value}`: resources of other apps are out of its reach"
                )));
            }
        }
    }
    match rule(method, route) {
        None if principal.is_admin() => Ok(()),
        None => Err(forbidden(format!(
            "no rule allows `{method} {route}` for this key"
        ))),
        Some(Rule::Admin) => {
            if principal.is_admin() {
                Ok(())
            } else {
                Err(forbidden("this needs a key with the `admin` scope".into()))
            }
        }
        Some(Rule::Manage) => {
            if principal.may_manage() {
                Ok(())
            } else {
                Err(forbidden("this needs a key with the `manage` scope".into()))
            }
        }
        Some(Rule::Read) => {
            if principal.may_read() {
                Ok(())
            } else {
                Err(forbidden(
                    "this needs a key with the `read` or `manage` scope".into(),
                ))
            }
        }
        Some(Rule::Publish) => {
            let topic = param("topic");
            if principal.may_publish(own_short(principal, topic)) {
                Ok(())
            } else {
                Err(forbidden(format!(
                    "this key may not publish to `{topic}`: no `publish:` scope matches it"
                )))
            }
        }
        Some(Rule::Consume) => {
            let subscription = param("subscription");
            if principal.may_consume(own_short(principal, subscription)) {
                Ok(())
            } else {
                Err(forbidden(format!(
                    "this key may not consume from `{subscription}`: no `consume:` scope matches it"
                )))
            }
        }
        Some(Rule::OwnApp) => {
            let app = param("app");
            if principal.is_admin() || (app == principal.app().as_str() && principal.may_read()) {
                Ok(())
            } else {
                Err(forbidden(
                    "a key may read only its own app, with the `read` or `manage` scope".into(),
                ))
            }
        }
    }
}
