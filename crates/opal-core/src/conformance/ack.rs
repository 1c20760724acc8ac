//! Settling deliveries: nack with and without delay, extend, and which ack ids are refused.

use std::collections::BTreeSet;
use std::time::Duration;

use super::support::*;
use crate::{AckId, BrokerError, Limits, Settle};

/// `Nack { delay: Some(d) }` hands the message out again once `d` has passed, not before, with
/// the attempt one higher.
pub async fn nack_with_delay_redelivers_after_the_delay(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    let published = fx.publish(&t, vec![message("a")]).await;
    let got = fx.pull_all(&s).await;
    assert_eq!(got.len(), 1);
    fx.advance_to(1_000).await;
    fx.nack(&s, &ack_ids(&got), Some(Duration::from_millis(3_000)))
        .await;
    assert!(fx.pull_all(&s).await.is_empty(), "not before the delay");
    fx.advance_to(3_999).await;
    assert!(fx.pull_all(&s).await.is_empty(), "not before the delay");
    fx.advance_to(4_000).await;
    let again = fx.pull_all(&s).await;
    assert_eq!(texts(&again), ["a"], "due once the delay has passed");
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].message.id, published[0].id);
    assert_ne!(
        again[0].ack_id, got[0].ack_id,
        "a new delivery, a new ack id"
    );
}

/// `Nack { delay: Some(0) }` makes the message available again at once.
pub async fn nack_with_zero_delay_redelivers_at_once(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let got = fx.pull_all(&s).await;
    fx.nack(&s, &ack_ids(&got), Some(Duration::ZERO)).await;
    let again = fx.pull_all(&s).await;
    assert_eq!(texts(&again), ["a"]);
    assert_eq!(again[0].attempt, 2);
}

/// `Nack { delay: None }` waits the subscription's backoff for that attempt:
/// `initial * multiplier^(attempt-1)` capped at `max`, with equal jitter, so the message is
/// never back before half of that and always back once all of it has passed.
pub async fn nack_without_delay_waits_the_backoff(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let mut nacked_at = 0;
    for attempt in 1..=6u32 {
        let got = fx.pull_all(&s).await;
        assert_eq!(texts(&got), ["a"], "attempt {attempt} is available");
        assert_eq!(got[0].attempt, attempt);
        fx.nack(&s, &ack_ids(&got), None).await;
        let nominal = BACKOFF.delay_ms(attempt, 1.0) as i64;
        assert_eq!(nominal, (1_000i64 << (attempt - 1)).min(8_000));
        fx.advance_to(nacked_at + nominal / 2 - 1).await;
        assert!(
            fx.pull_all(&s).await.is_empty(),
            "attempt {attempt}: back before half its {nominal} ms backoff"
        );
        fx.advance_to(nacked_at + nominal).await;
        nacked_at += nominal;
    }
    assert_eq!(fx.pull_all(&s).await[0].attempt, 7);
}

/// `Extend { deadline }` keeps the lease for `deadline` from now (not from the original deadline,
/// and not the original deadline): the ack id stays good until then, the message is not handed
/// out again before then, and it is after that plus the backoff.
pub async fn extend_keeps_the_lease_from_now(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a"), message("b")]).await;
    let got = fx.pull_all(&s).await;
    assert_eq!(got.len(), 2);
    fx.advance_to(8_000).await;
    let extended = fx
        .settle(
            &s,
            &ack_ids(&got),
            Settle::Extend {
                deadline: Duration::from_secs(5),
            },
        )
        .await;
    assert_eq!((extended.applied, extended.rejected.len()), (2, 0));
    // The original lease would have ended at 10 s and been redelivered by 11 s.
    fx.advance_to(12_999).await;
    assert!(
        fx.pull_all(&s).await.is_empty(),
        "both leases were extended"
    );
    fx.ack(&s, &ack_ids([find(&got, "a")])).await;
    // Extended to 13 s: "b" is due by 13 s plus backoff(1) = 14 s (15 s would be "from the deadline").
    fx.advance_to(14_000).await;
    let again = fx.pull_all(&s).await;
    assert_eq!(texts(&again), ["b"]);
    assert_eq!(again[0].attempt, 2);
}

