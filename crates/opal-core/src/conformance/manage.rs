//! Managing resources: updates with revisions, deletes, lists and browsing.

use super::support::*;
use crate::{
    AppName, BrokerError, Retention, StartPosition, SubscriptionName, TopicConfig, TopicName,
};

/// An update bumps the revision; an update expecting an older revision changes nothing.
pub async fn topic_update_checks_the_revision(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 2).await;
    let (topic, _) = fx.broker().get_topic(&t).await.expect("get_topic");
    assert_eq!(topic.revision, 1);
    let changed = TopicConfig {
        dedup_window_ms: 5_000,
        retention: Retention {
            max_age_ms: Some(60_000),
            ..Retention::default()
        },
        ..topic.config.clone()
    };
    let updated = fx
        .broker()
        .update_topic(&t, changed.clone(), Some(1))
        .await
        .expect("update");
    assert_eq!((updated.revision, &updated.config), (2, &changed));
    let stale = fx
        .broker()
        .update_topic(&t, topic.config.clone(), Some(1))
        .await;
    assert!(
        matches!(stale, Err(BrokerError::RevisionMismatch { current: 2, .. })),
        "{stale:?}"
    );
    let partitions = TopicConfig {
        partitions: 3,
        ..changed.clone()
    };
    assert_invalid(
        fx.broker().update_topic(&t, partitions, None).await,
        "partitions cannot change",
    );
    fx.restart().await;
    let (after, _) = fx.broker().get_topic(&t).await.expect("get_topic");
    assert_eq!(
        (after.revision, after.config),
        (2, changed),
        "the update is durable"
    );
}

/// A topic in use by a subscription (as its topic or dead-letter topic) cannot be deleted;
/// once deleted, its name is free and a new topic of that name starts empty.
pub async fn topic_delete_refuses_while_used(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    fx.publish(&t, vec![message("old")]).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let deleted = fx.broker().delete_topic(&t, None).await;
    assert!(
        matches!(deleted, Err(BrokerError::InUse { .. })),
        "{deleted:?}"
    );
    fx.broker()
        .delete_subscription(&s, Some(1))
        .await
        .expect("delete_subscription");
    let stale = fx.broker().delete_topic(&t, Some(9)).await;
    assert!(
        matches!(stale, Err(BrokerError::RevisionMismatch { .. })),
        "{stale:?}"
    );
    fx.broker()
        .delete_topic(&t, None)
        .await
        .expect("delete_topic");
    assert!(matches!(
        fx.broker().get_topic(&t).await,
        Err(BrokerError::TopicNotFound(_))
    ));
    assert!(matches!(
        fx.broker().delete_topic(&t, None).await,
        Err(BrokerError::TopicNotFound(_))
    ));

    let again = fx.topic("t", 1).await;
    let read = fx
        .broker()
        .read_messages(&again, 0, StartPosition::Earliest, 10)
        .await
        .expect("read");
    assert!(read.is_empty(), "the old messages are gone: {read:?}");
}

/// A deleted subscription is gone with its ack state: its receipts are refused, and a new
/// subscription of the same name starts fresh.
pub async fn subscription_delete_forgets_its_state(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a"), message("b")]).await;
    let got = fx.pull(&s, 10).await;
    fx.ack(&s, &ack_ids(&got[..1])).await;
    fx.broker()
        .delete_subscription(&s, None)
        .await
        .expect("delete_subscription");
    let settle = fx
        .broker()
        .settle(&s, &ack_ids(&got[1..]), crate::Settle::Ack)
        .await;
    assert!(
        matches!(settle, Err(BrokerError::SubscriptionNotFound(_))),
        "{settle:?}"
    );
    assert!(matches!(
        fx.broker().pull(&s, 1, std::time::Duration::ZERO).await,
        Err(BrokerError::SubscriptionNotFound(_))
    ));
    fx.restart().await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    assert_eq!(
        sorted_texts(&fx.pull_all(&s).await),
        ["a", "b"],
        "nothing of the old one's acks remains"
    );
}

