//! Tasks: messages published with a callback. A consumer acks one with a result; the result is
//! stored and delivered to the callback: a signed POST to a URL (through the app's internal
//! push subscription `opal.callbacks`) or a message on a reply topic.
//!
//! The rules here are backend-independent and use only the [`Broker`] trait, so every backend
//! behaves the same.

use std::collections::BTreeMap;

use bytes::Bytes;
use jiff::Timestamp;
use uuid::Uuid;

use crate::{
    AckId, AckOutcome, AppName, Broker, BrokerError, DataEncoding, Message, NewMessage, PushConfig,
    PushSecret, Settle, StartPosition, SubscriptionConfig, SubscriptionName, TopicConfig,
    TopicName,
};

/// The short name of every app's internal callback topic and push subscription.
pub const CALLBACKS: &str = "opal.callbacks";
/// The attribute of a callback message that holds the URL it goes to.
pub const CALLBACK_URL_ATTRIBUTE: &str = "opal.callback.url";
/// The attribute of a result message that names the task (the task's message id).
pub const CORRELATION_ID: &str = "correlation_id";
/// How long a task and its result are kept after the task ends.
pub const DEFAULT_RESULT_TTL_MS: u64 = 7 * 24 * 3_600_000;
/// The longest callback URL.
pub const MAX_CALLBACK_URL_BYTES: usize = 2_048;
/// The largest result (`data` as JSON text, or `error`).
pub const MAX_RESULT_BYTES: usize = 256 * 1024;

/// Where a task's result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// A signed POST to this URL.
    Url(String),
    /// A message on this topic, with the task's id as its `correlation_id` attribute.
    Topic(TopicName),
}

impl Callback {
    /// Checks the shape; `field` names it in the error. A URL's host is checked by the
    /// dispatcher's SSRF guard.
    pub fn validate(&self, field: &str) -> Result<(), BrokerError> {
        if let Callback::Url(url) = self {
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                return Err(BrokerError::invalid(
                    format!("{field}.url"),
                    "must be an absolute http:// or https:// URL",
                ));
            }
            if url.len() > MAX_CALLBACK_URL_BYTES {
                return Err(BrokerError::invalid(
                    format!("{field}.url"),
                    format!("must be at most {MAX_CALLBACK_URL_BYTES} bytes long"),
                ));
            }
        }
        Ok(())
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Published, not yet delivered.
    Pending,
    /// Delivered to a consumer at least once, no result yet.
    InProgress,
    /// Acked with `data`.
    Succeeded,
    /// Acked with an `error`.
    Failed,
    /// Every allowed delivery failed; the message went to the dead-letter topic.
    DeadLettered,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::InProgress => "in_progress",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            TaskState::Pending,
            TaskState::InProgress,
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::DeadLettered,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// Whether the task has ended (its result, if any, is final).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::DeadLettered
        )
    }
}

/// What a consumer handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskResult {
    /// A JSON document, as text.
    Data(Bytes),
    /// Why the work failed.
    Error(String),
}

impl TaskResult {
    pub fn validate(&self, field: &str) -> Result<(), BrokerError> {
        let len = match self {
            TaskResult::Data(json) => json.len(),
            TaskResult::Error(text) => text.len(),
        };
        if len > MAX_RESULT_BYTES {
            return Err(BrokerError::invalid(
                field,
                format!("a result is at most {MAX_RESULT_BYTES} bytes, this one {len}"),
            ));
        }
        Ok(())
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The id of the task's message.
    pub id: Uuid,
    pub topic: TopicName,
    pub callback: Option<Callback>,
    pub state: TaskState,
    /// Deliveries to consumers so far.
    pub attempts: u32,
    pub result: Option<TaskResult>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the task and its result are forgotten: set by the backend when it stores the task
    /// (its retention after `updated_at`); the default retention until then.
    pub expires_at: Timestamp,
    /// The message that carries the outcome to the callback, once sent: on the app's
    /// `opal.callbacks` topic (URL callbacks) or on the reply topic.
    pub callback_message: Option<Uuid>,
}

impl Task {
    /// A task for a message just published.
    pub fn published(
        message_id: Uuid,
        topic: TopicName,
        callback: Option<Callback>,
        now: Timestamp,
    ) -> Task {
        Task {
            id: message_id,
            topic,
            callback,
            state: TaskState::Pending,
            attempts: 0,
            result: None,
            created_at: now,
            updated_at: now,
            expires_at: later(now, DEFAULT_RESULT_TTL_MS),
            callback_message: None,
        }
    }