/// Strict reading of "lasts `deadline` from now instead of the original deadline": an extend
/// may also shorten a lease.
pub async fn extend_can_shorten_the_lease(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let got = fx.pull_all(&s).await;
    let extended = fx
        .settle(
            &s,
            &ack_ids(&got),
            Settle::Extend {
                deadline: Duration::from_secs(1),
            },
        )
        .await;
    assert_eq!(extended.applied, 1);
    fx.advance_to(1_000 + BACKOFF.initial_ms as i64).await;
    let again = fx.pull_all(&s).await;
    assert_eq!(texts(&again), ["a"], "the shortened lease ended at 1 s");
    assert_eq!(again[0].attempt, 2);
}

/// An ack id whose lease deadline has passed is refused on its own (with its id and a reason),
/// even before the message was handed out again; the other ids of the call apply, and the
/// refused message is still redelivered.
pub async fn expired_ack_id_is_rejected_individually(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let a = fx.pull_all(&s).await;
    fx.advance_to(5_000).await;
    fx.publish(&t, vec![message("b")]).await;
    let b = fx.pull_all(&s).await;
    assert_eq!((texts(&a), texts(&b)), (vec!["a"], vec!["b"]));

    fx.advance_to(ACK_DEADLINE_MS + 1).await;
    let outcome = fx
        .settle(&s, &[a[0].ack_id.clone(), b[0].ack_id.clone()], Settle::Ack)
        .await;
    assert_eq!(outcome.applied, 1, "b's lease is live until 15 s");
    assert_eq!(outcome.rejected.len(), 1, "{outcome:?}");
    assert_eq!(outcome.rejected[0].ack_id, a[0].ack_id);
    assert!(!outcome.rejected[0].reason.is_empty(), "a reason is given");

    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64)
        .await;
    let again = fx.pull_all(&s).await;
    assert_eq!(texts(&again), ["a"], "the refused ack changed nothing");
    assert_eq!(again[0].attempt, 2);
    fx.ack(&s, &ack_ids(&again)).await;
    fx.advance_to(60_000).await;
    assert!(fx.pull_all(&s).await.is_empty(), "b was acked");
}

/// Once a message was handed out again, the ack id of the earlier delivery is refused for ack,
/// nack and extend; the new one works.
pub async fn superseded_ack_id_is_rejected(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let first = fx.pull_all(&s).await;
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64)
        .await;
    let second = fx.pull_all(&s).await;
    assert_eq!(texts(&second), ["a"]);
    assert_eq!(second[0].attempt, 2);

    let stale = ack_ids(&first);
    for action in [
        Settle::Nack { delay: None },
        Settle::Extend {
            deadline: Duration::from_secs(60),
        },
        Settle::Ack,
    ] {
        let outcome = fx.settle(&s, &stale, action).await;
        assert_eq!(outcome.applied, 0, "{action:?} with a superseded id");
        assert_eq!(outcome.rejected.len(), 1, "{action:?} with a superseded id");
        assert_eq!(outcome.rejected[0].ack_id, stale[0]);
    }
    // Nothing happened to the live lease: it ends at 21 s as pulled.
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64 + 9_999)
        .await;
    assert!(fx.pull_all(&s).await.is_empty());
    fx.ack(&s, &ack_ids(&second)).await;
    fx.advance_to(120_000).await;
    assert!(fx.pull_all(&s).await.is_empty());
}

/// A string that is not an ack id fails the whole call with `Invalid` and applies nothing,
/// whatever the action.
pub async fn malformed_ack_id_fails_the_whole_call(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a"), message("b")]).await;
    let got = fx.pull_all(&s).await;
    assert_eq!(got.len(), 2);
    for bad in ["not-an-ack-id", ""] {
        for action in [
            Settle::Ack,
            Settle::Nack {
                delay: Some(Duration::ZERO),
            },
            Settle::Extend {
                deadline: Duration::from_secs(1),
            },
        ] {
            let ids = vec![
                got[0].ack_id.clone(),
                AckId(bad.to_owned()),
                got[1].ack_id.clone(),
            ];
            assert_invalid(
                fx.try_settle(&s, &ids, action).await,
                &format!("{action:?} with {bad:?}"),
            );
        }
    }
    let stats = fx.sub_stats(&s).await;
    assert_eq!((stats.acked, stats.nacked), (0, 0), "nothing applied");
    assert_eq!(stats.in_flight, 2, "both still leased");
    // A nack or a 1 s extend would have made them available again by now.
    fx.advance_to(ACK_DEADLINE_MS - 1).await;
    assert!(fx.pull_all(&s).await.is_empty(), "nothing applied");
    fx.ack(&s, &ack_ids(&got)).await;
}

