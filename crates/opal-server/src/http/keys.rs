//! `/v1/apps/{app}/keys`: API keys of an app (admin only). A key's secret is in the answer that
//! creates it and nowhere else, ever.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use jiff::Timestamp;
use opal_core::tenancy::{ApiKey, KeyId, Scope};
use serde::{Deserialize, Serialize};

use super::apps::app_param;
use super::{AppState, Caller};
use crate::json::Json;
use crate::path::Path;
use crate::problem::{FieldError, Problem};
use crate::tenancy::{KeySpec, NewSecret};

/// Longest key name.
const MAX_KEY_NAME: usize = 200;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{app}/keys", get(list_keys).post(create_key))
        .route("/v1/apps/{app}/keys/{id}", get(get_key).delete(revoke_key))
        .route("/v1/apps/{app}/keys/{id}/rotate", post(rotate_key))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// What the key is for, e.g. `ci` (1 to 200 characters).
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// `admin`, `manage`, `read`, `publish:<topic pattern>`, `consume:<subscription pattern>`;
    /// a pattern is name characters and `*` (any run of characters), matching the app's own
    /// short names. At least one.
    #[schema(schema_with = scopes_schema)]
    scopes: Vec<String>,
    /// When the key stops working (RFC 3339); `null` or left out: never.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<String>,
    /// The SHA-256 of a TLS client certificate (64 hex digits, as `openssl x509 -noout
    /// -fingerprint -sha256` prints it, colons allowed) that stands for this key: requests on a
    /// connection with that certificate (verified by the server's client CA) and without an
    /// `Authorization` header act as this key. `null` or left out: none.
    #[serde(default)]
    #[schema(pattern = "^(?:[0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$")]
    client_certificate_sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    /// Until when the old key keeps working (RFC 3339); left out: now, so it stops at once.
    /// Never later than the old key's own expiry.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    old_key_expires_at: Option<String>,
}

/// A key as listed: everything but the secret, which is not kept.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyView {
    id: String,
    app: String,
    name: String,
    scopes: Vec<String>,
    /// `active`, `expired` or `revoked`.
    status: &'static str,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<Timestamp>,
    /// The key this one replaced, when made by a rotation.
    rotated_from: Option<String>,
    /// The client certificate (SHA-256, hex) that stands for this key, if any.
    client_certificate_sha256: Option<String>,
}

/// A new key: as listed, plus the secret (`key`), shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NewKeyView {
    /// The secret: `opal_<id>_<43 characters>`. Keep it; it cannot be shown again.
    key: String,
    #[serde(flatten)]
    view: KeyView,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct KeyList {
    keys: Vec<KeyView>,
}

fn scopes_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::json_schema(serde_json::json!({
        "type": "array",
        "minItems": 1,
        "maxItems": 100,
        "items": {
            "type": "string",
            "pattern": "^(?:admin|manage|read|(?:publish|consume):[A-Za-z0-9._*-]{1,200})$"
        }
    }))
}

fn time(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or_default()
}

