//! Subscription filters: only matching messages are delivered and counted in the backlog.

use serde_json::json;

use super::support::*;
use crate::{Created, Filter, StartPosition, SubscriptionConfig, TopicName};

fn red_only(topic: &TopicName) -> SubscriptionConfig {
    SubscriptionConfig {
        filter: Some(Filter::parse(&json!({"color": ["red"]})).expect("a valid filter")),
        ..sub_config(topic)
    }
}

/// A filtered subscription gets only the matching messages (and counts only them in its
/// backlog); a subscription without a filter gets everything; messages that
/// do not match never arrive later either.
pub async fn filter_delivers_only_matching_messages(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let red = fx.subscribe("red", red_only(&t)).await;
    let all = fx.subscribe("all", sub_config(&t)).await;
    fx.publish(
        &t,
        vec![
            message("r1").with_attr("color", "red"),
            message("blue").with_attr("color", "blue"),
            message("plain"),
            message("r2")
                .with_attr("color", "red")
                .with_attr("size", "xl"),
            message("other").with_attr("colour", "red"),
        ],
    )
    .await;
    settle_background().await;
    assert_eq!(fx.sub_stats(&red).await.backlog, 2);
    assert_eq!(fx.sub_stats(&all).await.backlog, 5);

    let got = fx.pull_all(&red).await;
    assert_eq!(sorted_texts(&got), ["r1", "r2"]);
    assert_eq!(fx.pull_all(&all).await.len(), 5);
    fx.ack(&red, &ack_ids(&got)).await;
    assert_eq!(
        fx.sub_stats(&red).await.backlog,
        0,
        "the rest does not count"
    );
    fx.advance_to(10 * (ACK_DEADLINE_MS + BACKOFF.max_ms as i64))
        .await;
    assert!(fx.pull_all(&red).await.is_empty(), "never delivered later");
}

/// A filter is part of the subscription's settings: stored, returned, compared on create, and
/// still applied after a restart.
pub async fn filter_survives_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let red = fx.subscribe("red", red_only(&t)).await;
    fx.restart().await;
    let (stored, _) = fx
        .broker()
        .get_subscription(&red)
        .await
        .expect("get_subscription succeeded");
    assert_eq!(stored.config, red_only(&t));
    let (_, created) = fx
        .broker()
        .create_subscription(&red, red_only(&t), StartPosition::Earliest)
        .await
        .expect("the same settings are accepted");
    assert_eq!(created, Created::Existing);
    fx.publish(
        &t,
        vec![
            message("blue").with_attr("color", "blue"),
            message("r").with_attr("color", "red"),
        ],
    )
    .await;
    assert_eq!(texts(&fx.pull_all(&red).await), ["r"]);
}
