//! Publish, pull and ack: the basic contract, long-poll, and how subscriptions share a topic.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;

use super::support::*;
use crate::{DataEncoding, Limits, NewMessage};

/// `publish` answers one result per message, in order: a UUIDv7, the partition, the next offset
/// of that partition (continuing across calls) and `duplicate: false`.
pub async fn publish_returns_one_result_per_message_in_order(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let first = fx
        .publish(&t, vec![message("a"), message("b"), message("c")])
        .await;
    let second = fx.publish(&t, vec![message("d"), message("e")]).await;
    assert_eq!(first.len(), 3, "one result per message");
    assert_eq!(second.len(), 2, "one result per message");
    let all: Vec<_> = first.iter().chain(&second).collect();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.partition, 0, "result {i}");
        assert_eq!(r.offset, Some(i as u64), "result {i}: offsets count up");
        assert!(!r.duplicate, "result {i}");
        assert_eq!(r.id.get_version_num(), 7, "result {i}: ids are UUIDv7");
    }
    let ids: BTreeSet<_> = all.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 5, "ids are distinct");
}

/// A pulled message is the published one: id, topic, partition, offset, key, attributes, data,
/// encoding, publish time (the broker clock's), no `deliver_at`; first delivery is attempt 1.
pub async fn pulled_message_is_what_was_published(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.advance_to(1_234).await;
    let sent = vec![
        message(r#"{"order": 42}"#)
            .json()
            .with_key("customer-7")
            .with_attr("kind", "created")
            .with_attr("v", "1"),
        NewMessage {
            data: Bytes::from_static(&[0, 159, 255, 10]),
            ..message("")
        },
    ];
    let results = fx.publish(&t, sent.clone()).await;
    let mut got = fx.pull_all(&s).await;
    got.sort_by_key(|d| d.message.offset);
    assert_eq!(got.len(), 2, "both messages are delivered");
    for ((d, m), r) in got.iter().zip(&sent).zip(&results) {
        let msg = &d.message;
        assert_eq!(msg.id, r.id);
        assert_eq!(msg.topic, t);
        assert_eq!(msg.partition, r.partition);
        assert_eq!(Some(msg.offset), r.offset);
        assert_eq!(msg.key, m.key);
        assert_eq!(msg.attributes, m.attributes);
        assert_eq!(msg.data, m.data);
        assert_eq!(msg.encoding, m.encoding);
        assert_eq!(
            msg.publish_time,
            at(1_234),
            "publish time is read from the clock"
        );
        assert_eq!(msg.deliver_at, None);
        assert_eq!(d.attempt, 1);
    }
    assert_eq!(got[1].message.encoding, DataEncoding::Binary);
    assert_ne!(
        got[0].ack_id, got[1].ack_id,
        "each delivery has its own ack id"
    );
}

/// An acked message is never handed out again; an unacked one is (attempt 2).
pub async fn acked_message_never_comes_back(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a"), message("b")]).await;
    let got = fx.pull_all(&s).await;
    assert_eq!(sorted_texts(&got), ["a", "b"]);
    fx.ack(&s, &ack_ids([find(&got, "a")])).await;

    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.max_ms as i64).await;
    let again = fx.pull_all(&s).await;
    assert_eq!(texts(&again), ["b"], "only the unacked message comes back");
    assert_eq!(again[0].attempt, 2);
    fx.ack(&s, &ack_ids(&again)).await;

    fx.advance_to(10 * (ACK_DEADLINE_MS + BACKOFF.max_ms as i64))
        .await;
    assert_eq!(texts(&fx.pull_all(&s).await), Vec::<&str>::new());
}

/// Acking again is harmless and counts as applied: again later, twice in one call, and after the
/// lease's deadline has passed (the message is acked; nothing is left to reject).
pub async fn acking_twice_is_applied_both_times(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let id = ack_ids(&fx.pull_all(&s).await);
    assert_eq!(id.len(), 1);
    fx.ack(&s, &id).await;
    fx.ack(&s, &id).await;
    fx.ack(&s, &[id[0].clone(), id[0].clone()]).await;
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.max_ms as i64).await;
    assert!(
        fx.pull_all(&s).await.is_empty(),
        "an acked message stays acked"
    );
    fx.ack(&s, &id).await;
}

