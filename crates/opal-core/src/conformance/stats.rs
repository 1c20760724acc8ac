//! Subscription and topic statistics, checked exactly after scripted sequences.

use std::time::Duration;

use super::support::*;
use crate::SubscriptionStats;

/// Subscription stats after publish 5, pull 3, ack 1, nack 1, a redelivery after the nack, acks,
/// a redelivery after a deadline passed, and the last ack. `delivered` counts every delivery (redeliveries included), `redelivered` those with
/// attempt > 1, `acked`/`nacked` the ids applied; `expired` is about retention, so it stays 0.
/// (`backlog_bytes`, and `in_flight` after a deadline passed, have their own tests.)
pub async fn subscription_stats_follow_a_scripted_sequence(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let batch = (0..5).map(|i| message(&format!("message-{i}"))).collect();
    fx.publish(&t, batch).await; // published at 0 s
    let expect =
        |backlog, in_flight, oldest, delivered, acked, nacked, redelivered| SubscriptionStats {
            backlog,
            backlog_bytes: 0,
            in_flight,
            oldest_unacked_age_ms: oldest,
            delivered,
            acked,
            nacked,
            redelivered,
            dead_lettered: 0,
            expired: 0,
        };
    let stats = async || SubscriptionStats {
        backlog_bytes: 0,
        ..fx.sub_stats(&s).await
    };
    assert_eq!(stats().await, expect(5, 0, 0, 0, 0, 0, 0), "published");

    fx.advance_to(1_000).await;
    let first = fx.pull(&s, 3).await;
    assert_eq!(texts(&first), ["message-0", "message-1", "message-2"]);
    assert_eq!(stats().await, expect(5, 3, 1_000, 3, 0, 0, 0), "pulled 3");

    fx.ack(&s, &ack_ids(&first[..1])).await;
    fx.nack(&s, &ack_ids(&first[1..2]), Some(Duration::from_secs(2)))
        .await;
    assert_eq!(
        stats().await,
        expect(4, 1, 1_000, 3, 1, 1, 0),
        "acked 1, nacked 1"
    );

    fx.advance_to(3_000).await;
    let second = fx.pull_all(&s).await;
    assert_eq!(
        sorted_texts(&second),
        ["message-1", "message-3", "message-4"]
    );
    assert_eq!(find(&second, "message-1").attempt, 2);
    assert_eq!(
        stats().await,
        expect(4, 4, 3_000, 6, 1, 1, 1),
        "nacked one redelivered, two new"
    );

    fx.ack(&s, &ack_ids(&second)).await;
    assert_eq!(
        stats().await,
        expect(1, 1, 3_000, 6, 4, 1, 1),
        "acked 3 more"
    );

    // message-2 was leased at 1 s and never acked: its lease ends at 11 s.
    fx.advance_to(1_000 + ACK_DEADLINE_MS + BACKOFF.initial_ms as i64)
        .await;
    let third = fx.pull_all(&s).await;
    assert_eq!(texts(&third), ["message-2"]);
    assert_eq!(
        stats().await,
        expect(1, 1, 12_000, 7, 4, 1, 2),
        "expired one redelivered"
    );
    fx.ack(&s, &ack_ids(&third)).await;
    assert_eq!(stats().await, expect(0, 0, 0, 7, 5, 1, 2), "all acked");
}

/// `in_flight` counts the leases that are live now: one whose deadline has passed is no longer
/// "leased to a consumer right now", whether or not anything has pulled since.
pub async fn in_flight_counts_only_live_leases(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let a = fx.pull_all(&s).await;
    fx.advance_to(5_000).await;
    fx.publish(&t, vec![message("b")]).await;
    let b = fx.pull_all(&s).await;
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(fx.sub_stats(&s).await.in_flight, 2);
    fx.advance_to(ACK_DEADLINE_MS + 1).await;
    let stats = fx.sub_stats(&s).await;
    assert_eq!(
        (stats.in_flight, stats.backlog),
        (1, 2),
        "a's lease ended at 10 s"
    );
    fx.advance_to(5_000 + ACK_DEADLINE_MS + 1).await;
    assert_eq!(
        fx.sub_stats(&s).await.in_flight,
        0,
        "b's lease ended at 15 s"
    );
}

