//! `GET /v1/audit`: the audit trail, oldest first, a page at a time (admin only).

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::problem::{FieldError, Problem};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Positions stay below what every JSON parser keeps exactly.
const MAX_AFTER: u64 = 9_007_199_254_740_991;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(read_audit))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Entries after this position (`next_after` of the previous page); default 0, the start.
    #[param(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    after: Option<u64>,
    /// Most entries on the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditView {
    /// Position in the trail: 1, 2, … in the order recorded.
    seq: u64,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// `admin` (the bootstrap key) or `<app>:<key id>`.
    actor: String,
    actor_app: String,
    /// E.g. `app.create`, `key.revoke`, `topic.delete`, `grant.create`.
    action: String,
    /// What it was done to: a stored name (`<app>/<name>`), an app, `<app>:<key id>`, or
    /// `<topic> to <app>` for a grant.
    resource: String,
    /// The client's address and port.
    client: Option<String>,
    request_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AuditPage {
    entries: Vec<AuditView>,
    /// Pass as `after` for the next page; equal to the request's `after` when nothing followed.
    next_after: u64,
}

/// The audit trail: every change to apps, keys, grants, topics and subscriptions.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "readAudit",
    tag = "apps",
    summary = "Read the audit trail (admin)",
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries after `after`, oldest first.", body = AuditPage),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
async fn read_audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditPage>, Problem> {
    let Query(query) =
        query.map_err(|e| Problem::invalid(vec![FieldError::parameter("query", e.body_text())]))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::invalid(vec![FieldError::parameter(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )]));
    }
    let after = query.after.unwrap_or(0);
    if after > MAX_AFTER {
        return Err(Problem::invalid(vec![FieldError::parameter(
            "after",
            format!("must be at most {MAX_AFTER}"),
        )]));
    }
    let records = state.tenancy.read_audit(after, limit).await?;
    let next_after = records.last().map_or(after, |r| r.seq);
    Ok(axum::Json(AuditPage {
        entries: records
            .into_iter()
            .map(|r| AuditView {
                seq: r.seq,
                at: Timestamp::from_millisecond(r.entry.at_ms).unwrap_or_default(),
                actor: r.entry.actor,
                actor_app: r.entry.actor_app,
                action: r.entry.action,
                resource: r.entry.resource,
                client: r.entry.client,
                request_id: r.entry.request_id,
            })
            .collect(),
        next_after,
    }))
}
