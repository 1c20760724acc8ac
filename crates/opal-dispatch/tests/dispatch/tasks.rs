//! Task results delivered to callback URLs: through the app's `opal.callbacks` subscription,
//! signed with its secret, each to the URL its task named.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use jiff::Timestamp;
use opal_core::task::ack_with_results;
use opal_core::{
    Callback, StartPosition, SubscriptionConfig, SubscriptionName, TaskResult, TaskState,
};
use opal_dispatch::SigningSecret;

use crate::support::*;

#[tokio::test]
async fn results_reach_each_tasks_callback_url_signed() {
    let h = Harness::start().await;
    let first = Receiver::start(|_, _| async { StatusCode::OK.into_response() }).await;
    // The second callback fails once: its result is retried by the schedule.
    let second = Receiver::start(|n, _| async move {
        if n == 0 {
            StatusCode::BAD_GATEWAY.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let workers = SubscriptionName::new("acme/workers").unwrap();
    h.broker
        .create_subscription(
            &workers,
            SubscriptionConfig::new(h.topic.clone()),
            StartPosition::Earliest,
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for receiver in [&first, &second] {
        let mut m = text("resize");
        m.callback = Some(Callback::Url(receiver.url()));
        tasks.push(m);
    }
    let ids = h.publish(tasks).await;
    let deliveries = h
        .broker
        .pull(&workers, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 2);
    let results = deliveries
        .iter()
        .map(|d| {
            let result = if d.message.id == ids[0] {
                TaskResult::Data(bytes::Bytes::from_static(br#"{"size":"small"}"#))
            } else {
                TaskResult::Error("too big".into())
            };
            (d.ack_id.clone(), result)
        })
        .collect();
    let ack_ids: Vec<_> = deliveries.iter().map(|d| d.ack_id.clone()).collect();
    ack_with_results(
        h.broker.as_ref(),
        &workers,
        &ack_ids,
        results,
        Timestamp::now(),
    )
    .await
    .unwrap();

    let route = SubscriptionName::new("acme/opal.callbacks").unwrap();
    let (sub, _) = h.broker.get_subscription(&route).await.unwrap();
    let secret = SigningSecret::parse(&sub.config.push.unwrap().secrets[0].secret).unwrap();
    let got = first.wait_for_posts(1).await.remove(0);
    let retried = second.wait_for_posts(2).await;
    for (post, id, state) in [(&got, ids[0], "succeeded"), (&retried[1], ids[1], "failed")] {
        post.verify(&secret)
            .expect("signed with the app's callback secret");
        let event: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
        assert_eq!(event["data"]["task_id"], id.to_string());
        assert_eq!(event["data"]["state"], state);
    }
    let event: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["data"]["data"], serde_json::json!({"size": "small"}));
    assert_eq!(
        retried[0].header("webhook-id"),
        retried[1].header("webhook-id")
    );
    let task = h.broker.get_task(ids[1]).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Failed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        first.count(),
        1,
        "each result goes to its own callback only"
    );
}
