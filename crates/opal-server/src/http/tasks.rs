//! Tasks: results handed back with an ack, and `GET /v1/tasks/{message_id}`.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use jiff::Timestamp;
use opal_core::task::CALLBACKS;
use opal_core::{
    AckId, AttemptQuery, AttemptStatus, Callback, SubscriptionName, Task, TaskResult, TaskState,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{AppState, Caller};
use crate::path::Path;
use crate::problem::{FieldError, Problem, ProblemKind};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/tasks/{message_id}", get(read_task))
}

/// One result in an ack: exactly one of `data` (any JSON value) and `error` (a message).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResultBody {
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<String>,
}

/// `"data": null` is a result like any other.
fn present<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(de).map(Some)
}

impl utoipa::PartialSchema for ResultBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::json_schema(serde_json::json!({
            "type": "object",
            "description": "A task's result: `data` (any JSON value) when it succeeded, `error` \
                            (why) when it failed.",
            "additionalProperties": false,
            "properties": {
                "data": {"description": "What the work produced."},
                "error": {"type": "string", "description": "Why the work failed (a result is at most 256 KiB; more is a `400`)."}
            },
            "oneOf": [{"required": ["data"]}, {"required": ["error"]}]
        }))
    }
}

impl utoipa::ToSchema for ResultBody {}

/// The results of an ack request, checked: each names one of the request's ack ids.
pub(super) fn results(
    ack_ids: &[String],
    results: Option<BTreeMap<String, ResultBody>>,
) -> Result<Vec<(AckId, TaskResult)>, Problem> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (ack_id, body) in results.unwrap_or_default() {
        let pointer = format!("/results/{}", ack_id.replace('~', "~0").replace('/', "~1"));
        if !ack_ids.contains(&ack_id) {
            errors.push(FieldError::at(pointer, "names no ack id of `ack_ids`"));
            continue;
        }
        let result = match (body.data, body.error) {
            (Some(json), None) => {
                TaskResult::Data(Bytes::from(String::from(Box::<str>::from(json))))
            }
            (None, Some(error)) => TaskResult::Error(error),
            _ => {
                errors.push(FieldError::at(
                    pointer,
                    "give exactly one of `data` and `error`",
                ));
                continue;
            }
        };
        if let Err(e) = result.validate("result") {
            errors.push(FieldError::at(pointer, e.to_string()));
            continue;
        }
        out.push((AckId(ack_id), result));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Problem::invalid(errors))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TaskView {
    /// The task's message id.
    id: Uuid,
    topic: String,
    /// `pending`, `in_progress`, `succeeded`, `failed` or `dead_lettered`.
    state: String,
    /// Deliveries to consumers so far.
    attempts: u32,
    /// What the consumer produced (`succeeded`).
    #[schema(value_type = Option<Object>)]
    data: Option<Box<RawValue>>,
    /// Why it failed (`failed`, `dead_lettered`).
    error: Option<String>,
    callback: Option<CallbackView>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
    /// When the task and its result are forgotten.
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CallbackView {
    /// The URL results are POSTed to, or
    url: Option<String>,
    /// the topic results are published on.
    topic: Option<String>,
    /// `waiting` (the task has not ended), `pending` (being delivered), `delivered` or
    /// `failing` (attempts failed; retried by the schedule, then dead-lettered).
    state: String,
    /// Delivery attempts of the result to a URL.
    attempts: usize,
    /// The last attempt's error or status, while failing.
    last_error: Option<String>,
    /// The message that carries the result (on `opal.callbacks` or the reply topic).
    message_id: Option<Uuid>,
}

/// A task: its state, result and callback. Tasks are kept a week after they end.
#[utoipa::path(
    get,
    path = "/v1/tasks/{message_id}",
    operation_id = "readTask",
    tag = "tasks",
    summary = "Read a task's state, result and callback",
    params(("message_id" = Uuid, Path, description = "The id of the task's message.")),
    responses(
        (status = 200, description = "The task.", body = TaskView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn read_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(message_id): Path<String>,
) -> Result<axum::Json<TaskView>, Problem> {
    // Not a message id: no task has it (a 404 like any unknown id, not a 400: the path names a
    // resource, and there is none).
    let not_found = || {
        Problem::new(
            ProblemKind::NotFound,
            format!("task {message_id} does not exist"),
        )
    };
    let id = Uuid::parse_str(&message_id).map_err(|_| not_found())?;
    let task = state.broker.get_task(id).await?.ok_or_else(not_found)?;
    // Another app's task answers like a missing one.
    if !caller.is_admin() && task.topic.app() != Some(caller.app().as_str()) {
        return Err(not_found());
    }
    let callback = match &task.callback {
        Some(c) => Some(callback_view(&state, &task, c).await?),
        None => None,
    };
    let (data, error) = match &task.result {
        Some(TaskResult::Data(json)) => (
            RawValue::from_string(String::from_utf8_lossy(json).into_owned()).ok(),
            None,
        ),
        Some(TaskResult::Error(e)) => (None, Some(e.clone())),
        None if task.state == TaskState::DeadLettered => (
            None,
            Some("every allowed delivery failed; the message was dead-lettered".to_owned()),
        ),
        None => (None, None),
    };
    Ok(axum::Json(TaskView {
        id: task.id,
        topic: caller.local_topic(&task.topic).to_string(),
        state: task.state.as_str().to_owned(),
        attempts: task.attempts,
        data,
        error,
        callback,
        created_at: task.created_at,
        updated_at: task.updated_at,
        expires_at: task.expires_at,
    }))
}

/// Where the result's delivery stands: a reply topic has it once published; a URL once an
/// attempt of the app's `opal.callbacks` subscription succeeded.
async fn callback_view(
    state: &AppState,
    task: &Task,
    callback: &Callback,
) -> Result<CallbackView, Problem> {
    let mut view = CallbackView {
        url: None,
        topic: None,
        state: if task.state.is_final() {
            "pending"
        } else {
            "waiting"
        }
        .to_owned(),
        attempts: 0,
        last_error: None,
        message_id: task.callback_message,
    };
    match callback {
        Callback::Topic(topic) => {
            view.topic = Some(topic.short().to_owned());
            if task.callback_message.is_some() {
                view.state = "delivered".to_owned();
            }
        }
        Callback::Url(url) => {
            view.url = Some(url.clone());
            if let (Some(message), Some(app)) = (task.callback_message, task.topic.app()) {
                let app = opal_core::AppName::new(app).map_err(Problem::from)?;
                let route = SubscriptionName::qualified(&app, CALLBACKS).map_err(Problem::from)?;
                let attempts = state
                    .broker
                    .list_push_attempts(
                        &route,
                        AttemptQuery {
                            message_id: Some(message),
                            limit: 1_000,
                            ..AttemptQuery::default()
                        },
                    )
                    .await
                    .unwrap_or_default();
                view.attempts = attempts.len();
                if let Some(last) = attempts.first() {
                    if last.status == AttemptStatus::Succeeded {
                        view.state = "delivered".to_owned();
                    } else {
                        view.state = "failing".to_owned();
                        view.last_error = last
                            .error
                            .clone()
                            .or_else(|| last.status_code.map(|c| format!("answered {c}")));
                    }
                }
            }
        }
    }
    Ok(view)
}
