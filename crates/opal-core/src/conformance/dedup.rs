//! Deduplication: a repeated dedup id inside the topic's window stores nothing.

use super::support::*;
use crate::{PublishResult, TopicConfig};

const WINDOW_MS: i64 = 60_000;

async fn topic(fx: &Fixture<'_>, name: &str) -> crate::TopicName {
    let config = TopicConfig {
        partitions: 4,
        dedup_window_ms: WINDOW_MS as u64,
        ..TopicConfig::default()
    };
    fx.topic_with(name, config).await
}

fn duplicate_of(first: &PublishResult) -> PublishResult {
    PublishResult {
        duplicate: true,
        ..*first
    }
}

/// A repeated dedup id returns the first message's id, partition and offset with
/// `duplicate: true` and stores nothing, even with another payload and key; the topic counts it
/// in `duplicates`.
pub async fn repeated_dedup_id_returns_the_first_result(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = topic(&fx, "t").await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let first = fx
        .publish(
            &t,
            vec![message("first").with_key("a").with_dedup_id("d-1")],
        )
        .await;
    assert!(!first[0].duplicate);
    fx.advance_to(1_000).await;
    let again = fx
        .publish(
            &t,
            vec![message("second").with_key("b").with_dedup_id("d-1")],
        )
        .await;
    assert_eq!(again, [duplicate_of(&first[0])]);

    let got = fx.pull_all(&s).await;
    assert_eq!(texts(&got), ["first"], "the repeat stored nothing");
    let stats = fx.topic_stats(&t).await;
    assert_eq!((stats.published_messages, stats.duplicates), (1, 1));
    let stored: u64 = stats.partitions.iter().map(|p| p.messages).sum();
    assert_eq!(stored, 1);
}

/// Inside one batch, a repeated dedup id is a duplicate of the earlier message of the batch.
pub async fn repeated_dedup_id_within_one_batch(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = topic(&fx, "t").await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let results = fx
        .publish(
            &t,
            vec![
                message("one").with_key("k").with_dedup_id("x"),
                message("two").with_key("k").with_dedup_id("y"),
                message("three").with_key("k").with_dedup_id("x"),
            ],
        )
        .await;
    assert!(!results[0].duplicate && !results[1].duplicate);
    assert_eq!(results[2], duplicate_of(&results[0]));
    assert_eq!(results[1].offset.map(|o| o - 1), results[0].offset);
    assert_eq!(sorted_texts(&fx.pull_all(&s).await), ["one", "two"]);
}

/// Dedup ids are remembered across a restart.
pub async fn dedup_survives_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = topic(&fx, "t").await;
    let first = fx
        .publish(&t, vec![message("first").with_dedup_id("d-1")])
        .await;
    fx.restart().await;
    fx.advance_to(1_000).await;
    let again = fx
        .publish(&t, vec![message("again").with_dedup_id("d-1")])
        .await;
    assert_eq!(again, [duplicate_of(&first[0])]);
    let stored: u64 = fx
        .topic_stats(&t)
        .await
        .partitions
        .iter()
        .map(|p| p.messages)
        .sum();
    assert_eq!(stored, 1);
}

/// The window counts from the first publish (a duplicate does not extend it): inside it the id
/// is a duplicate; once it has passed, the same id is stored again as a new message.
pub async fn dedup_id_is_new_again_after_the_window(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = topic(&fx, "t").await;
    let first = fx
        .publish(&t, vec![message("first").with_dedup_id("d-1")])
        .await;
    fx.advance_to(WINDOW_MS - 1).await;
    let inside = fx
        .publish(&t, vec![message("inside").with_dedup_id("d-1")])
        .await;
    assert_eq!(inside, [duplicate_of(&first[0])], "inside the window");
    fx.advance_to(WINDOW_MS + 1).await;
    let after = fx
        .publish(&t, vec![message("after").with_dedup_id("d-1")])
        .await;
    assert!(!after[0].duplicate, "the window has passed");
    assert_ne!(after[0].id, first[0].id);
    assert!(after[0].offset.is_some());
    let stored: u64 = fx
        .topic_stats(&t)
        .await
        .partitions
        .iter()
        .map(|p| p.messages)
        .sum();
    assert_eq!(stored, 2);
}

/// Dedup ids belong to a topic: the same id on another topic is a new message.
pub async fn dedup_ids_are_per_topic(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let one = topic(&fx, "one").await;
    let two = topic(&fx, "two").await;
    let a = fx
        .publish(&one, vec![message("a").with_dedup_id("same")])
        .await;
    let b = fx
        .publish(&two, vec![message("b").with_dedup_id("same")])
        .await;
    assert!(!a[0].duplicate && !b[0].duplicate);
    assert_ne!(a[0].id, b[0].id);
}