/// An ack id of another subscription (same topic, same offsets) acks nothing here: it fails the
/// call (`Invalid`) or is rejected.
pub async fn ack_id_of_another_subscription_acks_nothing(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let a = fx.subscribe("a", sub_config(&t)).await;
    let b = fx.subscribe("b", sub_config(&t)).await;
    fx.publish(&t, vec![message("m")]).await;
    let from_a = fx.pull_all(&a).await;
    let from_b = fx.pull_all(&b).await;
    assert_eq!((from_a.len(), from_b.len()), (1, 1));
    match fx.try_settle(&b, &ack_ids(&from_a), Settle::Ack).await {
        Err(BrokerError::Invalid { .. }) => {}
        Ok(outcome) => assert_eq!(
            (outcome.applied, outcome.rejected.len()),
            (0, 1),
            "a's ack id is refused on b"
        ),
        Err(other) => panic!("unexpected error {other:?}"),
    }
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.initial_ms as i64)
        .await;
    let again = fx.pull_all(&b).await;
    assert_eq!(texts(&again), ["m"], "b's message was not acked");
    assert!(fx.pull_all(&a).await.len() == 1, "a's was not acked either");
}

/// Settle arguments are checked against the limits before anything applies: a nack delay over
/// `max_delay_ms`, an extend over `max_ack_deadline_ms`, more than `max_ack_ids` ids.
pub async fn settle_arguments_are_validated(h: &dyn Harness) {
    let fx = Fixture::new(h).await;
    let t = fx.topic("t", 1).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    fx.publish(&t, vec![message("a")]).await;
    let got = fx.pull_all(&s).await;
    let id = ack_ids(&got);
    let limits = Limits::default();
    let long_nack = Settle::Nack {
        delay: Some(Duration::from_millis(limits.max_delay_ms + 1)),
    };
    assert_invalid(fx.try_settle(&s, &id, long_nack).await, "a too long nack");
    let long_extend = Settle::Extend {
        deadline: Duration::from_millis(limits.max_ack_deadline_ms + 1),
    };
    assert_invalid(
        fx.try_settle(&s, &id, long_extend).await,
        "a too long extend",
    );
    let too_many = vec![id[0].clone(); limits.max_ack_ids + 1];
    assert_invalid(
        fx.try_settle(&s, &too_many, Settle::Ack).await,
        "too many ids",
    );
    assert_eq!(fx.sub_stats(&s).await.acked, 0, "nothing applied");
    fx.advance_to(ACK_DEADLINE_MS - 1).await;
    assert!(fx.pull_all(&s).await.is_empty(), "nothing applied");
    fx.ack(&s, &id).await;
}

/// Out-of-order acks of many messages are all kept, across restarts: 20 000 messages, every
/// second one acked, then the rest; nothing acked ever comes back.
pub async fn many_sparse_acks_survive_restart(h: &dyn Harness) {
    const N: usize = 20_000;
    let mut fx = Fixture::new(h).await;
    let t = fx.topic("t", 4).await;
    let s = fx.subscribe("s", sub_config(&t)).await;
    for chunk in 0..N / 1_000 {
        let batch = (chunk * 1_000..(chunk + 1) * 1_000)
            .map(|i| message(&i.to_string()))
            .collect();
        fx.publish(&t, batch).await;
    }
    let got = fx.pull_all(&s).await;
    assert_eq!(got.len(), N);
    let number = |d: &crate::Delivery| text(d).parse::<usize>().expect("a number");
    let (even, odd): (Vec<_>, Vec<_>) = got.iter().partition(|d| number(d) % 2 == 0);
    for chunk in even.chunks(1_000) {
        fx.ack(&s, &ack_ids(chunk.iter().copied())).await;
    }

    fx.restart().await;
    fx.advance_to(ACK_DEADLINE_MS + BACKOFF.max_ms as i64).await;
    let back = fx.pull_all(&s).await;
    let back_numbers: BTreeSet<usize> = back.iter().map(number).collect();
    let odd_numbers: BTreeSet<usize> = odd.iter().map(|d| number(d)).collect();
    assert_eq!(back.len(), N / 2, "only the unacked half comes back");
    assert!(
        back_numbers == odd_numbers,
        "exactly the odd messages come back"
    );
    for chunk in back.chunks(1_000) {
        fx.ack(&s, &ack_ids(chunk)).await;
    }

    fx.restart().await;
    fx.advance_to(10 * (ACK_DEADLINE_MS + BACKOFF.max_ms as i64))
        .await;
    assert!(fx.pull_all(&s).await.is_empty(), "everything is acked");
    assert_eq!(fx.sub_stats(&s).await.backlog, 0);
}