fn view(key: &ApiKey, now_ms: i64) -> KeyView {
    KeyView {
        id: key.id.to_string(),
        app: key.app.to_string(),
        name: key.name.clone(),
        scopes: key.scopes.iter().map(ToString::to_string).collect(),
        status: key.status(now_ms).as_str(),
        created_at: time(key.created_at_ms),
        expires_at: key.expires_at_ms.map(time),
        revoked_at: key.revoked_at_ms.map(time),
        rotated_from: key.rotated_from.as_ref().map(ToString::to_string),
        client_certificate_sha256: key
            .client_certificate_sha256
            .as_ref()
            .map(|fp| fp.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

fn new_key(state: &AppState, key: &Arc<ApiKey>, secret: NewSecret) -> NewKeyView {
    NewKeyView {
        key: secret.text,
        view: view(key, state.tenancy.clock.now_ms()),
    }
}

/// A SHA-256 fingerprint as hex, with or without colons between the pairs.
fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: String = text.chars().filter(|&c| c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn key_param(raw: &str) -> Result<KeyId, Problem> {
    KeyId::new(raw).map_err(|e| Problem::invalid_parameter("id", e))
}

/// An RFC 3339 time in body member `pointer`, as milliseconds.
fn time_member(raw: &str, pointer: &str) -> Result<i64, Problem> {
    raw.parse::<Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            Problem::invalid(vec![FieldError::at(
                pointer,
                format!("is not an RFC 3339 time: {e}"),
            )])
        })
}

/// Creates a key and answers its secret, once.
#[utoipa::path(
    post,
    path = "/v1/apps/{app}/keys",
    operation_id = "createKey",
    tag = "apps",
    summary = "Create an API key (admin)",
    params(crate::openapi::AppPath),
    request_body(content = CreateKey, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `key` is the secret, shown only here.", body = NewKeyView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    Json(body): Json<CreateKey>,
) -> Result<impl IntoResponse, Problem> {
    let app = app_param(&app)?;
    let mut errors = Vec::new();
    if body.name.is_empty() || body.name.chars().count() > MAX_KEY_NAME {
        errors.push(FieldError::at(
            "/name",
            format!("must be 1 to {MAX_KEY_NAME} characters long"),
        ));
    }
    if body.scopes.is_empty() || body.scopes.len() > 100 {
        errors.push(FieldError::at("/scopes", "must hold 1 to 100 scopes"));
    }
    let mut scopes = Vec::new();
    for (i, text) in body.scopes.iter().enumerate() {
        match text.parse::<Scope>() {
            Ok(scope) if !scopes.contains(&scope) => scopes.push(scope),
            Ok(_) => {}
            Err(err) => errors.push(FieldError::at(
                format!("/scopes/{i}"),
                match err {
                    opal_core::BrokerError::Invalid { reason, .. } => reason,
                    other => other.to_string(),
                },
            )),
        }
    }
    let expires_at_ms = match body.expires_at.as_deref() {
        None => None,
        Some(raw) => match time_member(raw, "/expires_at") {
            Ok(ms) => Some(ms),
            Err(problem) => return Err(problem),
        },
    };
    let client_certificate_sha256 = match body.client_certificate_sha256.as_deref() {
        None => None,
        Some(text) => match parse_fingerprint(text) {
            Some(fingerprint) => Some(fingerprint),
            None => {
                errors.push(FieldError::at(
                    "/client_certificate_sha256",
                    "must be 64 hex digits (pairs may be separated by colons)",
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let spec = KeySpec {
        name: body.name,
        scopes,
        expires_at_ms,
        client_certificate_sha256,
    };
    let (key, secret) = state.tenancy.create_key(&app, spec).await?;
    caller
        .audit(&state, "key.create", format!("{app}:{}", key.id))
        .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(new_key(&state, &key, secret)),
    ))
}

/// The app's keys (never their secrets), oldest first.
#[utoipa::path(
    get,
    path = "/v1/apps/{app}/keys",
    operation_id = "listKeys",
    tag = "apps",
    summary = "List an app's API keys (admin)",
    params(crate::openapi::AppPath),
    responses(
        (status = 200, description = "The keys, oldest first.", body = KeyList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn list_keys(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> Result<axum::Json<KeyList>, Problem> {
    let app = app_param(&app)?;
    if state.tenancy.app(&app).is_none() {
        return Err(opal_core::BrokerError::AppNotFound(app.to_string()).into());
    }
    let now = state.tenancy.clock.now_ms();
    Ok(axum::Json(KeyList {
        keys: state
            .tenancy
            .keys_of(&app)
            .iter()
            .map(|k| view(k, now))
            .collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/keys/{id}",
    operation_id = "getKey",
    tag = "apps",
    summary = "Read an API key (admin)",
    params(crate::openapi::AppPath, crate::openapi::KeyPath),
    responses(
        (status = 200, description = "The key (not its secret).", body = KeyView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn get_key(
    State(state): State<AppState>,
    Path((app, key)): Path<(String, String)>,
) -> Result<axum::Json<KeyView>, Problem> {
    let (app, id) = (app_param(&app)?, key_param(&key)?);
    let key = state.tenancy.get_key(&app, &id)?;
    Ok(axum::Json(view(&key, state.tenancy.clock.now_ms())))
}

/// Revokes the key at once: every request with it is refused from now on.
#[utoipa::path(
    delete,
    path = "/v1/apps/{app}/keys/{id}",
    operation_id = "revokeKey",
    tag = "apps",
    summary = "Revoke an API key (admin)",
    params(crate::openapi::AppPath, crate::openapi::KeyPath),
    responses(
        (status = 204, description = "Revoked (or already revoked)."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, key)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let (app, id) = (app_param(&app)?, key_param(&key)?);
    state.tenancy.revoke_key(&app, &id).await?;
    caller
        .audit(&state, "key.revoke", format!("{app}:{id}"))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A new key with the same name and scopes; the old one works until `old_key_expires_at`.
#[utoipa::path(
    post,
    path = "/v1/apps/{app}/keys/{id}/rotate",
    operation_id = "rotateKey",
    tag = "apps",
    summary = "Rotate an API key (admin)",
    params(crate::openapi::AppPath, crate::openapi::KeyPath),
    request_body(
        content = Option<RotateKey>,
        content_type = "application/json",
        description = "Optional: without it the old key stops at once."
    ),
    responses(
        (status = 201, description = "The new key; `key` is its secret, shown only here.", body = NewKeyView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, key)): Path<(String, String)>,
    crate::json::OptionalJson(body): crate::json::OptionalJson<RotateKey>,
) -> Result<impl IntoResponse, Problem> {
    let (app, id) = (app_param(&app)?, key_param(&key)?);
    let until = match body.old_key_expires_at.as_deref() {
        Some(raw) => time_member(raw, "/old_key_expires_at")?,
        None => state.tenancy.clock.now_ms(),
    };
    let (key, secret) = state.tenancy.rotate_key(&app, &id, until).await?;
    caller
        .audit(&state, "key.rotate", format!("{app}:{id}"))
        .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(new_key(&state, &key, secret)),
    ))
}