/// The whole batch is validated before anything is stored: one bad message (or a bad batch
/// size) fails the call with `Invalid`, naming the message, and nothing is stored.
pub async fn publish_validates_the_whole_batch_first(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let limits = Limits::default();
    let broker = fx.broker();

    let bad_attribute = message("b").with_attr("not allowed", "x");
    match broker
        .publish(&t, vec![message("a"), bad_attribute, message("c")])
        .await
    {
        Err(crate::BrokerError::Invalid { field, .. }) => assert!(
            field.starts_with("messages[1]"),
            "the error names the bad message: {field}"
        ),
        other => panic!("expected Invalid for a bad attribute name, got {other:?}"),
    }
    let oversized = NewMessage {
        data: Bytes::from(vec![b'x'; limits.max_message_bytes + 1]),
        ..message("")
    };
    assert_invalid(
        broker.publish(&t, vec![message("a"), oversized]).await,
        "a payload over the limit",
    );
    assert_invalid(
        broker.publish(&t, vec![message("a").with_key("")]).await,
        "an empty key",
    );
    assert_invalid(broker.publish(&t, Vec::new()).await, "an empty batch");
    let too_many = vec![message("m"); limits.max_batch_messages + 1];
    assert_invalid(broker.publish(&t, too_many).await, "a batch over the limit");

    let stats = fx.topic_stats(&t).await;
    assert_eq!(stats.partitions[0].end_offset, 0, "nothing was stored");
    assert_eq!(stats.published_messages, 0, "nothing was stored");
    assert!(fx.pull_all(&s).await.is_empty(), "nothing was stored");
    let ok = fx.publish(&t, vec![message("fine")]).await;
    assert_eq!(ok[0].offset, Some(0), "failed batches took no offsets");
}

/// A pull returns at most `max` deliveries, and as many as are available up to `max`.
pub async fn pull_returns_at_most_max(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let batch = (0..5).map(|i| message(&i.to_string())).collect();
    fx.publish(&t, batch).await;
    assert_eq!(fx.pull(&s, 2).await.len(), 2);
    assert_eq!(fx.pull(&s, 2).await.len(), 2);
    assert_eq!(fx.pull(&s, 2).await.len(), 1);
    assert_eq!(fx.pull(&s, 2).await.len(), 0);
}

/// Consumers of one subscription compete: a leased message is not handed to a second puller.
pub async fn competing_pulls_do_not_share_leases(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 2).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let batch = (0..6).map(|i| message(&i.to_string())).collect();
    fx.publish(&t, batch).await;
    let first = fx.pull(&s, 3).await;
    let second = fx.pull_all(&s).await;
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 3);
    let mut all = texts(&first);
    all.extend(texts(&second));
    all.sort_unstable();
    assert_eq!(all, ["0", "1", "2", "3", "4", "5"], "no message twice");
}

/// Every subscription of a topic receives every message, with its own ack state.
pub async fn every_subscription_receives_every_message(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let a = fx.subscribe("a", sub_config(&t)).await;
    let b = fx.subscribe("b", sub_config(&t)).await;
    fx.publish(&t, vec![message("x"), message("y")]).await;
    let got_a = fx.pull_all(&a).await;
    let got_b = fx.pull_all(&b).await;
    assert_eq!(sorted_texts(&got_a), ["x", "y"]);
    assert_eq!(sorted_texts(&got_b), ["x", "y"]);
    fx.ack(&a, &ack_ids(&got_a)).await;

    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.max_ms as i64).await;
    assert!(fx.pull_all(&a).await.is_empty(), "a acked both");
    let again_b = fx.pull_all(&b).await;
    assert_eq!(sorted_texts(&again_b), ["x", "y"], "b's leases expired");
    assert!(again_b.iter().all(|d| d.attempt == 2));
}

/// A waiting pull answers as soon as a message is published.
pub async fn long_poll_wakes_on_publish(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let pending = fx.spawn_pull(&s, 10, Duration::from_secs(20));
    settle_background().await;
    assert!(!pending.is_finished(), "nothing to deliver yet");
    fx.publish(&t, vec![message("a")]).await;
    let got = pending.finish().await;
    assert_eq!(texts(&got), ["a"]);
}

/// A waiting pull gives up with an empty answer when its wait has passed on the broker's clock,
/// and not before (strict reading: no early empty answers).
pub async fn long_poll_ends_when_its_wait_passes_on_the_clock(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let pending = fx.spawn_pull(&s, 10, Duration::from_secs(10));
    settle_background().await;
    assert!(!pending.is_finished(), "waits while nothing is published");
    fx.advance_to(9_999).await;
    assert!(!pending.is_finished(), "still inside its wait");
    fx.advance_to(10_000).await;
    assert!(pending.finish().await.is_empty());
}

/// Dropping a waiting pull loses nothing: the next pull gets the message, on its first attempt.
pub async fn abandoned_long_poll_takes_nothing(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let pending = fx.spawn_pull(&s, 10, Duration::from_secs(20));
    settle_background().await;
    pending.abandon().await;
    fx.publish(&t, vec![message("a")]).await;
    settle_background().await;
    let got = fx.pull_all(&s).await;
    assert_eq!(texts(&got), ["a"]);
    assert_eq!(got[0].attempt, 1);
}