    /// Whether the callback still has to be told how the task ended.
    pub fn callback_due(&self) -> bool {
        self.state.is_final() && self.callback.is_some() && self.callback_message.is_none()
    }
}

fn later(t: Timestamp, ms: u64) -> Timestamp {
    t.checked_add(jiff::SignedDuration::from_millis(ms as i64))
        .unwrap_or(Timestamp::MAX)
}

/// The app a stored name belongs to.
fn app_of(topic: &TopicName) -> AppName {
    topic
        .app()
        .and_then(|a| AppName::new(a).ok())
        .unwrap_or_else(AppName::default_app)
}

/// The body of a callback: the task's id, state, and result or error.
fn outcome_json(task: &Task) -> serde_json::Value {
    let mut body = serde_json::json!({
        "task_id": task.id.to_string(),
        "state": task.state.as_str(),
        "completed_at": task.updated_at.to_string(),
    });
    match &task.result {
        Some(TaskResult::Data(json)) => {
            body["data"] = serde_json::from_slice(json).unwrap_or(serde_json::Value::Null);
        }
        Some(TaskResult::Error(error)) => body["error"] = error.clone().into(),
        None if task.state == TaskState::DeadLettered => {
            body["error"] =
                "the task's message was dead-lettered: every allowed delivery failed".into();
        }
        None => {}
    }
    body
}

/// The message that tells a callback how `task` ended, and the topic it goes to. A repeat has
/// the same dedup id, so telling twice (after a crash) stores it once within the dedup window.
fn outcome_message(task: &Task) -> Option<(TopicName, NewMessage)> {
    let callback = task.callback.as_ref()?;
    let mut attributes = BTreeMap::from([
        (CORRELATION_ID.to_owned(), task.id.to_string()),
        ("task_state".to_owned(), task.state.as_str().to_owned()),
    ]);
    let topic = match callback {
        Callback::Topic(topic) => topic.clone(),
        Callback::Url(url) => {
            attributes.insert(CALLBACK_URL_ATTRIBUTE.to_owned(), url.clone());
            TopicName::qualified(&app_of(&task.topic), CALLBACKS).ok()?
        }
    };
    let message = NewMessage {
        key: Some(task.id.to_string()),
        attributes,
        data: Bytes::from(outcome_json(task).to_string()),
        encoding: DataEncoding::Json,
        dedup_id: Some(format!("task:{}", task.id)),
        deliver_at: None,
        callback: None,
    };
    Some((topic, message))
}

/// Makes sure an app's callback topic and push subscription exist. The subscription sends each
/// message to the URL in its [`CALLBACK_URL_ATTRIBUTE`], signed with its own secret (read it
/// and rotate it like any push subscription's). Called when a task with a URL callback is
/// published, so the secret can be read before the first result comes.
pub async fn ensure_callback_route(
    broker: &dyn Broker,
    app: &AppName,
) -> Result<TopicName, BrokerError> {
    let topic = TopicName::qualified(app, CALLBACKS)?;
    match broker.create_topic(&topic, TopicConfig::default()).await {
        Ok(_) | Err(BrokerError::Conflict { .. }) => {}
        Err(e) => return Err(e),
    }
    let name = SubscriptionName::qualified(app, CALLBACKS)?;
    if broker.get_subscription(&name).await.is_ok() {
        return Ok(topic);
    }
    let mut push = PushConfig::new(
        "https://callback.invalid/",
        PushSecret {
            secret: crate::push::generate_secret(),
            expires_at: None,
        },
    );
    push.url_attribute = Some(CALLBACK_URL_ATTRIBUTE.to_owned());
    let config = SubscriptionConfig {
        ack_deadline_ms: push.lease_ms(),
        max_deliveries: Some(push.retry_schedule_ms.len() as u32),
        push: Some(push),
        ..SubscriptionConfig::new(topic.clone())
    };
    match broker
        .create_subscription(&name, config, StartPosition::Earliest)
        .await
    {
        Ok(_) | Err(BrokerError::Conflict { .. }) => Ok(topic),
        Err(e) => Err(e),
    }
}

/// Tells `task`'s callback how it ended (once: it records the message it sent) and returns the
/// task as stored afterwards.
pub async fn tell_callback(broker: &dyn Broker, mut task: Task) -> Result<Task, BrokerError> {
    if !task.callback_due() {
        return Ok(task);
    }
    let Some((topic, message)) = outcome_message(&task) else {
        return Ok(task);
    };
    if matches!(task.callback, Some(Callback::Url(_))) {
        ensure_callback_route(broker, &app_of(&task.topic)).await?;
    }
    let sent = broker.publish(&topic, vec![message]).await?;
    task.callback_message = sent.first().map(|r| r.id);
    broker.put_task(task.clone()).await?;
    Ok(task)
}

/// Tells every callback still owed (after a crash between a task's end and its callback).
pub async fn tell_owed_callbacks(broker: &dyn Broker) -> Result<usize, BrokerError> {
    let mut told = 0;
    for task in broker.tasks_owing_callbacks(1_000).await? {
        match tell_callback(broker, task).await {
            Ok(_) => told += 1,
            Err(e) => tracing::warn!(error = %e, "could not tell a task's callback"),
        }
    }
    Ok(told)
}

/// Acks deliveries, storing results for those given one: the results are stored (and the
/// callbacks told) before the ack, so an answered ack never loses its result. Results of ids
/// whose lease is no longer live are not stored (their ack is refused too). The first result
/// of a task stays: a repeat (a redelivery acked again) changes nothing.
pub async fn ack_with_results(
    broker: &dyn Broker,
    subscription: &SubscriptionName,
    ack_ids: &[AckId],
    results: Vec<(AckId, TaskResult)>,
    now: Timestamp,
) -> Result<AckOutcome, BrokerError> {
    if !results.is_empty() {
        let ids: Vec<AckId> = results.iter().map(|(id, _)| id.clone()).collect();
        let messages = broker.leased_messages(subscription, &ids).await?;
        for ((_, result), message) in results.into_iter().zip(messages) {
            let Some(message) = message else { continue };
            store_result(broker, &message, result, now).await?;
        }
    }
    broker.settle(subscription, ack_ids, Settle::Ack).await
}

async fn store_result(
    broker: &dyn Broker,
    message: &Message,
    result: TaskResult,
    now: Timestamp,
) -> Result<(), BrokerError> {
    let mut task = match broker.get_task(message.id).await? {
        Some(task) if task.state.is_final() => return Ok(()),
        Some(task) => task,
        None => Task::published(
            message.id,
            message.topic.clone(),
            message.callback.clone(),
            now,
        ),
    };
    task.state = match result {
        TaskResult::Data(_) => TaskState::Succeeded,
        TaskResult::Error(_) => TaskState::Failed,
    };
    task.result = Some(result);
    task.updated_at = now;
    broker.put_task(task.clone()).await?;
    tell_callback(broker, task).await?;
    Ok(())
}
