//! Health probes: `/livez` (alias `/healthz`) and `/readyz`; unauthenticated and not access-logged.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::problem::Problem;

/// The probes' paths, which the access log skips: probes every few seconds would drown it. The
/// same as `router()`'s (spelled out there, where tests/python/test_docs_examples.py reads
/// them); tests/it/logs.rs checks that each answers and is not logged.
pub(crate) const PATHS: [&str; 3] = ["/livez", "/healthz", "/readyz"];

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/livez", get(live))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Status {
    /// `ok` (`/livez`, `/healthz`) or `ready` (`/readyz`).
    #[schema(value_type = String, pattern = "^(ok|ready)$")]
    status: &'static str,
}

/// The process is up and serving HTTP; deliberately checks nothing else, so that a slow disk
/// makes the instance unready, not restarted.
#[utoipa::path(
    get,
    path = "/livez",
    operation_id = "livez",
    tag = "health",
    summary = "Liveness probe",
    security(()),
    responses((status = 200, description = "The process serves HTTP.", body = Status))
)]
async fn live() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// `/healthz`: [`live`] under the name older tooling probes (its own handler, since an OpenAPI
/// operation has one path).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    summary = "Liveness probe (alias of /livez)",
    security(()),
    responses((status = 200, description = "The process serves HTTP.", body = Status))
)]
async fn healthz() -> Json<Status> {
    live().await
}

/// Ready while the backend has recovered and the server is not draining.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    summary = "Readiness probe",
    security(()),
    responses(
        (status = 200, description = "Storage has recovered and the server is not draining.", body = Status),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Status>, Problem> {
    if state.shutdown.is_cancelled() {
        return Err(Problem::unavailable("the server is shutting down"));
    }
    if !state.broker.is_ready() {
        return Err(Problem::unavailable("the broker is not ready yet"));
    }
    Ok(Json(Status { status: "ready" }))
}