/// `backlog_bytes` is the sum of the payload bytes of the unacked messages (the API's
/// "messages (and their payload bytes)"): keys, attributes and storage framing do not count;
/// in-flight and nacked messages do; 0 once everything is acked.
pub async fn backlog_bytes_count_payload_bytes(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(
        &t,
        vec![
            message("abc")
                .with_attr("kind", "created")
                .with_attr("v", "1"),
            message("defgh").with_key("some-key"),
        ],
    )
    .await;
    assert_eq!(fx.sub_stats(&s).await.backlog_bytes, 8, "published");
    let got = fx.pull_all(&s).await;
    assert_eq!(fx.sub_stats(&s).await.backlog_bytes, 8, "in flight");
    fx.ack(&s, &ack_ids([find(&got, "abc")])).await;
    fx.nack(&s, &ack_ids([find(&got, "defgh")]), None).await;
    assert_eq!(
        fx.sub_stats(&s).await.backlog_bytes,
        5,
        "one acked, one nacked"
    );
    fx.advance_to(BACKOFF.initial_ms as i64).await;
    let again = fx.pull_all(&s).await;
    fx.ack(&s, &ack_ids(&again)).await;
    assert_eq!(fx.sub_stats(&s).await.backlog_bytes, 0, "all acked");
}

/// Topic stats: stored messages per partition, `published_messages` (duplicates not counted),
/// `duplicates`, `scheduled` (delayed messages not yet due, which no subscription counts in its
/// backlog); `published_bytes` ignores duplicates; a delayed message is counted once.
pub async fn topic_stats_count_publishes_duplicates_and_scheduled(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(
        &t,
        vec![
            message("one"),
            message("two"),
            message("three").with_dedup_id("d"),
        ],
    )
    .await;
    let before = fx.topic_stats(&t).await;
    assert_eq!((before.published_messages, before.duplicates), (3, 0));
    assert!(before.published_bytes >= 11, "at least the payload bytes");
    let dup = fx
        .publish(&t, vec![message("three again").with_dedup_id("d")])
        .await;
    assert!(dup[0].duplicate);
    let after_dup = fx.topic_stats(&t).await;
    assert_eq!((after_dup.published_messages, after_dup.duplicates), (3, 1));
    assert_eq!(
        after_dup.published_bytes, before.published_bytes,
        "duplicates store nothing"
    );

    fx.publish(&t, vec![message("later").with_deliver_at(at(5_000))])
        .await;
    let stats = fx.topic_stats(&t).await;
    assert_eq!(stats.partitions.len(), 1);
    let p = stats.partitions[0];
    assert_eq!(
        (p.partition, p.start_offset, p.end_offset, p.messages),
        (0, 0, 3, 3)
    );
    assert_eq!((stats.duplicates, stats.scheduled), (1, 1));
    assert_eq!(
        fx.sub_stats(&s).await.backlog,
        3,
        "the delayed one is not visible"
    );

    fx.advance_to(5_000).await;
    let got = fx.pull_eventually(&s, 4).await;
    assert_eq!(got.len(), 4, "the delayed one is due");
    let due = fx.topic_stats(&t).await;
    assert_eq!(due.partitions[0].end_offset, 4);
    assert_eq!(due.partitions[0].messages, 4);
    assert_eq!(
        (due.published_messages, due.duplicates, due.scheduled),
        (4, 1, 0),
        "the delayed one counted once"
    );
    assert!(due.published_bytes > before.published_bytes);
    assert_eq!(fx.sub_stats(&s).await.backlog, 4);
}

/// Strict reading of "`published_messages`: stored by publishes" with "a delayed message is
/// stored durably at once": a delayed message counts as published when it is published (the
/// producer's rate), not when it comes due, and only once.
pub async fn delayed_message_counts_as_published_at_once(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("later").with_deliver_at(at(5_000))])
        .await;
    let stats = fx.topic_stats(&t).await;
    assert_eq!((stats.published_messages, stats.scheduled), (1, 1));
    assert!(stats.published_bytes >= 5);
    fx.advance_to(5_000).await;
    assert_eq!(fx.pull_eventually(&s, 1).await.len(), 1);
    let due = fx.topic_stats(&t).await;
    assert_eq!((due.published_messages, due.scheduled), (1, 0));
    assert_eq!(due.published_bytes, stats.published_bytes);
}
