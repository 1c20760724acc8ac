//! Push endpoints of subscriptions: the `push` member of create, update and view, the signing
//! secret (read and rotate), and the attempt log.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use jiff::Timestamp;
use opal_core::{
    AttemptQuery, AttemptStatus, EndpointState, PushAttempt, PushConfig, PushFormat, PushSecret,
};
use opal_dispatch::{AddressPolicy, SigningSecret};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::revision::{etag, update_subscription_at_revision};
use super::{AppState, Caller};
use crate::json::OptionalJson;
use crate::path::Path;
use crate::problem::{FieldError, Problem};

const DEFAULT_ATTEMPTS: usize = 50;
const MAX_ATTEMPTS: usize = 1_000;
/// How long a rotated-out secret keeps signing when the request does not say: a day.
const DEFAULT_OVERLAP_MS: u64 = 86_400_000;
const MAX_OVERLAP_MS: u64 = 7 * 86_400_000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/subscriptions/{subscription}/secret", get(read_secret))
        .route(
            "/v1/subscriptions/{subscription}/secret/rotate",
            post(rotate_secret),
        )
        .route(
            "/v1/subscriptions/{subscription}/attempts",
            get(list_attempts),
        )
}

/// `format` of a push endpoint.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum FormatBody {
    /// A structured-mode CloudEvent (`application/cloudevents+json`), the default.
    Cloudevents,
    /// A binary-mode CloudEvent: the payload as body, attributes as `ce-*` headers.
    Binary,
    /// The payload as body, attributes as `opal-attr-*` headers.
    Raw,
}

impl From<FormatBody> for PushFormat {
    fn from(f: FormatBody) -> Self {
        match f {
            FormatBody::Cloudevents => PushFormat::CloudEvents,
            FormatBody::Binary => PushFormat::Binary,
            FormatBody::Raw => PushFormat::Raw,
        }
    }
}

impl From<PushFormat> for FormatBody {
    fn from(f: PushFormat) -> Self {
        match f {
            PushFormat::CloudEvents => FormatBody::Cloudevents,
            PushFormat::Binary => FormatBody::Binary,
            PushFormat::Raw => FormatBody::Raw,
        }
    }
}

/// `push` when creating a subscription: Opal POSTs every delivery to `url`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PushBody {
    /// `https://…` (or `http://`); its host must not resolve to a loopback, private or
    /// link-local address unless the operator allows it (`--push-allow-nets`).
    #[schema(max_length = 2048)]
    #[schema(
        pattern = "^[hH][tT][tT][pP][sS]?://(?:[A-Za-z0-9-]+\\.)*[A-Za-z][A-Za-z0-9-]*(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}))?(?:[/?#][!-~]*)?$"
    )]
    url: String,
    /// `whsec_<base64 of 24 to 64 bytes>` (padding optional: 8 to 20 groups of four characters
    /// and a tail, or 21 groups and at most one more byte); generated when left out (read it
    /// back with `GET /v1/subscriptions/{subscription}/secret`).
    #[schema(
        pattern = "^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/]{2}(?:==)?)?)$"
    )]
    secret: Option<String>,
    /// How long one attempt may take (default 15000).
    #[schema(minimum = 100, maximum = 60_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    timeout_ms: Option<u64>,
    /// Attempts waiting for this endpoint's answer at most (default 16).
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    max_in_flight: Option<u32>,
    /// Attempts per second at most; absent or `null`: no limit.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    rate_limit_per_s: Option<u32>,
    format: Option<FormatBody>,
    /// Sent with every delivery; lower-case names, not `webhook-*`, `ce-*` or the
    /// `content-type`, `host`, `user-agent` and framing headers.
    headers: Option<BTreeMap<String, String>>,
    /// The wait before each attempt in ms, the first normally 0; the list's length is the
    /// number of attempts (default: 0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), each
    /// waited with ±20 % jitter.
    #[schema(min_items = 1, max_items = 32)]
    retry_schedule_ms: Option<Vec<u64>>,
    /// Run the CloudEvents webhook validation handshake (`OPTIONS` with
    /// `WebHook-Request-Origin`) before the first delivery.
    validate: Option<bool>,
}

