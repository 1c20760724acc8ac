//! Tasks: created at publish, followed through delivery, results stored before the ack, the
//! callback told once (also after dead-lettering, and after a crash in between).

use bytes::Bytes;

use super::support::*;
use crate::task::{ack_with_results, tell_owed_callbacks};
use crate::{Callback, SubscriptionConfig, TaskResult, TaskState, TopicName};

fn task_message(data: &str, reply: &TopicName) -> crate::NewMessage {
    let mut m = message(data);
    m.callback = Some(Callback::Topic(reply.clone()));
    m
}

fn data(json: &str) -> TaskResult {
    TaskResult::Data(Bytes::copy_from_slice(json.as_bytes()))
}

/// A task exists from its publish on (`pending`), turns `in_progress` when delivered (counting
/// deliveries), and `succeeded` with its result when acked with one; the reply topic gets the
/// result with the task's id as `correlation_id`.
pub async fn a_task_is_followed_from_publish_to_result(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("jobs", 1).await;
    let replies = fx.topic("replies", 1).await;
    let s = fx.subscribe("workers", sub_config(&t)).await;
    let r = fx.subscribe("listener", sub_config(&replies)).await;
    let id = fx.publish(&t, vec![task_message("work", &replies)]).await[0].id;
    let task = fx
        .broker()
        .get_task(id)
        .await
        .unwrap()
        .expect("created at publish");
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.callback, Some(Callback::Topic(replies.clone())));

    let d = fx.pull(&s, 10).await;
    assert_eq!(
        d[0].message.callback,
        Some(Callback::Topic(replies.clone())),
        "delivered with its callback"
    );
    let task = fx.broker().get_task(id).await.unwrap().unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::InProgress, 1));

    let outcome = ack_with_results(
        fx.broker().as_ref(),
        &s,
        &[d[0].ack_id.clone()],
        vec![(d[0].ack_id.clone(), data(r#"{"ok":true}"#))],
        at(1_000),
    )
    .await
    .unwrap();
    assert_eq!(outcome.applied, 1);
    let task = fx.broker().get_task(id).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Succeeded);
    assert_eq!(task.result, Some(data(r#"{"ok":true}"#)));
    assert!(task.callback_message.is_some(), "the callback was told");
    let told = fx.pull(&r, 10).await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].message.attributes["correlation_id"], id.to_string());
    let body: serde_json::Value = serde_json::from_slice(&told[0].message.data).unwrap();
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["data"], serde_json::json!({"ok": true}));
    assert!(
        fx.broker()
            .tasks_owing_callbacks(10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A result handed back with an ack whose lease ran out is not stored (its ack is refused);
/// the redelivery's result is.
pub async fn a_stale_ack_stores_no_result(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("jobs", 1).await;
    let replies = fx.topic("replies", 1).await;
    let s = fx.subscribe("workers", sub_config(&t)).await;
    let id = fx.publish(&t, vec![task_message("work", &replies)]).await[0].id;
    let first = fx.pull(&s, 10).await;
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.max_ms as i64 + 1)
        .await;
    let second = fx.pull(&s, 10).await;
    assert_eq!(second.len(), 1, "redelivered after the deadline");
    let stale = ack_with_results(
        fx.broker().as_ref(),
        &s,
        &[first[0].ack_id.clone()],
        vec![(first[0].ack_id.clone(), data("1"))],
        at(0),
    )
    .await
    .unwrap();
    assert_eq!(stale.applied, 0);
    let task = fx.broker().get_task(id).await.unwrap().unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::InProgress, 2));
    ack_with_results(
        fx.broker().as_ref(),
        &s,
        &[second[0].ack_id.clone()],
        vec![(second[0].ack_id.clone(), TaskResult::Error("no".into()))],
        at(0),
    )
    .await
    .unwrap();
    let task = fx.broker().get_task(id).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.result, Some(TaskResult::Error("no".into())));
}

/// A task whose message is dead-lettered says so, and its callback is told.
pub async fn a_dead_lettered_task_tells_its_callback(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("jobs", 1).await;
    let replies = fx.topic("replies", 1).await;
    let config = SubscriptionConfig {
        max_deliveries: Some(1),
        ..sub_config(&t)
    };
    let s = fx.subscribe("workers", config).await;
    let r = fx.subscribe("listener", sub_config(&replies)).await;
    let id = fx.publish(&t, vec![task_message("work", &replies)]).await[0].id;
    let d = fx.pull(&s, 10).await;
    fx.broker()
        .settle(
            &s,
            &[d[0].ack_id.clone()],
            crate::Settle::Nack { delay: None },
        )
        .await
        .unwrap();
    let task = fx.broker().get_task(id).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::DeadLettered);
    // A backend may tell the callback in the background: give it a bounded while.
    let mut told = Vec::new();
    for _ in 0..50 {
        settle_background().await;
        told.extend(fx.pull_all(&r).await);
        if !told.is_empty() {
            break;
        }
    }
    settle_background().await;
    told.extend(fx.pull_all(&r).await);
    assert_eq!(told.len(), 1, "the callback is told once");
    let body: serde_json::Value = serde_json::from_slice(&told[0].message.data).unwrap();
    assert_eq!(body["state"], "dead_lettered");
}

/// A task that ended without its callback told (a crash in between) is listed as owing, and
/// telling it then sends the result once; tasks survive a restart.
pub async fn owed_callbacks_are_told_after_a_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("jobs", 1).await;
    let replies = fx.topic("replies", 1).await;
    let id = fx.publish(&t, vec![task_message("work", &replies)]).await[0].id;
    let mut task = fx.broker().get_task(id).await.unwrap().unwrap();
    task.state = TaskState::Succeeded;
    task.result = Some(data("7"));
    fx.broker().put_task(task.clone()).await.unwrap();
    fx.restart().await;
    let owed = fx.broker().tasks_owing_callbacks(10).await.unwrap();
    assert_eq!(owed, vec![task]);
    assert_eq!(tell_owed_callbacks(fx.broker().as_ref()).await.unwrap(), 1);
    assert!(
        fx.broker()
            .tasks_owing_callbacks(10)
            .await
            .unwrap()
            .is_empty()
    );
    let r = fx.subscribe("listener", sub_config(&replies)).await;
    let told = fx.pull_all(&r).await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].message.attributes["correlation_id"], id.to_string());
}

/// A delayed task keeps its callback until it is due.
pub async fn a_delayed_task_keeps_its_callback(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("jobs", 1).await;
    let replies = fx.topic("replies", 1).await;
    let s = fx.subscribe("workers", sub_config(&t)).await;
    let mut m = task_message("later", &replies);
    m.deliver_at = Some(at(5_000));
    let id = fx.publish(&t, vec![m]).await[0].id;
    assert_eq!(
        fx.broker().get_task(id).await.unwrap().unwrap().state,
        TaskState::Pending
    );
    fx.advance_to(5_000).await;
    let d = fx.pull(&s, 10).await;
    assert_eq!(d[0].message.callback, Some(Callback::Topic(replies)));
}
