//! Redelivery of unacked messages: after the ack deadline plus the backoff, attempt by attempt.

use std::time::Duration;

use super::support::*;

/// An unacked message is handed out again after its ack deadline plus backoff(1): not while
/// leased, not before the deadline plus half of backoff(1) (equal jitter), and by the deadline
/// plus all of it; same message, attempt 2, a new ack id.
pub async fn unacked_message_comes_back_after_deadline_and_backoff(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a").with_key("k").with_attr("x", "y")])
        .await;
    let first = fx.pull_all(&s).await;
    assert_eq!(first.len(), 1);
    fx.advance_to(ACK_DEADLINE_MS - 1).await;
    assert!(fx.pull_all(&s).await.is_empty(), "still leased");
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64 / 2 - 1)
        .await;
    assert!(
        fx.pull_all(&s).await.is_empty(),
        "not before the deadline plus half of backoff(1)"
    );
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64)
        .await;
    let again = fx.pull_all(&s).await;
    assert_eq!(again.len(), 1, "due by the deadline plus backoff(1)");
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].message, first[0].message, "the same message");
    assert_ne!(again[0].ack_id, first[0].ack_id);
}

/// Each passed deadline counts as a failed delivery: the attempt counts up and the wait after
/// each deadline grows with the backoff.
pub async fn redelivery_backoff_grows_with_each_attempt(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let mut pulled_at = 0;
    for attempt in 1..=4u32 {
        let got = fx.pull_all(&s).await;
        assert_eq!(texts(&got), ["a"], "attempt {attempt} is available");
        assert_eq!(got[0].attempt, attempt);
        let deadline = pulled_at + ACK_DEADLINE_MS;
        let nominal = BACKOFF.delay_ms(attempt, 1.0) as i64;
        fx.advance_to(deadline + nominal / 2 - 1).await;
        assert!(
            fx.pull_all(&s).await.is_empty(),
            "attempt {attempt}: back before the deadline plus half its {nominal} ms backoff"
        );
        fx.advance_to(deadline + nominal).await;
        pulled_at = deadline + nominal;
    }
}

/// A waiting pull wakes up when a redelivery becomes due on the broker's clock.
pub async fn long_poll_wakes_for_a_redelivery(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    assert_eq!(fx.pull_all(&s).await.len(), 1);
    let pending = fx.spawn_pull(&s, 10, Duration::from_secs(25));
    settle_background().await;
    assert!(!pending.is_finished(), "the message is leased");
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64)
        .await;
    let got = pending.finish().await;
    assert_eq!(texts(&got), ["a"]);
    assert_eq!(got[0].attempt, 2);
}

/// A waiting pull wakes up when a nacked message's delay has passed.
pub async fn long_poll_wakes_for_a_nacked_message(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let got = fx.pull_all(&s).await;
    fx.nack(&s, &ack_ids(&got), Some(Duration::from_secs(4)))
        .await;
    let pending = fx.spawn_pull(&s, 10, Duration::from_secs(25));
    settle_background().await;
    assert!(!pending.is_finished(), "the nack delay has not passed");
    fx.advance_to(4_000).await;
    let again = pending.finish().await;
    assert_eq!(texts(&again), ["a"]);
    assert_eq!(again[0].attempt, 2);
}