impl PushBody {
    pub(super) fn into_config(self, policy: &AddressPolicy) -> Result<PushConfig, Problem> {
        let secret = match self.secret {
            Some(text) => parse_secret(&text, "/push/secret")?,
            None => SigningSecret::generate().as_str().to_owned(),
        };
        let mut config = PushConfig::new(
            self.url,
            PushSecret {
                secret,
                expires_at: None,
            },
        );
        if let Some(ms) = self.timeout_ms {
            config.timeout_ms = ms;
        }
        if let Some(n) = self.max_in_flight {
            config.max_in_flight = n;
        }
        config.rate_limit_per_s = self.rate_limit_per_s;
        if let Some(f) = self.format {
            config.format = f.into();
        }
        if let Some(h) = self.headers {
            config.headers = h;
        }
        if let Some(s) = self.retry_schedule_ms {
            config.retry_schedule_ms = s;
        }
        config.validate = self.validate.unwrap_or(false);
        check_url(policy, &config.url)?;
        Ok(config)
    }
}

/// `push` in a `PATCH`: members left out keep their values; `null` for the whole member turns
/// push off (the subscription is pulled again).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PushPatch {
    /// Needed when the subscription had no push endpoint.
    #[schema(max_length = 2048)]
    #[schema(
        pattern = "^[hH][tT][tT][pP][sS]?://(?:[A-Za-z0-9-]+\\.)*[A-Za-z][A-Za-z0-9-]*(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}))?(?:[/?#][!-~]*)?$"
    )]
    url: Option<String>,
    #[schema(minimum = 100, maximum = 60_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    timeout_ms: Option<u64>,
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    max_in_flight: Option<u32>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "crate::json::whole::nullable")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)]
    rate_limit_per_s: Option<Option<u32>>,
    format: Option<FormatBody>,
    /// Replaces every configured header.
    headers: Option<BTreeMap<String, String>>,
    #[schema(min_items = 1, max_items = 32)]
    retry_schedule_ms: Option<Vec<u64>>,
    validate: Option<bool>,
    /// `true` enables an endpoint the dispatcher (or its owner) disabled; `false` disables it.
    enabled: Option<bool>,
}

impl PushPatch {
    /// The endpoint after this change; `now` stamps a disabling.
    pub(super) fn apply(
        self,
        current: Option<PushConfig>,
        now: Timestamp,
        policy: &AddressPolicy,
    ) -> Result<PushConfig, Problem> {
        let mut config = match (current, self.url) {
            (Some(mut c), url) => {
                if let Some(url) = url {
                    check_url(policy, &url)?;
                    c.url = url;
                }
                c
            }
            (None, Some(url)) => {
                check_url(policy, &url)?;
                PushConfig::new(
                    url,
                    PushSecret {
                        secret: SigningSecret::generate().as_str().to_owned(),
                        expires_at: None,
                    },
                )
            }
            (None, None) => {
                return Err(Problem::invalid(vec![FieldError::at(
                    "/push/url",
                    "needed to turn a pull subscription into a push subscription",
                )]));
            }
        };
        if let Some(ms) = self.timeout_ms {
            config.timeout_ms = ms;
        }
        if let Some(n) = self.max_in_flight {
            config.max_in_flight = n;
        }
        if let Some(r) = self.rate_limit_per_s {
            config.rate_limit_per_s = r;
        }
        if let Some(f) = self.format {
            config.format = f.into();
        }
        if let Some(h) = self.headers {
            config.headers = h;
        }
        if let Some(s) = self.retry_schedule_ms {
            config.retry_schedule_ms = s;
        }
        if let Some(v) = self.validate {
            config.validate = v;
        }
        match (self.enabled, &config.state) {
            (Some(true), _) => config.state = EndpointState::Enabled,
            (Some(false), EndpointState::Enabled) => {
                config.state = EndpointState::Disabled {
                    at: now,
                    reason: "disabled by its owner".into(),
                }
            }
            _ => {}
        }
        Ok(config)
    }
}

/// Tells `"push": null` (`Some(None)`) from leaving `push` out (`None`).
pub(super) fn present<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<PushPatch>>, D::Error> {
    Option::<PushPatch>::deserialize(d).map(Some)
}

fn parse_secret(text: &str, pointer: &str) -> Result<String, Problem> {
    SigningSecret::parse(text)
        .map(|s| s.as_str().to_owned())
        .map_err(|e| Problem::invalid(vec![FieldError::at(pointer, e.to_string())]))
}

/// The URL's syntax and, for an IP literal, the address; names are checked when resolved.
fn check_url(policy: &AddressPolicy, url: &str) -> Result<(), Problem> {
    opal_dispatch::check_callback_url(policy, url)
        .map(drop)
        .map_err(|e| Problem::invalid(vec![FieldError::at("/push/url", e.to_string())]))
}

