//! Delayed messages: invisible to every subscription until their time, also across restarts.

use std::time::Duration;

use super::support::*;
use crate::{Limits, partition_for_key};

/// A message with `deliver_at` in the future gets no offset yet (its partition is its key's), is
/// invisible to every subscription until the clock reaches its time, then is delivered once, with
/// `deliver_at` set; messages published after it are not held back.
pub async fn delayed_message_is_invisible_until_its_time(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 4).await;
    let a = fx.subscribe("a", sub_config(&t)).await;
    let b = fx.subscribe("b", sub_config(&t)).await;
    let results = fx
        .publish(
            &t,
            vec![message("later").with_key("k").with_deliver_at(at(5_000))],
        )
        .await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].offset, None, "no offset until it is due");
    assert!(!results[0].duplicate);
    assert_eq!(results[0].partition, partition_for_key("k", 4));
    fx.publish(&t, vec![message("now")]).await;

    for sub in [&a, &b] {
        let now = fx.pull_all(sub).await;
        assert_eq!(texts(&now), ["now"], "only the undelayed one");
        fx.ack(sub, &ack_ids(&now)).await;
    }
    fx.advance_to(4_999).await;
    assert!(fx.pull_all(&a).await.is_empty(), "not before its time");
    assert!(fx.pull_all(&b).await.is_empty(), "not before its time");

    fx.advance_to(5_000).await;
    for sub in [&a, &b] {
        let got = fx.pull_eventually(sub, 1).await;
        assert_eq!(texts(&got), ["later"], "due at its time");
        let m = &got[0].message;
        assert_eq!(m.id, results[0].id);
        assert_eq!(m.partition, results[0].partition);
        assert_eq!(m.deliver_at, Some(at(5_000)));
        assert_eq!(got[0].attempt, 1);
        fx.ack(sub, &ack_ids(&got)).await;
    }
    fx.advance_to(60_000).await;
    assert!(fx.pull_all(&a).await.is_empty(), "delivered once");
}

/// A waiting pull wakes up when a delayed message becomes due.
pub async fn long_poll_wakes_for_a_delayed_message(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("later").with_deliver_at(at(3_000))])
        .await;
    let pending = fx.spawn_pull(&s, 10, Duration::from_secs(20));
    settle_background().await;
    assert!(!pending.is_finished(), "not due yet");
    fx.advance_to(3_000).await;
    let got = pending.finish().await;
    assert_eq!(texts(&got), ["later"]);
}

/// A delayed message survives a restart before its time: still invisible, then delivered once.
pub async fn delayed_message_survives_restart(h: &dyn Harness) {
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("later").with_deliver_at(at(5_000))])
        .await;
    fx.advance_to(1_000).await;
    fx.restart().await;
    assert!(fx.pull_all(&s).await.is_empty(), "still invisible");
    assert_eq!(fx.topic_stats(&t).await.scheduled, 1);
    fx.advance_to(5_000).await;
    let got = fx.pull_eventually(&s, 1).await;
    assert_eq!(texts(&got), ["later"]);
    fx.ack(&s, &ack_ids(&got)).await;
    settle_background().await;
    assert!(fx.pull_all(&s).await.is_empty(), "not twice");
    assert_eq!(
        fx.topic_stats(&t).await.partitions[0].end_offset,
        1,
        "stored once"
    );
}

/// `deliver_at` may be at most `max_delay_ms` ahead: exactly that is accepted, one millisecond
/// more fails the batch with `Invalid` and stores nothing.
pub async fn deliver_at_is_limited_to_max_delay(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let max = Limits::default().max_delay_ms as i64;
    let too_far = message("too far").with_deliver_at(at(max + 1));
    assert_invalid(
        fx.broker().publish(&t, vec![message("a"), too_far]).await,
        "deliver_at beyond max_delay_ms",
    );
    let stats = fx.topic_stats(&t).await;
    assert_eq!((stats.scheduled, stats.partitions[0].end_offset), (0, 0));
    let ok = fx
        .publish(&t, vec![message("far").with_deliver_at(at(max))])
        .await;
    assert_eq!(ok[0].offset, None);
    assert_eq!(fx.topic_stats(&t).await.scheduled, 1);
}

/// A `deliver_at` that is not in the future means no delay: the message is stored at once (it
/// has an offset) and delivered at once.
pub async fn deliver_at_in_the_past_is_no_delay(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.advance_to(10_000).await;
    let results = fx
        .publish(
            &t,
            vec![
                message("past").with_deliver_at(at(1_000)),
                message("now").with_deliver_at(at(10_000)),
            ],
        )
        .await;
    assert_eq!(results[0].offset, Some(0));
    assert_eq!(results[1].offset, Some(1));
    assert_eq!(sorted_texts(&fx.pull_all(&s).await), ["now", "past"]);
}
