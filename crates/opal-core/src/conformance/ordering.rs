//! Partitions by key, and ordered subscriptions: one message of a key at a time, in publish order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::support::*;
use crate::{SubscriptionConfig, TopicName, partition_for_key};

fn ordered(topic: &TopicName) -> SubscriptionConfig {
    SubscriptionConfig {
        ordered: true,
        ..sub_config(topic)
    }
}

/// Messages with the same key go to `partition_for_key(key, partitions)`, in the publish result
/// and in the delivered message.
pub async fn same_key_goes_to_the_same_partition(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 4).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let batch = (0..30)
        .map(|i| message(&i.to_string()).with_key(&format!("key-{}", i % 10)))
        .collect();
    let results = fx.publish(&t, batch).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r.partition,
            partition_for_key(&format!("key-{}", i % 10), 4)
        );
    }
    for d in fx.pull_all(&s).await {
        let key = d.message.key.as_deref().expect("published with a key");
        assert_eq!(d.message.partition, partition_for_key(key, 4));
    }
}

/// Keyless messages spread over the partitions: over 40 one-message publishes every one of 4
/// partitions gets some.
pub async fn keyless_messages_spread_over_partitions(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 4).await;
    let mut used = BTreeSet::new();
    for i in 0..40 {
        let r = fx.publish(&t, vec![message(&i.to_string())]).await;
        used.insert(r[0].partition);
    }
    assert_eq!(used, BTreeSet::from([0, 1, 2, 3]));
}

/// On an ordered subscription, a key's next message is not handed out while the previous one is
/// in flight, nacked and waiting, or waiting for redelivery after its deadline, even when a
/// pull asks for many; other keys proceed; the next one comes after the ack.
pub async fn ordered_key_waits_for_the_previous_message(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", ordered(&t)).await;
    let batch = [
        ("a1", "A"),
        ("a2", "A"),
        ("b1", "B"),
        ("a3", "A"),
        ("b2", "B"),
    ]
    .into_iter()
    .map(|(data, key)| message(data).with_key(key))
    .collect();
    fx.publish(&t, batch).await;

    let got = fx.pull_all(&s).await;
    assert_eq!(sorted_texts(&got), ["a1", "b1"], "one message per key");
    fx.ack(&s, &ack_ids([find(&got, "a1")])).await;
    let got_a2 = fx.pull_all(&s).await;
    assert_eq!(
        texts(&got_a2),
        ["a2"],
        "the next of A after its ack; B in flight"
    );

    // b1 nacked and waiting: b2 stays back.
    fx.nack(
        &s,
        &ack_ids([find(&got, "b1")]),
        Some(Duration::from_secs(2)),
    )
    .await;
    assert!(fx.pull_all(&s).await.is_empty(), "b2 waits for b1");
    fx.advance_to(2_000).await;
    let got_b1 = fx.pull_all(&s).await;
    assert_eq!(texts(&got_b1), ["b1"], "b1 again, not b2");
    assert_eq!(got_b1[0].attempt, 2);

    // a2 (pulled at 0) is not acked: past its deadline it waits for redelivery, and a3 with it.
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64 / 2 - 1)
        .await;
    assert!(
        fx.pull_all(&s).await.is_empty(),
        "a3 waits for a2's redelivery"
    );
    // b1 (pulled at 2 s, attempt 2) is due by 2 s + deadline + backoff(2).
    fx.advance_to(2_000 + ACK_DEADLINE_MS + BACKOFF.delay_ms(2, 1.0) as i64)
        .await;
    let again = fx.pull_all(&s).await;
    assert_eq!(
        sorted_texts(&again),
        ["a2", "b1"],
        "redeliveries, not a3 or b2"
    );
    assert_eq!(
        (find(&again, "a2").attempt, find(&again, "b1").attempt),
        (2, 3)
    );
    fx.ack(&s, &ack_ids(&again)).await;
    let next = fx.pull_all(&s).await;
    assert_eq!(sorted_texts(&next), ["a3", "b2"]);
    fx.ack(&s, &ack_ids(&next)).await;
    assert!(fx.pull_all(&s).await.is_empty());
}