/// A push endpoint as shown (never its secrets).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct PushView {
    url: String,
    timeout_ms: u64,
    max_in_flight: u32,
    rate_limit_per_s: Option<u32>,
    format: FormatBody,
    headers: BTreeMap<String, String>,
    retry_schedule_ms: Vec<u64>,
    validate: bool,
    /// `false` while the dispatcher holds deliveries back: after a `410 Gone`, after failing
    /// for too long, or when its owner disabled it. `PATCH` with `{"push": {"enabled": true}}`.
    enabled: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    disabled_at: Option<Timestamp>,
    disabled_reason: Option<String>,
    /// Set on an app's `opal.callbacks` subscription only: each message goes to the URL in
    /// this attribute (task results to their callback URLs), not to `url`.
    url_attribute: Option<String>,
}

impl From<PushConfig> for PushView {
    fn from(c: PushConfig) -> Self {
        let (enabled, disabled_at, disabled_reason) = match c.state {
            EndpointState::Enabled => (true, None, None),
            EndpointState::Disabled { at, reason } => (false, Some(at), Some(reason)),
        };
        PushView {
            url: c.url,
            timeout_ms: c.timeout_ms,
            max_in_flight: c.max_in_flight,
            rate_limit_per_s: c.rate_limit_per_s,
            format: c.format.into(),
            headers: c.headers,
            retry_schedule_ms: c.retry_schedule_ms,
            validate: c.validate,
            enabled,
            disabled_at,
            disabled_reason,
            url_attribute: c.url_attribute,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SecretView {
    /// The current secret: verify signatures with it (`whsec_…`).
    secret: String,
    /// Rotated-out secrets still signing beside the current one, until `expires_at`.
    previous: Vec<PreviousSecret>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PreviousSecret {
    secret: String,
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

fn secret_view(config: &PushConfig, now: Timestamp) -> SecretView {
    let mut live = config.signing_secrets(now);
    let secret = live.next().map(|s| s.secret.clone()).unwrap_or_default();
    SecretView {
        secret,
        previous: live
            .filter_map(|s| {
                s.expires_at.map(|expires_at| PreviousSecret {
                    secret: s.secret.clone(),
                    expires_at,
                })
            })
            .collect(),
    }
}

/// `409`: the request is fine, the subscription's state (pull, not push) does not allow it.
pub(super) fn not_push(name: &str) -> Problem {
    Problem::new(
        crate::problem::ProblemKind::Conflict,
        format!("subscription {name} has no push endpoint"),
    )
}

/// The signing secrets of a push subscription (the owner's `manage` scope).
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{subscription}/secret",
    operation_id = "readPushSecret",
    tag = "push",
    summary = "Read a push endpoint's signing secrets",
    params(crate::openapi::SubscriptionPath),
    responses(
        (status = 200, description = "The current secret and those still signing beside it.", body = SecretView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn read_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
) -> Result<axum::Json<SecretView>, Problem> {
    let name = caller.subscription(&subscription)?;
    let (s, _) = state.broker.get_subscription(&name).await?;
    let push = s.config.push.ok_or_else(|| not_push(&subscription))?;
    Ok(axum::Json(secret_view(&push, state.tenancy.clock.now())))
}

/// `POST …/secret/rotate`: all members optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    /// The new secret (`whsec_…`); generated when left out.
    #[schema(
        pattern = "^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/]{2}(?:==)?)?)$"
    )]
    secret: Option<String>,
    /// How long the current secret keeps signing beside the new one (default 86400000, a
    /// day; 0 stops it at once).
    #[schema(minimum = 0, maximum = 604_800_000)]
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    overlap_ms: Option<u64>,
}

/// Makes a new secret current; the old one keeps signing beside it for the overlap, so
/// receivers can switch without refusing a delivery.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{subscription}/secret/rotate",
    operation_id = "rotatePushSecret",
    tag = "push",
    summary = "Rotate a push endpoint's signing secret",
    params(crate::openapi::SubscriptionPath),
    request_body(content = RotateSecret, content_type = "application/json"),
    responses(
        (status = 200, description = "Rotated.", body = SecretView, headers(("ETag" = String, description = "The subscription's new revision."))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    OptionalJson(body): OptionalJson<RotateSecret>,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.subscription(&subscription)?;
    let new = match &body.secret {
        Some(text) => parse_secret(text, "/secret")?,
        None => SigningSecret::generate().as_str().to_owned(),
    };
    let overlap = body.overlap_ms.unwrap_or(DEFAULT_OVERLAP_MS);
    if overlap > MAX_OVERLAP_MS {
        return Err(Problem::invalid(vec![FieldError::at(
            "/overlap_ms",
            format!("must be at most {MAX_OVERLAP_MS}"),
        )]));
    }
    let now = state.tenancy.clock.now();
    let until = now
        .checked_add(jiff::SignedDuration::from_millis(overlap as i64))
        .unwrap_or(now);
    let updated = update_subscription_at_revision(&state, &name, None, |mut config| {
        let push = config
            .push
            .as_mut()
            .ok_or_else(|| not_push(&subscription))?;
        let mut secrets = vec![PushSecret {
            secret: new.clone(),
            expires_at: None,
        }];
        secrets.extend(push.signing_secrets(now).map(|s| PushSecret {
            secret: s.secret.clone(),
            expires_at: Some(s.expires_at.map_or(until, |at| at.min(until))),
        }));
        secrets.retain(|s| s.expires_at.is_none_or(|at| at > now));
        push.secrets = secrets;
        config.validate(&state.limits)?;
        Ok(config)
    })
    .await?;
    caller
        .audit(&state, "subscription.secret.rotate", &name)
        .await;
    let push = updated
        .config
        .push
        .as_ref()
        .ok_or_else(|| not_push(&subscription))?;
    Ok((etag(updated.revision), axum::Json(secret_view(push, now))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AttemptsQuery {
    /// Only the attempts of this message.
    message_id: Option<Uuid>,
    /// Only attempts that ended so.
    #[param(inline)]
    status: Option<StatusParam>,
    /// Only attempts at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<Timestamp>,
    /// Only attempts before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<Timestamp>,
    /// `next_cursor` of the previous page.
    cursor: Option<Uuid>,
    /// Most attempts on the page (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `status` of an attempt.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum StatusParam {
    /// A 2xx answer.
    Succeeded,
    /// Anything else.
    Failed,
}

/// One HTTP attempt of a push delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AttemptView {
    id: Uuid,
    message_id: Uuid,
    partition: u32,
    offset: u64,
    /// 1 for the first attempt of the message.
    attempt: u32,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    url: String,
    /// `succeeded` (a 2xx answer) or `failed`.
    status: String,
    /// The HTTP status, when an answer came.
    status_code: Option<u16>,
    latency_ms: u64,
    /// The first KiB of the answer's body.
    response: String,
    /// Why no answer counted: timeout, refused connection, TLS, refused by the SSRF guard….
    error: Option<String>,
}

impl From<PushAttempt> for AttemptView {
    fn from(a: PushAttempt) -> Self {
        AttemptView {
            id: a.id,
            message_id: a.message_id,
            partition: a.partition,
            offset: a.offset,
            attempt: a.attempt,
            at: a.at,
            url: a.url,
            status: a.status.as_str().to_owned(),
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            response: a.response,
            error: a.error,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AttemptPage {
    attempts: Vec<AttemptView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<Uuid>,
}

/// The attempt log of a push subscription, newest first (kept for a week).
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{subscription}/attempts",
    operation_id = "listPushAttempts",
    tag = "push",
    summary = "List a push subscription's delivery attempts",
    params(crate::openapi::SubscriptionPath, AttemptsQuery),
    responses(
        (status = 200, description = "Attempts, newest first.", body = AttemptPage),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn list_attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    query: Result<Query<AttemptsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AttemptPage>, Problem> {
    let name = caller.subscription(&subscription)?;
    let Query(query) =
        query.map_err(|e| Problem::invalid(vec![FieldError::parameter("query", e.body_text())]))?;
    let limit = query.limit.unwrap_or(DEFAULT_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS).contains(&limit) {
        return Err(Problem::invalid(vec![FieldError::parameter(
            "limit",
            format!("must be between 1 and {MAX_ATTEMPTS}"),
        )]));
    }
    let status = query.status.map(|s| match s {
        StatusParam::Succeeded => AttemptStatus::Succeeded,
        StatusParam::Failed => AttemptStatus::Failed,
    });
    let attempts = state
        .broker
        .list_push_attempts(
            &name,
            AttemptQuery {
                message_id: query.message_id,
                status,
                since: query.since,
                until: query.until,
                before_id: query.cursor,
                limit,
            },
        )
        .await?;
    let next_cursor = (attempts.len() == limit)
        .then(|| attempts.last().map(|a| a.id))
        .flatten();
    Ok(axum::Json(AttemptPage {
        attempts: attempts.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