/// An update keeps the position and acks, and applies the new settings.
pub async fn subscription_update_keeps_the_position(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let got = fx.pull(&s, 10).await;
    fx.ack(&s, &ack_ids(&got)).await;
    let (current, _) = fx.broker().get_subscription(&s).await.expect("get");
    let mut config = current.config.clone();
    config.ack_deadline_ms = 5_000;
    config.max_deliveries = Some(4);
    let updated = fx
        .broker()
        .update_subscription(&s, config.clone(), Some(1))
        .await
        .expect("update");
    assert_eq!((updated.revision, &updated.config), (2, &config));
    let stale = fx
        .broker()
        .update_subscription(&s, current.config.clone(), Some(1))
        .await;
    assert!(
        matches!(stale, Err(BrokerError::RevisionMismatch { .. })),
        "{stale:?}"
    );
    let other = fx.topic("other", 1).await;
    let moved = crate::SubscriptionConfig {
        topic: other,
        ..config.clone()
    };
    assert_invalid(
        fx.broker().update_subscription(&s, moved, None).await,
        "topic cannot change",
    );
    fx.restart().await;
    let (after, _) = fx.broker().get_subscription(&s).await.expect("get");
    assert_eq!((after.revision, after.config), (2, config));
    fx.publish(&t, vec![message("b")]).await;
    assert_eq!(
        texts(&fx.pull_all(&s).await),
        ["b"],
        "the acked message stays acked"
    );
}

/// Lists come in name order, a page at a time.
pub async fn lists_are_ordered_and_paged(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    for name in ["c", "a", "b"] {
        let t = fx.topic(name, 1).await;
        fx.subscribe(name, sub_config(&t)).await;
    }
    let first = fx.broker().list_topics(None, None, 2).await.expect("list");
    let names: Vec<_> = first.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["a", "b"]);
    let rest = fx
        .broker()
        .list_topics(None, Some(&first[1].name), 2)
        .await
        .expect("list");
    assert_eq!(
        rest.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    let after_a = SubscriptionName::new("a").expect("name");
    let subs = fx
        .broker()
        .list_subscriptions(None, Some(&after_a), 10)
        .await
        .expect("list");
    assert_eq!(
        subs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );
}

/// Names qualified by an app (`<app>/<name>`) are resources like any other; a list for one app
/// holds exactly that app's, in name order and paged.
pub async fn lists_for_one_app_hold_only_its_resources(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    for name in [
        "acme/b", "acme/a", "acme.x", "acmeb/c", "isv/a", "acme/c", "plain",
    ] {
        let t = fx.topic(name, 1).await;
        fx.subscribe(name, sub_config(&t)).await;
    }
    let acme = AppName::new("acme").expect("app");
    let page = fx
        .broker()
        .list_topics(Some(&acme), None, 2)
        .await
        .expect("list");
    let names: Vec<_> = page.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["acme/a", "acme/b"]);
    let rest = fx
        .broker()
        .list_topics(Some(&acme), Some(&page[1].name), 10)
        .await
        .expect("list");
    assert_eq!(
        rest.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["acme/c"]
    );
    let subs = fx
        .broker()
        .list_subscriptions(Some(&acme), None, 10)
        .await
        .expect("list");
    assert_eq!(
        subs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["acme/a", "acme/b", "acme/c"]
    );
    let all = fx
        .broker()
        .list_topics(None, None, 100)
        .await
        .expect("list");
    assert_eq!(all.len(), 7);
}

/// Browsing reads a partition from an offset or a time, without touching any subscription.
pub async fn browsing_reads_without_consuming(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    for (i, data) in ["m0", "m1", "m2", "m3"].into_iter().enumerate() {
        fx.advance_to(i as i64 * 1_000).await;
        fx.publish(&t, vec![message(data)]).await;
    }
    let read = |from, limit| fx.broker().read_messages(&t, 0, from, limit);
    let from_one = read(StartPosition::Offset(1), 2).await.expect("read");
    assert_eq!(
        from_one.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [1, 2]
    );
    let by_time = read(StartPosition::Time(at(2_000)), 10)
        .await
        .expect("read");
    assert_eq!(by_time.iter().map(|m| m.offset).collect::<Vec<_>>(), [2, 3]);
    assert_invalid(
        fx.broker()
            .read_messages(&t, 5, StartPosition::Earliest, 10)
            .await,
        "no partition 5",
    );
    let missing = TopicName::new("missing").expect("name");
    assert!(matches!(
        fx.broker()
            .read_messages(&missing, 0, StartPosition::Earliest, 1)
            .await,
        Err(BrokerError::TopicNotFound(_))
    ));
    assert_eq!(fx.pull_all(&s).await.len(), 4, "browsing consumed nothing");
}
