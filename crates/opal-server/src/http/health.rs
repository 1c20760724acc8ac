//! Health probes: `/livez` (alias `/healthz`) and `/readyz`; unauthenticated and not access-logged.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::problem::Problem;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/livez", get(live))
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
}

#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

/// The process is up and serving HTTP; deliberately checks nothing else, so that a slow disk
/// makes the instance unready, not restarted.
async fn live() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Ready while the backend has recovered and the server is not draining.
async fn ready(State(state): State<AppState>) -> Result<Json<Status>, Problem> {
    if state.shutdown.is_cancelled() {
        return Err(Problem::unavailable("the server is shutting down"));
    }
    if !state.broker.is_ready() {
        return Err(Problem::unavailable("the broker is not ready yet"));
    }
    Ok(Json(Status { status: "ready" }))
}
