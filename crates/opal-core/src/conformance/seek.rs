//! Start positions of new subscriptions, and seek on existing ones.

use super::support::*;
use crate::{BrokerError, StartPosition, SubscriptionName, TopicName};

/// Three messages on `t` (one partition), published at 0 s, 1 s and 2 s.
async fn history(fx: &Fixture<'_>) -> TopicName {
    let t = fx.topic("t", 1).await;
    for (i, data) in ["m0", "m1", "m2"].into_iter().enumerate() {
        fx.advance_to(i as i64 * 1_000).await;
        fx.publish(&t, vec![message(data)]).await;
    }
    t
}

/// `Earliest` (the default) sees the retained history; `Latest` only what is published later.
pub async fn earliest_sees_history_and_latest_does_not(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = history(&fx).await;
    let earliest = fx.subscribe("earliest", sub_config(&t)).await;
    let latest = fx
        .subscribe_at("latest", sub_config(&t), StartPosition::Latest)
        .await;
    assert_eq!(
        sorted_texts(&fx.pull_all(&earliest).await),
        ["m0", "m1", "m2"]
    );
    assert!(fx.pull_all(&latest).await.is_empty(), "nothing from before");
    fx.publish(&t, vec![message("m3")]).await;
    let got = fx.pull_all(&latest).await;
    assert_eq!(texts(&got), ["m3"]);
    assert_eq!(got[0].message.offset, 3);
}

/// `Time(t)` starts at the first message published at or after `t`.
pub async fn time_starts_at_the_first_message_at_or_after_it(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = history(&fx).await;
    for (name, time, expected) in [
        ("exact", 1_000, vec!["m1", "m2"]),
        ("between", 500, vec!["m1", "m2"]),
        ("before", -1_000, vec!["m0", "m1", "m2"]),
        ("after", 2_001, vec![]),
    ] {
        let s = fx
            .subscribe_at(name, sub_config(&t), StartPosition::Time(at(time)))
            .await;
        assert_eq!(sorted_texts(&fx.pull_all(&s).await), expected, "{name}");
    }
    fx.advance_to(3_000).await;
    fx.publish(&t, vec![message("m3")]).await;
    let after = SubscriptionName::new("after").expect("valid");
    assert_eq!(texts(&fx.pull_all(&after).await), ["m3"]);
}

/// `Offset(n)` starts at offset `n`, clamped to what the partition holds (past the end: the end).
pub async fn offset_starts_there_clamped_to_the_partition(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = history(&fx).await;
    let one = fx
        .subscribe_at("one", sub_config(&t), StartPosition::Offset(1))
        .await;
    let far = fx
        .subscribe_at("far", sub_config(&t), StartPosition::Offset(100))
        .await;
    assert_eq!(sorted_texts(&fx.pull_all(&one).await), ["m1", "m2"]);
    assert!(fx.pull_all(&far).await.is_empty());
    fx.publish(&t, vec![message("m3")]).await;
    let got = fx.pull_all(&far).await;
    assert_eq!(
        texts(&got),
        ["m3"],
        "clamped to the end, not waiting for offset 100"
    );
}

/// Seeking back forgets the ack state: acked messages are delivered again (strict reading: as
/// first deliveries, attempt 1, since delivery counts are ack state too).
pub async fn seek_back_redelivers_acked_messages(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = history(&fx).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let got = fx.pull_all(&s).await;
    fx.ack(&s, &ack_ids(&got)).await;
    assert!(fx.pull_all(&s).await.is_empty());

    fx.seek(&s, StartPosition::Earliest).await;
    let again = fx.pull_all(&s).await;
    assert_eq!(sorted_texts(&again), ["m0", "m1", "m2"]);
    assert!(again.iter().all(|d| d.attempt == 1), "ack state forgotten");
    fx.ack(&s, &ack_ids(&again)).await;

    fx.seek(&s, StartPosition::Time(at(1_000))).await;
    assert_eq!(sorted_texts(&fx.pull_all(&s).await), ["m1", "m2"]);
    fx.seek(&s, StartPosition::Offset(2)).await;
    assert_eq!(sorted_texts(&fx.pull_all(&s).await), ["m2"]);
}

/// Seeking forward skips what lies before the position, leased or not; outstanding ack ids stop
/// working (refused one by one); the backlog is what lies after the position.
pub async fn seek_forward_skips_and_voids_leases(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = history(&fx).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let leased = fx.pull(&s, 1).await;
    assert_eq!(texts(&leased), ["m0"]);

    fx.seek(&s, StartPosition::Latest).await;
    assert!(
        fx.pull_all(&s).await.is_empty(),
        "nothing before the position"
    );
    let outcome = fx.settle(&s, &ack_ids(&leased), crate::Settle::Ack).await;
    assert_eq!(
        (outcome.applied, outcome.rejected.len()),
        (0, 1),
        "a lease from before the seek is void"
    );
    let stats = fx.sub_stats(&s).await;
    assert_eq!((stats.backlog, stats.in_flight), (0, 0));
    fx.advance_to(100_000).await;
    assert!(
        fx.pull_all(&s).await.is_empty(),
        "the void lease never comes back"
    );
    fx.publish(&t, vec![message("m3")]).await;
    assert_eq!(texts(&fx.pull_all(&s).await), ["m3"]);
}

/// Seek on a missing subscription is `SubscriptionNotFound`.
pub async fn seek_on_missing_subscription_is_not_found(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let missing = SubscriptionName::new("missing").expect("valid");
    match fx.broker().seek(&missing, StartPosition::Earliest).await {
        Err(BrokerError::SubscriptionNotFound(name)) => assert_eq!(name, "missing"),
        other => panic!("expected SubscriptionNotFound, got {other:?}"),
    }
}
