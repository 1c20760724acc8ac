//! `/v1/apps`: apps (tenants) with their quotas and usage. Admin only, except that a key may read
//! its own app.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use jiff::Timestamp;
use opal_core::AppName;
use opal_core::tenancy::{App, Quotas};
use serde::{Deserialize, Serialize};

use super::revision::{IfMatch, etag};
use super::{AppState, Caller};
use crate::json::Json;
use crate::path::Path;
use crate::problem::Problem;
use crate::tenancy::Usage;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps", get(list_apps).post(create_app))
        .route(
            "/v1/apps/{app}",
            get(get_app).patch(update_app).delete(delete_app),
        )
}

/// An app's quotas: each `null` (or left out) is no limit.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotasBody {
    /// Messages published per second (a burst of one second's worth is allowed).
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_u64)]
    publish_messages_per_s: Option<u64>,
    /// Payload bytes published per second (same rule).
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_u64)]
    publish_bytes_per_s: Option<u64>,
    /// Bytes the app's topics may hold.
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    stored_bytes: Option<u64>,
    /// Topics the app may own.
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    topics: Option<u64>,
    /// Subscriptions the app may own.
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    subscriptions: Option<u64>,
    /// SSE and WebSocket streams open at once.
    #[serde(default, deserialize_with = "crate::json::whole::optional")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    open_streams: Option<u64>,
}

/// The largest quota accepted: the largest integer every JSON parser keeps exactly.
const MAX_QUOTA: u64 = 9_007_199_254_740_991;

impl QuotasBody {
    fn into_quotas(self) -> Result<Quotas, Problem> {
        let mut errors = Vec::new();
        for (name, value) in [
            ("publish_messages_per_s", self.publish_messages_per_s),
            ("publish_bytes_per_s", self.publish_bytes_per_s),
            ("stored_bytes", self.stored_bytes),
            ("topics", self.topics),
            ("subscriptions", self.subscriptions),
            ("open_streams", self.open_streams),
        ] {
            if value.is_some_and(|v| v > MAX_QUOTA) {
                errors.push(crate::problem::FieldError::at(
                    format!("/quotas/{name}"),
                    format!("must be at most {MAX_QUOTA}"),
                ));
            }
        }
        for (name, value) in [
            ("publish_messages_per_s", self.publish_messages_per_s),
            ("publish_bytes_per_s", self.publish_bytes_per_s),
        ] {
            if value == Some(0) {
                errors.push(crate::problem::FieldError::at(
                    format!("/quotas/{name}"),
                    "must be at least 1 (leave it out or null for no limit)",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        Ok(Quotas {
            publish_messages_per_s: self.publish_messages_per_s,
            publish_bytes_per_s: self.publish_bytes_per_s,
            stored_bytes: self.stored_bytes,
            topics: self.topics,
            subscriptions: self.subscriptions,
            open_streams: self.open_streams,
        })
    }
}

impl From<Quotas> for QuotasBody {
    fn from(q: Quotas) -> Self {
        QuotasBody {
            publish_messages_per_s: q.publish_messages_per_s,
            publish_bytes_per_s: q.publish_bytes_per_s,
            stored_bytes: q.stored_bytes,
            topics: q.topics,
            subscriptions: q.subscriptions,
            open_streams: q.open_streams,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    /// 1 to 63 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")]
    name: String,
    #[serde(default)]
    quotas: Option<QuotasBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateApp {
    /// The new quotas, replacing all of the old ones.
    quotas: QuotasBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AppView {
    name: String,
    revision: u64,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    quotas: QuotasBody,
    /// What the app uses now (on a single read only, not in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

impl From<App> for AppView {
    fn from(app: App) -> Self {
        AppView {
            name: app.name.to_string(),
            revision: app.revision,
            created_at: Timestamp::from_millisecond(app.created_at_ms).unwrap_or_default(),
            quotas: app.quotas.into(),
            usage: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AppList {
    apps: Vec<AppView>,
}

pub(super) fn app_param(raw: &str) -> Result<AppName, Problem> {
    AppName::new(raw).map_err(|e| Problem::invalid_parameter("app", e))
}

/// Creates an app; 409 if the name is taken.
#[utoipa::path(
    post,
    path = "/v1/apps",
    operation_id = "createApp",
    tag = "apps",
    summary = "Create an app (admin)",
    request_body(content = CreateApp, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = AppView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn create_app(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateApp>,
) -> Result<impl IntoResponse, Problem> {
    let name = AppName::new(body.name)?;
    let quotas = body.quotas.unwrap_or_default().into_quotas()?;
    let app = state.tenancy.create_app(name.clone(), quotas).await?;
    caller.audit(&state, "app.create", &name).await;
    Ok((
        StatusCode::CREATED,
        etag(app.revision),
        axum::Json(AppView::from(app)),
    ))
}

/// Every app, by name.
#[utoipa::path(
    get,
    path = "/v1/apps",
    operation_id = "listApps",
    tag = "apps",
    summary = "List apps (admin)",
    responses((status = 200, description = "All apps, by name.", body = AppList))
)]
async fn list_apps(State(state): State<AppState>) -> axum::Json<AppList> {
    axum::Json(AppList {
        apps: state.tenancy.apps().into_iter().map(Into::into).collect(),
    })
}

/// The app with its quotas and what it uses now.
#[utoipa::path(
    get,
    path = "/v1/apps/{app}",
    operation_id = "getApp",
    tag = "apps",
    summary = "Read an app with its usage (admin, or the app's own key)",
    params(crate::openapi::AppPath),
    responses(
        (status = 200, description = "The app, with `usage`.", body = AppView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn get_app(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let name = app_param(&app)?;
    let app = state
        .tenancy
        .app(&name)
        .ok_or_else(|| opal_core::BrokerError::AppNotFound(name.to_string()))?;
    let usage = state.tenancy.usage(&name).await?;
    Ok((
        etag(app.revision),
        axum::Json(AppView {
            usage: Some(usage),
            ..app.into()
        }),
    ))
}

/// Replaces the app's quotas. With `If-Match`, only at that revision.
#[utoipa::path(
    patch,
    path = "/v1/apps/{app}",
    operation_id = "updateApp",
    tag = "apps",
    summary = "Change an app's quotas (admin)",
    params(crate::openapi::AppPath, crate::openapi::IfMatchHeader),
    request_body(content = UpdateApp, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated.", body = AppView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 412, response = crate::openapi::PreconditionFailed),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn update_app(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    IfMatch(expected): IfMatch,
    Json(body): Json<UpdateApp>,
) -> Result<impl IntoResponse, Problem> {
    let name = app_param(&app)?;
    let quotas = body.quotas.into_quotas()?;
    let app = state.tenancy.update_app(&name, quotas, expected).await?;
    caller.audit(&state, "app.update", &name).await;
    Ok((etag(app.revision), axum::Json(AppView::from(app))))
}

/// Deletes an app with its keys and grants; 409 while it owns topics or subscriptions.
#[utoipa::path(
    delete,
    path = "/v1/apps/{app}",
    operation_id = "deleteApp",
    tag = "apps",
    summary = "Delete an app (admin)",
    params(crate::openapi::AppPath, crate::openapi::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted, with its keys and grants."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 412, response = crate::openapi::PreconditionFailed),
    )
)]
async fn delete_app(
    State(state): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode, Problem> {
    let name = app_param(&app)?;
    state.tenancy.delete_app(&name, expected).await?;
    caller.audit(&state, "app.delete", &name).await;
    Ok(StatusCode::NO_CONTENT)
}