/// Over several partitions and keys, an ordered subscription delivers each key in publish order,
/// one message of every key with messages left per round of pulls.
pub async fn ordered_delivery_follows_publish_order_per_key(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 4).await;
    let s = fx.subscribe("s", ordered(&t)).await;
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    for round in 0..2 {
        let batch = (0..3)
            .flat_map(|seq| {
                keys.iter()
                    .map(move |key| message(&format!("{key}/{}", round * 3 + seq)).with_key(key))
            })
            .collect();
        fx.publish(&t, batch).await;
    }
    let mut next: BTreeMap<&str, usize> = keys.iter().map(|k| (*k, 0)).collect();
    for round in 0..6 {
        let got = fx.pull_all(&s).await;
        assert_eq!(got.len(), keys.len(), "round {round}: one per key");
        for d in &got {
            let (key, seq) = text(d).split_once('/').expect("key/seq");
            let expected = next.get_mut(key).expect("a known key");
            assert_eq!(seq, expected.to_string(), "round {round}: {key} in order");
            *expected += 1;
        }
        fx.ack(&s, &ack_ids(&got)).await;
    }
    assert!(fx.pull_all(&s).await.is_empty());
}

/// Key order holds across a restart: a nacked message (with its delay) and a leased one both
/// still hold back the next message of their key, and come back before it.
pub async fn ordered_keys_stay_blocked_across_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", ordered(&t)).await;
    let batch = [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]
        .into_iter()
        .map(|(data, key)| message(data).with_key(key))
        .collect();
    fx.publish(&t, batch).await;
    let got = fx.pull_all(&s).await;
    assert_eq!(sorted_texts(&got), ["a1", "b1"]);
    fx.nack(
        &s,
        &ack_ids([find(&got, "a1")]),
        Some(Duration::from_secs(5)),
    )
    .await;
    fx.restart().await;

    // b1's lease may be forgotten (b1 back at once) or kept until its deadline (10 s).
    let early = fx.pull_all(&s).await;
    assert!(
        texts(&early).iter().all(|d| *d == "b1"),
        "only b1 may be back yet: {:?}",
        texts(&early)
    );
    fx.advance_to(5_000).await;
    let a1 = fx.pull_all(&s).await;
    assert_eq!(
        texts(&a1),
        ["a1"],
        "a1 after its delay; b1 leased either way"
    );
    assert_eq!(a1[0].attempt, 2);
    fx.ack(&s, &ack_ids(&a1)).await;
    let a2 = fx.pull_all(&s).await;
    assert_eq!(texts(&a2), ["a2"], "b2 still waits for b1");
    fx.ack(&s, &ack_ids(a2.iter().chain(&early))).await;

    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.max_ms as i64).await;
    let mut rest = fx.pull_all(&s).await;
    if early.is_empty() {
        assert_eq!(texts(&rest), ["b1"], "b1 before b2");
        fx.ack(&s, &ack_ids(&rest)).await;
        rest = fx.pull_all(&s).await;
    }
    assert_eq!(texts(&rest), ["b2"]);
}

/// Once a message of a key is dead-lettered (here dropped), the key's next message comes.
pub async fn ordered_key_moves_on_after_dead_lettering(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let config = SubscriptionConfig {
        max_deliveries: Some(1),
        ..ordered(&t)
    };
    let s = fx.subscribe("s", config).await;
    fx.publish(
        &t,
        vec![message("a1").with_key("A"), message("a2").with_key("A")],
    )
    .await;
    let got = fx.pull_all(&s).await;
    assert_eq!(texts(&got), ["a1"]);
    fx.nack(&s, &ack_ids(&got), None).await;
    let next = fx.pull_eventually(&s, 1).await;
    assert_eq!(texts(&next), ["a2"], "a1 was given up");
}

/// An unordered subscription hands out several messages of one key at once.
pub async fn unordered_subscription_hands_out_a_key_at_once(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let batch = ["1", "2", "3"]
        .into_iter()
        .map(|d| message(d).with_key("same"))
        .collect();
    fx.publish(&t, batch).await;
    assert_eq!(sorted_texts(&fx.pull_all(&s).await), ["1", "2", "3"]);
}

/// A pull waiting on an ordered subscription wakes when an ack frees the key's next message,
/// not when its wait runs out (the push dispatcher always waits so).
pub async fn ack_of_an_ordered_key_wakes_a_waiting_pull(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", ordered(&t)).await;
    fx.publish(
        &t,
        vec![message("a1").with_key("A"), message("a2").with_key("A")],
    )
    .await;
    let first = fx.pull(&s, 10).await;
    assert_eq!(texts(&first), ["a1"]);
    let pending = fx.spawn_pull(&s, 10, Duration::from_secs(20));
    settle_background().await;
    assert!(!pending.is_finished(), "a2 waits for a1");
    fx.broker()
        .settle(&s, &[first[0].ack_id.clone()], crate::Settle::Ack)
        .await
        .expect("acked");
    let got = pending.finish().await;
    assert_eq!(texts(&got), ["a2"]);
}
