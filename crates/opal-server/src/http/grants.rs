//! `/v1/topics/{topic}/grants`: letting other apps subscribe to a topic. Revoking a grant stops
//! delivery to the grantee's subscriptions on the topic at once (they are kept, and deliver again
//! if the grant comes back).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use jiff::Timestamp;
use opal_core::tenancy::{Grant, Right};
use serde::{Deserialize, Serialize};

use super::apps::app_param;
use super::{AppState, Caller};
use crate::json::Json;
use crate::path::Path;
use crate::problem::{FieldError, Problem, ProblemKind};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/topics/{topic}/grants",
            get(list_grants).post(create_grant),
        )
        .route("/v1/topics/{topic}/grants/{app}", delete(delete_grant))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateGrant {
    /// The app that may subscribe.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")]
    app: String,
    /// What it may do: `subscribe`.
    #[schema(schema_with = rights_schema)]
    rights: Vec<String>,
}

fn rights_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::json_schema(serde_json::json!({
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "enum": ["subscribe"]}
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct GrantView {
    /// The topic, as the grantee names it: `<owner app>/<topic>`.
    topic: String,
    app: String,
    rights: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct GrantList {
    grants: Vec<GrantView>,
}

impl From<Grant> for GrantView {
    fn from(g: Grant) -> Self {
        GrantView {
            topic: g.topic.to_string(),
            app: g.app.to_string(),
            rights: g.rights.iter().map(ToString::to_string).collect(),
            created_at: Timestamp::from_millisecond(g.created_at_ms).unwrap_or_default(),
        }
    }
}

/// Grants another app rights on this topic (replacing its earlier grant, if any).
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/grants",
    operation_id = "createGrant",
    tag = "topics",
    summary = "Let another app subscribe to a topic",
    params(crate::openapi::TopicPath),
    request_body(content = CreateGrant, content_type = "application/json"),
    responses(
        (status = 201, description = "Granted.", body = GrantView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
    )
)]
async fn create_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    Json(body): Json<CreateGrant>,
) -> Result<impl IntoResponse, Problem> {
    let topic = caller.topic(&topic)?;
    let app = opal_core::AppName::new(body.app).map_err(|e| match e {
        opal_core::BrokerError::Invalid { reason, .. } => {
            Problem::invalid(vec![FieldError::at("/app", reason)])
        }
        other => other.into(),
    })?;
    let mut rights = Vec::new();
    let mut errors = Vec::new();
    if body.rights.is_empty() {
        errors.push(FieldError::at("/rights", "must name at least one right"));
    }
    for (i, text) in body.rights.iter().enumerate() {
        match text.parse::<Right>() {
            Ok(right) if !rights.contains(&right) => rights.push(right),
            Ok(_) => {}
            Err(_) => errors.push(FieldError::at(
                format!("/rights/{i}"),
                format!("unknown right {text:?}; the rights are: subscribe"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    if topic.app() == Some(app.as_str()) {
        return Err(Problem::invalid(vec![FieldError::at(
            "/app",
            "is the topic's own app, which needs no grant",
        )]));
    }
    // The topic must exist now; a grant on a deleted topic goes with it.
    state.broker.get_topic(&topic).await?;
    let grant = state.tenancy.put_grant(&topic, &app, rights).await?;
    caller
        .audit(&state, "grant.create", format!("{topic} to {app}"))
        .await;
    Ok((StatusCode::CREATED, axum::Json(GrantView::from(grant))))
}

/// The grants on this topic.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/grants",
    operation_id = "listGrants",
    tag = "topics",
    summary = "List the grants on a topic",
    params(crate::openapi::TopicPath),
    responses(
        (status = 200, description = "The grants, by app.", body = GrantList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn list_grants(
    State(state): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<axum::Json<GrantList>, Problem> {
    let topic = caller.topic(&topic)?;
    state.broker.get_topic(&topic).await?;
    Ok(axum::Json(GrantList {
        grants: state
            .tenancy
            .grants_on(&topic)
            .into_iter()
            .map(Into::into)
            .collect(),
    }))
}

/// Revokes an app's grant: its subscriptions on this topic stop delivering at once.
#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}/grants/{app}",
    operation_id = "deleteGrant",
    tag = "topics",
    summary = "Revoke a grant",
    params(crate::openapi::TopicPath, crate::openapi::AppPath),
    responses(
        (status = 204, description = "Revoked."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn delete_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path((topic, app)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let topic = caller.topic(&topic)?;
    let app = app_param(&app)?;
    if !state.tenancy.delete_grant(&topic, &app).await? {
        return Err(Problem::new(
            ProblemKind::NotFound,
            format!(
                "topic `{}` has no grant to app `{app}`",
                caller.local_topic(&topic)
            ),
        ));
    }
    caller
        .audit(&state, "grant.delete", format!("{topic} to {app}"))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
